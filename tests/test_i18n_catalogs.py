"""Every catalog is complete: each text marked in the code and the templates (extracted
with Babel's extractor, as `python scripts/catalogs.py update` does) is in the English,
Spanish and French catalogs, translated, not fuzzy, with the same placeholders, and
compiled; and the package ships the catalogs. A change that adds a user-facing text
adds it to the catalogs (docs/languages.md)."""

from __future__ import annotations

import fnmatch
import importlib.util
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from flask_phoneverify import i18n

ROOT = Path(__file__).resolve().parent.parent


def _catalogs_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("catalogs", ROOT / "scripts" / "catalogs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


catalogs = _catalogs_script()


def test_every_catalog_has_every_text_translated_and_compiled() -> None:
    problems = list(catalogs.problems())
    assert not problems, "run `python scripts/catalogs.py update`, then translate:\n" + "\n".join(
        problems
    )


def test_the_extraction_sees_python_and_templates() -> None:
    found = {m.id if isinstance(m.id, str) else m.id[0] for m in catalogs.extract() if m.id}
    assert "Please try again." in found  # flow.py, gettext
    assert "Your phone is confirmed." in found  # flow.py, N_
    assert "That PIN is not right. %(num)d try left." in found  # ngettext
    assert "This is %(app)s. Your PIN is %(pin)s. Again: %(pin)s. Goodbye." in found  # dev.py


def test_the_check_finds_a_missing_and_a_fuzzy_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The completeness check itself, on a copy of the catalogs with one text dropped
    from Spanish and one French text marked fuzzy."""
    import shutil

    copy = tmp_path / "translations"
    shutil.copytree(catalogs.TRANSLATIONS, copy)
    monkeypatch.setattr(catalogs, "TRANSLATIONS", copy)
    es = catalogs.read("es")
    es.delete("Please try again.")
    catalogs.write("es", es)
    fr = catalogs.read("fr")
    fr["Your phone is confirmed."].flags.add("fuzzy")
    catalogs.write("fr", fr)
    problems = list(catalogs.problems())
    assert "es: missing 'Please try again.'" in problems
    assert "fr: fuzzy 'Your phone is confirmed.'" in problems


def test_the_package_data_ships_every_catalog() -> None:
    """An installed wheel carries the .po and .mo files: pyproject's package-data
    patterns match every one of them."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]["flask_phoneverify"]
    package = ROOT / "flask_phoneverify"
    files = [p.relative_to(package).as_posix() for p in i18n.DIRECTORY.rglob("*.[mp]o")]
    assert {Path(f).suffix for f in files} == {".mo", ".po"}
    assert len(files) >= 6
    unshipped = [f for f in files if not any(fnmatch.fnmatch(f, p) for p in patterns)]
    assert not unshipped


def test_update_adds_a_new_text_untranslated_except_in_english(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A text new to the Spanish catalog arrives empty (to translate), never with the
    English words filled in for the source catalog."""
    import shutil

    copy = tmp_path / "translations"
    shutil.copytree(catalogs.TRANSLATIONS, copy)
    monkeypatch.setattr(catalogs, "TRANSLATIONS", copy)
    monkeypatch.setattr(catalogs, "TEMPLATE", copy / "flask_phoneverify.pot")
    for language in ("en", "es"):
        catalog = catalogs.read(language)
        catalog.delete("Please try again.")
        catalogs.write(language, catalog)
    catalogs.update()
    assert catalogs.read("en")["Please try again."].string == "Please try again."
    assert catalogs.read("es")["Please try again."].string == ""
    assert "es: untranslated 'Please try again.'" in list(catalogs.problems())


def test_the_check_finds_a_lost_script_placeholder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    copy = tmp_path / "translations"
    shutil.copytree(catalogs.TRANSLATIONS, copy)
    monkeypatch.setattr(catalogs, "TRANSLATIONS", copy)
    fr = catalogs.read("fr")
    fr["{label} (in {seconds} s)"].string = "{label} (dans {secondes} s)"
    catalogs.write("fr", fr)
    assert "fr: '{label} (in {seconds} s)': the {placeholders} differ" in list(catalogs.problems())
