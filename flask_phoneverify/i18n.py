"""The extension's own translations: pages, JSON messages and what calls say.

The catalogs live in ``flask_phoneverify/translations/<lang>/LC_MESSAGES/`` under
the gettext domain ``flask_phoneverify``, apart from the app's own (Flask-Babel's
``messages`` domain), so an app's Babel setup is neither needed nor touched.

Which language a request gets:

- the app initialised Flask-Babel: its locale selector decides (``get_locale()``,
  which also honours ``force_locale``); our catalogs are read through a Flask-Babel
  :class:`~flask_babel.Domain` of our own;
- otherwise the request's ``Accept-Language`` picks among the shipped languages
  (every folder of ``translations/`` holding a compiled catalog, and English, the
  language the texts are written in), with no setup;
- outside a request, English.

Two ways to mark a text, by when it is shown:

- ``_("...")`` / ``ngettext(...)`` translate now, into the current request's
  language: every message made while answering a request (errors raised by the
  flow, a provider or a view), even if it is kept for later (a failed call's
  reason is shown to the same person);
- ``N_("...")`` only marks a text for the catalogs (module constants, and reasons a
  provider reports from its callbacks, where no person's request is at hand); it is
  stored in English and :func:`translate` turns it into the reader's language where
  it is shown.

Calls are spoken in the language of the request that started the verification
(kept on it as ``locale``), when the provider can speak it: :func:`for_locale` gives
that language's catalog without any request, for the providers' texts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from babel.support import NullTranslations, Translations
from flask import Flask, current_app, has_request_context, request
from flask_babel import Domain
from flask_babel import get_locale as babel_locale
from flask_babel import get_translations as app_translations
from jinja2 import pass_context
from jinja2.runtime import Context
from markupsafe import Markup

__all__ = [
    "DOMAIN",
    "DIRECTORY",
    "SOURCE",
    "languages",
    "current_locale",
    "page_language",
    "spoken_language",
    "translations",
    "for_locale",
    "gettext",
    "_",
    "ngettext",
    "N_",
    "translate",
    "template_context",
    "init_app",
]

#: the gettext domain of the extension's catalogs (``<lang>/LC_MESSAGES/flask_phoneverify.mo``)
DOMAIN = "flask_phoneverify"
DIRECTORY = Path(__file__).resolve().parent / "translations"
#: the language the texts are written in
SOURCE = "en"
#: where a request keeps the locale its Accept-Language chose
_LOCALE_KEY = "flask_phoneverify.locale"
#: the longest locale kept on a verification (``zh_Hans_CN``, ``sr_Latn_RS``...)
MAX_LOCALE = 35

#: reads our catalogs in the locale the app's Flask-Babel selects
domain = Domain(translation_directories=[str(DIRECTORY)], domain=DOMAIN)


@functools.cache
def languages() -> tuple[str, ...]:
    """The shipped languages: English, then every folder holding a compiled catalog."""
    found = sorted(
        d.name
        for d in DIRECTORY.iterdir()
        if d.is_dir() and (d / "LC_MESSAGES" / f"{DOMAIN}.mo").is_file()
    )
    return (SOURCE, *(name for name in found if name != SOURCE))


def _shipped(locale: str | None, offered: tuple[str, ...] | None = None) -> str | None:
    """The shipped language that serves ``locale`` (``fr_CA`` -> ``fr``), or None."""
    if not locale:
        return None
    offered = languages() if offered is None else offered
    wanted = locale.replace("-", "_").lower()
    by_name = {name.lower(): name for name in offered}
    if wanted in by_name:
        return by_name[wanted]
    primary = wanted.split("_", 1)[0]
    if primary in by_name:
        return by_name[primary]
    # "pt" asked, only "pt_BR" shipped: a regional catalog beats none
    return next((name for key, name in by_name.items() if key.split("_", 1)[0] == primary), None)


def _app_has_babel() -> bool:
    return "babel" in current_app.extensions


def current_locale() -> str:
    """The locale of the current request (``en`` outside one): the app's Flask-Babel
    selector when the app uses Flask-Babel, else the best shipped match of the
    request's Accept-Language."""
    if not has_request_context():
        return SOURCE
    if _app_has_babel():
        chosen = babel_locale()
        return str(chosen)[:MAX_LOCALE] if chosen is not None else SOURCE
    environ = request.environ  # read once per request: a page asks for dozens of texts
    found: str | None = environ.get(_LOCALE_KEY)
    if found is None:
        found = environ[_LOCALE_KEY] = _from_accept_language()
    return found


def _from_accept_language() -> str:
    for value, quality in request.accept_languages:
        if quality <= 0:
            continue
        if value == "*":
            return SOURCE
        match = _shipped(value)
        if match is not None:
            return match
    return SOURCE


def page_language() -> str:
    """The language the current page is written in, as an HTML ``lang`` tag: the
    shipped language serving the request's locale, else English."""
    return (_shipped(current_locale()) or SOURCE).replace("_", "-")


def spoken_language(locale: str | None, speaks: frozenset[str] | None) -> str:
    """The language a call is spoken in: the shipped language serving ``locale`` when
    the provider can speak it (``speaks`` None: any shipped language), else English."""
    offered = languages() if speaks is None else tuple(n for n in languages() if n in speaks)
    return _shipped(locale, offered) or SOURCE


_loaded: dict[str, NullTranslations] = {}


def for_locale(locale: str | None) -> NullTranslations:
    """The catalog of ``locale`` (the shipped language serving it), with no request
    needed: what a provider uses to write a call's text."""
    name = _shipped(locale) or SOURCE
    found = _loaded.get(name)
    if found is None:
        found = _loaded[name] = Translations.load(str(DIRECTORY), [name], DOMAIN)
    return found


def translations() -> NullTranslations:
    """The catalog for the current request (English outside a request)."""
    if not has_request_context():
        return for_locale(SOURCE)
    if _app_has_babel():
        found: NullTranslations = domain.get_translations()
        return found
    return for_locale(current_locale())


def gettext(string: str, **variables: Any) -> str:
    """``string`` in the current request's language, ``%(name)s`` filled from ``variables``."""
    text = translations().gettext(string)
    return text % variables if variables else text


_ = gettext


def ngettext(singular: str, plural: str, num: int, **variables: Any) -> str:
    """The form of the message for ``num`` (available as ``%(num)d``), translated."""
    variables.setdefault("num", num)
    return translations().ngettext(singular, plural, num) % variables


def N_(string: str) -> str:  # noqa: N802 (the gettext convention)
    """Mark ``string`` for the catalogs without translating it (see :func:`translate`)."""
    return string


def translate(text: str | None) -> str:
    """A text marked with ``N_`` (kept in English) in the current request's language;
    any other text as it is."""
    return translations().gettext(text) if text else ""


# -- templates ---------------------------------------------------------------------------


def _ours_or_the_apps(mine: str, english: str, app: Callable[[], str]) -> str:
    """Our translation; for a text our catalogs do not know (an app's base template
    rendered around our page), the app's own Flask-Babel translation."""
    if mine != english or not _app_has_babel():
        return mine
    return app()


def _old_style(context: Context, variables: dict[str, Any]) -> bool:
    """An app set Jinja's gettext up old-style: ``{% trans %}`` then formats the text
    itself (and passes no variables); a direct call with variables is formatted here."""
    return not context.environment.newstyle_gettext and not variables  # type: ignore[attr-defined]


@pass_context
def _template_gettext(context: Context, string: str, **variables: Any) -> str:
    text = _ours_or_the_apps(
        translations().gettext(string), string, lambda: app_translations().gettext(string)
    )
    if _old_style(context, variables):
        return text
    if context.eval_ctx.autoescape:
        text = Markup(text)  # noqa: S704 (our catalogs, as Jinja does; variables get escaped)
    return text % variables


@pass_context
def _template_ngettext(
    context: Context, singular: str, plural: str, num: int, **variables: Any
) -> str:
    english = singular if num == 1 else plural
    text = _ours_or_the_apps(
        translations().ngettext(singular, plural, num),
        english,
        lambda: app_translations().ngettext(singular, plural, num),
    )
    if _old_style(context, variables):
        return text
    variables.setdefault("num", num)
    if context.eval_ctx.autoescape:
        text = Markup(text)  # noqa: S704 (our catalogs, as Jinja does; variables get escaped)
    return text % variables


def template_context() -> dict[str, Any]:
    """What the extension's templates translate with: ``_``/``gettext``/``ngettext``
    (and so ``{% trans %}``) read our catalogs, whatever the app installed, and
    ``phoneverify_lang`` is the page's ``lang``."""
    return {
        "gettext": _template_gettext,
        "_": _template_gettext,
        "ngettext": _template_ngettext,
        "phoneverify_lang": page_language(),
    }


def init_app(app: Flask) -> None:
    """Let the app's Jinja environment parse ``{% trans %}`` in our templates.

    Without an i18n extension yet, Jinja's is added in the new style Flask-Babel also
    sets up (the gettext functions format their own variables); its functions come
    from :func:`template_context` on our pages, so the app's own are left as they are.
    """
    env = app.jinja_env
    if "jinja2.ext.InternationalizationExtension" not in env.extensions:
        env.add_extension("jinja2.ext.i18n")
        env.newstyle_gettext = True  # type: ignore[attr-defined]
