"""A PIN works once even under a race: real HTTP server, real database, threads."""

from __future__ import annotations

import threading
from typing import Any

import httpx
from flask import Flask

from .loopback import serve


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
        barrier = threading.Barrier(n)

        def confirm() -> None:
            with httpx.Client(base_url=base, headers=headers, cookies=cookies) as c:
                barrier.wait()
                r = c.post(
                    "/phoneverify/confirm",
                    json={"token": body["token"], "pin": pin},
                    headers={"X-CSRFToken": token},
                )
                results.append(r.status_code)

        threads = [threading.Thread(target=confirm) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    return results


def test_concurrent_right_confirms_exactly_one_wins(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_STYLE="spoken")
    results = race_right_confirms(h.app)
    assert sorted(results) == [200] + [409] * 7, results
