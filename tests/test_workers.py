"""The example app under ``gunicorn -w 4``: whole verifications over real HTTP, each
request landing on whichever worker accepts it.

Everything a verification needs must be shared by the workers (the database, the
session key): the dev phone's calls are listed, keyed and polled from any worker, and
a session made by one worker is read by the others. Every request opens a new
connection, so no keep-alive ties a client to one worker; the access log's process
ids show that several workers served.

Runs on SQLite, and on PostgreSQL too when PHONEVERIFY_TEST_POSTGRES names a server.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .loopback import free_port

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "/phoneverify"
VERIFICATIONS = 20
WORKERS = 4
STARTUP_TIMEOUT = 30.0
REQUEST_TIMEOUT = 10.0
POLLS = 50  # status polls while waiting for a keyed PIN to be seen, 0.1 s apart
PG = os.environ.get("PHONEVERIFY_TEST_POSTGRES")


class Server:
    """A running gunicorn: its base URL and its access log (one line per request,
    starting with the worker's process id)."""

    def __init__(self, base: str, access_log: Path) -> None:
        self.base = base
        self.access_log = access_log

    def worker_pids(self, under: str = "/") -> set[str]:
        """The workers that answered requests for paths under ``under``."""
        lines = [line.split(" ") for line in self.access_log.read_text().splitlines()]
        return {parts[0] for parts in lines if len(parts) > 2 and parts[2].startswith(under)}


def run_gunicorn(tmp_path: Path, style: str, database_uri: str) -> Iterator[Server]:
    port = free_port()
    instance = tmp_path / "instance"
    access_log = tmp_path / "access.log"
    env = {
        **os.environ,
        "FLASK_PHONEVERIFY_DEV_PHONE": "true",
        "FLASK_PHONEVERIFY_STYLE": style,
        "FLASK_PHONEVERIFY_DATABASE_URI": database_uri,
        "FLASK_PHONEVERIFY_NUMBER_COOLDOWN": "0",
        "FLASK_PHONEVERIFY_CALLS_PER_NUMBER_PER_HOUR": "100000",
        "FLASK_PHONEVERIFY_CALLS_PER_USER_PER_HOUR": "100000",
        "FLASK_PHONEVERIFY_CALLS_PER_IP_PER_HOUR": "100000",
        "FLASK_PHONEVERIFY_CALLS_PER_HOUR": "100000",
        "FLASK_PHONEVERIFY_CALLS_PER_COUNTRY_PER_HOUR": "100000",
        "FLASK_PHONEVERIFY_POLL_INTERVAL": "0",
    }
    env.pop("FLASK_SECRET_KEY", None)  # the workers must agree on the key they make
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        str(WORKERS),
        "--worker-class",
        "gthread",
        "--threads",
        "4",
        "--bind",
        f"127.0.0.1:{port}",
        "--graceful-timeout",
        "5",
        "--access-logfile",
        str(access_log),
        "--access-logformat",
        "%(p)s %(m)s %(U)s %(s)s",
        f"example_app:create_app(instance_path={str(instance)!r})",
    ]
    log = open(tmp_path / "gunicorn.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            assert proc.poll() is None, (tmp_path / "gunicorn.log").read_text()
            try:
                if httpx.get(base + "/login", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "gunicorn did not start in time"
            time.sleep(0.1)
        yield Server(base, access_log)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()


@pytest.fixture(params=["keypad", "spoken"])
def style(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server(tmp_path: Path, style: str, database_uri: str) -> Iterator[Server]:
    yield from run_gunicorn(tmp_path, style, database_uri)


class Browser:
    """One user's cookies; every request on a new connection (any worker may take it)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.cookies = httpx.Cookies()
        self.csrf = ""

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with httpx.Client(
            base_url=self.base,
            cookies=self.cookies,
            timeout=REQUEST_TIMEOUT,
            limits=httpx.Limits(max_keepalive_connections=0),
        ) as client:
            headers = {"Accept": "application/json", **kwargs.pop("headers", {})}
            if method == "POST" and self.csrf:
                headers["X-CSRFToken"] = self.csrf
            response = client.request(method, path, headers=headers, **kwargs)
            self.cookies = client.cookies
        return response

    def login(self) -> None:
        page = self.request("GET", "/login", headers={"Accept": "text/html"})
        form = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert form, "the login form carries no CSRF token"
        r = self.request(
            "POST",
            "/login",
            data={"email": "demo@example.com", "password": "demo", "csrf_token": form[1]},
            headers={"Accept": "text/html"},
        )
        assert r.status_code == 302, r.text
        r = self.request("GET", PREFIX + "/")
        assert r.status_code == 200, r.text
        self.csrf = r.json()["csrf_token"]


def ringing_call(browser: Browser, style: str) -> dict[str, Any]:
    """The newest call ringing on the dev phone, listed by whichever worker answers."""
    r = browser.request("GET", PREFIX + "/dev/phone")
    assert r.status_code == 200, r.text
    calls = [c for c in r.json()["calls"] if c["state"] != "ended" and c["style"] == style]
    assert calls, f"the call just placed is not on the dev phone's list: {r.json()}"
    return dict(calls[-1])


def gated_page_opens(browser: Browser) -> None:
    r = browser.request("GET", "/account", headers={"Accept": "text/html"})
    assert r.status_code == 200, (r.status_code, r.headers.get("location"))


def keypad_verification(browser: Browser) -> None:
    started = browser.request("POST", PREFIX + "/start", json={})
    assert started.status_code == 200, started.text
    body = started.json()
    call = ringing_call(browser, "keypad")
    assert call["pin"] is None  # a keypad call never shows the PIN
    keyed = browser.request(
        "POST", f"{PREFIX}/dev/phone/{call['id']}/keys", json={"digits": body["pin"]}
    )
    assert keyed.status_code == 200, keyed.text
    assert keyed.json()["accepted"] is True, keyed.json()
    for _ in range(POLLS):
        polled = browser.request("GET", f"{PREFIX}/status", params={"token": body["token"]})
        assert polled.status_code == 200, polled.text
        state = polled.json()["status"]
        assert state in ("calling", "verified"), polled.json()
        if state == "verified":
            break
        time.sleep(0.1)
    else:
        pytest.fail("the keyed PIN was never seen by /status")
    confirmed = browser.request("POST", PREFIX + "/confirm", json={"token": body["token"]})
    assert confirmed.status_code == 200, confirmed.text
    gated_page_opens(browser)


def spoken_verification(browser: Browser) -> None:
    started = browser.request("POST", PREFIX + "/start", json={})
    assert started.status_code == 200, started.text
    body = started.json()
    assert "pin" not in body  # the spoken PIN is only heard on the phone
    call = ringing_call(browser, "spoken")
    polled = browser.request("GET", f"{PREFIX}/status", params={"token": body["token"]})
    assert polled.status_code == 200 and polled.json()["status"] == "calling", polled.text
    confirmed = browser.request(
        "POST", PREFIX + "/confirm", json={"token": body["token"], "pin": call["pin"]}
    )
    assert confirmed.status_code == 200, confirmed.text
    gated_page_opens(browser)


def together(count: int, job: Any) -> None:
    """Run ``job`` ``count`` times over four concurrent users, as a site's visitors do (so
    the workers share the requests); the first failure is raised."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        for future in [pool.submit(job) for _ in range(count)]:
            future.result(timeout=STARTUP_TIMEOUT)


@contextlib.contextmanager
def other_visitors(base: str, count: int = 3) -> Iterator[None]:
    """Visitors reading the login page meanwhile, as on a live site: the workers are busy
    in turn, so one user's requests land on different workers."""
    stop = threading.Event()

    def visit() -> None:
        while not stop.is_set():
            with contextlib.suppress(httpx.TransportError):
                httpx.get(base + "/login", timeout=REQUEST_TIMEOUT)

    threads = [threading.Thread(target=visit, daemon=True) for _ in range(count)]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        stop.set()
        for t in threads:
            t.join(REQUEST_TIMEOUT)


def test_whole_verifications_under_four_workers(server: Server, style: str) -> None:
    verify = keypad_verification if style == "keypad" else spoken_verification
    with other_visitors(server.base):
        for _ in range(VERIFICATIONS):
            browser = Browser(server.base)
            browser.login()
            r = browser.request("GET", "/account", headers={"Accept": "text/html"})
            assert r.status_code == 302 and PREFIX in r.headers["location"]  # gated
            verify(browser)
    assert len(server.worker_pids(PREFIX)) > 1, "every verification request went to one worker"


def test_workers_share_one_generated_session_key(server: Server, tmp_path: Path) -> None:
    """A login made by one worker is honoured by all: the key generated at start-up is
    the same in every worker, and kept in the instance folder."""
    browser = Browser(server.base)
    browser.login()

    def ask() -> None:
        r = browser.request("GET", PREFIX + "/")
        assert r.status_code == 200, r.text  # logged in, whichever worker answered

    together(40, ask)
    assert len((tmp_path / "instance" / "secret_key").read_text().strip()) == 64
    assert len(server.worker_pids()) > 1, "every request went to one worker"
