"""What the gate costs: a view behind Flask-Login's ``login_required`` and
``phone_verified_required`` against the same view behind ``login_required`` alone.

    pip install -e '.[bench]'
    python bench/gate.py [--rounds 60] [--requests 200]

Both views have identical bodies and are served by one app to one logged-in client
whose phone was confirmed through a real verification (the dev phone, keypad style).
Machines here are shared and noisy, so the two are timed in alternating rounds in one
run and compared as the median of the per-round ratios; absolute times are only a
guide. Single rounds range from about 0.6 to 1.9, so sixty rounds by default: with
thirty the median itself moved by more than a point between runs. The ratio printed
is login_required's time per request divided by the gated view's, which is the gated
view's throughput relative to login_required alone.
Target: at least 0.97.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import close_app, interleaved, login, login_app, verify  # noqa: E402
from flask_login import login_required  # noqa: E402

from flask_phoneverify import phone_verified_required  # noqa: E402

TARGET = 0.97


def build(tmp: str) -> tuple[Any, Any]:
    app = login_app("gate", tmp, PHONEVERIFY_DATABASE_URI=f"sqlite:///{tmp}/gate.sqlite3")

    @app.get("/plain")
    @login_required
    def plain() -> str:
        return "the same body"

    @app.get("/both")
    @login_required
    @phone_verified_required
    def both() -> str:
        return "the same body"

    client = app.test_client()
    with open(os.devnull, "w") as quiet, contextlib.redirect_stderr(quiet):
        verify(client, login(client, 1), "keypad", 1)
    assert client.get("/both").status_code == 200
    assert client.get("/plain").status_code == 200
    return app, client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        app, client = build(tmp)

        def get(path: str) -> Any:
            def run() -> None:
                client.get(path)

            return run

        times = interleaved(
            {"login_required": get("/plain"), "gated": get("/both")}, args.rounds, args.requests
        )
        close_app(app)
    plain, gated = times["login_required"], times["gated"]
    ratios = [p / g for p, g in zip(plain, gated, strict=True)]
    ratio = statistics.median(ratios)
    print(f"login_required alone               median {statistics.median(plain) * 1e6:8.1f} us")
    print(f"login_required + phone_verified    median {statistics.median(gated) * 1e6:8.1f} us")
    print(
        f"gated throughput relative to login_required alone (login_required time / gated "
        f"time): median {ratio:.3f} (min {min(ratios):.3f}, max {max(ratios):.3f}) over "
        f"{args.rounds} rounds; target at least {TARGET}: {'MET' if ratio >= TARGET else 'NOT MET'}"
    )


if __name__ == "__main__":
    main()
