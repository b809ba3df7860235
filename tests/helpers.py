"""Plain helpers every test module shares: the test app's pieces (clock, users,
harness), requests through the test client, the simulated phone, the audit trail,
captured logs, a Flask-Login app, and a loopback vendor that answers what a test sets.

Fixtures live in ``conftest.py`` and build on these; no test module imports another.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, select
from werkzeug.wrappers import Request
from werkzeug.wrappers import Response as WResponse

from flask_phoneverify import PhoneVerify, phone_verified_required
from flask_phoneverify.models import Event, Verification

from .loopback import serve

SECRET = "test-secret-key-0123456789abcdef"
PHONE_1 = "+12015550123"  # user "1"'s number on file


# -- the test app ------------------------------------------------------------------------------


class FakeClock:
    """UNIX seconds that move only when a test says so."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class DemoUser:
    id: str
    phone: str | None
    is_authenticated: bool = True

    def get_id(self) -> str:
        return self.id


@dataclass
class Harness:
    """An app wired with PhoneVerify and a user_loader driven by a test header."""

    app: Flask
    ext: PhoneVerify
    clock: FakeClock
    users: dict[str, DemoUser] = field(default_factory=dict)
    saved_phones: list[tuple[str, str]] = field(default_factory=list)

    def client(self, user_id: str | None = "1") -> FlaskClient:
        client = self.app.test_client()
        if user_id is not None:
            client.environ_base["HTTP_X_TEST_USER"] = user_id
        return client

    def add_users(self, *ids: str, phone: str | None = None) -> None:
        for uid in ids:
            self.users[uid] = DemoUser(uid, phone)


def state_of(h: Harness) -> Any:
    """The extension's per-app state (store, flow, tokens, provider, settings)."""
    return h.ext.state(h.app)


# -- requests ----------------------------------------------------------------------------------


def csrf(client: FlaskClient) -> str:
    r = client.get("/phoneverify/", headers={"Accept": "application/json"})
    assert r.status_code == 200, r.data
    token: str = r.json["csrf_token"]  # type: ignore[index]
    return token


def post(
    client: FlaskClient, path: str, body: dict[str, Any] | None = None, *, token: str | None = None
) -> Any:
    headers = {"Accept": "application/json"}
    if token:
        headers["X-CSRFToken"] = token
    return client.post("/phoneverify" + path, json=body or {}, headers=headers)


def get_json(client: FlaskClient, path: str) -> Any:
    return client.get("/phoneverify" + path, headers={"Accept": "application/json"})


def begin(c: FlaskClient, **body: Any) -> tuple[str, dict[str, Any]]:
    """(CSRF token, JSON answer of /start) for a started verification."""
    token = csrf(c)
    r = post(c, "/start", body, token=token)
    assert r.status_code == 200, r.json
    answer: dict[str, Any] = r.json
    return token, answer


def session_dump(c: FlaskClient) -> str:
    with c.session_transaction() as s:
        return repr(dict(s))


# -- the database ------------------------------------------------------------------------------


def row(h: Harness, pending: str) -> Verification:
    """The verification a pending token names, as stored now."""
    st = state_of(h)
    vid, _ = st.tokens.read_pending(pending, max_age=10**9)
    v: Verification | None = st.store.get(vid)
    assert v is not None
    return v


def events(h: Harness, kind: str | None = None) -> list[Event]:
    """The audit trail, oldest first (only one kind of event when ``kind`` is given)."""
    with state_of(h).store.session() as s:
        query = select(Event).order_by(Event.id)
        if kind is not None:
            query = query.where(Event.kind == kind)
        return list(s.scalars(query))


def verifications(h: Harness) -> list[Verification]:
    with state_of(h).store.session() as s:
        return list(s.scalars(select(Verification)))


# -- the simulated phone -----------------------------------------------------------------------
# The dev phone's own record of its calls is the only way to tie a call to its verification;
# every test reads it through these helpers.


def _dev_call(h: Harness, pending: str) -> Any:
    v = row(h, pending)
    return next(c for c in reversed(state_of(h).provider.calls) if c.call_id == v.call_id)


def spoken_pin(h: Harness, pending: str) -> str:
    """The PIN the simulated phone speaks for this verification's current call."""
    pin: str = _dev_call(h, pending).pin
    return pin


def dev_call_id(h: Harness, pending: str) -> str:
    """The simulated phone's id for this verification's current call."""
    call_id: str = _dev_call(h, pending).id
    return call_id


def calls_placed(*harnesses: Harness) -> int:
    """Calls on the simulated phone of these apps (apps sharing a database share it)."""
    return len({c.id for h in harnesses for c in state_of(h).provider.calls})


def statements_of(engine: Any) -> list[str]:
    """The SQL of every statement ``engine`` runs from now on, in order (the listener
    also sends the store's hot statements through SQLAlchemy, as any listener does)."""
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    return seen


def dev_calls(client: FlaskClient) -> list[dict[str, Any]]:
    """The simulated phone's listing, as its page's JSON shows it."""
    r = get_json(client, "/dev/phone")
    assert r.status_code == 200
    calls: list[dict[str, Any]] = r.json["calls"]
    return calls


def press(c: FlaskClient, token: str, call_id: str, digits: str) -> Any:
    """Key ``digits`` in on the simulated phone's call ``call_id``."""
    return post(c, f"/dev/phone/{call_id}/keys", {"digits": digits}, token=token)


def wrong(pin: str) -> str:
    """A PIN of the same length that is certainly not ``pin``."""
    return str((int(pin) + 1) % 10 ** len(pin)).zfill(len(pin))


def verify_keypad(c: FlaskClient) -> dict[str, Any]:
    """Start a keypad verification, key the PIN in on the newest simulated call, take it."""
    token, body = begin(c)
    press(c, token, dev_calls(c)[-1]["id"], body["pin"])
    r = post(c, "/confirm", {"token": body["token"]}, token=token)
    assert r.status_code == 200, r.json
    return body


# -- logs --------------------------------------------------------------------------------------


def log_text(caplog: pytest.LogCaptureFixture) -> str:
    """Everything the app logged (the loopback servers' own request lines excepted)."""
    parts = []
    for rec in caplog.records:
        if rec.name == "werkzeug":
            continue
        parts.append(rec.getMessage())
        if rec.exc_text:
            parts.append(rec.exc_text)
    return "\n".join(parts)


# -- an app on Flask-Login ---------------------------------------------------------------------


def login_app(tmp_path: Any, **config: Any) -> Flask:
    """Users "1" and "2" log in at ``/as/<uid>`` and out at ``/logout``; ``/secret`` is gated."""
    from flask_login import LoginManager, UserMixin, login_user, logout_user

    class User(UserMixin):  # type: ignore[misc]
        def __init__(self, uid: str, phone: str) -> None:
            self.id = uid
            self.phone = phone

    users = {"1": User("1", PHONE_1), "2": User("2", "+12015550124")}
    app = Flask("loginapp", instance_path=str(tmp_path))
    app.config.update(TESTING=True, SECRET_KEY=SECRET, PHONEVERIFY_NUMBER_COOLDOWN=0)
    app.config.update(config)
    lm = LoginManager(app)
    lm.login_view = "login"
    lm.user_loader(users.get)
    PhoneVerify(app)

    @app.get("/login")
    def login() -> str:
        return "login page"

    @app.get("/as/<uid>")
    def as_user(uid: str) -> str:
        login_user(users[uid])
        return "in"

    @app.get("/logout")
    def logout() -> str:
        logout_user()
        return "out"

    @app.get("/secret")
    @phone_verified_required
    def secret() -> str:
        return "the secret"

    return app


# -- races over real HTTP ----------------------------------------------------------------------


def run_together(n: int, work: Any, args: Iterable[tuple[Any, ...]] | None = None) -> None:
    """Run ``work`` in ``n`` threads released at once by a barrier; wait for them all."""
    barrier = threading.Barrier(n)

    def go(*a: Any) -> None:
        barrier.wait()
        work(*a)

    arglist = list(args) if args is not None else [()] * n
    threads = [threading.Thread(target=go, args=a) for a in arglist]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)


def race_right_confirms(app: Flask, n: int = 8) -> list[int]:
    """Start a spoken-style verification, then post the right PIN from ``n`` threads at once."""
    with serve(app) as base:
        headers = {"Accept": "application/json", "X-Test-User": "1"}
        with httpx.Client(base_url=base, headers=headers) as client:
            token = client.get("/phoneverify/").json()["csrf_token"]
            body = client.post("/phoneverify/start", json={}, headers={"X-CSRFToken": token}).json()
            pin = client.get("/phoneverify/dev/phone").json()["calls"][-1]["pin"]
            cookies = dict(client.cookies)
        results: list[int] = []

        def confirm() -> None:
            with httpx.Client(base_url=base, headers=headers, cookies=cookies) as c:
                r = c.post(
                    "/phoneverify/confirm",
                    json={"token": body["token"], "pin": pin},
                    headers={"X-CSRFToken": token},
                )
                results.append(r.status_code)

        run_together(n, confirm)
    return results


# -- a loopback vendor -------------------------------------------------------------------------


class Recorder:
    """A loopback vendor: records each request and answers whatever the test last set."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        self.content_type = "text/xml"
        self.body = b""
        self.lock = threading.Lock()

    def answer(self, body: bytes | str, *, status: int = 200, content_type: str = "") -> None:
        with self.lock:
            self.body = body.encode() if isinstance(body, str) else body
            self.status = status
            self.content_type = content_type or self.content_type

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.status, self.content_type, self.body = 200, "text/xml", b""

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        seen = {
            "path": request.path,
            "query": request.query_string.decode(),
            "headers": dict(request.headers),
            "body": request.get_data(),
        }
        with self.lock:
            self.requests.append(seen)
            del self.requests[:-100]
            reply = WResponse(self.body, status=self.status, content_type=self.content_type)
        return reply(environ, start_response)


@contextlib.contextmanager
def scratch_postgres(server: str) -> Iterator[str]:
    """A fresh database on the PostgreSQL server ``server`` names, dropped afterwards."""
    import sqlalchemy as sa

    name = "pv_" + secrets.token_hex(6)
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        # the same server and options (a socket directory in the query string too)
        yield sa.make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
