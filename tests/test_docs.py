"""The configuration reference in docs/ matches the settings table in the code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_config_reference_lists_every_setting_as_declared(make_app: Any) -> None:
    h = make_app()
    result = h.app.test_cli_runner().invoke(args=["phoneverify", "settings"])
    assert result.exit_code == 0
    page = (DOCS / "config.md").read_text()
    rows = [line for line in result.output.splitlines() if line.startswith("| `PHONEVERIFY_")]
    assert len(rows) > 40
    missing = [row.split("|")[1].strip() for row in rows if row not in page]
    assert not missing, f"docs/config.md is stale (run `flask phoneverify settings`): {missing}"


# -- the templates' variables -----------------------------------------------------------------

TEMPLATES = Path(__file__).resolve().parent.parent / "flask_phoneverify" / "templates"
FLASK_GLOBALS = {"url_for", "request", "session", "config", "g", "get_flashed_messages"}
#: the translation functions every page gets (``{% trans %}`` calls them), like a global
TRANSLATION = {"_", "gettext", "ngettext"}


def template_variables() -> dict[str, set[str]]:
    """Each template's undeclared variables (what its render call and context give it)."""
    from jinja2 import Environment, meta

    env = Environment(autoescape=True, extensions=["jinja2.ext.i18n"])
    found = {}
    for path in sorted((TEMPLATES / "phoneverify").glob("*.html")):
        names = meta.find_undeclared_variables(env.parse(path.read_text()))
        found[f"phoneverify/{path.name}"] = set(names) - FLASK_GLOBALS - TRANSLATION
    return found


def documented_variables() -> dict[str, set[str]]:
    page = (DOCS / "templates.md").read_text()
    sections = re.split(r"^## ", page, flags=re.M)[1:]
    found = {}
    for section in sections:
        title, _, body = section.partition("\n")
        rows = re.findall(r"^\| `(\w+)` \|", body, re.M)
        found[title.strip().strip("`")] = set(rows)
    return found


def test_every_template_variable_is_documented_and_no_other(make_app: Any) -> None:
    from flask_phoneverify.views.common import template_context

    used = template_variables()
    documented = documented_variables()
    assert set(used) <= set(documented), (
        f"docs/templates.md has no section for {sorted(set(used) - set(documented))}"
    )
    for name, variables in used.items():
        assert variables == documented[name], (
            f"docs/templates.md, {name}: undocumented {sorted(variables - documented[name])}, "
            f"no longer used {sorted(documented[name] - variables)}"
        )
    h = make_app()
    processors = h.app.template_context_processors["phoneverify"]
    assert template_context in processors
    with h.app.test_request_context():
        given = {name for processor in processors for name in processor()} - FLASK_GLOBALS
    assert given == documented["Every page"]


def test_the_ids_the_pages_script_needs_are_named_for_overriders() -> None:
    script = (TEMPLATES.parent / "static" / "phoneverify" / "phoneverify.js").read_text()
    ids = set(re.findall(r'getElementById\("([\w-]+)"\)', script))
    ids |= set(re.findall(r"#([a-z][\w-]+)", script))
    assert ids, "the script's element ids were not found"
    page = (DOCS / "templates.md").read_text()
    missing = sorted(i for i in ids if f"`{i}`" not in page)
    assert not missing, f"docs/templates.md does not name the ids the script uses: {missing}"
