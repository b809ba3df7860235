"""Languages: pages, JSON messages and calls in the person's language.

Without Flask-Babel on the app the request's Accept-Language picks among the shipped
languages; with it, the app's locale selector decides. A call speaks the language of
the request that started its verification, when its provider can.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from flask import Flask, render_template_string
from flask.testing import FlaskClient
from flask_babel import Babel, force_locale

from flask_phoneverify import i18n
from flask_phoneverify.providers.base import CallRequest, Style
from flask_phoneverify.providers.voiceshot import VoiceShot

from . import providers_kit as kit
from .helpers import Harness, begin, csrf, dev_calls, get_json, post, press, row, spoken_pin, wrong
from .providers_kit import config
from .servers.voiceshot import VoiceShotServer

voiceshot_server, vs = kit.voiceshot_server, kit.vs


def speaking(h: Harness, language: str, user: str = "1") -> FlaskClient:
    """A client whose browser asks for ``language``."""
    c = h.client(user)
    c.environ_base["HTTP_ACCEPT_LANGUAGE"] = language
    return c


# -- which language ----------------------------------------------------------------------------


def test_the_shipped_languages_are_english_spanish_and_french() -> None:
    assert set(i18n.languages()) >= {"en", "es", "fr"}
    assert i18n.languages()[0] == "en"


@pytest.mark.parametrize(
    ("header", "language"),
    [
        ("fr", "fr"),
        ("es-MX,es;q=0.9", "es"),
        ("fr-CA, en;q=0.5", "fr"),  # a regional variant is served by its language
        ("de, es;q=0.8, en;q=0.5", "es"),  # the best language we have
        ("de", "en"),
        ("*", "en"),
        ("fr;q=0, es;q=0.1", "es"),  # q=0 means "not this one"
        ("", "en"),
        ("x" * 300 + ";q=0.9, ;;,,", "en"),
    ],
)
def test_accept_language_picks_among_the_shipped_languages(
    harness: Harness, header: str, language: str
) -> None:
    with harness.app.test_request_context(headers={"Accept-Language": header}):
        assert i18n.current_locale() == language
        assert i18n.page_language() == language


def test_outside_a_request_texts_are_english(harness: Harness) -> None:
    assert i18n.gettext("Please try again.") == "Please try again."
    with harness.app.app_context():
        assert i18n.current_locale() == "en"
        assert i18n.ngettext("%(num)d minute", "%(num)d minutes", 2) == "2 minutes"


@pytest.mark.parametrize("locale", [None, "", "xx", "../../../etc/passwd", "fr_FR\x00", "ES"])
def test_a_catalog_for_any_locale_string_is_a_shipped_one_or_english(locale: str | None) -> None:
    text = i18n.for_locale(locale).gettext("Please try again.")
    assert text in ("Please try again.", "Inténtelo de nuevo.", "Réessayez.")
    assert i18n.for_locale("es_AR").gettext("Please try again.") == "Inténtelo de nuevo."
    assert i18n.for_locale("fr-BE").gettext("Please try again.") == "Réessayez."


def test_the_extension_needs_no_babel_set_up_by_the_app(harness: Harness) -> None:
    assert "babel" not in harness.app.extensions
    r = get_json(speaking(harness, "fr"), "/status?token=nonsense")
    assert r.status_code == 400
    assert r.json["message"] == "Le jeton de vérification n’est pas valide. Recommencez."


# -- JSON messages -----------------------------------------------------------------------------


def test_a_wrong_pin_says_how_many_tries_are_left_in_french(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_STYLE="spoken", PHONEVERIFY_MAX_ATTEMPTS=3)
    c = speaking(h, "fr-FR,fr;q=0.9,en;q=0.8")
    token, body = begin(c)
    pin = spoken_pin(h, body["token"])
    r = post(c, "/confirm", {"token": body["token"], "pin": wrong(pin)}, token=token)
    assert r.status_code == 400 and r.json["error"] == "wrong_pin"
    assert r.json["message"] == "Ce code PIN n’est pas le bon. Il vous reste 2 essais."
    r = post(c, "/confirm", {"token": body["token"], "pin": wrong(pin)}, token=token)
    assert r.json["message"] == "Ce code PIN n’est pas le bon. Il vous reste 1 essai."


def test_english_keeps_singular_and_plural_apart(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_STYLE="spoken", PHONEVERIFY_MAX_ATTEMPTS=3)
    c = h.client()
    token, body = begin(c)
    pin = spoken_pin(h, body["token"])
    messages = [
        post(c, "/confirm", {"token": body["token"], "pin": wrong(pin)}, token=token).json[
            "message"
        ]
        for _ in range(2)
    ]
    assert messages == [
        "That PIN is not right. 2 tries left.",
        "That PIN is not right. 1 try left.",
    ]


def test_a_call_limit_says_the_wait_in_spanish_words(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_CALLS_PER_NUMBER_PER_HOUR=1)
    c = speaking(h, "es")
    begin(c)
    r = post(c, "/start", {}, token=csrf(c))
    assert r.status_code == 429 and r.json["error"] == "rate_limited"
    assert r.json["message"].startswith("Demasiadas llamadas a este número en la última hora.")
    assert r.json["message"].endswith(" minutos.")


def test_a_reason_stored_in_english_is_shown_in_the_readers_language(make_app: Any) -> None:
    h = make_app()
    c = speaking(h, "fr")
    token, body = begin(c)
    call = dev_calls(c)[-1]["id"]
    assert post(c, f"/dev/phone/{call}/hangup", {}, token=token).status_code == 200
    assert row(h, body["token"]).reason == "The call was declined."  # the store keeps English
    status = get_json(c, f"/status?token={body['token']}").json
    assert status["status"] == "failed" and status["message"] == "L’appel a été refusé."
    other = speaking(h, "es")  # the same user, another browser language
    status = get_json(other, f"/status?token={body['token']}").json
    assert status["message"] == "La llamada fue rechazada."


def test_the_gate_asks_in_the_requests_language(harness: Harness) -> None:
    r = speaking(harness, "es").get("/secret", headers={"Accept": "application/json"})
    assert r.status_code == 401
    assert r.json["message"] == "Confirme su teléfono para continuar."


# -- pages -------------------------------------------------------------------------------------


def test_the_wait_page_in_spanish(harness: Harness) -> None:
    c = speaking(harness, "es-ES,es;q=0.9")
    r = c.post("/phoneverify/start", data={"csrf_token": csrf(c)})
    assert r.status_code == 303
    page = c.get("/phoneverify/wait").get_data(as_text=True)
    assert '<html lang="es">' in page
    assert "<title>Conteste el teléfono · " in page
    assert "Conteste el teléfono" in page and "Llamando a su teléfono…" in page
    assert 'Estamos llamando al <strong class="pv-number">+1******0123</strong>.' in page
    assert "Cuando la llamada se lo pida, marque este PIN" in page
    assert ">Vuelvan a llamarme</button>" in page and ">Cancelar</button>" in page
    assert 'data-wait-text="{label} (en {seconds} s)"' in page


def test_a_message_page_in_french(make_app: Any) -> None:
    h = make_app()
    r = speaking(h, "fr", user="3").get("/phoneverify/")  # no number on file
    assert r.status_code == 409
    page = r.get_data(as_text=True)
    assert "Aucun numéro de téléphone enregistré" in page
    assert "Contactez l’assistance du site pour en ajouter un." in page


def test_an_error_on_the_verify_page_in_french(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_ALLOW_ENROLMENT=True)
    c = speaking(h, "fr", user="3")
    r = c.post("/phoneverify/start", data={"csrf_token": csrf(c), "phone": "hello"})
    assert r.status_code == 303  # Post/Redirect/Get: the error shows on the verify page
    page = c.get(r.headers["Location"]).get_data(as_text=True)
    assert "Cela ne ressemble pas à un numéro de téléphone." in page
    assert "Ajoutez votre numéro de téléphone" in page and ">Numéro de téléphone</label>" in page


def test_the_verify_page_in_french(harness: Harness) -> None:
    page = speaking(harness, "fr").get("/phoneverify/").get_data(as_text=True)
    assert '<html lang="fr">' in page
    assert 'class="pv-card" aria-labelledby="pv-title" lang="fr"' in page
    assert "Confirmez que c’est bien vous" in page
    assert 'Nous allons appeler le <strong class="pv-number">+1******0123</strong>.' in page
    assert "Tapez le code PIN affiché sur l’écran suivant" in page
    assert ">Appelez-moi</button>" in page
    assert "téléphone simulé" in page  # the development note


def test_the_spoken_wait_page_counts_tries_in_spanish(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_STYLE="spoken", PHONEVERIFY_MAX_ATTEMPTS=3)
    c = speaking(h, "es")
    c.post("/phoneverify/start", data={"csrf_token": csrf(c)})
    token = row_token(c)
    pin = spoken_pin(h, token)
    r = c.post("/phoneverify/confirm", data={"csrf_token": csrf(c), "pin": wrong(pin)})
    assert r.status_code == 303
    page = c.get("/phoneverify/wait").get_data(as_text=True)
    assert "Ese PIN no es correcto. Le quedan 2 intentos." in page  # the error, once
    page = c.get("/phoneverify/wait").get_data(as_text=True)  # a reload: the hint
    assert "Le quedan 2 intentos." in page and ">PIN de la llamada</label>" in page


def row_token(c: FlaskClient) -> str:
    """The pending token the browser session holds."""
    from flask_phoneverify.gate import PENDING

    with c.session_transaction() as s:
        token: str = s[PENDING]["t"]
    return token


def test_the_wait_page_hands_its_script_the_texts_in_french(harness: Harness) -> None:
    import json
    import re as regex

    c = speaking(harness, "fr")
    c.post("/phoneverify/start", data={"csrf_token": csrf(c)})
    page = c.get("/phoneverify/wait").get_data(as_text=True)
    found = regex.search(r"data-texts='([^']*)'", page)
    assert found
    texts = json.loads(found.group(1))
    assert texts["confirmed"] == "Confirmé. Nous vous redirigeons…"
    assert texts["titles"]["failed"] == "L’appel n’a pas abouti"
    assert texts["titles"]["expired"] == "Cette vérification a expiré"


def test_the_simulated_phone_page_in_spanish(harness: Harness) -> None:
    c = speaking(harness, "es")
    begin(c)
    page = c.get("/phoneverify/dev/phone").get_data(as_text=True)
    assert "<title>Teléfono simulado · " in page
    assert ">sonando</span>" in page and ">teclado</span>" in page
    assert "Llamada entrante…" in page and ">Contestar</button>" in page


# -- an app that uses Flask-Babel --------------------------------------------------------------


def test_the_apps_babel_locale_selector_wins_over_accept_language(harness: Harness) -> None:
    Babel(harness.app, locale_selector=lambda: "es")
    r = get_json(speaking(harness, "fr"), "/status?token=nonsense")
    assert r.json["message"] == "El token de verificación no es válido. Vuelva a empezar."


def test_babel_set_up_before_the_extension_decides_too(tmp_path: Path) -> None:
    from flask_phoneverify import PhoneVerify

    app = Flask("babel_first", instance_path=str(tmp_path))
    app.config.update(TESTING=True, SECRET_KEY="k" * 32, PHONEVERIFY_DATABASE_URI="sqlite://")
    Babel(app, locale_selector=lambda: "fr_CA")
    ext = PhoneVerify(app)
    try:
        ext.user_loader(lambda: None)
        with app.test_request_context(headers={"Accept-Language": "es"}):
            assert i18n.current_locale() == "fr_CA"
            assert i18n.page_language() == "fr"
            assert i18n.gettext("Please try again.") == "Réessayez."
            with force_locale("es"):  # Flask-Babel's own override is honoured
                assert i18n.gettext("Please try again.") == "Inténtelo de nuevo."
    finally:
        ext.close(app)


def test_an_app_babel_locale_we_do_not_ship_gets_english(harness: Harness) -> None:
    Babel(harness.app, locale_selector=lambda: "de")
    r = get_json(speaking(harness, "fr"), "/status?token=nonsense")
    assert r.json["message"] == "The verification token is not valid. Please start again."


# -- templates ---------------------------------------------------------------------------------

PAGE = (
    "{% trans %}Please try again.{% endtrans %}|"
    "{{ _('Please try again.') }}|{{ ngettext('%(num)d second', '%(num)d seconds', n) }}|"
    "{% trans vendor=who %}{{ vendor }} did not answer in time. Please try again.{% endtrans %}"
)


def render(app: Flask, language: str, source: str = PAGE, **values: Any) -> str:
    with app.test_request_context(headers={"Accept-Language": language}):
        return render_template_string(source, **i18n.template_context(), **values)


def test_templates_translate_with_our_catalogs_without_babel(harness: Harness) -> None:
    out = render(harness.app, "fr", n=2, who="<b>Anveo</b>")
    assert out.split("|") == [
        "Réessayez.",
        "Réessayez.",
        "2 secondes",
        "&lt;b&gt;Anveo&lt;/b&gt; n’a pas répondu à temps. Réessayez.",
    ]
    assert render(harness.app, "es", n=1, who="X").split("|")[:3] == [
        "Inténtelo de nuevo.",
        "Inténtelo de nuevo.",
        "1 segundo",
    ]


def test_templates_translate_where_the_app_set_up_old_style_gettext(make_app: Any) -> None:
    h = make_app()
    h.app.jinja_env.install_null_translations(newstyle=False)  # type: ignore[attr-defined]
    page = "{% trans %}Please try again.{% endtrans %}|" + PAGE.rsplit("|", 1)[1]
    out = render(h.app, "fr", page, who="<b>Anveo</b>")
    assert out == "Réessayez.|&lt;b&gt;Anveo&lt;/b&gt; n’a pas répondu à temps. Réessayez."


def test_templates_translate_with_our_catalogs_under_the_apps_babel(harness: Harness) -> None:
    Babel(harness.app, locale_selector=lambda: "es")  # installs new-style gettext in Jinja
    assert harness.app.jinja_env.newstyle_gettext  # type: ignore[attr-defined]
    out = render(harness.app, "fr", n=5, who="<i>Veratad</i>")
    assert out.split("|") == [
        "Inténtelo de nuevo.",
        "Inténtelo de nuevo.",
        "5 segundos",
        "&lt;i&gt;Veratad&lt;/i&gt; no respondió a tiempo. Inténtelo de nuevo.",
    ]


def _app_catalog(root: Path) -> Path:
    """The app's own Flask-Babel catalog (domain ``messages``) with one Spanish text."""
    catalog = Catalog(locale="es", domain="messages")
    catalog.add("Home", "Inicio")
    folder = root / "es" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    (folder / "messages.mo").write_bytes(buffer.getvalue())
    return root


def test_the_apps_base_template_keeps_the_apps_own_translations(
    make_app: Callable[..., Harness], tmp_path: Path
) -> None:
    """With PHONEVERIFY_BASE_TEMPLATE our page sits inside the app's layout; the layout's
    texts are the app's, so they come from the app's catalog, ours from ours."""
    h = make_app(PHONEVERIFY_BASE_TEMPLATE="layout.html")
    root = _app_catalog(tmp_path / "app_translations")
    h.app.config["BABEL_TRANSLATION_DIRECTORIES"] = str(root)
    Babel(h.app, locale_selector=lambda: "es")
    from jinja2 import DictLoader

    h.app.jinja_loader = DictLoader(  # type: ignore[assignment]
        {"layout.html": "<nav>{{ _('Home') }}</nav>{% block content %}{% endblock %}"}
    )
    c = h.client()
    c.post("/phoneverify/start", data={"csrf_token": csrf(c)})
    page = c.get("/phoneverify/wait").get_data(as_text=True)
    assert "<nav>Inicio</nav>" in page
    assert "Conteste el teléfono" in page


# -- calls -------------------------------------------------------------------------------------


def test_the_simulated_phone_speaks_the_language_that_started_the_verification(
    make_app: Any,
) -> None:
    h = make_app(PHONEVERIFY_STYLE="spoken", PHONEVERIFY_APP_NAME="Banco Ejemplo")
    c = speaking(h, "es")
    token, body = begin(c)
    assert row(h, body["token"]).locale == "es"
    call = dev_calls(c)[-1]
    assert post(c, f"/dev/phone/{call['id']}/answer", {}, token=token).status_code == 200
    call = dev_calls(c)[-1]
    assert call["text"] == f"Le llama Banco Ejemplo. Para oír su código, pulse {call['digit']}."
    press(c, token, call["id"], call["digit"])
    spoken = " ".join(spoken_pin(h, body["token"]))
    expected = f"Le llama Banco Ejemplo. Su PIN es {spoken}. Repito: {spoken}. Adiós."
    assert dev_calls(c)[-1]["text"] == expected
    # the phone's listing is read in French, but the call was placed in Spanish
    assert dev_calls(speaking(h, "fr"))[-1]["text"] == expected
    # a new call for the same verification speaks the same language
    r = c.post(
        "/phoneverify/resend",
        json={"token": body["token"]},
        headers={"Accept": "application/json", "X-CSRFToken": token, "Accept-Language": "fr"},
    )
    assert r.status_code == 200, r.json
    assert dev_calls(c)[-1]["text"].startswith("Le llama Banco Ejemplo. Para oír su código")


def test_a_keypad_call_in_french_on_the_simulated_phone(harness: Harness) -> None:
    c = speaking(harness, "fr")
    begin(c)
    text = dev_calls(c)[-1]["text"]
    assert text.startswith("Ici ") and "tapez le code PIN affiché sur votre écran" in text
    english = harness.client()
    begin(english)
    assert dev_calls(english)[-1]["text"].startswith("This is ")


def _voiceshot_call(
    vs: tuple[VoiceShotServer, str], build_provider: Callable[..., Any], cls: type[VoiceShot]
) -> str:
    provider = build_provider(cls, config(vs[1]), style=Style.SPOKEN)
    request = CallRequest("+12015550123", "4711", Style.SPOKEN, "c" * 32, "Example", locale="es")
    provider.place_call(request)
    tts: str = vs[0].calls["c" * 32].tts
    return tts


def test_a_provider_that_speaks_only_english_says_english_on_the_wire(
    vs: tuple[VoiceShotServer, str], build_provider: Callable[..., Any]
) -> None:
    tts = _voiceshot_call(vs, build_provider, VoiceShot)
    assert tts.startswith("This is Example. Your PIN is 4, 7, 1, 1.")


def test_a_provider_that_speaks_spanish_says_spanish_on_the_wire(
    vs: tuple[VoiceShotServer, str], build_provider: Callable[..., Any]
) -> None:
    class SpanishVoiceShot(VoiceShot):
        speaks = frozenset({"en", "es"})

    tts = _voiceshot_call(vs, build_provider, SpanishVoiceShot)
    assert tts == ("Le llama Example. Su PIN es 4, 7, 1, 1. Repito, su PIN es 4, 7, 1, 1. Adiós.")


@pytest.mark.parametrize("language", i18n.languages())
@pytest.mark.parametrize("style", [Style.KEYPAD, Style.SPOKEN])
def test_phoneconfirm_texts_in_every_language_keep_its_rules(language: str, style: Style) -> None:
    """A translated PhoneConfirm text passes the checks a site's own text must pass: a
    keypad call never says @PIN, a spoken one says it."""
    from flask_phoneverify.providers.phoneconfirm import _check_text, _default_text

    text = _default_text(style, "Example", language)
    assert _check_text("text", text, style) == text
    assert ("@PIN" in text) is (style is Style.SPOKEN)
    if language != "en":
        assert text != _default_text(style, "Example")  # really translated


def test_a_phoneconfirm_translation_that_would_say_the_pin_is_not_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A (mistaken) French keypad text with @PIN in it would read the PIN out to whoever
    answers: English is said instead."""
    from babel.support import Translations

    from flask_phoneverify.providers.phoneconfirm import _default_text

    catalog = Catalog(locale="fr", domain=i18n.DOMAIN)
    keypad = "This is %(app)s. To confirm it is you, key in the PIN shown on your screen."
    catalog.add(keypad, "Ici %(app)s. Votre code est @PIN.")
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    monkeypatch.setitem(i18n._loaded, "fr", Translations(buffer, domain=i18n.DOMAIN))
    assert _default_text(Style.KEYPAD, "Example", "fr") == keypad % {"app": "Example"}


# -- recovery codes and remembered devices -------------------------------------------------------


def test_the_recovery_pages_in_spanish(harness: Harness) -> None:
    c = speaking(harness, "es")
    page = c.get("/phoneverify/recover").get_data(as_text=True)
    assert "<title>Usar un código de recuperación · " in page
    assert ">Código de recuperación</label>" in page and ">Usar este código</button>" in page
    r = c.post("/phoneverify/recover", data={"csrf_token": csrf(c), "code": "AAAA-BBBB-CC"})
    page = c.get(r.headers["Location"]).get_data(as_text=True)
    assert "Ese código de recuperación no es válido. Compruébelo e inténtelo de nuevo." in page
    page = c.get("/phoneverify/recovery-codes").get_data(as_text=True)
    assert "Aún no tiene códigos de recuperación." in page
    assert "Para crear códigos nuevos, confirme antes su teléfono" in page


def test_codes_left_are_counted_in_french(harness: Harness) -> None:
    c = speaking(harness, "fr")
    token, body = begin(c)
    press(c, token, dev_calls(c)[-1]["id"], body["pin"])
    assert post(c, "/confirm", {"token": body["token"]}, token=token).status_code == 200
    codes = post(c, "/recovery-codes", token=csrf(c)).json["codes"]
    other = speaking(harness, "fr", user="1")
    r = post(other, "/recover", {"code": codes[0]}, token=csrf(other))
    assert r.status_code == 200
    assert r.json["message"] == f"Il vous reste {len(codes) - 1} codes de secours."
    page = c.get("/phoneverify/recovery-codes").get_data(as_text=True)
    assert f"Il vous reste {len(codes) - 1} codes inutilisés." in page


def test_remember_this_device_is_offered_in_french(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_REMEMBER_DAYS=1)
    c = speaking(h, "fr")
    c.post("/phoneverify/start", data={"csrf_token": csrf(c)})
    page = c.get("/phoneverify/wait").get_data(as_text=True)
    assert "Se souvenir de cet appareil pendant 1 jour" in page


# -- a provider that speaks Spanish and French: Twilio ---------------------------------------------


@pytest.fixture
def twilio_app(make_app: Callable[..., Harness]) -> Iterator[tuple[Harness, Any]]:
    """An app on a loopback Twilio (which signs its posts and plays the call), served at
    the address PHONEVERIFY_EXTERNAL_URL names."""
    from .loopback import free_port, serve
    from .servers.twilio import ACCOUNT_SID, AUTH_TOKEN, FROM, TwilioServer

    server = TwilioServer()
    with serve(server) as api:
        port = free_port()
        h = make_app(
            PHONEVERIFY_PROVIDER="twilio",
            PHONEVERIFY_TWILIO_ACCOUNT_SID=ACCOUNT_SID,
            PHONEVERIFY_TWILIO_AUTH_TOKEN=AUTH_TOKEN,
            PHONEVERIFY_TWILIO_FROM=FROM,
            PHONEVERIFY_TWILIO_URL=api,
            PHONEVERIFY_EXTERNAL_URL=f"http://127.0.0.1:{port}",
            PHONEVERIFY_STYLE="spoken",
        )
        with serve(h.app, port=port):
            yield h, server
    server.close()


def test_twilio_speaks_the_spoken_code_in_spanish(twilio_app: tuple[Harness, Any]) -> None:
    h, server = twilio_app
    c = speaking(h, "es-MX,es;q=0.9")
    token, body = begin(c)
    call = list(server.calls.values())[-1]
    server.answer(call.sid)
    prompt = call.heard[-1]
    assert prompt.startswith("Le llama ") and "Para oír su código, pulse " in prompt
    assert b'<Say language="es-ES">' in call.documents[-1]
    digit = prompt.rsplit(" ", 1)[1].rstrip(".")
    server.press(call.sid, digit)
    assert call.heard[-1].startswith("Su código es ")
    assert b'<Say language="es-ES">Su c' in call.documents[-1]


def test_twilio_speaks_english_without_a_language(twilio_app: tuple[Harness, Any]) -> None:
    h, server = twilio_app
    begin(speaking(h, "de"))
    call = list(server.calls.values())[-1]
    server.answer(call.sid)
    assert call.heard[-1].startswith("This is ") and b"language=" not in call.documents[-1]
