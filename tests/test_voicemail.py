"""A spoken code that voicemail cannot capture, on the simulated phone: the call asks for one
random digit and speaks the code only after it; voicemail that answers fails the
verification; providers that cannot do this are named by one warning at init_app."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from flask_phoneverify.models import DevCallRow

from .helpers import Harness, begin, dev_calls, events, log_text, post, row, state_of

VOICEMAIL = "The call reached voicemail, not you."


def _spoken(make_app: Callable[..., Harness]) -> tuple[Harness, Any, str, dict[str, Any]]:
    h = make_app(PHONEVERIFY_STYLE="spoken")
    c = h.client()
    token, body = begin(c)
    return h, c, token, body


def test_spoken_call_asks_for_a_digit_and_speaks_the_code_only_after_it(
    make_app: Callable[..., Harness],
) -> None:
    h, c, token, body = _spoken(make_app)
    call = dev_calls(c)[-1]
    pin, digit = call["pin"], call["digit"]
    assert digit in set("123456789") and call["heard"] is False
    assert post(c, f"/dev/phone/{call['id']}/answer", token=token).json["state"] == "answered"
    call = dev_calls(c)[-1]
    assert call["text"].endswith(f"To hear your code, press {digit}.")
    assert " ".join(pin) not in call["text"]
    page = c.get("/phoneverify/dev/phone").get_data(as_text=True)
    assert f"press {digit}" in page and pin not in page and " ".join(pin) not in page
    assert row(h, body["token"]).call == "answered"  # nothing delivered yet

    r = post(c, f"/dev/phone/{call['id']}/keys", {"digits": digit}, token=token)
    assert r.json["heard"] is True
    call = dev_calls(c)[-1]
    assert call["heard"] is True and " ".join(pin) in call["text"]
    page = c.get("/phoneverify/dev/phone").get_data(as_text=True)
    assert pin in page
    assert row(h, body["token"]).call == "delivered"
    r = post(c, "/confirm", {"token": body["token"], "pin": pin}, token=token)
    assert r.status_code == 200, r.json


def test_another_key_hangs_up_without_the_code(make_app: Callable[..., Harness]) -> None:
    h, c, token, body = _spoken(make_app)
    call = dev_calls(c)[-1]
    post(c, f"/dev/phone/{call['id']}/answer", token=token)
    other = "1" if call["digit"] != "1" else "2"
    r = post(c, f"/dev/phone/{call['id']}/keys", {"digits": other}, token=token)
    assert r.json["heard"] is False and r.json["state"] == "ended"
    after = dev_calls(c)[-1]
    assert after["heard"] is False and " ".join(call["pin"]) not in after["text"]
    assert call["pin"] not in c.get("/phoneverify/dev/phone").get_data(as_text=True)
    v = row(h, body["token"])
    assert (v.status, v.call, v.attempts) == ("calling", "ended", 0)  # a new call may follow
    r = post(c, f"/dev/phone/{call['id']}/keys", {"digits": call["digit"]}, token=token)
    assert r.status_code == 400  # the call is over: the right digit comes too late


def test_keys_before_the_answer_are_refused(make_app: Callable[..., Harness]) -> None:
    _, c, token, _ = _spoken(make_app)
    call = dev_calls(c)[-1]
    r = post(c, f"/dev/phone/{call['id']}/keys", {"digits": call["digit"]}, token=token)
    assert r.status_code == 400 and r.json["message"] == "Answer the call first."


@pytest.mark.parametrize("style", ["spoken", "keypad"])
def test_voicemail_answering_fails_the_verification(
    make_app: Callable[..., Harness], style: str
) -> None:
    h = make_app(PHONEVERIFY_STYLE=style)
    c = h.client()
    token, body = begin(c)
    call = dev_calls(c)[-1]
    r = post(c, f"/dev/phone/{call['id']}/voicemail", token=token)
    assert r.status_code == 200 and r.json["state"] == "ended"
    assert r.json["message"] == VOICEMAIL
    status = c.get(
        f"/phoneverify/status?token={body['token']}", headers={"Accept": "application/json"}
    ).json
    assert (status["status"], status["reason"], status["message"]) == (
        "failed",
        "voicemail",
        VOICEMAIL,
    )
    assert dev_calls(c)[-1]["heard"] is False
    assert [e.detail for e in events(h, "call_failed")] == ["simulated answering machine"]
    page = c.get("/phoneverify/wait").get_data(as_text=True)
    assert VOICEMAIL in page


def test_voicemail_is_the_owners_action_and_only_while_ringing(
    make_app: Callable[..., Harness],
) -> None:
    h, c, token, body = _spoken(make_app)
    call = dev_calls(c)[-1]
    thief = h.client("2")
    thief_token, _ = begin(thief)
    r = post(thief, f"/dev/phone/{call['id']}/voicemail", token=thief_token)
    assert r.status_code == 404
    assert post(c, f"/dev/phone/{call['id']}/voicemail").status_code == 400  # no CSRF token
    post(c, f"/dev/phone/{call['id']}/answer", token=token)
    r = post(c, f"/dev/phone/{call['id']}/voicemail", token=token)
    assert r.status_code == 400
    assert row(h, body["token"]).status == "calling"


def test_the_code_is_sealed_with_its_digit_in_the_database(
    make_app: Callable[..., Harness],
) -> None:
    h, c, _, _ = _spoken(make_app)
    call = dev_calls(c)[-1]
    with state_of(h).store.session() as s:
        stored = s.query(DevCallRow).one()
    raw = bytes(stored.sealed_pin or b"")
    assert call["pin"].encode() not in raw and raw
    assert f"{call['digit']}:{call['pin']}".encode() not in raw


def test_spoken_style_warns_once_for_providers_that_read_the_code_to_anyone(
    make_app: Callable[..., Harness], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="flask_phoneverify")
    make_app(
        PHONEVERIFY_PROVIDER="xverify",
        PHONEVERIFY_STYLE="spoken",
        PHONEVERIFY_XVERIFY_API_KEY="key-0001",
        PHONEVERIFY_XVERIFY_DOMAIN="example.com",
    )
    warned = [r for r in caplog.records if "voicemail" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING
    assert "'xverify'" in warned[0].getMessage()
    caplog.clear()
    make_app(PHONEVERIFY_STYLE="spoken")  # the simulated phone asks for a digit first
    make_app(
        PHONEVERIFY_PROVIDER="voiceshot",
        PHONEVERIFY_STYLE="keypad",
        PHONEVERIFY_VOICESHOT_URL="http://127.0.0.1:9/ivrapi.asp",
        PHONEVERIFY_VOICESHOT_MENU_ID="1-1234",
        PHONEVERIFY_VOICESHOT_CALLER_ID="2015550100",
    )  # keypad: the code is never spoken
    assert "voicemail" not in log_text(caplog)
