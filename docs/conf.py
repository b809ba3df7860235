"""Sphinx configuration: the Markdown pages through MyST, the API reference from the
docstrings, and nothing fetched from the network (no intersphinx), so the build runs
offline and ``sphinx-build -W`` fails on any broken internal link or anchor."""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import flask_phoneverify  # noqa: E402
from flask_phoneverify.openapi import document  # noqa: E402

project = "flask-phoneverify"
author = "The flask-phoneverify authors"
copyright = "2026, " + author  # noqa: A001
release = version = flask_phoneverify.__version__

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.viewcode"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

myst_heading_anchors = 4
myst_enable_extensions = ["colon_fence", "deflist"]
suppress_warnings: list[str] = []

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_inherit_docstrings = False  # third-party docstrings (httpx, SQLAlchemy) are not ours
# each name on the page of the module that defines it (re-exports are not repeated)
autodoc_default_options = {"members": True, "show-inheritance": True, "ignore-module-all": True}
nitpicky = False

html_theme = "alabaster"
html_title = f"flask-phoneverify {release}"
html_static_path: list[str] = []
html_extra_path = ["_generated"]

# The JSON API's OpenAPI document, published beside the pages as /openapi.json.
generated = HERE / "_generated"
generated.mkdir(exist_ok=True)
(generated / "openapi.json").write_text(json.dumps(document(), indent=2) + "\n")

linkcheck_ignore = [r"https?://.*"]  # the link check stays offline: internal links only


def _skip_reexported(
    app: object, what: str, name: str, obj: object, skip: bool, opts: object
) -> bool | None:
    """A name the package re-exports is documented once, on the page of the package."""
    if what == "module" and any(
        obj is getattr(flask_phoneverify, n) for n in flask_phoneverify.__all__
    ):
        return True
    return None


def setup(app: object) -> None:
    app.connect("autodoc-skip-member", _skip_reexported)  # type: ignore[attr-defined]
