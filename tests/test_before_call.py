"""@phoneverify.before_call: the app's own check before any call is placed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask_phoneverify import CallAttempt, CallRefused

from .helpers import Harness, begin, calls_placed, csrf, events, post


def test_the_hook_sees_the_attempt_before_the_call(harness: Harness) -> None:
    seen: list[CallAttempt] = []

    @harness.ext.before_call
    def look(attempt: CallAttempt) -> None:
        assert calls_placed(harness) == len(seen)  # nothing placed yet
        seen.append(attempt)

    c = harness.client()
    token, body = begin(c)
    post(c, "/resend", {"token": body["token"]}, token=token)
    assert [a.purpose for a in seen] == ["start", "resend"]
    first = seen[0]
    assert first.number == "+12015550123"
    assert first.country == "US"
    assert first.number_type == "FIXED_LINE_OR_MOBILE"
    assert first.user is harness.users["1"]
    assert first.user_id == "1"
    assert first.ip == "127.0.0.1"
    assert first.style == "keypad"
    assert first.enrol is False
    assert calls_placed(harness) == 2


def test_a_refusal_answers_403_places_and_counts_nothing_and_is_audited(
    make_app: Callable[..., Harness],
) -> None:
    h = make_app(PHONEVERIFY_CALLS_PER_NUMBER_PER_HOUR=1)
    refuse = True

    @h.ext.before_call
    def score(attempt: CallAttempt) -> None:
        if refuse:
            raise CallRefused("Our fraud checks stopped this call. Please contact support.")

    c = h.client()
    token = csrf(c)
    for _ in range(3):
        r = post(c, "/start", token=token)
        assert r.status_code == 403
        assert r.json == {
            "error": "call_refused",
            "message": "Our fraud checks stopped this call. Please contact support.",
        }
    assert calls_placed(h) == 0
    refused = events(h, "refused")
    assert len(refused) == 3 and refused[0].detail.startswith("Our fraud checks")
    assert events(h, "call") == [] and events(h, "started") == []
    refuse = False  # nothing was counted: the number's one call an hour is still there
    assert post(c, "/start", token=token).status_code == 200


def test_a_refusal_on_the_page_is_a_page_not_an_error(harness: Harness) -> None:
    @harness.ext.before_call
    def refuse(attempt: CallAttempt) -> Any:
        raise CallRefused()

    c = harness.client()
    token = csrf(c)
    r = c.post("/phoneverify/start", data={"csrf_token": token})
    assert r.status_code == 303  # Post/Redirect/Get: the verify page says it once
    assert b"This call cannot be placed." in c.get(r.location).data


def test_a_hook_registered_after_init_app_counts(harness: Harness) -> None:
    c = harness.client()
    begin(c)
    harness.ext.before_call(lambda attempt: (_ for _ in ()).throw(CallRefused("no")))
    r = post(c, "/start", token=csrf(c))
    assert r.status_code == 403 and r.json["message"] == "no"
