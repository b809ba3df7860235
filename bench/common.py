"""What the benches share: the store's engine, a small Flask-Login app with the
extension, the steps of a whole verification over the JSON API, scratch databases.

Benches drive the extension through its HTTP endpoints (``/start``, ``/status``,
``/confirm``, ``/dev/phone``, ``/dev/phone/<id>/keys``) and its public CSRF helper
(``flask_phoneverify.csrf.generate_csrf``, which the app's JSON login answers with, as
Flask-Security-Too's JSON login does); the one internal they reach is the store's engine,
looked up in :func:`store_engine`.
"""

from __future__ import annotations

import os
import secrets
import statistics
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask, jsonify, request
from flask_login import LoginManager, UserMixin, login_required, login_user

from flask_phoneverify import PhoneVerify, phone_verified_required
from flask_phoneverify.csrf import generate_csrf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # for tests.servers / tests.loopback (the loopback vendor servers)
    sys.path.insert(0, ROOT)

SECRET = "bench-secret-key-0123456789abcdef"
PREFIX = "/phoneverify"
#: limits high enough that a bench's many calls are never refused
GENEROUS = {
    "PHONEVERIFY_NUMBER_COOLDOWN": 0,
    "PHONEVERIFY_CALLS_PER_NUMBER_PER_HOUR": 10**6,
    "PHONEVERIFY_CALLS_PER_USER_PER_HOUR": 10**6,
    "PHONEVERIFY_CALLS_PER_IP_PER_HOUR": 10**6,
    "PHONEVERIFY_CALLS_PER_HOUR": 10**6,
    "PHONEVERIFY_CALLS_PER_COUNTRY_PER_HOUR": 10**6,
}


def store_engine(app: Flask) -> Any:
    """The SQLAlchemy engine the extension's store uses for ``app``.

    The only place a bench reaches into the extension's per-app state; adapt it here
    when that state moves."""
    with app.app_context():
        return app.extensions["phoneverify"].state(app).store.engine


def close_app(app: Flask) -> None:
    """Close the provider's clients and the store's own engine."""
    st = app.extensions["phoneverify"].state(app)
    st.provider.close()
    st.store.close()


class User(UserMixin):
    def __init__(self, uid: str) -> None:
        self.id = uid
        self.phone = phone_of(int(uid))


def phone_of(n: int) -> str:
    """A distinct valid US number per user (NANP 201-555-01xx style numbers are fictional
    but parse; the exchange varies so a million users get distinct numbers)."""
    return f"+1201{200 + n // 10000 % 700:03d}{n % 10000:04d}"


def login_app(name: str, instance: str, *, from_env: bool = False, **config: Any) -> Flask:
    """A small Flask-Login app: ``POST /login {"user": id, "password": id}`` (a JSON
    password login answering with the session's CSRF token), the extension, and
    ``/gated`` behind both gates. ``from_env``: also read ``FLASK_``-prefixed settings
    from the environment (under gunicorn)."""
    app = Flask(name, instance_path=instance)
    app.config.update(TESTING=True, SECRET_KEY=SECRET, **config)
    if from_env:
        app.config.from_prefixed_env()
    manager = LoginManager(app)
    manager.user_loader(lambda uid: User(uid))
    PhoneVerify(app)

    @app.post("/login")
    def login() -> Any:
        body = request.get_json(force=True)
        uid = str(body.get("user", ""))
        if not uid.isdigit() or not secrets.compare_digest(uid, str(body.get("password", ""))):
            return jsonify(error="bad login"), 401
        login_user(User(uid))
        return jsonify(ok=True, csrf_token=generate_csrf())

    @app.get("/gated")
    @login_required
    @phone_verified_required
    def gated() -> str:
        return "gated page"

    return app


# -- one verification over the JSON API (any client with .get/.post like Flask's test
#    client; responses need .status_code and a json() or .json) ---------------------------

JSON = {"Accept": "application/json"}


def body_of(response: Any) -> Any:
    data = response.json
    if not callable(data):
        return data
    try:
        return data()
    except ValueError:
        raise AssertionError(
            f"HTTP {response.status_code} answered {response.text[:120]!r}, not JSON"
        ) from None


def login(client: Any, uid: int) -> str:
    """Log ``uid`` in; returns the extension's CSRF token for this session, from the
    login's answer (a JSON client that has none asks ``GET <prefix>/`` for it)."""
    r = client.post("/login", json={"user": str(uid), "password": str(uid)})
    assert r.status_code == 200, r.status_code
    token: str = body_of(r)["csrf_token"]
    return token


def verify(client: Any, csrf: str, style: str, uid: int) -> None:
    """User ``uid``'s verification: start, the phone's part on the dev phone, one status
    poll, confirm, the gated page."""
    suffix = phone_of(uid)[-4:]
    h = {**JSON, "X-CSRFToken": csrf}
    r = client.post(PREFIX + "/start", json={}, headers=h)
    assert r.status_code == 200, (r.status_code, body_of(r))
    started = body_of(r)
    number = urllib.parse.quote(phone_of(uid))
    listing = body_of(client.get(PREFIX + f"/dev/phone?number={number}", headers=JSON))
    # the newest call still open to this user's number (the listing masks all but its
    # last four digits, which differ between the users of concurrent clients)
    calls = [
        c
        for c in listing["calls"]
        if c["state"] != "ended" and c["style"] == style and c["number"][-4:] == suffix
    ]
    assert calls, "the call is not on the dev phone"
    call = calls[-1]
    if style == "keypad":
        r = client.post(
            f"{PREFIX}/dev/phone/{call['id']}/keys", json={"digits": started["pin"]}, headers=h
        )
        assert r.status_code == 200 and body_of(r)["accepted"], body_of(r)
    r = client.get(f"{PREFIX}/status?token={started['token']}", headers=JSON)
    assert r.status_code == 200, body_of(r)
    confirm: dict[str, Any] = {"token": started["token"]}
    if style == "spoken":
        confirm["pin"] = call["pin"]
    r = client.post(PREFIX + "/confirm", json=confirm, headers=h)
    assert r.status_code == 200, body_of(r)
    r = client.get("/gated")
    assert r.status_code == 200, r.status_code


# -- timing ------------------------------------------------------------------------------


def interleaved(
    contenders: dict[str, Callable[[], None]], rounds: int, per_round: int
) -> dict[str, list[float]]:
    """Seconds per operation of each contender, one value per round; the contenders take
    turns inside each round (the order rotating), so drift hits them alike."""
    names = list(contenders)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            run = contenders[name]
            start = time.perf_counter()
            for _ in range(per_round):
                run()
            times[name].append((time.perf_counter() - start) / per_round)
    return times


def median_ratio(numerator: list[float], denominator: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


# -- PostgreSQL ----------------------------------------------------------------------------


@contextmanager
def scratch_postgres(server: str) -> Iterator[str]:
    """A fresh database on ``server`` (a SQLAlchemy URL), dropped afterwards."""
    import sqlalchemy as sa

    name = "pv_bench_" + secrets.token_hex(6)
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
