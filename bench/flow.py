"""What a whole verification costs, measured side by side in one run.

    pip install -e '.[bench]'
    python bench/flow.py [--rounds 7] [--per-round 20] [--events 200000]

Three measurements, each against its target (machines here are shared and noisy, so
everything is a count or a ratio of contenders timed in alternating rounds of one run;
absolute times are only a guide):

1. Database work of one spoken verification through a vendor provider (the loopback
   Xverify server from tests/servers/): login, start, one status poll, confirm, the gated
   page. Transactions and commits are counted with SQLAlchemy engine events ("begin",
   "commit") on the store's engine. Target: at most 4 commits and 8 transactions.
2. Complete verifications per second in-process (Flask's test client, the dev phone,
   SQLite), keypad and spoken, each with a JSON password login on a small Flask-Login
   app, against Flask-Security-Too's SMS two-factor flow (JSON password login with
   SECURITY_PASSWORD_HASH="plaintext", the code from a capturing SMS sender,
   POST /tf-validate, a protected page). Target: each style at least 4x Flask-Security.
3. ``start``'s median latency with --events call events in the last hour against an
   empty events table (default limits except the app-wide hourly budget, which is raised
   above the events inserted; users, numbers and client addresses spread so no start is
   refused). Target: ratio at most 1.3.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    GENEROUS,
    JSON,
    PREFIX,
    close_app,
    interleaved,
    login,
    login_app,
    median_ratio,
    phone_of,
    store_engine,
    verify,
)
from sqlalchemy import event, insert  # noqa: E402

COMMIT_TARGET = 4
TRANSACTION_TARGET = 8
SPEED_TARGET = 4.0
START_TARGET = 1.3


# -- 1. transactions and commits ------------------------------------------------------------


@contextmanager
def counting(engine: Any) -> Iterator[dict[str, int]]:
    counts = {"begin": 0, "commit": 0, "rollback": 0}

    def on(name: str) -> Callable[..., None]:
        def listener(*_: Any) -> None:
            counts[name] += 1

        return listener

    listeners = [(name, on(name)) for name in counts]
    for name, fn in listeners:
        event.listen(engine, name, fn)
    try:
        yield counts
    finally:
        for name, fn in listeners:
            event.remove(engine, name, fn)


def transactions(tmp: str) -> bool:
    from tests.loopback import serve
    from tests.servers.xverify import XverifyServer

    vendor = XverifyServer(api_key="bench-key", domain="example.com")
    with serve(vendor) as url:
        app = login_app(
            "count",
            tmp,
            PHONEVERIFY_DATABASE_URI=f"sqlite:///{tmp}/count.sqlite3",
            PHONEVERIFY_PROVIDER="xverify",
            PHONEVERIFY_XVERIFY_URL=url,
            PHONEVERIFY_XVERIFY_API_KEY="bench-key",
            PHONEVERIFY_XVERIFY_DOMAIN="example.com",
            PHONEVERIFY_POLL_INTERVAL=0,  # the one status poll asks the vendor
        )
        engine = store_engine(app)
        client = app.test_client()
        steps: list[tuple[str, dict[str, int]]] = []
        with counting(engine) as counts:
            csrf = login(client, 1)
            steps.append(("login", dict(counts)))
            h = {**JSON, "X-CSRFToken": csrf}
            started = client.post(PREFIX + "/start", json={}, headers=h)
            assert started.status_code == 200, started.json
            token = started.json["token"]
            steps.append(("start", dict(counts)))
            polled = client.get(f"{PREFIX}/status?token={token}", headers=JSON)
            assert polled.status_code == 200, polled.json
            steps.append(("status", dict(counts)))
            confirmed = client.post(
                PREFIX + "/confirm", json={"token": token, "pin": vendor.spoken_code()}, headers=h
            )
            assert confirmed.status_code == 200, confirmed.json
            steps.append(("confirm", dict(counts)))
            assert client.get("/gated").status_code == 200
            steps.append(("gated page", dict(counts)))
        close_app(app)
    print("1. One spoken verification through a vendor provider (Xverify on loopback)")
    before = {"begin": 0, "commit": 0}
    for step, after in steps:
        print(
            f"   {step:14s} transactions {after['begin'] - before['begin']:3d}   "
            f"commits {after['commit'] - before['commit']:3d}"
        )
        before = after
    ok = counts["commit"] <= COMMIT_TARGET and counts["begin"] <= TRANSACTION_TARGET
    print(
        f"   in all         transactions {counts['begin']:3d}   commits {counts['commit']:3d}"
        f"   (target: at most {TRANSACTION_TARGET} and {COMMIT_TARGET}) "
        f"{'MET' if ok else 'NOT MET'}"
    )
    return ok


# -- 2. verifications per second against Flask-Security-Too ---------------------------------


class CapturedSms:
    """Flask-Security's SMS sender for the bench: keeps the last message per number."""

    sent: dict[str, str] = {}

    def send_sms(self, from_number: str, to_number: str, msg: str) -> None:
        CapturedSms.sent[to_number] = msg


def security_app(tmp: str, users: int) -> tuple[Any, Callable[[int], None]]:
    """Flask-Security-Too with SMS two-factor required; returns the app and one whole
    login (password, code, protected page) for user n."""
    from flask import Flask
    from flask_security import Security, SQLAlchemyUserDatastore, auth_required
    from flask_security.models import fsqla_v3 as fsqla
    from flask_security.utils import SmsSenderBaseClass, SmsSenderFactory
    from flask_sqlalchemy import SQLAlchemy

    class Sender(SmsSenderBaseClass, CapturedSms):
        def send_sms(self, from_number: str, to_number: str, msg: str) -> None:
            CapturedSms.send_sms(self, from_number, to_number, msg)

    SmsSenderFactory.senders["bench-capture"] = Sender
    app = Flask("fst", instance_path=tmp)
    app.config.update(
        TESTING=True,
        SECRET_KEY="bench-secret-key-0123456789abcdef",
        SECURITY_PASSWORD_SALT="bench-salt",
        SECURITY_PASSWORD_HASH="plaintext",
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp}/fst.sqlite3",
        SECURITY_TWO_FACTOR=True,
        SECURITY_TWO_FACTOR_REQUIRED=True,
        SECURITY_TWO_FACTOR_ENABLED_METHODS=["sms"],
        SECURITY_SMS_SERVICE="bench-capture",
        SECURITY_SMS_SERVICE_CONFIG={"PHONE_NUMBER": "+12015550100"},
        SECURITY_TWO_FACTOR_ALWAYS_VALIDATE=True,
        SECURITY_TOTP_SECRETS={"1": "bench-totp-secret-0123456789abcdef"},
        SECURITY_TOTP_ISSUER="bench",
        WTF_CSRF_ENABLED=False,  # JSON API without CSRF: the lighter Flask-Security path
    )
    db = SQLAlchemy(app)
    fsqla.FsModels.set_db_info(db)

    class Role(db.Model, fsqla.FsRoleMixin):  # type: ignore[name-defined,misc]
        __tablename__ = "role"

    class FsUser(db.Model, fsqla.FsUserMixin):  # type: ignore[name-defined,misc]
        __tablename__ = "user"

    datastore = SQLAlchemyUserDatastore(db, FsUser, Role)
    security = Security(app, datastore)

    @app.get("/protected")
    @auth_required()
    def protected() -> str:
        return "protected page"

    with app.app_context():
        db.create_all()
        for n in range(users):
            user = datastore.create_user(email=f"u{n}@example.com", password=f"pw{n}")
            datastore.tf_set(
                user,
                "sms",
                totp_secret=security._totp_factory.generate_totp_secret(),
                phone=phone_of(n),
            )
        db.session.commit()

    def one(n: int) -> None:
        client = app.test_client()
        r = client.post("/login", json={"email": f"u{n}@example.com", "password": f"pw{n}"})
        assert r.status_code == 200 and r.json["response"].get("tf_required"), r.json
        code = re.search(r"\d{6}", CapturedSms.sent[phone_of(n)])
        assert code is not None
        r = client.post("/tf-validate", json={"code": code.group()})
        assert r.status_code == 200, r.json
        assert client.get("/protected").status_code == 200

    return app, one


def throughput(tmp: str, rounds: int, per_round: int) -> bool:
    users = rounds * per_round
    _, fst_one = security_app(tmp, users)
    apps = {
        style: login_app(
            style,
            tmp,
            PHONEVERIFY_DATABASE_URI=f"sqlite:///{tmp}/{style}.sqlite3",
            PHONEVERIFY_STYLE=style,
            **GENEROUS,
        )
        for style in ("keypad", "spoken")
    }
    counters = {"keypad": 0, "spoken": 0, "fst": 0}

    def ours(style: str) -> Callable[[], None]:
        app = apps[style]

        def run() -> None:
            counters[style] += 1
            client = app.test_client()
            verify(client, login(client, counters[style]), style, counters[style])

        return run

    def theirs() -> None:
        fst_one(counters["fst"] % users)
        counters["fst"] += 1

    for run in (ours("keypad"), ours("spoken"), theirs):  # warm up
        run()
    times = interleaved(
        {"keypad": ours("keypad"), "spoken": ours("spoken"), "flask-security": theirs},
        rounds,
        per_round,
    )
    for app in apps.values():
        close_app(app)
    print("2. Complete verifications per second, in-process, SQLite, each with a login")
    for name, values in times.items():
        print(f"   {name:15s} {1 / statistics.median(values):7.1f} per second")
    ok = True
    for style in ("keypad", "spoken"):
        ratio = median_ratio(times["flask-security"], times[style])
        ok = ok and ratio >= SPEED_TARGET
        print(
            f"   {style} / Flask-Security-Too SMS two-factor: {ratio:.2f}x "
            f"(target: at least {SPEED_TARGET}x) {'MET' if ratio >= SPEED_TARGET else 'NOT MET'}"
        )
    return ok


# -- 3. start with a full events table ------------------------------------------------------


def fill_events(app: Any, n: int) -> None:
    """What ``n`` calls spread over the last hour leave in the store: their call events,
    and the limit counters they bumped (per number, user, client address and app, per
    minute, and each number's last call), written straight with SQL."""
    from sqlalchemy import MetaData, Table

    engine = store_engine(app)
    table = Table("phoneverify_events", MetaData(), autoload_with=engine)
    now = time.time()
    batch = 20_000
    with engine.begin() as conn:
        for first in range(0, n, batch):
            rows = [
                {
                    "at": now - 3500 * (i / n),
                    "kind": "call",
                    "verification_id": None,
                    "user_id": f"bg{i // 2}",
                    "phone": phone_of(1_000_000 + i // 2),
                    "ip": f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}",
                    "detail": None,
                }
                for i in range(first, min(first + batch, n))
            ]
            conn.execute(insert(table), rows)
        minute = "CAST(at / 60 AS INTEGER)"
        budgets = (
            ("number", "phone"),
            ("user", "user_id"),
            ("ip", "ip"),
            ("country", "'US'"),
            ("app", "'*'"),
        )
        for scope, key in budgets:
            conn.exec_driver_sql(
                "INSERT INTO phoneverify_counters (scope, key, minute, n, last_at, prev_at) "
                f"SELECT '{scope}', {key}, {minute}, count(*), max(at), NULL "
                f"FROM phoneverify_events WHERE kind = 'call' GROUP BY {key}, {minute}"
            )
        conn.exec_driver_sql(
            "INSERT INTO phoneverify_counters (scope, key, minute, n, last_at, prev_at) "
            "SELECT 'last_call', phone, 0, 0, max(at), NULL "
            "FROM phoneverify_events WHERE kind = 'call' GROUP BY phone"
        )


def start_latency(tmp: str, rounds: int, per_round: int, events: int) -> bool:
    budget = {
        "PHONEVERIFY_CALLS_PER_HOUR": events * 10,
        "PHONEVERIFY_CALLS_PER_COUNTRY_PER_HOUR": events * 10,
    }
    apps = {
        name: login_app(
            f"start-{name}",
            tmp,
            PHONEVERIFY_DATABASE_URI=f"sqlite:///{tmp}/start-{name}.sqlite3",
            **budget,
        )
        for name in ("empty", "full")
    }
    fill_events(apps["full"], events)
    counter = {"n": 0}

    def starter(app: Any) -> Callable[[], float]:
        def run() -> float:
            counter["n"] += 1
            n = counter["n"]
            client = app.test_client()
            client.environ_base["REMOTE_ADDR"] = f"172.16.{n // 256 % 256}.{n % 256}"
            csrf = login(client, n)
            began = time.perf_counter()
            r = client.post(PREFIX + "/start", json={}, headers={**JSON, "X-CSRFToken": csrf})
            took = time.perf_counter() - began
            assert r.status_code == 200, r.json
            return took

        return run

    samples: dict[str, list[float]] = {"empty": [], "full": []}
    runs = {name: starter(app) for name, app in apps.items()}
    for name in runs:  # warm up
        runs[name]()
    for r in range(rounds):
        for name in ("empty", "full") if r % 2 == 0 else ("full", "empty"):
            samples[name] += [runs[name]() for _ in range(per_round)]
    for app in apps.values():
        close_app(app)
    empty, full = (statistics.median(samples[k]) for k in ("empty", "full"))
    ratio = full / empty
    print(f"3. start's median latency, {events} call events in the last hour vs none")
    print(f"   empty table    {empty * 1e3:7.2f} ms")
    print(f"   {events} events {full * 1e3:7.2f} ms")
    print(
        f"   ratio full / empty: {ratio:.2f} (target: at most {START_TARGET}) "
        f"{'MET' if ratio <= START_TARGET else 'NOT MET'}"
    )
    return ratio <= START_TARGET


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--per-round", type=int, default=20)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument(
        "--only", choices=("transactions", "throughput", "start"), help="run one measurement"
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # Flask-Security's notes about plaintext passwords
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the loopback vendor's request log
    quiet = open(os.devnull, "w")  # noqa: SIM115 - the dev phone's notice of each call
    with tempfile.TemporaryDirectory() as tmp, quiet, contextlib.redirect_stderr(quiet):
        results = []
        if args.only in (None, "transactions"):
            results.append(transactions(tmp))
        if args.only in (None, "throughput"):
            results.append(throughput(tmp, args.rounds, args.per_round))
        if args.only in (None, "start"):
            results.append(start_latency(tmp, args.rounds, args.per_round, args.events))
    print(f"targets met: {sum(results)} of {len(results)}")


if __name__ == "__main__":
    main()
