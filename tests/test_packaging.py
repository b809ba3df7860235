"""The package as users get it: ``python -m build`` makes an sdist and a wheel that
``twine check`` accepts; the wheel, installed into a fresh virtual environment, carries
its templates, static files and WSDL, and the example app verifies a phone through it.

Nothing is downloaded: the build runs without isolation (setuptools is in the test
extra), the wheel is installed with ``--no-deps --no-index``, and the fresh environment
reaches the dependencies through a path file naming this environment's site-packages
(whose own path files, such as this checkout's editable install, are not read there).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIP = shutil.ignore_patterns(
    ".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__", "*.pyc",
    ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis", "instance", "_build",
    "_generated", "*.sqlite3",
)  # fmt: skip

PACKAGE_DATA = (
    "flask_phoneverify/py.typed",
    "flask_phoneverify/templates/phoneverify/verify.html",
    "flask_phoneverify/templates/phoneverify/wait.html",
    "flask_phoneverify/static/phoneverify/phoneverify.css",
    "flask_phoneverify/static/phoneverify/phoneverify.js",
    "flask_phoneverify/providers/wsdl/phoneconfirm.wsdl",
)

CHECK = r"""
import importlib.resources, os, sys
from pathlib import Path

import flask_phoneverify
where = Path(flask_phoneverify.__file__).resolve()
assert where.is_relative_to(Path(sys.prefix).resolve()), where  # the wheel, not the checkout

package = importlib.resources.files("flask_phoneverify")
for name in sys.argv[1].split(","):
    assert (package / name.removeprefix("flask_phoneverify/")).is_file(), name
translations = package / "translations"
if translations.is_dir():  # every catalog the checkout has is installed
    assert any(translations.rglob("*.po")) or any(translations.rglob("*.mo")), "no catalogs"

import zeep
wsdl = package / "providers" / "wsdl" / "phoneconfirm.wsdl"
zeep.Client(str(wsdl))  # loads without network

from example_app import create_app

app = create_app({"TESTING": True, "SECRET_KEY": "x" * 32}, instance_path=sys.argv[2])
c = app.test_client()
import re
form = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/login").get_data(as_text=True))
assert form, "the login form carries no CSRF token"
c.post("/login", data={"email": "demo@example.com", "password": "demo", "csrf_token": form[1]})
page = c.get("/account")
assert page.status_code == 302 and "/phoneverify/" in page.location, page.status_code
verify = c.get(page.location)
assert verify.status_code == 200 and b"Call me" in verify.data
assert c.get("/phoneverify/static/phoneverify.css").status_code == 200
json = {"Accept": "application/json"}
post = {**json, "X-CSRFToken": c.get("/phoneverify/", headers=json).json["csrf_token"]}
started = c.post("/phoneverify/start", json={"next": "/account"}, headers=post).json
call = c.get("/phoneverify/dev/phone", headers=json).json["calls"][-1]
keys = c.post(f"/phoneverify/dev/phone/{call['id']}/keys", json={"digits": started["pin"]},
              headers=post)
assert keys.json["accepted"] is True, keys.json
done = c.post("/phoneverify/confirm", json={"token": started["token"]}, headers=post)
assert done.json == {"status": "verified", "next": "/account"}, done.json
assert c.get("/account").status_code == 200
print("verified through", where)
"""


def run(*args: str | Path, cwd: Path | None = None) -> str:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, f"{args}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.mark.slow
def test_build_check_install_and_verify_through_the_wheel(tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=SKIP)
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, source)
    wheels, sdists = list(dist.glob("*.whl")), list(dist.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1
    run(sys.executable, "-m", "twine", "check", "--strict", *wheels, *sdists)

    names = zipfile.ZipFile(wheels[0]).namelist()
    missing = [n for n in PACKAGE_DATA if n not in names]
    assert not missing, f"the wheel lacks {missing}"
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheels[0]).read(metadata).decode()
    assert "License-Expression: BSD-3-Clause" in text and "Project-URL: " in text
    assert "Classifier: Framework :: Flask" in text
    with tarfile.open(sdists[0]) as sdist:
        top = sdist.getnames()[0].split("/")[0]
        members = set(sdist.getnames())
    for name in ("CHANGES.md", "LICENSE.txt", "docs/conf.py", "tests/test_packaging.py"):
        assert f"{top}/{name}" in members, f"the sdist lacks {name}"

    venv = tmp_path / "fresh"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
        "--no-compile", *wheels)  # fmt: skip
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").strip())
    here = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (site / "_phoneverify_test_deps.pth").write_text("\n".join(sorted(here)) + "\n")

    app_dir = tmp_path / "app"
    shutil.copytree(ROOT / "example_app", app_dir / "example_app", ignore=SKIP)
    (app_dir / "check.py").write_text(CHECK)
    out = run(python, "check.py", ",".join(PACKAGE_DATA), tmp_path / "instance", cwd=app_dir)
    assert "verified through " + str(site) in out
