"""What the gate costs: a gated view against the same view ungated, side by side.

Machines here are shared and noisy, so the two are timed in alternating rounds in
one run and reported as a ratio (gated / plain); absolute times are only a guide.

    python bench/gate.py [--rounds 30] [--requests 200]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Any

from flask import Flask

from flask_phoneverify import PhoneVerify, phone_verified_required


class User:
    id = "1"
    phone = "+12015550123"
    is_authenticated = True

    def get_id(self) -> str:
        return self.id


def build(tmp: str) -> tuple[Flask, Any]:
    app = Flask("bench", instance_path=tmp)
    app.config.update(TESTING=True, SECRET_KEY="bench-secret-key-0123456789abcdef")
    ext = PhoneVerify()
    ext.user_loader(lambda: User())
    ext.init_app(app)

    @app.get("/plain")
    def plain() -> str:
        return "ok"

    @app.get("/gated")
    @phone_verified_required
    def gated() -> str:
        return "ok"

    client = app.test_client()
    with client.session_transaction() as s:
        s["_phoneverify"] = {"u": "1", "t": time.time(), "n": "x"}
    assert client.get("/gated").status_code == 200
    return app, client


def timed(client: Any, path: str, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        client.get(path)
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        _, client = build(tmp)
        plain, gated = [], []
        for _ in range(args.rounds):
            plain.append(timed(client, "/plain", args.requests))
            gated.append(timed(client, "/gated", args.requests))
        ratios = [g / p for g, p in zip(gated, plain, strict=True)]
        print(f"plain view  median {statistics.median(plain) * 1e6:8.1f} us/request")
        print(f"gated view  median {statistics.median(gated) * 1e6:8.1f} us/request")
        print(
            f"gated/plain ratio: median {statistics.median(ratios):.2f} "
            f"(min {min(ratios):.2f}, max {max(ratios):.2f}) over {args.rounds} rounds"
        )


if __name__ == "__main__":
    main()
