"""The configuration reference in docs/ matches the settings table in the code."""

from __future__ import annotations

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
