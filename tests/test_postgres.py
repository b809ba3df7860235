"""The store on a real PostgreSQL server: the confirm race, locking and limits shared
by two apps (two worker processes) on one database.

Runs when PHONEVERIFY_TEST_POSTGRES names a server (``.ci/run`` starts one); CI fails
rather than skips when it is missing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from .helpers import csrf, get_json, post, race_right_confirms, scratch_postgres

SERVER = os.environ.get("PHONEVERIFY_TEST_POSTGRES")
if not SERVER:
    if os.environ.get("CI"):
        raise RuntimeError("CI must set PHONEVERIFY_TEST_POSTGRES (see .ci/run)")
    pytest.skip("PHONEVERIFY_TEST_POSTGRES is not set", allow_module_level=True)


@pytest.fixture
def pg_uri() -> Iterator[str]:
    """A fresh database per test, dropped afterwards."""
    assert SERVER is not None
    with scratch_postgres(SERVER) as uri:
        yield uri


def test_postgres_concurrent_right_confirms_exactly_one_wins(pg_uri: str, make_app: Any) -> None:
    h = make_app(PHONEVERIFY_STYLE="spoken", PHONEVERIFY_DATABASE_URI=pg_uri)
    results = race_right_confirms(h.app)
    assert sorted(results) == [200] + [409] * 7, results


def test_postgres_wrong_pins_lock(pg_uri: str, make_app: Any) -> None:
    h = make_app(PHONEVERIFY_STYLE="spoken", PHONEVERIFY_DATABASE_URI=pg_uri)
    c = h.client()
    token = csrf(c)
    body = post(c, "/start", token=token).json
    right = get_json(c, "/dev/phone").json["calls"][-1]["pin"]
    wrong = "000000" if right != "000000" else "111111"
    codes = [
        post(c, "/confirm", {"token": body["token"], "pin": wrong}, token=token).status_code
        for _ in range(5)
    ]
    assert codes == [400, 400, 400, 400, 429]
    assert (
        post(c, "/confirm", {"token": body["token"], "pin": right}, token=token).status_code == 429
    )


def test_postgres_call_limits_hold_across_two_workers(pg_uri: str, make_app: Any) -> None:
    config = {"PHONEVERIFY_DATABASE_URI": pg_uri, "PHONEVERIFY_CALLS_PER_USER_PER_HOUR": 3}
    workers = [make_app(**config), make_app(**config)]
    codes = []
    for i in range(6):
        c = workers[i % 2].client()
        codes.append(post(c, "/start", token=csrf(c)).status_code)
    assert codes == [200, 200, 200, 429, 429, 429]


def _drop_connections(uri: str) -> int:
    """What a database restart does to a worker's pooled connections: every other
    connection to the database is closed by the server."""
    import sqlalchemy as sa

    engine = sa.create_engine(uri, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        killed = conn.execute(
            sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
    engine.dispose()
    return int(killed)


@pytest.mark.parametrize("engine", ["own", "own-pinged", "app-without-pre-ping"])
def test_a_step_after_a_database_restart_retries_on_a_fresh_connection(
    pg_uri: str, make_app: Any, engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The extension's own engine pings before use; on the app's engine (no pre-ping) the
    step meets the dead connection and runs once more on a fresh one. Either way the
    person sees no error."""
    import flask_phoneverify.store

    db: Any = None
    if engine == "own-pinged":  # every pooled connection counts as idle: pinged at checkout
        monkeypatch.setattr(flask_phoneverify.store, "IDLE_PING", -1.0)
    if engine.startswith("own"):
        c = make_app(PHONEVERIFY_STYLE="spoken", PHONEVERIFY_DATABASE_URI=pg_uri).client()
    else:
        from flask import Flask
        from flask_sqlalchemy import SQLAlchemy

        from flask_phoneverify import PhoneVerify

        from .helpers import SECRET, DemoUser

        app = Flask("restart")
        app.config.update(TESTING=True, SECRET_KEY=SECRET, SQLALCHEMY_DATABASE_URI=pg_uri)
        app.config["PHONEVERIFY_STYLE"] = "spoken"
        db = SQLAlchemy(app)
        ext = PhoneVerify(app, db=db)
        ext.user_loader(lambda: DemoUser("1", "+12015550123"))
        with app.app_context():
            db.create_all()
        c = app.test_client()
    token = csrf(c)
    body = post(c, "/start", token=token).json
    pin = get_json(c, "/dev/phone").json["calls"][-1]["pin"]
    assert _drop_connections(pg_uri) >= 1
    r = get_json(c, f"/status?token={body['token']}")
    assert r.status_code == 200 and r.json["status"] == "calling"
    assert _drop_connections(pg_uri) >= 1
    r = post(c, "/confirm", {"token": body["token"], "pin": pin}, token=token)
    assert r.status_code == 200, r.json
    if db is not None:
        with c.application.app_context():
            db.engine.dispose()


def test_a_busy_threaded_worker_reuses_its_connections(pg_uri: str) -> None:
    """Eight steps at once in one process, twice: the second time every step finds a
    kept connection (an engine that closes its overflow connections on return would open
    three new ones, each a new server process)."""
    import threading

    from sqlalchemy import event

    from flask_phoneverify.store import Store

    store = Store(uri=pg_uri)
    opened: list[int] = []
    event.listen(store.engine, "connect", lambda *_: opened.append(1))
    together = threading.Barrier(8)
    held: list[int] = []

    def step() -> None:
        def read(tx: Any) -> None:
            together.wait(timeout=10)
            held.append(store.engine.pool.checkedout())
            tx.get("none")

        store.read(read)

    try:
        counts = []
        for _ in range(2):
            threads = [threading.Thread(target=step) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=30)
            counts.append(len(opened))
    finally:
        store.close()
    assert max(held) == 8  # all eight held a connection at once
    assert counts[0] >= 7, counts  # (one was opened before listening, to create the tables)
    assert counts[1] == counts[0], f"{counts[1] - counts[0]} new connections the second time"
