"""The documentation site: Sphinx builds it with warnings as errors (a broken internal
link or anchor, a page in no toctree, a bad autodoc target all fail), offline; the API
reference covers every public module and name, each with a docstring; the JSON API page
names every path and error code of the OpenAPI document."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import flask_phoneverify
from flask_phoneverify.openapi import ERROR_CODES, document

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference"


def public_modules() -> list[str]:
    found = [flask_phoneverify.__name__]
    for info in pkgutil.walk_packages(flask_phoneverify.__path__, "flask_phoneverify."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            found.append(info.name)
    return found


def _own_doc(obj: Any) -> str | None:
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj) and doc:
        if doc.startswith(obj.__name__ + "("):  # the signature dataclasses write
            return None
    return doc if isinstance(doc, str) and doc.strip() else None


def _public_names(module: Any) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in vars(module) if not n.startswith("_")]
    return [
        n
        for n in names
        if (inspect.isclass(getattr(module, n)) or inspect.isfunction(getattr(module, n)))
        and getattr(getattr(module, n), "__module__", None) == module.__name__
    ]


def missing_docstrings() -> list[str]:
    """Public modules, classes, functions and methods without a docstring of their own
    (a method may take its docstring from the method it overrides)."""
    missing = []
    for name in public_modules():
        module = importlib.import_module(name)
        if not (module.__doc__ or "").strip():
            missing.append(name)
        for attr in _public_names(module):
            obj = getattr(module, attr)
            if not _own_doc(obj):
                missing.append(f"{name}.{attr}")
            if not inspect.isclass(obj):
                continue
            for member, value in vars(obj).items():
                if member.startswith("_"):
                    continue
                func = value.fget if isinstance(value, property) else value
                if isinstance(func, staticmethod | classmethod):
                    func = func.__func__
                if inspect.isfunction(func) and not inspect.getdoc(getattr(obj, member)):
                    missing.append(f"{name}.{attr}.{member}")
    return missing


def test_every_public_name_has_a_docstring() -> None:
    missing = missing_docstrings()
    assert not missing, (
        "public names without a docstring (say briefly why it exists; the API reference "
        f"is generated from them): {missing}"
    )


def test_the_docstring_check_finds_a_missing_one(monkeypatch: Any) -> None:
    from flask_phoneverify import flow

    monkeypatch.setattr(flow.Flow.cancel, "__doc__", None)
    assert "flask_phoneverify.flow.Flow.cancel" in missing_docstrings()


def test_the_reference_documents_every_public_module() -> None:
    pages = "".join(p.read_text() for p in REFERENCE.glob("*.md"))
    documented = set(re.findall(r"^\.\. automodule:: (\S+)", pages, re.M))
    missing = [m for m in public_modules() if m not in documented]
    assert not missing, f"add these modules to a page of docs/reference/: {missing}"


def test_the_package_page_documents_every_exported_name() -> None:
    page = (REFERENCE / "package.md").read_text()
    missing = [n for n in flask_phoneverify.__all__ if f"flask_phoneverify.{n}\n" not in page]
    assert not missing, f"document these in docs/reference/package.md: {missing}"


def test_the_json_api_page_names_every_path_and_error_code() -> None:
    page = (DOCS / "api.md").read_text()
    paths = [re.sub(r"\{(\w+)\}", r"<\1>", p) for p in document()["paths"]]
    missing = [p for p in paths if p.split("<")[0].rstrip("/") not in page]
    missing += [f"`{code}`" for code in ERROR_CODES if f"`{code}`" not in page]
    assert not missing, f"docs/api.md does not mention: {missing}"


def test_the_site_builds_offline_with_warnings_as_errors(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
        + ["-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    html = tmp_path / "html"
    assert (html / "openapi.json").is_file()
    reference = (html / "reference" / "package.html").read_text()
    assert 'id="flask_phoneverify.PhoneVerify.init_app"' in reference


def test_the_site_build_fails_on_a_broken_internal_anchor(tmp_path: Path) -> None:
    """The offline link check: a link to a heading that does not exist fails the build."""
    site = tmp_path / "docs"
    site.mkdir()
    (site / "conf.py").write_text('extensions = ["myst_parser"]\nmyst_heading_anchors = 4\n')
    (site / "index.md").write_text("# Home\n\nSee [there](other.md#nowhere).\n\n")
    (site / "other.md").write_text("# Other\n\n## Somewhere\n")
    (site / "index.md").write_text((site / "index.md").read_text() + "```{toctree}\nother\n```\n")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", str(site), str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode != 0 and "nowhere" in result.stderr
