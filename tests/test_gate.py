"""The gate: redirects and 401s, max_age, user binding, logout, Flask-Login and Flask-WTF."""

from __future__ import annotations

from typing import Any

from flask_phoneverify import forget_phone_verification

from .helpers import Harness, csrf, login_app, post, verify_keypad


def test_json_request_gets_401_with_verify_url(harness: Harness) -> None:
    c = harness.client()
    r = c.get("/secret", headers={"Accept": "application/json"})
    assert r.status_code == 401
    assert r.json["error"] == "phone_verification_required"
    assert r.json["verify_url"].startswith("/phoneverify/")
    assert r.headers["Cache-Control"] == "no-store"


def test_accept_ranking_decides(harness: Harness) -> None:
    c = harness.client()
    assert (
        c.get("/secret", headers={"Accept": "text/html, application/json;q=0.5"}).status_code == 302
    )
    assert (
        c.get("/secret", headers={"Accept": "application/json, text/html;q=0.5"}).status_code == 401
    )


def test_head_is_gated_too(harness: Harness) -> None:
    c = harness.client()
    assert c.head("/secret").status_code == 302


def test_max_age_asks_again_after_the_window(harness: Harness) -> None:
    c = harness.client()
    verify_keypad(c)
    assert c.get("/fresh").status_code == 200
    harness.clock.advance(61)
    assert c.get("/fresh").status_code == 302
    assert c.get("/secret").status_code == 200


def test_verified_ttl_ends_the_confirmation(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_VERIFIED_TTL=100)
    c = h.client()
    verify_keypad(c)
    assert c.get("/secret").status_code == 200
    h.clock.advance(101)
    assert c.get("/secret").status_code == 302


def test_marker_is_bound_to_the_user(harness: Harness) -> None:
    c = harness.client()
    verify_keypad(c)
    c.environ_base["HTTP_X_TEST_USER"] = "2"
    assert c.get("/secret").status_code == 302


def test_unverified_handler_replaces_the_response(make_app: Any) -> None:
    h = make_app()

    @h.ext.unverified_handler
    def custom() -> Any:
        return "please verify", 403

    r = h.client().get("/secret")
    assert r.status_code == 403 and r.data == b"please verify"


def test_forget_drops_the_marker(harness: Harness) -> None:
    app = harness.app

    @app.get("/forget")
    def forget() -> str:
        forget_phone_verification()
        return "ok"

    c = harness.client()
    verify_keypad(c)
    c.get("/forget")
    assert c.get("/secret").status_code == 302


def test_flask_login_anonymous_goes_to_unauthorized(tmp_path: Any) -> None:
    app = login_app(tmp_path)
    r = app.test_client().get("/secret")
    assert r.status_code == 302 and r.location.startswith("/login")


def test_flask_login_logout_and_switch_drop_the_marker(tmp_path: Any) -> None:
    app = login_app(tmp_path)
    c = app.test_client()
    c.get("/as/1")
    verify_keypad(c)
    assert c.get("/secret").status_code == 200
    c.get("/logout")
    c.get("/as/1")
    assert c.get("/secret").status_code == 302
    verify_keypad(c)
    c.get("/as/2")
    assert c.get("/secret").status_code == 302


def test_flask_wtf_csrfprotect_keeps_working(tmp_path: Any) -> None:
    from flask_wtf.csrf import CSRFProtect

    app = login_app(tmp_path)
    CSRFProtect(app)
    c = app.test_client()
    c.get("/as/1")
    token = csrf(c)
    assert post(c, "/start").status_code == 400
    assert post(c, "/start", token="forged").status_code == 400
    r = post(c, "/start", token=token)
    assert r.status_code == 200, r.data


def test_gated_request_loads_the_user_once(harness: Harness) -> None:
    """The gate is on every protected request: an app's user_loader (often a database
    query) runs once there, not once per check."""
    c = harness.client()
    verify_keypad(c)
    loader = harness.ext.hooks.user_loader
    assert loader is not None
    calls: list[int] = []

    def counting() -> Any:
        calls.append(1)
        return loader()

    harness.ext.hooks.user_loader = counting
    assert c.get("/secret").status_code == 200
    assert len(calls) == 1
