"""Remember this device: PHONEVERIFY_REMEMBER_DAYS, the confirm form's checkbox and JSON
``remember``, the signed device cookie, the remembered marker a later login gets (never
enough for ``max_age=`` views), revocation, and no query for a session that holds a marker."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import event, select

from flask_phoneverify import forget_remembered_devices, is_phone_verified
from flask_phoneverify.gate import MARKER
from flask_phoneverify.models import Device
from flask_phoneverify.remember import COOKIE

from .helpers import (
    Harness,
    begin,
    dev_calls,
    events,
    login_app,
    post,
    press,
    spoken_pin,
    state_of,
)

DAYS = 30


def confirm_keypad(c: FlaskClient, **extra: Any) -> Any:
    """Start a keypad verification, key the PIN in on the simulated phone, claim it."""
    token, body = begin(c)
    press(c, token, dev_calls(c)[-1]["id"], body["pin"])
    return post(c, "/confirm", {"token": body["token"], **extra}, token=token)


def device_cookie(c: FlaskClient) -> Any:
    return c.get_cookie(COOKIE)


def new_login(c: FlaskClient) -> None:
    """What a later login leaves: the browser's cookies, a session without a marker."""
    with c.session_transaction() as s:
        s.clear()


@contextmanager
def counted_queries(h: Harness) -> Iterator[list[str]]:
    engine = state_of(h).store.engine
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def devices(h: Harness) -> list[Device]:
    with state_of(h).store.session() as s:
        return list(s.scalars(select(Device)))


def test_off_by_default_no_checkbox_and_no_cookie(make_app: Any) -> None:
    h = make_app()
    c = h.client("1")
    token, body = begin(c)
    assert b'name="remember"' not in c.get("/phoneverify/wait").data
    press(c, token, dev_calls(c)[-1]["id"], body["pin"])
    r = post(c, "/confirm", {"token": body["token"], "remember": True}, token=token)
    assert r.status_code == 200
    assert device_cookie(c) is None and devices(h) == []
    new_login(c)
    assert c.get("/secret").status_code == 302


def test_days_setting_is_checked(make_app: Any) -> None:
    import pytest

    from flask_phoneverify import ConfigError

    with pytest.raises(ConfigError, match="PHONEVERIFY_REMEMBER_DAYS"):
        make_app(PHONEVERIFY_REMEMBER_DAYS=-1)


def test_confirm_forms_offer_the_checkbox(make_app: Any) -> None:
    for style in ("keypad", "spoken"):
        h = make_app(PHONEVERIFY_REMEMBER_DAYS=DAYS, PHONEVERIFY_STYLE=style)
        c = h.client("1")
        begin(c)
        page = c.get("/phoneverify/wait").data.decode()
        assert 'type="checkbox" name="remember"' in page
        assert f"Remember this device for {DAYS} days" in page


def test_keypad_claim_with_remember_sets_a_signed_httponly_lax_cookie(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_REMEMBER_DAYS=DAYS)
    c = h.client("1")
    r = confirm_keypad(c, remember=True)
    assert r.status_code == 200
    header = next(v for v in r.headers.getlist("Set-Cookie") if v.startswith(COOKIE + "="))
    attrs = [a.strip().lower() for a in header.split(";")]
    assert "httponly" in attrs and "samesite=lax" in attrs and "path=/" in attrs
    assert f"max-age={DAYS * 86400}" in attrs
    assert "secure" not in attrs  # plain HTTP
    value = device_cookie(c).value
    (row,) = devices(h)
    assert row.user_id == "1" and row.expires_at == h.clock() + DAYS * 86400
    assert row.id_hash not in value  # the store keeps a keyed hash of the id only
    assert [e.kind for e in events(h, "device_remembered")] == ["device_remembered"]


def test_cookie_is_secure_on_https(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_REMEMBER_DAYS=DAYS)
    c = h.client("1")
    token, body = begin(c)
    press(c, token, dev_calls(c)[-1]["id"], body["pin"])
    r = c.post(
        "/phoneverify/confirm",
        json={"token": body["token"], "remember": True},
        headers={"X-CSRFToken": token},
        base_url="https://localhost",
    )
    assert r.status_code == 200, r.json
    header = next(v for v in r.headers.getlist("Set-Cookie") if v.startswith(COOKIE + "="))
    assert "secure" in [a.strip().lower() for a in header.split(";")]


def test_without_remember_no_device_is_kept(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_REMEMBER_DAYS=DAYS)
    c = h.client("1")
    assert confirm_keypad(c).status_code == 200
    assert device_cookie(c) is None and devices(h) == []


def test_spoken_form_checkbox_remembers_the_device(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_REMEMBER_DAYS=DAYS, PHONEVERIFY_STYLE="spoken")
    c = h.client("1")
    token, body = begin(c)
    r = c.post(
        "/phoneverify/confirm",
        data={
            "csrf_token": token,
            "token": body["token"],
            "pin": spoken_pin(h, body["token"]),
            "remember": "1",
        },
    )
    assert r.status_code in (302, 303)
    assert device_cookie(c) is not None and len(devices(h)) == 1


def test_later_login_opens_the_gate_with_a_remembered_marker_dated_then(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_REMEMBER_DAYS=DAYS)
    c = h.client("1")
    confirm_keypad(c, remember=True)
    h.clock.advance(5 * 86400)
    new_login(c)
    assert c.get("/secret").status_code == 200
    with c.session_transaction() as s:
        marker = s[MARKER]
    assert marker["f"] == "remembered" and marker["t"] == h.clock()
    assert [e.kind for e in events(h, "device_login")] == ["device_login"]
    # A step-up view still wants the phone: the remembered marker never satisfies max_age.
    assert c.get("/fresh").status_code == 302
    assert c.get("/secret").status_code == 200


def test_is_phone_verified_knows_a_remembered_device(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_REMEMBER_DAYS=DAYS)

    @h.app.get("/status-of-phone")
    def status_of_phone() -> str:
        return f"{is_phone_verified()} {is_phone_verified(max_age=60)}"

    c = h.client("1")
    confirm_keypad(c, remember=True)
    new_login(c)
    assert c.get("/status-of-phone").data == b"True False"
    with c.session_transaction() as s:
        assert s[MARKER]["f"] == "remembered"


def test_no_database_query_on_the_gate_when_the_session_holds_a_marker(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_REMEMBER_DAYS=DAYS)
    c = h.client("1")
    confirm_keypad(c, remember=True)
    with counted_queries(h) as seen:
        assert c.get("/secret").status_code == 200  # marker from the call, cookie present
    assert seen == []
    new_login(c)
    with counted_queries(h) as seen:
        assert c.get("/secret").status_code == 200  # no marker, a cookie: the store is asked
    assert seen
    with counted_queries(h) as seen:
        assert c.get("/secret").status_code == 200  # the remembered marker from now on
        assert c.get("/fresh").status_code == 302  # step-up refused without a query either
    assert seen == []


def test_the_cookie_is_bound_to_its_user(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_REMEMBER_DAYS=DAYS)
    c = h.client("1")
    confirm_keypad(c, remember=True)
    new_login(c)
    c.environ_base["HTTP_X_TEST_USER"] = "2"  # another account on the same browser
    with counted_queries(h) as seen:
        assert c.get("/secret").status_code == 302
    assert seen == []
    assert device_cookie(c) is not None  # still user 1's
    c.environ_base["HTTP_X_TEST_USER"] = "1"
    new_login(c)
    assert c.get("/secret").status_code == 200


def test_the_cookie_is_bound_to_its_number(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_REMEMBER_DAYS=DAYS)
    c = h.client("1")
    confirm_keypad(c, remember=True)
    h.users["1"].phone = "+12015550999"
    new_login(c)
    assert c.get("/secret").status_code == 302
    assert device_cookie(c) is None  # dropped: it can never work again
    h.users["1"].phone = "+12015550123"
    assert c.get("/secret").status_code == 302


def test_forget_remembered_devices_revokes_them(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_REMEMBER_DAYS=DAYS)
    c = h.client("1")
    confirm_keypad(c, remember=True)
    other = h.client("1")
    confirm_keypad(other, remember=True)
    assert len(devices(h)) == 2
    with h.app.test_request_context():
        assert forget_remembered_devices(h.users["1"]) == 2
    assert devices(h) == []
    assert [e.kind for e in events(h, "devices_forgotten")] == ["devices_forgotten"]
    new_login(c)
    assert c.get("/secret").status_code == 302
    assert device_cookie(c) is None
    assert c.get("/secret").status_code == 302


def test_forget_drops_this_sessions_remembered_marker(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_REMEMBER_DAYS=DAYS)

    @h.app.post("/forget-devices")
    def forget() -> str:
        return str(forget_remembered_devices(h.users["1"]))

    c = h.client("1")
    confirm_keypad(c, remember=True)
    new_login(c)
    assert c.get("/secret").status_code == 200
    assert c.post("/forget-devices").data == b"1"
    assert c.get("/secret").status_code == 302


def test_a_remembered_device_expires_after_the_days(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_REMEMBER_DAYS=DAYS)
    c = h.client("1")
    confirm_keypad(c, remember=True)
    h.clock.advance(DAYS * 86400 + 1)
    new_login(c)
    assert c.get("/secret").status_code == 302
    assert device_cookie(c) is None


def test_a_tampered_or_foreign_cookie_is_refused_without_an_error(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_REMEMBER_DAYS=DAYS)
    c = h.client("1")
    confirm_keypad(c, remember=True)
    value = device_cookie(c).value
    for forged in (value[:-2] + "xx", "not-a-cookie", "x" * 4000):
        new_login(c)
        c.set_cookie(COOKIE, forged)
        assert c.get("/secret").status_code == 302
        assert c.get("/secret", headers={"Accept": "application/json"}).status_code == 401


def test_a_new_number_confirmed_forgets_the_devices_of_the_old_one(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_REMEMBER_DAYS=DAYS)
    c = h.client("1")
    confirm_keypad(c, remember=True)
    token, _ = begin(c)
    r = post(c, "/new-number", {"phone": "+12015550777"}, token=token)
    assert r.status_code == 200, r.json
    press(c, token, dev_calls(c)[-1]["id"], r.json["pin"])
    assert post(c, "/confirm", {"token": r.json["token"]}, token=token).status_code == 200
    assert h.users["1"].phone == "+12015550777"
    assert devices(h) == []


def test_with_flask_login_a_later_login_needs_no_call(tmp_path: Any) -> None:
    app = login_app(tmp_path, PHONEVERIFY_REMEMBER_DAYS=DAYS)
    c = app.test_client()
    c.get("/as/1")
    assert c.get("/secret").status_code == 302
    assert confirm_keypad(c, remember=True).status_code == 200
    assert c.get("/secret").status_code == 200
    c.get("/logout")
    assert c.get("/secret").status_code == 302  # logged out: the login system's answer
    c.get("/as/1")
    assert c.get("/secret").status_code == 200
    c.get("/logout")
    c.get("/as/2")  # another user on this browser still needs their call
    assert c.get("/secret").status_code == 302


def test_a_database_outage_at_a_remembered_login_is_a_redirect_not_an_error(
    make_app: Any, caplog: Any
) -> None:
    h = make_app(PHONEVERIFY_REMEMBER_DAYS=DAYS)
    c = h.client("1")
    confirm_keypad(c, remember=True)
    new_login(c)
    with state_of(h).store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE phoneverify_devices")
    assert c.get("/secret").status_code == 302
    assert c.get("/secret", headers={"Accept": "application/json"}).status_code == 401
    assert device_cookie(c) is not None  # kept: the device may be fine once the store is
    assert "remembered device not checked: OperationalError" in caplog.text
