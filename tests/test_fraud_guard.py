"""The fraud guard: a country whose recent calls stop converting is paused, across
workers, with one signal and one warning; owners of numbers they verified before pass."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from flask_phoneverify import country_paused
from flask_phoneverify.guard import CHECK_EVERY

from .helpers import DemoUser, Harness, calls_placed, csrf, events, log_text, post, verify_keypad

GUARD = {
    "PHONEVERIFY_FRAUD_GUARD_MIN_CONVERSION": 0.5,
    "PHONEVERIFY_FRAUD_GUARD_MIN_CALLS": 5,
    "PHONEVERIFY_CALLS_PER_IP_PER_HOUR": 1000,
    "PHONEVERIFY_CALLS_PER_COUNTRY_PER_HOUR": 1000,
    "PHONEVERIFY_CALLS_PER_HOUR": 1000,
}


def caller(h: Harness, n: int, phone: str) -> FlaskClient:
    """A client of a new user whose number on file is ``phone``."""
    uid = f"p{n}"
    h.users[uid] = DemoUser(uid, phone)
    return h.client(uid)


def start(c: FlaskClient) -> Any:
    return post(c, "/start", token=csrf(c))


def pump(h: Harness, count: int, first: int = 0) -> None:
    """A pumping burst: ``count`` calls to US numbers nobody confirms, left to expire."""
    for i in range(first, first + count):
        r = start(caller(h, i, f"+1201555{1000 + i:04d}"))
        assert r.status_code == 200, r.json
    h.clock.advance(601)  # they all end unverified


def test_a_pumping_burst_pauses_the_country(
    make_app: Callable[..., Harness], caplog: pytest.LogCaptureFixture
) -> None:
    h = make_app(**GUARD)
    heard: list[dict[str, Any]] = []

    def on_pause(sender: Any, **extra: Any) -> None:
        heard.append(extra)

    country_paused.connect(on_pause, h.app)
    try:
        pump(h, 5)
        placed = calls_placed(h)
        caplog.set_level(logging.WARNING, "flask_phoneverify")
        refused = [start(caller(h, 100 + i, f"+1201555{2000 + i:04d}")) for i in range(3)]
    finally:
        country_paused.disconnect(on_pause, h.app)
    for r in refused:
        assert r.status_code == 429
        assert r.json["error"] == "country_paused"
        assert 0 < int(r.headers["Retry-After"]) <= 3600
    assert calls_placed(h) == placed  # no call
    now = h.clock()
    assert heard == [{"country": "US", "until": now + 3600, "calls": 5, "conversion": 0.0}]
    assert log_text(caplog).count("calls to US paused") == 1
    assert len(events(h, "country_paused")) == 1
    # Another country is not paused.
    assert start(caller(h, 200, "+442079460000")).status_code == 200


def test_the_pause_ends_after_its_cooldown(make_app: Callable[..., Harness]) -> None:
    h = make_app(**GUARD, PHONEVERIFY_FRAUD_GUARD_COOLDOWN=600)
    pump(h, 5)
    assert start(caller(h, 50, "+12015553000")).status_code == 429
    h.clock.advance(3600)  # the pause and the window are over
    assert start(caller(h, 51, "+12015553001")).status_code == 200


def test_a_country_that_converts_is_not_paused(make_app: Callable[..., Harness]) -> None:
    h = make_app(**GUARD)
    for i in range(5):
        verify_keypad(caller(h, i, f"+1201555{1000 + i:04d}"))
    pump(h, 4, first=10)  # 5 of 9 verified: above half
    h.clock.advance(CHECK_EVERY)
    assert start(caller(h, 50, "+12015553000")).status_code == 200


def test_a_number_its_user_verified_before_is_exempt(make_app: Callable[..., Harness]) -> None:
    h = make_app(**GUARD)
    owner = caller(h, 99, "+12015559999")
    verify_keypad(owner)
    pump(h, 9, first=0)  # 1 of 10 verified
    assert start(caller(h, 60, "+12015553000")).status_code == 429
    assert start(owner).status_code == 200  # their own number, verified before
    # The same number for another account is not exempt.
    assert start(caller(h, 61, "+12015559999")).status_code == 429


def test_the_exempt_start_that_decides_the_pause_still_pauses(
    make_app: Callable[..., Harness],
) -> None:
    h = make_app(**GUARD)
    owner = caller(h, 99, "+12015559999")
    verify_keypad(owner)
    pump(h, 9, first=0)
    assert start(owner).status_code == 200
    assert len(events(h, "country_paused")) == 1
    assert start(caller(h, 60, "+12015553000")).status_code == 429


def test_the_pause_is_shared_by_every_worker(
    make_app: Callable[..., Harness], tmp_path: Any
) -> None:
    shared = {**GUARD, "PHONEVERIFY_DATABASE_URI": f"sqlite:///{tmp_path}/shared.sqlite3"}
    one, two = make_app(**shared), make_app(**shared)
    pump(one, 5)
    assert start(caller(one, 50, "+12015553000")).status_code == 429
    assert start(caller(two, 51, "+12015553001")).status_code == 429


def test_off_unless_min_conversion_is_set(make_app: Callable[..., Harness]) -> None:
    config = {k: v for k, v in GUARD.items() if "FRAUD" not in k}
    h = make_app(**config)
    pump(h, 8)
    assert start(caller(h, 50, "+12015553000")).status_code == 200


def test_pumping_on_each_database(make_app: Callable[..., Harness], database_uri: str) -> None:
    h = make_app(**GUARD, PHONEVERIFY_DATABASE_URI=database_uri)
    pump(h, 5)
    r = start(caller(h, 50, "+12015553000"))
    assert r.status_code == 429 and r.json["error"] == "country_paused"
    h.clock.advance(CHECK_EVERY)
    assert start(caller(h, 51, "+12015553001")).status_code == 429
    assert len(events(h, "country_paused")) == 1
