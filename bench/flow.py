"""What a whole verification costs on each store: start, key in the PIN, confirm.

Timed in alternating rounds in one run and reported as ratios against the SQLite
store (these machines are shared and noisy; absolute times are only a guide). With
PHONEVERIFY_TEST_POSTGRES set (a SQLAlchemy URL of a scratch database: the extension's
tables are created there), PostgreSQL runs beside SQLite.

    python bench/flow.py [--rounds 10] [--verifications 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any

from flask import Flask, request

from flask_phoneverify import PhoneVerify


class User:
    def __init__(self, uid: str) -> None:
        self.id = uid
        self.phone = f"+1201555{int(uid) % 10000:04d}"

    def get_id(self) -> str:
        return self.id


def build(uri: str, tmp: str, name: str) -> Any:
    app = Flask(name, instance_path=tmp)
    app.config.update(
        TESTING=True,
        SECRET_KEY="bench-secret-key-0123456789abcdef",
        PHONEVERIFY_DATABASE_URI=uri,
        PHONEVERIFY_NUMBER_COOLDOWN=0,
        PHONEVERIFY_CALLS_PER_USER_PER_HOUR=10**6,
        PHONEVERIFY_CALLS_PER_NUMBER_PER_HOUR=10**6,
        PHONEVERIFY_CALLS_PER_IP_PER_HOUR=10**6,
        PHONEVERIFY_CALLS_PER_HOUR=10**6,
    )
    ext = PhoneVerify()
    ext.user_loader(lambda: User(request.headers.get("X-User", "1")))
    ext.init_app(app)
    return app


def one_verification(app: Any, uid: int) -> None:
    c = app.test_client()
    c.environ_base["HTTP_X_USER"] = str(uid)
    h = {"Accept": "application/json"}
    token = c.get("/phoneverify/", headers=h).json["csrf_token"]
    h["X-CSRFToken"] = token
    body = c.post("/phoneverify/start", json={}, headers=h).json
    call = c.get("/phoneverify/dev/phone", headers=h).json["calls"][-1]
    c.post(f"/phoneverify/dev/phone/{call['id']}/keys", json={"digits": body["pin"]}, headers=h)
    r = c.post("/phoneverify/confirm", json={"token": body["token"]}, headers=h)
    assert r.status_code == 200, r.json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--verifications", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stores = {"sqlite": build(f"sqlite:///{tmp}/bench.sqlite3", tmp, "sqlite")}
        if os.environ.get("PHONEVERIFY_TEST_POSTGRES"):
            stores["postgresql"] = build(os.environ["PHONEVERIFY_TEST_POSTGRES"], tmp, "pg")
        times: dict[str, list[float]] = {name: [] for name in stores}
        uid = 0
        for _ in range(args.rounds):
            for name, app in stores.items():
                start = time.perf_counter()
                for _ in range(args.verifications):
                    uid += 1
                    one_verification(app, uid)
                times[name].append((time.perf_counter() - start) / args.verifications)
        base = times["sqlite"]
        for name, values in times.items():
            ratios = [v / b for v, b in zip(values, base, strict=True)]
            print(
                f"{name:10s} median {statistics.median(values) * 1e3:7.2f} ms/verification, "
                f"ratio to sqlite {statistics.median(ratios):.2f}"
            )


if __name__ == "__main__":
    main()
