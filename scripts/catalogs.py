"""Keep the extension's translation catalogs in step with the code (docs/languages.md).

    python scripts/catalogs.py update      extract the texts (babel.cfg), merge them into
                                           every catalog, fill English, compile the .mo files
    python scripts/catalogs.py init LANG   start a catalog for a new language
    python scripts/catalogs.py check       list what is missing, untranslated, fuzzy or not
                                           compiled (exit 1); tests/test_i18n_catalogs.py
                                           runs the same check

The texts are marked in Python with ``gettext``/``_``, ``ngettext`` and ``N_`` (Babel's
default keywords) and in templates with ``{% trans %}`` and ``_()``.
"""

from __future__ import annotations

import copy
import io
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.mofile import read_mo, write_mo
from babel.messages.pofile import read_po, write_po

try:
    from babel.messages.frontend import parse_mapping_cfg
except ImportError:  # Babel < 2.14
    from babel.messages.frontend import parse_mapping as parse_mapping_cfg

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "babel.cfg"
TRANSLATIONS = ROOT / "flask_phoneverify" / "translations"
DOMAIN = "flask_phoneverify"
TEMPLATE = TRANSLATIONS / f"{DOMAIN}.pot"
#: the language the texts are written in: its catalog repeats them
SOURCE = "en"
WIDTH = 100


def extract() -> Catalog:
    """Every text marked in the package's code and templates."""
    with CONFIG.open() as f:
        method_map, options_map = parse_mapping_cfg(f)
    catalog = Catalog(project="flask-phoneverify", domain=DOMAIN, fuzzy=False)
    found = extract_from_dir(
        str(ROOT),
        method_map,
        options_map,
        keywords=DEFAULT_KEYWORDS,
        comment_tags=("Translators:",),
        strip_comment_tags=True,
    )
    for filename, lineno, message, comments, context in found:
        catalog.add(message, None, [(filename, lineno)], auto_comments=comments, context=context)
    return catalog


def languages() -> list[str]:
    return sorted(p.parent.parent.name for p in TRANSLATIONS.glob(f"*/LC_MESSAGES/{DOMAIN}.po"))


def po_path(language: str) -> Path:
    return TRANSLATIONS / language / "LC_MESSAGES" / f"{DOMAIN}.po"


def read(language: str) -> Catalog:
    with po_path(language).open("rb") as f:
        return read_po(f, locale=language, domain=DOMAIN)


def write(language: str, catalog: Catalog) -> None:
    catalog.header_comment = (
        f"# {catalog.locale.english_name if catalog.locale else language} texts of "
        "flask-phoneverify.\n# Distributed under the same license as flask-phoneverify "
        "(BSD-3-Clause)."
    )
    catalog.copyright_holder = "the flask-phoneverify contributors"
    catalog.last_translator = "the flask-phoneverify contributors"
    catalog.language_team = catalog.locale.english_name if catalog.locale else language
    catalog.msgid_bugs_address = ""
    catalog.version = "0.1"
    buffer = io.BytesIO()
    write_po(buffer, catalog, width=WIDTH, no_location=True, sort_output=True, ignore_obsolete=True)
    po_path(language).write_bytes(buffer.getvalue())
    mo = io.BytesIO()
    write_mo(mo, catalog)
    po_path(language).with_suffix(".mo").write_bytes(mo.getvalue())


def fill_source(catalog: Catalog) -> None:
    """The English catalog says what the code says."""
    for message in catalog:
        if message.id:
            message.string = message.id
            message.flags.discard("fuzzy")


def update() -> None:
    template = extract()
    buffer = io.BytesIO()
    write_po(buffer, template, width=WIDTH, no_location=True, sort_output=True, omit_header=True)
    TEMPLATE.write_bytes(buffer.getvalue())
    for language in languages():
        catalog = read(language)
        # a copy each: update() adds the template's own message objects, and English
        # fills in their strings
        catalog.update(copy.deepcopy(template), no_fuzzy_matching=True, update_creation_date=False)
        if language == SOURCE:
            fill_source(catalog)
        write(language, catalog)
        print(f"{language}: {sum(1 for m in catalog if m.id)} texts")


def init(language: str) -> None:
    path = po_path(language)
    if path.exists():
        raise SystemExit(f"{path} exists already")
    path.parent.mkdir(parents=True)
    catalog = Catalog(locale=language, domain=DOMAIN, project="flask-phoneverify", fuzzy=False)
    catalog.update(extract(), no_fuzzy_matching=True)
    if language == SOURCE:
        fill_source(catalog)
    write(language, catalog)
    print(f"created {path.relative_to(ROOT)}: translate it, then run `update`")


def problems() -> Iterator[str]:
    """What keeps a catalog from being complete and in use."""
    template = extract()
    wanted = {m.id if isinstance(m.id, str) else m.id[0]: m for m in template if m.id}
    found = languages()
    for language in (SOURCE, "es", "fr"):
        if language not in found:
            yield f"{language}: no catalog"
    for language in found:
        catalog = read(language)
        for key, expected in wanted.items():
            message = catalog.get(expected.id, expected.context)
            if message is None:
                yield f"{language}: missing {key!r}"
                continue
            strings = message.string if isinstance(message.string, tuple) else (message.string,)
            if not all(strings):
                yield f"{language}: untranslated {key!r}"
            if message.fuzzy:
                yield f"{language}: fuzzy {key!r}"
        for message in catalog:
            if message.id and message.string and _braces(message.id) != _braces(message.string):
                yield f"{language}: {message.id!r}: the {{placeholders}} differ"
        for message, errors in catalog.check():
            for error in errors:
                yield f"{language}: {message.id!r}: {error}"
        mo = po_path(language).with_suffix(".mo")
        if not mo.is_file():
            yield f"{language}: not compiled"
            continue
        with mo.open("rb") as f:
            compiled = read_mo(f)
        if _texts(compiled) != _texts(catalog):
            yield f"{language}: the .mo differs from the .po (run `update`)"


def _braces(text: object) -> set[str]:
    """The ``{name}`` placeholders a text hands to the pages' script."""
    parts = text if isinstance(text, list | tuple) else (text,)
    return {found for part in parts for found in re.findall(r"\{\w+\}", str(part))}


def _texts(catalog: Catalog) -> dict[object, object]:
    def plain(value: object) -> object:
        return tuple(value) if isinstance(value, list | tuple) else value

    return {(m.context, plain(m.id)): plain(m.string) for m in catalog if m.id and not m.fuzzy}


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else ""
    if command == "update":
        update()
    elif command == "init" and len(argv) == 3:
        init(argv[2])
    elif command == "check":
        found = list(problems())
        print("\n".join(found) or "every catalog is complete")
        return 1 if found else 0
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
