"""The store on a real PostgreSQL server: the confirm race, locking and limits shared
by two apps (two worker processes) on one database.

Runs when PHONEVERIFY_TEST_POSTGRES names a server (``.ci/run`` starts one); CI fails
rather than skips when it is missing.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from .helpers import csrf, get_json, post, race_right_confirms

SERVER = os.environ.get("PHONEVERIFY_TEST_POSTGRES")
if not SERVER:
    if os.environ.get("CI"):
        raise RuntimeError("CI must set PHONEVERIFY_TEST_POSTGRES (see .ci/run)")
    pytest.skip("PHONEVERIFY_TEST_POSTGRES is not set", allow_module_level=True)


@pytest.fixture
def pg_uri() -> Iterator[str]:
    """A fresh database per test, dropped afterwards."""
    import sqlalchemy as sa

    name = "pv_" + secrets.token_hex(6)
    admin = sa.create_engine(SERVER, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield SERVER.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


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
