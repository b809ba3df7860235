"""Pending tokens and CSRF: malformed, tampered, expired, foreign, another session."""

from __future__ import annotations

from typing import Any

import pytest

from .helpers import SECRET, Harness, csrf, get_json, post


@pytest.mark.parametrize("bad", ["", "garbage", "a" * 600, "eyJ2IjoiIn0.AAAA.BBBB"])
def test_malformed_tokens_get_400(harness: Harness, bad: str) -> None:
    c = harness.client()
    r = get_json(c, f"/status?token={bad}")
    assert r.status_code == 400 and r.json["error"] == "bad_request"


def test_tampered_token_gets_400(harness: Harness) -> None:
    c = harness.client()
    token = csrf(c)
    body = post(c, "/start", token=token).json
    tampered = body["token"][:-2] + ("AA" if not body["token"].endswith("AA") else "BB")
    assert get_json(c, f"/status?token={tampered}").status_code == 400


def test_someone_elses_token_gets_403(harness: Harness) -> None:
    owner = harness.client("1")
    token = csrf(owner)
    body = post(owner, "/start", token=token).json
    other = harness.client("2")
    other_csrf = csrf(other)
    assert get_json(other, f"/status?token={body['token']}").status_code == 403
    r = post(other, "/confirm", {"token": body["token"], "pin": "123456"}, token=other_csrf)
    assert r.status_code == 403


def test_other_session_of_same_user_cannot_confirm(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_STYLE="spoken")
    a = h.client("1")
    token = csrf(a)
    body = post(a, "/start", token=token).json
    pin = get_json(a, "/dev/phone").json["calls"][-1]["pin"]
    b = h.client("1")
    b_csrf = csrf(b)
    r = post(b, "/confirm", {"token": body["token"], "pin": pin}, token=b_csrf)
    assert r.status_code == 403
    assert b.get("/secret").status_code == 302


def test_post_without_csrf_is_refused(harness: Harness) -> None:
    c = harness.client()
    csrf(c)
    for path in ("/start", "/confirm", "/resend", "/cancel"):
        r = post(c, path, {"token": "x"})
        assert r.status_code == 400 and r.json["error"] == "csrf", path
    r = c.post("/phoneverify/start", data={"csrf_token": "forged"})
    assert r.status_code == 400 and b"reload" in r.data


def test_csrf_token_of_another_session_is_refused(harness: Harness) -> None:
    a = harness.client()
    token = csrf(a)
    b = harness.client()
    csrf(b)
    assert post(b, "/start", token=token).status_code == 400


def test_key_rotation_keeps_pending_tokens(make_app: Any) -> None:
    h = make_app()
    c = h.client()
    token = csrf(c)
    body = post(c, "/start", token=token).json
    rotated = make_app(
        SECRET_KEY="a-brand-new-secret-key-0123456789", SECRET_KEY_FALLBACKS=[SECRET]
    )
    vid, uid = rotated.ext.state(rotated.app).tokens.read_pending(body["token"], max_age=600)
    assert uid == "1" and vid


def test_malformed_json_body_gets_400(harness: Harness) -> None:
    c = harness.client()
    token = csrf(c)
    r = c.post(
        "/phoneverify/confirm",
        data="{not json",
        content_type="application/json",
        headers={"X-CSRFToken": token, "Accept": "application/json"},
    )
    assert r.status_code == 400
