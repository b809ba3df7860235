"""Security rules 8-9: state changes are POSTs with this session's CSRF token; pending tokens,
callback addresses and CSRF tokens do not mix, expire as they should and survive key
rotation.

Each test drives the real flow, store and views (the test client, or a real loopback
server with threads), so it fails when the rule breaks. docs/security.md maps every rule
to its source and to the tests proving it; the tests keep their rule-numbered names.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient
from itsdangerous import URLSafeTimedSerializer

from flask_phoneverify.tokens import CALLBACK_SALT, CSRF_SALT, PENDING_SALT, READ_GRACE

from .helpers import (
    SECRET,
    Harness,
    begin,
    calls_placed,
    csrf,
    dev_call_id,
    get_json,
    post,
    press,
    row,
    spoken_pin,
    state_of,
    verify_keypad,
)

NEW_KEY = "a-brand-new-secret-key-0123456789"


# == Rule 8: CSRF ============================================================================

STATE_CHANGING = ["start", "confirm", "resend", "cancel", "keys", "answer", "hangup"]


def _action_path(action: str, h: Harness, pending: str) -> str:
    if action in ("keys", "answer", "hangup"):
        return f"/phoneverify/dev/phone/{dev_call_id(h, pending)}/{action}"
    return f"/phoneverify/{action}"


@pytest.mark.parametrize("action", STATE_CHANGING)
def test_rule_08_state_changes_are_posts(make_app: Any, action: str) -> None:
    h = make_app(PHONEVERIFY_STYLE="spoken" if action == "confirm" else "keypad")
    c = h.client()
    token, body = begin(c)
    pin = body.get("pin") or spoken_pin(h, body["token"])
    path = _action_path(action, h, body["token"])
    before = (calls_placed(h), row(h, body["token"]).status)
    for method in ("GET", "HEAD", "PUT", "DELETE"):
        r = c.open(
            path,
            method=method,
            query_string={"token": body["token"], "pin": pin, "digits": pin, "csrf_token": token},
            headers={"X-CSRFToken": token},
        )
        assert r.status_code == 405, (method, path, r.status_code)
    assert (calls_placed(h), row(h, body["token"]).status) == before
    assert c.get("/secret").status_code == 302


@pytest.mark.parametrize("action", STATE_CHANGING)
def test_rule_08_state_changes_need_this_sessions_csrf_token(make_app: Any, action: str) -> None:
    h = make_app(PHONEVERIFY_STYLE="spoken" if action in ("confirm", "answer") else "keypad")
    c = h.client()
    token, body = begin(c)
    pin = body.get("pin") or spoken_pin(h, body["token"])
    path = _action_path(action, h, body["token"])
    other = h.client()
    foreign = csrf(other)  # valid, but for another session
    signed_elsewhere = URLSafeTimedSerializer(
        "another-secret-key-0123456789abcdef", salt=CSRF_SALT
    ).dumps("x")
    data = {"token": body["token"], "pin": pin, "digits": pin}
    before = row(h, body["token"])
    placed = calls_placed(h)
    attempts: list[Any] = [
        c.post(path, json=data, headers={"Accept": "application/json"}),
        c.post(path, data=data),  # a plain cross-site form
        c.post(path, data={**data, "csrf_token": "forged"}),
        c.post(path, data={**data, "csrf_token": foreign}),
        c.post(path, data={**data, "csrf_token": signed_elsewhere}),
        c.post(path, json=data, headers={"X-CSRFToken": foreign, "Accept": "application/json"}),
        c.post(path, json={**data, "csrf_token": token}, headers={"Accept": "application/json"}),
        c.post(path, query_string={"csrf_token": token}, data=data),
    ]
    for r in attempts:
        assert r.status_code == 400, (action, r.status_code, r.data[:200])
        if r.is_json:
            assert r.json["error"] == "csrf"
    after = row(h, body["token"])
    assert (after.status, after.attempts, after.sends, after.call) == (
        before.status,
        before.attempts,
        before.sends,
        before.call,
    )
    assert calls_placed(h) == placed
    assert c.get("/secret").status_code == 302
    # with the token, the same form post goes through (redirected onwards) and acts
    r = c.post(path, data={**data, "csrf_token": token})
    assert r.status_code == 303, (action, r.status_code, r.data[:200])
    done = row(h, body["token"])
    acted = (done.status, done.call, done.sends, calls_placed(h))
    assert acted != (before.status, before.call, before.sends, placed), action


def test_rule_08_status_get_only_records_what_the_provider_reports(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_STYLE="spoken")
    c = h.client()
    token, body = begin(c)
    pin = spoken_pin(h, body["token"])
    for _ in range(3):
        r = c.get(
            "/phoneverify/status",
            query_string={"token": body["token"], "pin": pin, "csrf_token": token},
            headers={"Accept": "application/json"},
        )
        assert r.status_code == 200 and r.json["status"] == "calling"
    c.get("/phoneverify/wait", query_string={"pin": pin})
    c.get("/phoneverify/", query_string={"pin": pin})
    v = row(h, body["token"])
    assert (v.status, v.attempts, v.sends, v.claimed_at) == ("calling", 0, 1, None)
    assert c.get("/secret").status_code == 302
    # keypad: the phone's confirmation shows in status, the gate opens only on the POST
    k = make_app()
    kc = k.client()
    token, body = begin(kc)
    press(kc, token, dev_call_id(k, body["token"]), body["pin"])
    assert get_json(kc, f"/status?token={body['token']}").json["status"] == "verified"
    assert kc.get("/secret").status_code == 302
    assert row(k, body["token"]).claimed_at is None


# == Rule 9: tokens ==========================================================================


def test_rule_09_token_purposes_have_distinct_salts_and_do_not_mix(harness: Harness) -> None:
    assert len({PENDING_SALT, CALLBACK_SALT, CSRF_SALT}) == 3
    st = state_of(harness)
    c = harness.client()
    token, body = begin(c)
    callback = st.tokens.make_callback("dev")
    for not_pending in (callback, token):
        r = get_json(c, f"/status?token={not_pending}")
        assert r.status_code == 400 and r.json["error"] == "bad_request"
        r = post(c, "/confirm", {"token": not_pending}, token=token)
        assert r.status_code == 400
    for not_csrf in (body["token"], callback):
        assert post(c, "/cancel", {"token": body["token"]}, token=not_csrf).status_code == 400
    for not_callback in (body["token"], token):
        r = c.post(f"/phoneverify/callback/dev/{not_callback}", data=b"<x/>")
        assert r.status_code == 403
    assert row(harness, body["token"]).status == "calling"


def test_rule_09_pending_token_expires_with_its_verification(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_TTL=120)
    c = h.client()
    token, body = begin(c)
    h.clock.advance(119)
    assert get_json(c, f"/status?token={body['token']}").json["status"] == "calling"
    h.clock.advance(2)
    # past the lifetime every POST is refused, while status (and the wait page) still read
    # the token for READ_GRACE seconds, to tell the person it expired
    r = post(c, "/confirm", {"token": body["token"]}, token=token)
    assert r.status_code == 400 and "expired" in r.json["message"]
    r = get_json(c, f"/status?token={body['token']}")
    assert r.status_code == 200 and r.json["status"] == "expired"
    assert b"This verification has expired" in c.get("/phoneverify/wait").data
    h.clock.advance(READ_GRACE)
    r = get_json(c, f"/status?token={body['token']}")
    assert r.status_code == 400 and "expired" in r.json["message"]
    st = state_of(h)
    with h.app.app_context():
        assert st.flow.refresh(row(h, body["token"])).status == "expired"


def test_rule_09_callback_address_long_lived_and_bound_to_one_provider(harness: Harness) -> None:
    st = state_of(harness)
    c = harness.client(None)
    address = st.tokens.make_callback("dev")
    harness.clock.advance(400 * 86400)
    # still ours after a year: the dev phone then refuses the body itself (400, not 403)
    r = c.post(f"/phoneverify/callback/dev/{address}", data=b"<event/>")
    assert r.status_code == 400
    for other in ("xverify", "voiceshot", "phoneconfirm"):
        r = c.post(f"/phoneverify/callback/dev/{st.tokens.make_callback(other)}", data=b"x")
        assert r.status_code == 403
        r = c.post(f"/phoneverify/callback/{other}/{address}", data=b"x")
        assert r.status_code == 404
    forged = URLSafeTimedSerializer(
        "another-secret-key-0123456789abcdef", salt=CALLBACK_SALT
    ).dumps({"p": "dev"})
    assert c.post(f"/phoneverify/callback/dev/{forged}", data=b"x").status_code == 403
    assert c.post(f"/phoneverify/callback/dev/{address[:-3]}abc", data=b"x").status_code == 403


def test_rule_09_key_rotation_through_secret_key_fallbacks(make_app: Any, tmp_path: Any) -> None:
    shared = f"sqlite:///{tmp_path}/rotate.sqlite3"
    common = {
        "PHONEVERIFY_DATABASE_URI": shared,
        "PHONEVERIFY_STYLE": "spoken",
        "PHONEVERIFY_POLL_INTERVAL": 60,
    }
    old = make_app(**common)
    c = old.client()
    token, body = begin(c)
    pin = spoken_pin(old, body["token"])
    get_json(c, f"/status?token={body['token']}")  # the old worker just polled its phone
    cookie = c.get_cookie("session")
    assert cookie is not None
    callback = state_of(old).tokens.make_callback("dev")

    def carry(h: Harness) -> FlaskClient:
        moved = h.client()
        moved.set_cookie("session", cookie.value)
        return moved

    # without the old key in SECRET_KEY_FALLBACKS nothing signed before the rotation holds ...
    cut = make_app(**common, SECRET_KEY=NEW_KEY)
    r = post(carry(cut), "/confirm", {"token": body["token"], "pin": pin}, token=token)
    assert r.status_code == 400
    assert cut.client(None).post(f"/phoneverify/callback/dev/{callback}").status_code == 403
    # ... with it, the session, CSRF token, pending token, PIN hash and callback address do
    rotated = make_app(**common, SECRET_KEY=NEW_KEY, SECRET_KEY_FALLBACKS=[SECRET])
    moved = carry(rotated)
    r = post(moved, "/confirm", {"token": body["token"], "pin": pin}, token=token)
    assert r.status_code == 200, r.json
    assert moved.get("/secret").status_code == 200
    assert rotated.client(None).post(f"/phoneverify/callback/dev/{callback}").status_code == 400
    # new tokens are signed with the new key
    fresh = state_of(rotated).tokens.make_callback("dev")
    assert cut.client(None).post(f"/phoneverify/callback/dev/{fresh}").status_code == 400


def test_rule_09_key_rotation_keeps_a_confirmed_phone_confirmed(
    make_app: Any, tmp_path: Any
) -> None:
    """A session confirmed before a rotation stays confirmed when the old key is in
    SECRET_KEY_FALLBACKS (the marker's number hash is checked under it, then re-tagged
    under the new key); without the old key, nothing signed before the rotation holds."""
    shared = {"PHONEVERIFY_DATABASE_URI": f"sqlite:///{tmp_path}/rotate-marker.sqlite3"}
    old = make_app(**shared)
    c = old.client()
    verify_keypad(c)
    assert c.get("/secret").status_code == 200
    cookie = c.get_cookie("session")
    assert cookie is not None

    rotated = make_app(**shared, SECRET_KEY=NEW_KEY, SECRET_KEY_FALLBACKS=[SECRET])
    moved = rotated.client()
    moved.set_cookie("session", cookie.value)
    assert moved.get("/secret").status_code == 200
    retagged = moved.get_cookie("session")
    assert retagged is not None and retagged.value != cookie.value  # tagged anew
    newest = make_app(**shared, SECRET_KEY=NEW_KEY)  # the old key dropped at last
    after = newest.client()
    after.set_cookie("session", retagged.value)
    assert after.get("/secret").status_code == 200  # the re-tagged marker holds alone


def test_rule_08_pages_are_never_framed_and_send_no_referrer(make_app: Any) -> None:
    """Every page and answer of the extension forbids framing and referrers, unless the app
    set those headers itself."""
    h = make_app()
    c = h.client()
    for r in (c.get("/phoneverify/"), get_json(c, "/"), c.get("/phoneverify/wait")):
        assert r.headers["X-Frame-Options"] == "DENY"
        assert r.headers["Content-Security-Policy"] == "frame-ancestors 'none'"
        assert r.headers["Referrer-Policy"] == "no-referrer"

    own = make_app()

    def app_policy(response: Any) -> Any:
        response.headers["Content-Security-Policy"] = "default-src 'self'"
        return response

    # An app's own hook on the extension's pages, run before the extension's (Flask runs a
    # blueprint's hooks last-registered first): its policy is left alone.
    own.app.after_request_funcs.setdefault("phoneverify", []).append(app_policy)

    r = own.client().get("/phoneverify/")
    assert r.headers["Content-Security-Policy"] == "default-src 'self'"
    assert r.headers["X-Frame-Options"] == "DENY"


def test_rule_08_the_simulated_phone_shows_each_user_only_their_own_calls(
    make_app: Any,
) -> None:
    """Anonymous visitors see no calls; a signed-in user sees and acts on the calls of
    their own verifications only (another user's call is not found)."""
    h = make_app(PHONEVERIFY_STYLE="spoken")
    owner = h.client("1")
    token, body = begin(owner)
    assert get_json(h.client(None), "/dev/phone").json == {"calls": []}
    anonymous_page = h.client(None).get("/phoneverify/dev/phone")
    assert anonymous_page.status_code == 200 and b"Your PIN" not in anonymous_page.data
    other = h.client("2")
    assert get_json(other, "/dev/phone").json == {"calls": []}
    calls = get_json(owner, "/dev/phone").json["calls"]
    assert len(calls) == 1 and calls[0]["pin"]
    call_id = calls[0]["id"]
    other_token = csrf(other)
    for action, data in (("keys", {"digits": "123456"}), ("answer", {}), ("hangup", {})):
        r = post(other, f"/dev/phone/{call_id}/{action}", data, token=other_token)
        assert r.status_code == 404, (action, r.status_code)
    r = post(h.client(None), f"/dev/phone/{call_id}/answer", token=other_token)
    assert r.status_code in (400, 404)
    assert row(h, body["token"]).attempts == 0 and row(h, body["token"]).status == "calling"
    assert post(owner, f"/dev/phone/{call_id}/answer", token=token).json["state"] == "answered"
