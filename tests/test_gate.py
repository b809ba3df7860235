"""The gate: redirects and 401s, max_age, user binding, logout, Flask-Login and Flask-WTF."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from flask_phoneverify import PhoneVerify, forget_phone_verification, phone_verified_required

from .conftest import SECRET, Harness, csrf, get_json, post


def verify(c: FlaskClient) -> None:
    """Confirm the client's user on the simulated phone, keypad style."""
    token = csrf(c)
    body = post(c, "/start", token=token).json
    call = get_json(c, "/dev/phone").json["calls"][-1]
    post(c, f"/dev/phone/{call['id']}/keys", {"digits": body["pin"]}, token=token)
    assert post(c, "/confirm", {"token": body["token"]}, token=token).status_code == 200


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
    verify(c)
    assert c.get("/fresh").status_code == 200
    harness.clock.advance(61)
    assert c.get("/fresh").status_code == 302
    assert c.get("/secret").status_code == 200


def test_verified_ttl_ends_the_confirmation(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_VERIFIED_TTL=100)
    c = h.client()
    verify(c)
    assert c.get("/secret").status_code == 200
    h.clock.advance(101)
    assert c.get("/secret").status_code == 302


def test_marker_is_bound_to_the_user(harness: Harness) -> None:
    c = harness.client()
    verify(c)
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
    verify(c)
    c.get("/forget")
    assert c.get("/secret").status_code == 302


def login_app(tmp_path: Any, **config: Any) -> Flask:
    from flask_login import LoginManager, UserMixin, login_user, logout_user

    class User(UserMixin):
        def __init__(self, uid: str, phone: str) -> None:
            self.id = uid
            self.phone = phone

    users = {"1": User("1", "+12015550123"), "2": User("2", "+12015550124")}
    app = Flask("loginapp", instance_path=str(tmp_path))
    app.config.update(TESTING=True, SECRET_KEY=SECRET, PHONEVERIFY_NUMBER_COOLDOWN=0)
    app.config.update(config)
    lm = LoginManager(app)
    lm.login_view = "login"
    lm.user_loader(users.get)
    PhoneVerify(app)

    @app.get("/login")
    def login() -> str:
        return "login page"

    @app.get("/as/<uid>")
    def as_user(uid: str) -> str:
        login_user(users[uid])
        return "in"

    @app.get("/logout")
    def logout() -> str:
        logout_user()
        return "out"

    @app.get("/secret")
    @phone_verified_required
    def secret() -> str:
        return "the secret"

    return app


def test_flask_login_anonymous_goes_to_unauthorized(tmp_path: Any) -> None:
    app = login_app(tmp_path)
    r = app.test_client().get("/secret")
    assert r.status_code == 302 and r.location.startswith("/login")


def test_flask_login_logout_and_switch_drop_the_marker(tmp_path: Any) -> None:
    app = login_app(tmp_path)
    c = app.test_client()
    c.get("/as/1")
    verify(c)
    assert c.get("/secret").status_code == 200
    c.get("/logout")
    c.get("/as/1")
    assert c.get("/secret").status_code == 302
    verify(c)
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
    verify(c)
    loader = harness.ext.hooks.user_loader
    assert loader is not None
    calls: list[int] = []

    def counting() -> Any:
        calls.append(1)
        return loader()

    harness.ext.hooks.user_loader = counting
    assert c.get("/secret").status_code == 200
    assert len(calls) == 1
