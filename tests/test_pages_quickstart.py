"""The quickstart tells the truth: the loopback recipe servers say where they listen and
how to stop them, and the README names what the tests need beyond Python."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def test_a_recipe_server_prints_its_real_port_and_how_to_stop_it() -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.servers.veratad", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:(\d+) \(process (\d+): Ctrl\+C, or kill \2", line)
        assert found, line
        port, pid = int(found.group(1)), int(found.group(2))
        assert port != 0 and pid == server.pid
        # something answers on the printed port (whatever the vendor says to a bare GET)
        assert httpx.get(f"http://127.0.0.1:{port}/", trust_env=False).status_code > 0
        os.kill(pid, signal.SIGTERM)  # what "kill <pid>" does
        assert server.wait(timeout=10) is not None
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)
        if server.stdout is not None:
            server.stdout.close()


def test_readme_quickstart_installs_logs_in_and_names_what_the_tests_need() -> None:
    readme = (ROOT / "README.md").read_text()
    quickstart = readme[readme.index("## Quickstart") : readme.index("## How it works")]
    assert "pip install '/path/to/flask-phoneverify[login]'" in quickstart
    assert "LoginManager(app)" in quickstart and "@phoneverify.user_loader" in quickstart
    assert "ConfigError" in quickstart
    development = readme[readme.index("## Development") :]
    for needed in ("Chromium", "PostgreSQL", "PHONEVERIFY_TEST_POSTGRES", ".ci/run"):
        assert needed in development, needed
    assert "phoneverify reset" in readme
