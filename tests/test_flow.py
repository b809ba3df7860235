"""The whole flow through the test client on the simulated phone, in both styles."""

from __future__ import annotations

from typing import Any

import pytest

from .helpers import (
    Harness,
    csrf,
    dev_calls,
    events,
    get_json,
    post,
    press,
    state_of,
    statements_of,
)
from .loopback import free_port


def test_keypad_flow_verifies_and_opens_the_gate(harness: Harness) -> None:
    c = harness.client()
    assert c.get("/secret").status_code == 302
    token = csrf(c)
    r = post(c, "/start", token=token)
    assert r.status_code == 200, r.json
    body = r.json
    assert body["status"] == "calling" and body["style"] == "keypad"
    assert len(body["pin"]) == 6 and body["pin"].isdigit()
    assert body["expires_at"].endswith("Z")
    call = dev_calls(c)[-1]
    assert call["pin"] is None and call["number"] == "+1******0123"
    assert body["pin"] not in call["text"]
    r = press(c, token, call["id"], body["pin"])
    assert r.json["accepted"] is True
    r = get_json(c, f"/status?token={body['token']}")
    assert r.json["status"] == "verified"
    r = post(c, "/confirm", {"token": body["token"]}, token=token)
    assert r.status_code == 200 and r.json == {"status": "verified", "next": "/"}
    r = c.get("/secret")
    assert r.status_code == 200 and r.data == b"the secret"
    assert r.headers["Cache-Control"] == "no-store"


def test_spoken_flow_checks_the_typed_pin(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_STYLE="spoken")
    c = h.client()
    token = csrf(c)
    body = post(c, "/start", token=token).json
    assert "pin" not in body and body["style"] == "spoken"
    call = dev_calls(c)[-1]
    assert call["style"] == "spoken" and call["pin"].isdigit()
    r = post(c, "/confirm", {"token": body["token"], "pin": call["pin"]}, token=token)
    assert r.status_code == 200 and r.json["status"] == "verified"
    assert c.get("/secret").status_code == 200


def test_spoken_pin_never_reaches_the_browser(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_STYLE="spoken")
    c = h.client()
    token = csrf(c)
    r = c.post("/phoneverify/start", data={"csrf_token": token})
    assert r.status_code == 303
    pin = dev_calls(h.client())[-1]["pin"]  # the phone: another device of the same user
    page = c.get("/phoneverify/wait")
    assert page.status_code == 200
    assert pin.encode() not in page.data
    with c.session_transaction() as s:
        assert pin not in repr(dict(s))


def test_keypad_confirm_before_the_phone_confirms_is_refused(harness: Harness) -> None:
    c = harness.client()
    token = csrf(c)
    body = post(c, "/start", token=token).json
    r = post(c, "/confirm", {"token": body["token"]}, token=token)
    assert r.status_code == 409
    assert "not confirmed" in r.json["message"]
    assert c.get("/secret").status_code == 302


def test_wrong_pin_counts_and_locks(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_STYLE="spoken", PHONEVERIFY_MAX_ATTEMPTS=3)
    c = h.client()
    token = csrf(c)
    body = post(c, "/start", token=token).json
    right = dev_calls(c)[-1]["pin"]
    wrong = "000000" if right != "000000" else "111111"
    r = post(c, "/confirm", {"token": body["token"], "pin": wrong}, token=token)
    assert r.status_code == 400 and r.json["error"] == "wrong_pin" and r.json["attempts_left"] == 2
    post(c, "/confirm", {"token": body["token"], "pin": wrong}, token=token)
    r = post(c, "/confirm", {"token": body["token"], "pin": wrong}, token=token)
    assert r.status_code == 429 and r.json["error"] == "locked"
    r = post(c, "/confirm", {"token": body["token"], "pin": right}, token=token)
    assert r.status_code == 429
    assert get_json(c, f"/status?token={body['token']}").json["status"] == "locked"
    assert c.get("/secret").status_code == 302


def test_wrong_keys_on_the_phone_count_as_attempts(harness: Harness) -> None:
    c = harness.client()
    token = csrf(c)
    body = post(c, "/start", token=token).json
    call = dev_calls(c)[-1]
    wrong = "000000" if body["pin"] != "000000" else "111111"
    r = press(c, token, call["id"], wrong)
    assert r.json["accepted"] is False and r.json["attempts_left"] == 4
    assert get_json(c, f"/status?token={body['token']}").json["attempts_left"] == 4


def test_expiry_uses_the_clock(harness: Harness) -> None:
    c = harness.client()
    token = csrf(c)
    body = post(c, "/start", token=token).json
    harness.clock.advance(601)
    r = get_json(c, f"/status?token={body['token']}")
    # read within the grace after the lifetime: the verification says it expired
    assert r.status_code == 200 and r.json["status"] == "expired"
    harness.clock.advance(600)
    r = get_json(c, f"/status?token={body['token']}")
    # past the grace the token itself has expired
    assert r.status_code == 400 and "expired" in r.json["message"]


def test_expired_verification_refuses_the_right_pin(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_STYLE="spoken", PHONEVERIFY_TTL=120)
    c = h.client()
    token = csrf(c)
    body = post(c, "/start", token=token).json
    pin = dev_calls(c)[-1]["pin"]
    h.clock.advance(119)
    st = h.ext.state(h.app)
    vid, _ = st.tokens.read_pending(body["token"], max_age=10**6)
    h.clock.advance(2)
    with h.app.app_context():
        v = st.flow.refresh(st.store.get(vid))
    assert v.status == "expired"
    # past its lifetime the pending token has expired too: the documented 400 for it
    r = post(c, "/confirm", {"token": body["token"], "pin": pin}, token=token)
    assert (r.status_code, r.json["error"]) == (400, "bad_request") and "expired" in r.json[
        "message"
    ]
    assert c.get("/secret").status_code == 302


def test_resend_places_a_new_call_with_a_new_pin_and_keeps_attempts(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_STYLE="spoken")
    c = h.client()
    token = csrf(c)
    body = post(c, "/start", token=token).json
    first = dev_calls(c)[-1]["pin"]
    wrong = "000000" if first != "000000" else "111111"
    post(c, "/confirm", {"token": body["token"], "pin": wrong}, token=token)
    r = post(c, "/resend", {"token": body["token"]}, token=token)
    assert r.status_code == 200 and r.json["token"] == body["token"]
    calls = dev_calls(c)
    assert len(calls) == 2
    second = calls[-1]["pin"]
    assert get_json(c, f"/status?token={body['token']}").json["attempts_left"] == 4
    if second != first:
        r = post(c, "/confirm", {"token": body["token"], "pin": first}, token=token)
        assert r.status_code == 400
    r = post(c, "/confirm", {"token": body["token"], "pin": second}, token=token)
    assert r.status_code == 200


def test_cancel_closes_the_verification(harness: Harness) -> None:
    c = harness.client()
    token = csrf(c)
    body = post(c, "/start", token=token).json
    r = post(c, "/cancel", {"token": body["token"]}, token=token)
    assert r.status_code == 200 and r.json == {"status": "canceled"}
    assert get_json(c, f"/status?token={body['token']}").json["status"] == "canceled"
    r = post(c, "/resend", {"token": body["token"]}, token=token)
    assert r.status_code == 409


def test_html_pages_walk_through(harness: Harness) -> None:
    c = harness.client()
    r = c.get("/secret")
    assert r.status_code == 302 and r.location.startswith("/phoneverify/?next=/secret")
    page = c.get(r.location)
    assert page.status_code == 200 and b"Call me" in page.data and b"+1******0123" in page.data
    assert page.headers["Cache-Control"] == "no-store"
    token = csrf(c)
    r = c.post("/phoneverify/start", data={"csrf_token": token, "next": "/secret"})
    assert r.status_code == 303 and r.location.endswith("/phoneverify/wait")
    page = c.get("/phoneverify/wait")
    assert page.status_code == 200
    call = dev_calls(c)[-1]
    with c.session_transaction() as s:
        pin = s["_phoneverify_pending"]["p"]
    assert f"PIN {' '.join(pin)}".encode() in page.data  # keypad: shown by design
    press(c, token, call["id"], pin)
    r = c.post("/phoneverify/confirm", data={"csrf_token": token})
    assert r.status_code == 303 and r.location == "/secret"
    assert c.get("/secret").data == b"the secret"


def unreachable_xverify() -> dict[str, Any]:
    """Settings for a real Xverify client pointed at a closed loopback port."""

    return {
        "PHONEVERIFY_PROVIDER": "xverify",
        "PHONEVERIFY_XVERIFY_URL": f"http://127.0.0.1:{free_port()}",
        "PHONEVERIFY_XVERIFY_API_KEY": "key",
        "PHONEVERIFY_XVERIFY_DOMAIN": "example.com",
    }


def test_provider_failure_marks_failed_and_shows_retry(make_app: Any) -> None:
    """A provider that cannot be reached (a real client, a closed loopback port)."""
    from sqlalchemy import select

    from flask_phoneverify.models import Verification

    h = make_app(
        **unreachable_xverify(),
        PHONEVERIFY_XVERIFY_TIMEOUT=2,
    )
    c = h.client()
    token = csrf(c)
    r = post(c, "/start", token=token)
    assert (
        r.status_code == 503 and r.json["error"] == "provider_error" and r.json["retryable"] is True
    )
    r = c.post("/phoneverify/start", data={"csrf_token": token})
    assert r.status_code == 303 and r.location == "/phoneverify/"  # Post/Redirect/Get
    page = c.get(r.location)
    assert page.status_code == 200 and b"Call me" in page.data and b"Traceback" not in page.data
    assert b'role="alert"' in page.data
    with h.ext.state(h.app).store.session() as s:
        statuses = [v.status for v in s.scalars(select(Verification))]
    assert statuses == ["failed", "failed"]


def test_a_call_never_placed_is_released_even_as_the_clock_moves(
    make_app: Any, monkeypatch: Any
) -> None:
    """Every reading of the clock moves it on (as a real one does between statements): the
    counted call of a start the provider refused is still found and released."""
    from sqlalchemy import select

    from flask_phoneverify.models import Event

    from .helpers import FakeClock

    def ticking(self: FakeClock) -> float:
        self.now += 0.013
        return self.now

    monkeypatch.setattr(FakeClock, "__call__", ticking)
    h = make_app(
        **unreachable_xverify(),
        PHONEVERIFY_NUMBER_COOLDOWN=60,
    )
    c = h.client()
    token = csrf(c)
    assert post(c, "/start", token=token).status_code == 503
    with h.ext.state(h.app).store.session() as s:
        kinds = [e.kind for e in s.scalars(select(Event).order_by(Event.id))]
    assert "call_released" in kinds and "call" not in kinds, kinds
    assert post(c, "/start", token=token).status_code == 503  # no cool-down left behind


def test_anonymous_gets_401_without_flask_login(harness: Harness) -> None:
    c = harness.client(None)
    assert c.get("/secret").status_code == 401
    assert get_json(c, "/").status_code == 401


def test_html_wrong_pin_shows_the_wait_page_with_the_error(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_STYLE="spoken")
    c = h.client()
    token = csrf(c)
    c.post("/phoneverify/start", data={"csrf_token": token})
    right = dev_calls(c)[-1]["pin"]
    wrong = "000000" if right != "000000" else "111111"
    r = c.post("/phoneverify/confirm", data={"csrf_token": token, "pin": wrong})
    assert r.status_code == 303 and r.location == "/phoneverify/wait"  # Post/Redirect/Get
    page = c.get(r.location)
    assert b"That PIN is not right. 4 tries left." in page.data and b'name="pin"' in page.data


def test_html_keypad_claim_too_early_explains(harness: Harness) -> None:
    c = harness.client()
    token = csrf(c)
    c.post("/phoneverify/start", data={"csrf_token": token})
    r = c.post("/phoneverify/confirm", data={"csrf_token": token})
    assert r.status_code == 303
    assert b"has not confirmed yet" in c.get(r.location).data


def test_the_simulated_phone_ends_a_call_whose_verification_closed(make_app: Any) -> None:
    """Canceled or locked on the page: the phone lists the call as ended and takes no more
    answers, keys or hang-ups, whichever worker serves it."""
    h = make_app(PHONEVERIFY_STYLE="spoken", PHONEVERIFY_MAX_ATTEMPTS=1)
    c = h.client()
    token = csrf(c)
    body = post(c, "/start", token=token).json
    assert dev_calls(c)[-1]["state"] == "ringing"
    assert post(c, "/cancel", {"token": body["token"]}, token=token).status_code == 200
    call = dev_calls(c)[-1]
    assert call["state"] == "ended"
    r = post(c, f"/dev/phone/{call['id']}/answer", token=token)
    assert r.status_code == 400 and "ended" in r.json["message"]

    body = post(c, "/start", token=token).json
    call = dev_calls(c)[-1]
    assert post(c, f"/dev/phone/{call['id']}/answer", token=token).json["state"] == "answered"
    wrong = "000000" if call["pin"] != "000000" else "111111"
    r = post(c, "/confirm", {"token": body["token"], "pin": wrong}, token=token)
    assert r.status_code == 429  # locked
    assert dev_calls(c)[-1]["state"] == "ended"
    r = post(c, f"/dev/phone/{call['id']}/hangup", token=token)
    assert r.status_code == 400 and "ended" in r.json["message"]


def spoken_call(h: Harness) -> tuple[Any, str, dict[str, Any], str]:
    """A spoken verification started on the dev phone: the client, its CSRF token, the
    start's answer and the PIN the call speaks."""
    c = h.client()
    token = csrf(c)
    body = post(c, "/start", token=token).json
    return c, token, body, dev_calls(c)[-1]["pin"]


def test_a_right_spoken_pin_is_confirmed_without_reading_the_verification_first(
    make_app: Any,
) -> None:
    """The dev phone checks nothing itself and is not polled: the right PIN verifies in one
    conditional update with its audit event, and the wrong one is still counted once."""
    h = make_app(PHONEVERIFY_STYLE="spoken", PHONEVERIFY_MAX_ATTEMPTS=3)
    c, token, body, right = spoken_call(h)
    statements = statements_of(state_of(h).store.engine)
    wrong = "000000" if right != "000000" else "111111"
    r = post(c, "/confirm", {"token": body["token"], "pin": wrong}, token=token)
    assert r.status_code == 400 and r.json["attempts_left"] == 2
    statements.clear()
    r = post(c, "/confirm", {"token": body["token"], "pin": right}, token=token)
    assert r.status_code == 200 and r.json["status"] == "verified"
    assert not [s for s in statements if s.lstrip().upper().startswith("SELECT")], statements
    assert [e.kind for e in events(h) if e.kind in ("confirmed", "wrong_pin")] == [
        "wrong_pin",
        "confirmed",
    ]
    assert c.get("/secret").status_code == 200


def test_a_spoken_pin_hashed_under_the_previous_key_still_confirms(
    make_app: Any, tmp_path: Any
) -> None:
    """A key rotation during a call: the PIN's hash was made under what is now in
    SECRET_KEY_FALLBACKS, so the one-statement check misses and the full check decides."""
    shared = f"sqlite:///{tmp_path}/rotated.sqlite3"
    before = make_app(PHONEVERIFY_STYLE="spoken", PHONEVERIFY_DATABASE_URI=shared)
    c, token, body, pin = spoken_call(before)
    old = before.app.config["SECRET_KEY"]
    after = make_app(
        PHONEVERIFY_STYLE="spoken",
        PHONEVERIFY_DATABASE_URI=shared,
        SECRET_KEY="a-new-key-after-rotation-0123456789",
        SECRET_KEY_FALLBACKS=[old],
    )
    c2 = after.client()
    with c.session_transaction() as s:
        kept = dict(s)
    with c2.session_transaction() as s:
        s.update(kept)
    r = post(c2, "/confirm", {"token": body["token"], "pin": pin}, token=token)
    assert r.status_code == 200 and r.json["status"] == "verified", r.json


@pytest.mark.parametrize("provider_has", ["news to poll", "its own check"])
def test_a_provider_with_something_to_add_gets_the_full_check(
    make_app: Any, monkeypatch: pytest.MonkeyPatch, provider_has: str
) -> None:
    """Only a provider that is not polled and does not check PINs itself takes the
    one-statement confirm: a polled one is read (and asked, when due) first, and one that
    checks PINs itself has the last word, even when it says no to the right PIN."""
    h = make_app(PHONEVERIFY_STYLE="spoken")
    provider = state_of(h).flow.provider
    if provider_has == "news to poll":
        monkeypatch.setattr(type(provider), "polled", True)
    else:
        monkeypatch.setattr(provider, "check_code", lambda call, pin: False)
    c, token, body, right = spoken_call(h)
    statements = statements_of(state_of(h).store.engine)
    r = post(c, "/confirm", {"token": body["token"], "pin": right}, token=token)
    if provider_has == "news to poll":
        assert r.status_code == 200 and r.json["status"] == "verified"
        assert any(s.lstrip().upper().startswith("SELECT") for s in statements)
    else:
        assert r.status_code == 400 and r.json["error"] == "wrong_pin"
        assert c.get("/secret").status_code == 302
