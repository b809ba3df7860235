"""Security rules 6-7: the gate (every method gated, no-store, a verified marker bound to the user
and dropped on logout) and `next` redirects that stay on this site.

Each test drives the real flow, store and views (the test client, or a real loopback
server with threads), so it fails when the rule breaks. docs/security.md maps every rule
to its source and to the tests proving it; the tests keep their rule-numbered names.
"""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask, Response, jsonify

from flask_phoneverify import (
    phone_verified_required,
)
from flask_phoneverify.redirects import safe_next

from .helpers import (
    Harness,
    begin,
    csrf,
    dev_call_id,
    get_json,
    login_app,
    post,
    press,
    row,
    verify_keypad,
    wrong,
)

# == Rule 6: the gate ========================================================================


def gated_app(h: Harness) -> list[str]:
    ran: list[str] = []

    @h.app.route("/vault", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    @phone_verified_required
    def vault() -> Any:
        from flask import request

        ran.append(request.method)
        return jsonify(secret="the vault")

    @h.app.get("/cached")
    @phone_verified_required
    def cached() -> Response:
        r = Response("cacheable secret")
        r.headers["Cache-Control"] = "public, max-age=3600"
        return r

    return ran


def test_rule_06_gate_holds_for_html_json_head_and_every_method(harness: Harness) -> None:
    ran = gated_app(harness)
    c = harness.client()
    cases: list[tuple[str, dict[str, str], int]] = [
        ("GET", {"Accept": "text/html"}, 302),
        ("GET", {"Accept": "*/*"}, 302),
        ("GET", {}, 302),
        ("HEAD", {}, 302),
        ("GET", {"Accept": "application/json"}, 401),
        ("HEAD", {"Accept": "application/json"}, 401),
        ("POST", {}, 401),
        ("POST", {"Accept": "text/html"}, 401),
        ("PUT", {"Accept": "application/json"}, 401),
        ("PATCH", {}, 401),
        ("DELETE", {}, 401),
    ]
    for method, headers, status in cases:
        r = c.open("/vault", method=method, headers=headers)
        assert r.status_code == status, (method, headers, r.status_code)
        assert r.headers["Cache-Control"] == "no-store"
        assert b"the vault" not in r.data
        if status == 302:
            assert urlsplit(r.location).path == "/phoneverify/"
    r = c.post("/vault", json={"x": 1})
    assert r.status_code == 401 and r.json["error"] == "phone_verification_required"
    r = c.options("/vault")  # answered by Flask itself: the view never runs
    assert b"the vault" not in r.data
    assert ran == []
    verify_keypad(c)
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        assert c.open("/vault", method=method).status_code == 200
    assert ran == ["GET", "POST", "PUT", "PATCH", "DELETE"]


def test_rule_06_gated_responses_are_no_store(harness: Harness) -> None:
    gated_app(harness)
    c = harness.client()
    assert c.get("/cached").headers["Cache-Control"] == "no-store"
    verify_keypad(c)
    r = c.get("/cached")
    assert r.status_code == 200 and r.data == b"cacheable secret"
    # the view's "public" is replaced, not joined
    assert r.headers.getlist("Cache-Control") == ["no-store"]
    assert "Cookie" in r.headers.get("Vary", "")


def test_rule_06_marker_bound_to_user_and_rotated_on_success(harness: Harness) -> None:
    c = harness.client()
    verify_keypad(c)
    with c.session_transaction() as s:
        first = dict(s["_phoneverify"])
    assert first["u"] == "1"
    harness.clock.advance(40)
    verify_keypad(c)
    with c.session_transaction() as s:
        second = dict(s["_phoneverify"])
    assert second["u"] == "1" and second["t"] == first["t"] + 40
    assert second["n"] != first["n"]
    # a marker forged for another user id does not open the gate
    with c.session_transaction() as s:
        s["_phoneverify"] = {**second, "u": "2"}
    assert c.get("/secret").status_code == 302


def test_rule_06_forged_session_marker_is_ignored(harness: Harness) -> None:
    from flask.sessions import SecureCookieSessionInterface

    forger = Flask("forger")
    forger.secret_key = "not-the-app-secret-key-0123456789"
    serializer = SecureCookieSessionInterface().get_signing_serializer(forger)
    assert serializer is not None
    cookie = serializer.dumps({"_phoneverify": {"u": "1", "t": harness.clock(), "n": "x"}})
    c = harness.client()
    c.set_cookie("session", cookie)
    assert c.get("/secret").status_code == 302


def test_rule_06_marker_dropped_on_flask_login_logout_and_user_change(tmp_path: Any) -> None:
    app = login_app(tmp_path)
    c = app.test_client()
    c.get("/as/1")
    verify_keypad(c)
    assert c.get("/secret").status_code == 200
    c.get("/as/2")
    assert c.get("/secret").status_code == 302
    c.get("/as/1")  # back to the verified user: a new login asks again
    assert c.get("/secret").status_code == 302
    verify_keypad(c)
    c.get("/logout")
    with c.session_transaction() as s:
        assert "_phoneverify" not in s
    c.get("/as/1")
    assert c.get("/secret").status_code == 302


def test_rule_06_marker_dropped_on_user_change_without_flask_login(harness: Harness) -> None:
    c = harness.client("1")
    verify_keypad(c)
    assert c.get("/secret").status_code == 200
    c.environ_base["HTTP_X_TEST_USER"] = "2"  # another user logs in in this browser session
    assert c.get("/secret").status_code == 302
    c.environ_base["HTTP_X_TEST_USER"] = "1"
    assert c.get("/secret").status_code == 302


def test_rule_06_new_phone_learnt_only_after_verification(make_app: Any) -> None:
    h = make_app(
        PHONEVERIFY_ALLOW_ENROLMENT=True,
        PHONEVERIFY_MAX_ATTEMPTS=2,
        PHONEVERIFY_CALLS_PER_USER_PER_HOUR=50,
        PHONEVERIFY_CALLS_PER_NUMBER_PER_HOUR=50,
        PHONEVERIFY_ENROL_CALLS_PER_NUMBER_PER_HOUR=50,
        PHONEVERIFY_ENROL_CALLS_PER_USER_PER_HOUR=50,
    )
    c = h.client("3")
    typed = "+12015550177"
    # locked by wrong keys
    token, a = begin(c, phone=typed)
    for _ in range(2):
        press(c, token, dev_call_id(h, a["token"]), wrong(a["pin"]))
    assert row(h, a["token"]).status == "locked"
    # canceled
    _, b = begin(c, phone=typed)
    post(c, "/cancel", {"token": b["token"]}, token=token)
    # expired
    _, d = begin(c, phone=typed)
    h.clock.advance(601)
    press(c, token, dev_call_id(h, d["token"]), d["pin"])
    # hung up
    _, e = begin(c, phone=typed)
    post(c, f"/dev/phone/{dev_call_id(h, e['token'])}/hangup", token=token)
    # confirmed on the phone, not yet taken into the session
    _, f = begin(c, phone=typed)
    press(c, token, dev_call_id(h, f["token"]), f["pin"])
    assert row(h, f["token"]).status == "verified"
    assert h.saved_phones == [] and h.users["3"].phone is None
    # taken: the app learns the verified number (not one slipped into the confirm body)
    r = post(c, "/confirm", {"token": f["token"], "phone": "+12015550199"}, token=token)
    assert r.status_code == 200
    assert h.saved_phones == [("3", typed)]
    post(c, "/confirm", {"token": f["token"]}, token=token)
    assert h.saved_phones == [("3", typed)]


# == Rule 7: redirects =======================================================================

OFFSITE = [
    "https://evil.example/",
    "http://evil.example",
    "HTTPS://evil.example",
    "//evil.example",
    "///evil.example",
    "////evil.example/path",
    "/\\evil.example",
    "\\\\evil.example",
    "\\/evil.example",
    "/\\/evil.example",
    "%2F%2Fevil.example",
    "/%2F/evil.example",
    "/%2f%2fevil.example",
    "/%5Cevil.example",
    "%5C%5Cevil.example",
    "/%252F%252Fevil.example",
    "%252F%252Fevil.example",
    "/%25252F%25252Fevil.example",
    "/%5C%5Cevil.example",
    "/\r\nLocation: https://evil.example",
    "/%0d%0aSet-Cookie:%20pwned=1",
    "/%0aLocation:%20https://evil.example",
    "/\t/evil.example",
    "/%09/evil.example",
    "\t//evil.example",
    " //evil.example",
    "/\x00/evil.example",
    "javascript:alert(1)",
    "JavaScript:alert(document.cookie)",
    "data:text/html,<script>alert(1)</script>",
    "https:evil.example",
    "http:/evil.example",
    "evil.example",
    "\uff0f\uff0fevil.example",
    "",
]


def _hidden_next(page: bytes) -> str:
    m = re.search(rb'name="next" value="([^"]*)"', page)
    assert m is not None
    return html.unescape(m.group(1).decode())


def _same_site(location: str) -> bool:
    parts = urlsplit(location)
    return (
        not parts.scheme
        and not parts.netloc
        and location.startswith("/")
        and not location.startswith("//")
        and "\\" not in location
        and not any(ord(ch) < 0x20 for ch in location)
        and safe_next(location) == location
    )


@pytest.mark.parametrize("target", OFFSITE)
def test_rule_07_next_refuses_offsite_targets(harness: Harness, target: str) -> None:
    c = harness.client()
    # the verify page the gate sends people to
    page = c.get("/phoneverify/", query_string={"next": target})
    assert page.status_code == 200 and _hidden_next(page.data) == "/"
    token = csrf(c)
    r = c.post("/phoneverify/start", data={"csrf_token": token, "next": target})
    assert r.status_code == 303
    with c.session_transaction() as s:
        pending = s["_phoneverify_pending"]
    assert pending["n"] is None
    assert _hidden_next(c.get("/phoneverify/wait").data) == ""
    press(c, token, dev_call_id(harness, pending["t"]), pending["p"])
    r = c.post("/phoneverify/confirm", data={"csrf_token": token, "next": target})
    assert r.status_code == 303 and r.location == "/", r.location
    # and through the JSON API
    token, body = begin(c, next=target)
    press(c, token, dev_call_id(harness, body["token"]), body["pin"])
    r = post(c, "/confirm", {"token": body["token"], "next": target}, token=token)
    assert r.status_code == 200 and r.json["next"] == "/"


@pytest.mark.parametrize("target", ["/account", "/account?tab=2&x=%2Fy", "/a/b/../c"])
def test_rule_07_same_site_paths_are_kept(harness: Harness, target: str) -> None:
    c = harness.client()
    token = csrf(c)
    c.post("/phoneverify/start", data={"csrf_token": token, "next": target})
    with c.session_transaction() as s:
        pending = s["_phoneverify_pending"]
    press(c, token, dev_call_id(harness, pending["t"]), pending["p"])
    r = c.post("/phoneverify/confirm", data={"csrf_token": token})
    assert r.status_code == 303 and r.location == target


GATE_PATHS = [
    "//evil.example",
    "//evil.example/x",
    "///evil.example",
    "/\\evil.example",
    "/\\/evil.example",
    "/%2F%2Fevil.example",
    "/%5Cevil.example",
    "/%252F%252Fevil.example",
    "/\t/evil.example",
    "/x%0d%0aLocation: https://evil.example",
    "/javascript:alert(1)",
]
GATE_QUERIES = [
    "next=//evil.example",
    "a=%0d%0aLocation:%20https://evil.example",
    "a=\r\nSet-Cookie: pwned=1",
    "a=%5C%5Cevil.example",
]


@pytest.mark.parametrize(
    ("path", "query"),
    [(p, "") for p in GATE_PATHS] + [("/area/page", q) for q in GATE_QUERIES],
)
def test_rule_07_gate_redirect_refuses_offsite_targets(
    harness: Harness, path: str, query: str
) -> None:
    @harness.app.get("/<path:rest>")
    @phone_verified_required
    def anything(rest: str) -> str:
        return "gated " + rest

    c = harness.client()
    r = c.get("/", environ_overrides={"PATH_INFO": path, "QUERY_STRING": query})
    hops = 0
    while r.status_code in (301, 302, 303, 307, 308) and not urlsplit(r.location).path.startswith(
        "/phoneverify/"
    ):
        # werkzeug's own slash-merging redirect, when it happens, stays on this host
        assert urlsplit(r.location).netloc in ("", "localhost"), r.location
        r = c.get(r.location)
        hops += 1
        assert hops < 3
    assert r.status_code == 302
    verify_url = urlsplit(r.location)
    assert not verify_url.netloc and verify_url.path == "/phoneverify/", r.location
    given = parse_qs(verify_url.query).get("next", [None])[0]
    if given is not None:
        assert _same_site(given), given
    page = c.get(r.location)
    next_field = _hidden_next(page.data)
    assert _same_site(next_field), next_field
    token = csrf(c)
    c.post("/phoneverify/start", data={"csrf_token": token, "next": next_field})
    with c.session_transaction() as s:
        pending = s["_phoneverify_pending"]
    press(c, token, dev_call_id(harness, pending["t"]), pending["p"])
    r = c.post("/phoneverify/confirm", data={"csrf_token": token, "next": next_field})
    assert r.status_code == 303 and _same_site(r.location), r.location


def test_rule_06_a_view_that_lists_options_is_gated_for_it_too(harness: Harness) -> None:
    """An unverified OPTIONS request never runs the gated body of a view that answers
    OPTIONS itself; Flask's automatic OPTIONS answers keep working."""
    ran: list[str] = []

    @harness.app.route("/listed", methods=["GET", "OPTIONS"])
    @phone_verified_required
    def listed() -> str:
        ran.append("listed")
        return "the listed body"

    @harness.app.get("/automatic")
    @phone_verified_required
    def automatic() -> str:
        ran.append("automatic")
        return "the automatic body"

    c = harness.client()
    r = c.options("/listed")
    assert r.status_code in (302, 401) and b"the listed body" not in r.data
    r = c.options("/automatic")
    assert r.status_code == 200 and "GET" in r.headers["Allow"]
    assert ran == []
    verify_keypad(c)
    assert c.options("/listed").data == b"the listed body"
    assert ran == ["listed"]


def test_rule_06_step_up_is_measured_from_the_phones_confirmation(harness: Harness) -> None:
    """Confirmed on the phone at T, claimed by the page at T+590: a max_age=60 view is
    closed at T+640, since the marker carries T. A claim after the verification's end is
    refused and the confirmation reads as expired."""
    c = harness.client()
    token, body = begin(c)
    press(c, token, dev_call_id(harness, body["token"]), body["pin"])
    harness.clock.advance(590)
    assert post(c, "/confirm", {"token": body["token"]}, token=token).status_code == 200
    assert c.get("/fresh").status_code == 302
    assert c.get("/secret").status_code == 200

    late = harness.client("2")
    token, body = begin(late)
    press(late, token, dev_call_id(harness, body["token"]), body["pin"])
    harness.clock.advance(599)
    assert get_json(late, f"/status?token={body['token']}").json["status"] == "verified"
    harness.clock.advance(1)  # the verification's end: the token still reads, the claim not
    r = post(late, "/confirm", {"token": body["token"]}, token=token)
    assert (r.status_code, r.json["error"]) == (409, "not_open") and "expired" in r.json["message"]
    assert late.get("/secret").status_code == 302
    assert get_json(late, f"/status?token={body['token']}").json["status"] == "expired"


def test_rule_06_a_confirmation_does_not_outlive_logout(tmp_path: Any) -> None:
    """The phone confirmed, then the user logged out before the page claimed it: whoever
    logs in next in that browser cannot claim it, and the open verifications of the ended
    login session are canceled."""
    app = login_app(tmp_path)
    c = app.test_client()
    c.get("/as/1")
    token, body = begin(c)
    with app.app_context():
        from flask_phoneverify.state import state

        st = state(app)
        vid, _ = st.tokens.read_pending(body["token"], max_age=600)
        call = next(
            x for x in reversed(st.provider.calls) if x.call_id == st.store.get(vid).call_id
        )
    press(c, token, call.id, body["pin"])
    _, other = begin(c)  # a second verification, still open
    c.get("/logout")
    c.get("/as/1")
    token = csrf(c)
    r = post(c, "/confirm", {}, token=token)
    assert r.status_code == 400 and c.get("/secret").status_code == 302
    r = post(c, "/confirm", {"token": body["token"]}, token=token)
    assert r.status_code == 403 and c.get("/secret").status_code == 302
    with app.app_context():
        still_open = st.store.get(st.tokens.read_pending(other["token"], max_age=600)[0])
        assert still_open is not None and still_open.status == "canceled"


def test_rule_06_the_gate_closes_when_the_number_on_file_changes(harness: Harness) -> None:
    """The marker is bound to the number confirmed: a changed or removed number on file
    (a SIM swap reset by support) closes the gate at once; the same number written in
    another format still matches."""
    c = harness.client("1")
    verify_keypad(c)
    assert c.get("/secret").status_code == 200
    user = harness.users["1"]
    confirmed = user.phone
    user.phone = "+12015550999"
    assert c.get("/secret").status_code == 302
    user.phone = None
    assert c.get("/secret").status_code == 302
    user.phone = "+1 (201) 555-0123"  # the confirmed number, formatted
    assert confirmed == "+12015550123" and c.get("/secret").status_code == 200
    with c.session_transaction() as s:
        assert "12015550123" not in repr(dict(s))  # kept as a keyed hash only
