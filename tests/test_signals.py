"""Signals: each sent once, where its change happens, after it is committed, with a
VerificationInfo and never a PIN."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from flask_phoneverify import (
    VerificationInfo,
    call_failed,
    call_placed,
    phone_enrolled,
    phone_verified,
    verification_failed,
    verification_started,
)
from flask_phoneverify.providers.base import CallEvent, CallReport, CallState, Outcome

from .helpers import (
    Harness,
    begin,
    csrf,
    dev_call_id,
    dev_calls,
    post,
    press,
    row,
    spoken_pin,
    state_of,
    wrong,
)

ALL = {
    "verification_started": verification_started,
    "call_placed": call_placed,
    "call_failed": call_failed,
    "phone_verified": phone_verified,
    "phone_enrolled": phone_enrolled,
    "verification_failed": verification_failed,
}


@contextmanager
def recording(h: Harness) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Every signal the app sends, in order: (name, keyword arguments)."""
    seen: list[tuple[str, dict[str, Any]]] = []
    receivers = []
    for name, signal in ALL.items():

        def receiver(sender: Any, _name: str = name, **extra: Any) -> None:
            assert sender is h.app
            seen.append((_name, extra))

        signal.connect(receiver, h.app)
        receivers.append((signal, receiver))
    try:
        yield seen
    finally:
        for signal, receiver in receivers:
            signal.disconnect(receiver, h.app)


def names(seen: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [name for name, _ in seen]


def test_a_keypad_verification_sends_started_placed_then_verified(harness: Harness) -> None:
    c = harness.client()
    with recording(harness) as seen:
        token, body = begin(c)
        assert names(seen) == ["verification_started", "call_placed"]
        press(c, token, dev_calls(c)[-1]["id"], body["pin"])
        assert names(seen) == ["verification_started", "call_placed"]  # not claimed yet
        r = post(c, "/confirm", {"token": body["token"]}, token=token)
        assert r.status_code == 200
    assert names(seen) == ["verification_started", "call_placed", "phone_verified"]
    info = seen[-1][1]["verification"]
    assert isinstance(info, VerificationInfo)
    v = row(harness, body["token"])
    assert info == VerificationInfo(
        id=v.id,
        user_id="1",
        style="keypad",
        provider="dev",
        status="verified",
        masked_phone="+1******0123",
        country="US",
    )
    assert seen[-1][1]["phone"] == "+12015550123"
    assert seen[-1][1]["user"] is harness.users["1"]
    placed = seen[1][1]["verification"]
    assert placed.status == "calling" and placed.id == v.id
    assert body["pin"] not in repr(seen)


def test_a_resend_sends_started_and_placed_again(harness: Harness) -> None:
    c = harness.client()
    token, body = begin(c)
    with recording(harness) as seen:
        r = post(c, "/resend", {"token": body["token"]}, token=token)
        assert r.status_code == 200, r.json
    assert names(seen) == ["verification_started", "call_placed"]
    assert all(extra["verification"].id == row(harness, body["token"]).id for _, extra in seen)


def test_locking_sends_verification_failed_once_after_commit(
    make_app: Callable[..., Harness],
) -> None:
    h = make_app(PHONEVERIFY_STYLE="spoken", PHONEVERIFY_MAX_ATTEMPTS=2)
    c = h.client()
    token, body = begin(c)
    pin = spoken_pin(h, body["token"])
    stored: list[str] = []

    def look(sender: Any, verification: VerificationInfo, **extra: Any) -> None:
        # Sent once committed: another connection already sees the final status.
        v = state_of(h).store.get(verification.id)
        stored.append(v.status)

    verification_failed.connect(look, h.app)
    try:
        with recording(h) as seen:
            for _ in range(3):
                post(c, "/confirm", {"token": body["token"], "pin": wrong(pin)}, token=token)
    finally:
        verification_failed.disconnect(look, h.app)
    assert names(seen) == ["verification_failed"]
    assert seen[0][1]["reason"] == "locked"
    assert seen[0][1]["verification"].status == "locked"
    assert stored == ["locked"]


def test_the_hourly_failure_cap_fails_every_verification_it_locks(
    make_app: Callable[..., Harness],
) -> None:
    h = make_app(PHONEVERIFY_STYLE="spoken", PHONEVERIFY_MAX_FAILURES_PER_HOUR=2)
    a, b = h.client(), h.client()
    token_a, first = begin(a)
    token_b, second = begin(b)
    with recording(h) as seen:
        for _ in range(2):
            post(a, "/confirm", {"token": first["token"], "pin": "000000"}, token=token_a)
    reasons = {extra["verification"].id: extra["reason"] for _, extra in seen}
    assert reasons == {
        row(h, first["token"]).id: "locked",
        row(h, second["token"]).id: "locked",
    }
    assert names(seen) == ["verification_failed", "verification_failed"]


def test_expiry_sends_verification_failed_once_when_first_recorded(harness: Harness) -> None:
    c = harness.client()
    _, body = begin(c)
    harness.clock.advance(600)  # the verification's end, and the token's last second
    with recording(harness) as seen:
        for _ in range(2):
            r = c.get(
                "/phoneverify/status",
                query_string={"token": body["token"]},
                headers={"Accept": "application/json"},
            )
            assert r.json["status"] == "expired"
    assert [(n, e["reason"]) for n, e in seen] == [("verification_failed", "expired")]


def test_cancel_sends_verification_failed_canceled(harness: Harness) -> None:
    c = harness.client()
    token, body = begin(c)
    with recording(harness) as seen:
        assert post(c, "/cancel", {"token": body["token"]}, token=token).status_code == 200
    assert [(n, e["reason"]) for n, e in seen] == [("verification_failed", "canceled")]


def test_a_declined_call_sends_call_failed_then_verification_failed(harness: Harness) -> None:
    c = harness.client()
    token, body = begin(c)
    with recording(harness) as seen:
        r = post(c, f"/dev/phone/{dev_call_id(harness, body['token'])}/hangup", token=token)
        assert r.status_code == 200
    assert names(seen) == ["call_failed", "verification_failed"]
    assert seen[0][1]["message"] == "The call was declined."
    assert seen[1][1]["reason"] == "call_failed"
    assert seen[1][1]["verification"].status == "failed"


def test_voicemail_is_its_own_failure_reason(harness: Harness) -> None:
    c = harness.client()
    _, body = begin(c)
    v = row(harness, body["token"])
    report = CallReport(
        call=CallState.ENDED,
        outcome=Outcome.FAILED,
        reason="The call reached voicemail, not you.",
    )
    with recording(harness) as seen:
        state_of(harness).flow.apply_event(CallEvent(v.call_id, report))
    assert [(n, e.get("reason")) for n, e in seen] == [
        ("call_failed", None),
        ("verification_failed", "voicemail"),
    ]


def test_a_call_never_placed_sends_call_failed_once(make_app: Callable[..., Harness]) -> None:
    from .loopback import free_port

    h = make_app(
        PHONEVERIFY_PROVIDER="xverify",
        PHONEVERIFY_XVERIFY_URL=f"http://127.0.0.1:{free_port()}",
        PHONEVERIFY_XVERIFY_API_KEY="k" * 16,
        PHONEVERIFY_XVERIFY_DOMAIN="example.com",
        PHONEVERIFY_XVERIFY_TIMEOUT=2,
    )
    c = h.client()
    token = csrf(c)
    with recording(h) as seen:
        r = post(c, "/start", token=token)
    assert r.status_code == 503 and r.json["error"] == "provider_error"
    assert names(seen) == ["verification_started", "call_failed", "verification_failed"]
    assert seen[2][1]["reason"] == "call_failed"


def test_enrolment_sends_phone_enrolled_with_the_number(make_app: Callable[..., Harness]) -> None:
    h = make_app(
        PHONEVERIFY_ALLOW_ENROLMENT=True,
        PHONEVERIFY_DEFAULT_REGION="US",
        PHONEVERIFY_STYLE="spoken",
    )
    c = h.client("3")
    token = csrf(c)
    with recording(h) as seen:
        r = post(c, "/start", {"phone": "201 555 0199"}, token=token)
        pin = spoken_pin(h, r.json["token"])
        r = post(c, "/confirm", {"token": r.json["token"], "pin": pin}, token=token)
        assert r.status_code == 200
    assert names(seen) == [
        "verification_started",
        "call_placed",
        "phone_enrolled",
        "phone_verified",
    ]
    assert seen[2][1]["phone"] == "+12015550199"
    assert seen[2][1]["verification"].masked_phone == "+1******0199"
    assert pin not in repr(seen)


@pytest.mark.parametrize("status", ["verified", "failed"])
def test_receivers_of_another_app_hear_nothing(
    make_app: Callable[..., Harness], status: str
) -> None:
    one, other = make_app(), make_app()
    with recording(other) as seen:
        c = one.client()
        token, body = begin(c)
        if status == "failed":
            post(c, f"/dev/phone/{dev_call_id(one, body['token'])}/hangup", token=token)
    assert seen == []


def test_the_documented_account_lockout_counts_locked_and_call_failed_only(
    make_app: Callable[..., Harness],
) -> None:
    """docs/operations.md's receiver: honest users' expiries and cancels do not count."""
    h = make_app(
        PHONEVERIFY_STYLE="spoken",
        PHONEVERIFY_MAX_ATTEMPTS=1,
        PHONEVERIFY_CALLS_PER_NUMBER_PER_HOUR=10,
        PHONEVERIFY_CALLS_PER_USER_PER_HOUR=10,
    )
    failures: dict[str, int] = {}

    def count_failure(sender: Any, verification: VerificationInfo, reason: str, **extra: Any):  # type: ignore[no-untyped-def]
        if reason not in ("locked", "call_failed"):
            return
        failures[verification.user_id] = failures.get(verification.user_id, 0) + 1

    verification_failed.connect(count_failure, h.app)
    try:
        c = h.client()
        token, body = begin(c)
        post(c, "/cancel", {"token": body["token"]}, token=token)  # not counted
        token, body = begin(c)
        h.clock.advance(600)
        post(c, "/confirm", {"token": body["token"], "pin": "1"}, token=token)  # expired
        token, body = begin(c)
        post(c, f"/dev/phone/{dev_call_id(h, body['token'])}/hangup", token=token)  # counted
        token, body = begin(c)
        pin = wrong(spoken_pin(h, body["token"]))
        post(c, "/confirm", {"token": body["token"], "pin": pin}, token=token)  # locked
    finally:
        verification_failed.disconnect(count_failure, h.app)
    assert failures == {"1": 2}
