"""The pages never strand anyone: expiry, refused resends, Post/Redirect/Get, "already
confirmed", the support line's own budget, the simulated phone following its verification,
digits from any keyboard, and the quickstart's errors. Through Flask's test client; the
same behaviour in a real browser is in ``tests/test_pages_browser.py``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from flask_phoneverify import PhoneVerify, phone_verified_required
from flask_phoneverify.errors import ConfigError
from flask_phoneverify.tokens import READ_GRACE

from .conftest import Harness, csrf, get_json, post
from .helpers import SECRET, dev_calls, press, row, spoken_pin, wrong
from .loopback import serve
from .servers.anveo import PATH, USER_KEY, AnveoServer

WAIT = "/phoneverify/wait"


def form(c: Any, path: str, csrf_token: str, /, **fields: str) -> Any:
    """A browser's form POST (no JSON in, none asked for)."""
    return c.post("/phoneverify" + path, data={"csrf_token": csrf_token, **fields})


def start_page(c: Any) -> str:
    """Press "Call me" on the verify page; the CSRF token the page carries."""
    token = csrf(c)
    r = form(c, "/start", token)
    assert (r.status_code, r.location) == (303, WAIT)
    return token


def pending_token(c: Any) -> str:
    with c.session_transaction() as s:
        token: str = s["_phoneverify_pending"]["t"]
    return token


# -- expiry -----------------------------------------------------------------------------------


def test_an_expired_verification_reads_as_expired_for_ten_minutes_past_its_lifetime(
    make_app: Any,
) -> None:
    h = make_app(PHONEVERIFY_STYLE="spoken", PHONEVERIFY_TTL=30)
    c = h.client()
    token = start_page(c)
    pending = pending_token(c)
    pin = spoken_pin(h, pending)
    h.clock.advance(31)
    r = get_json(c, f"/status?token={pending}")
    assert (r.status_code, r.json["status"]) == (200, "expired")
    page = c.get(WAIT).get_data(as_text=True)
    assert "<title>This verification has expired" in page
    assert 'id="pv-title">This verification has expired<' in page
    assert "Start again" in page and 'id="pv-retry" class="pv-form" >' in page  # not hidden
    assert 'name="pin"' not in page and "Call me again" not in page and ">Cancel<" not in page
    assert 'class="pv-status pv-error"' in page  # said in the error style, not a grey box
    # the right PIN, typed late, is refused (POSTs keep the lifetime), and the page says why
    r = form(c, "/confirm", token, pin=pin)
    assert (r.status_code, r.location) == (303, WAIT)
    page = c.get(WAIT).get_data(as_text=True)
    assert "This verification has expired" in page and 'name="pin"' not in page
    assert row(h, pending).status == "expired"
    # the grace ends too: status says the token expired, the wait page sends to the start
    h.clock.advance(READ_GRACE - 1)
    assert get_json(c, f"/status?token={pending}").json["status"] == "expired"
    h.clock.advance(1)
    r = get_json(c, f"/status?token={pending}")
    assert r.status_code == 400 and "expired" in r.json["message"]
    r = c.get(WAIT)
    assert r.status_code == 303 and r.location.startswith("/phoneverify/")
    assert "has expired" in c.get(r.location).get_data(as_text=True)


def test_posts_keep_the_lifetime_while_reads_get_the_grace(harness: Harness) -> None:
    c = harness.client()
    token = csrf(c)
    body = post(c, "/start", token=token).json
    harness.clock.advance(601)
    for path in ("/confirm", "/resend", "/cancel"):
        r = post(c, path, {"token": body["token"]}, token=token)
        assert r.status_code == 400 and "expired" in r.json["message"], path
    assert get_json(c, f"/status?token={body['token']}").json["status"] == "expired"


# -- refused resend ---------------------------------------------------------------------------


def test_a_refused_resend_stays_on_the_wait_page_with_a_countdown(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_NUMBER_COOLDOWN=30)
    c = h.client()
    token = start_page(c)
    pending = pending_token(c)
    page = c.get(WAIT).get_data(as_text=True)
    assert re.search(r'id="pv-resend" data-wait="30"', page)  # counts down from the start
    h.clock.advance(10)
    r = form(c, "/resend", token, token=pending)
    assert (r.status_code, r.location) == (303, WAIT)
    assert int(r.headers["Retry-After"]) == 20
    page = c.get(WAIT).get_data(as_text=True)
    assert "A call was just made to this number" in page and 'role="alert"' in page
    assert 'id="pv-resend" data-wait="20"' in page
    assert "Answer your phone" in page and "PIN" in page  # still the live wait page
    # JSON: 429 with Retry-After
    r = post(c, "/resend", {"token": pending}, token=token)
    assert r.status_code == 429 and r.json["error"] == "rate_limited"
    assert r.headers["Retry-After"] == "20"
    # once allowed: a new call, its PIN announced as new, once
    h.clock.advance(20)
    assert 'data-wait="0"' in c.get(WAIT).get_data(as_text=True)
    r = form(c, "/resend", token, token=pending)
    assert (r.status_code, r.location) == (303, WAIT)
    page = c.get(WAIT).get_data(as_text=True)
    assert "We are calling you again with a new PIN" in page
    assert "Your new PIN." in page and 'aria-label="New PIN ' in page
    again = c.get(WAIT).get_data(as_text=True)
    assert "new PIN" not in again and "Your new PIN" not in again  # said once


# -- Post/Redirect/Get ------------------------------------------------------------------------


def test_reloading_after_a_wrong_pin_costs_no_try(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_STYLE="spoken")
    c = h.client()
    token = start_page(c)
    pending = pending_token(c)
    r = form(c, "/confirm", token, pin=wrong(spoken_pin(h, pending)))
    assert (r.status_code, r.location) == (303, WAIT)
    page = c.get(WAIT).get_data(as_text=True)
    assert "That PIN is not right. 4 tries left." in page
    assert 'aria-invalid="true" aria-describedby="pv-error"' in page
    assert 'id="pv-error" tabindex="-1"' in page
    for _ in range(3):  # what a reload sends: the GET, never the POST
        page = c.get(WAIT).get_data(as_text=True)
    assert row(h, pending).attempts == 1
    assert "not right" not in page and "aria-invalid" not in page  # shown once


REFUSED = {
    "/start": "A call was just made to this number",  # the cool-down
    "/resend": "A call was just made to this number",
    "/confirm": "The phone has not confirmed yet",  # keypad: claimed too early
    "/talk": "not available on this site",  # the simulated phone cannot bridge
}


@pytest.mark.parametrize("path", list(REFUSED))
def test_every_form_post_answers_303_errors_included(make_app: Any, path: str) -> None:
    h = make_app(PHONEVERIFY_NUMBER_COOLDOWN=60)
    c = h.client()
    token = start_page(c)
    pending = pending_token(c)
    r = form(c, path, token, token=pending)
    assert r.status_code == 303, (path, r.status_code)
    page = c.get(r.location)
    assert page.status_code == 200
    assert REFUSED[path] in page.get_data(as_text=True)
    assert b"pv-error" in page.data
    if path == "/start":  # "Call me" counts down to when the cool-down allows it
        assert re.search(r'data-wait="(60|59)"[^>]*>Call me<', page.get_data(as_text=True))
    assert REFUSED[path] not in c.get(r.location).get_data(as_text=True)  # shown once


def test_cancel_after_the_lifetime_goes_back_to_the_expired_wait_page(harness: Harness) -> None:
    c = harness.client()
    token = start_page(c)
    harness.clock.advance(601)
    r = form(c, "/cancel", token, token=pending_token(c))
    assert (r.status_code, r.location) == (303, WAIT)
    page = c.get(WAIT).get_data(as_text=True)
    assert "This verification has expired" in page and "Start again" in page


def test_a_csrf_failure_still_answers_400(harness: Harness) -> None:
    c = harness.client()
    csrf(c)
    r = form(c, "/start", "forged")
    assert r.status_code == 400 and b"security token" in r.data


def test_the_simulated_phone_redirects_with_303_errors_included(harness: Harness) -> None:
    c = harness.client()
    token = start_page(c)
    call = dev_calls(c)[-1]["id"]
    r = form(c, f"/dev/phone/{call}/keys", token, digits="12ab")
    assert (r.status_code, r.location) == (303, "/phoneverify/dev/phone")
    assert "Key in digits only." in c.get(r.location).get_data(as_text=True)


# -- already confirmed ------------------------------------------------------------------------


def test_after_success_the_verify_page_says_confirmed_and_offers_to_continue(
    harness: Harness,
) -> None:
    c = harness.client()
    assert get_json(c, "/").json["verified"] is False
    token = csrf(c)
    assert form(c, "/start", token, next="/secret").status_code == 303
    pending = pending_token(c)
    with c.session_transaction() as s:
        pin = s["_phoneverify_pending"]["p"]
    press(c, token, dev_calls(c)[-1]["id"], pin)
    assert form(c, "/confirm", token, token=pending).location == "/secret"
    assert get_json(c, "/").json["verified"] is True
    page = c.get("/phoneverify/?next=/secret").get_data(as_text=True)
    assert "Your phone is confirmed" in page and 'href="/secret"' in page
    assert "Call me" not in page


def test_a_step_up_view_asks_for_its_freshness_and_never_loops(harness: Harness) -> None:
    c = harness.client()
    token = start_page(c)
    with c.session_transaction() as s:
        pin = s["_phoneverify_pending"]["p"]
    press(c, token, dev_calls(c)[-1]["id"], pin)
    form(c, "/confirm", token, token=pending_token(c))
    assert c.get("/fresh").status_code == 200
    harness.clock.advance(61)
    r = c.get("/fresh")  # older than the view's max_age=60
    assert r.status_code == 302 and "max_age=60" in r.location and "next=/fresh" in r.location
    page = c.get(r.location).get_data(as_text=True)
    assert "Call me" in page and "Your phone is confirmed" not in page
    assert get_json(c, "/?max_age=60").json["verified"] is False
    assert get_json(c, "/").json["verified"] is True  # still fresh for the plain gate
    json_gate = c.get("/fresh", headers={"Accept": "application/json"})
    assert "max_age=60" in json_gate.json["verify_url"]
    for junk in ("x", "-1", "9" * 40, "٣"):
        assert c.get(f"/phoneverify/?max_age={junk}").status_code == 200


# -- the support line's own budget ------------------------------------------------------------

CALLFLOW = "a3348f81491bfb538cd2dbbda9e3c43c1e88ab22"


@pytest.fixture
def anveo() -> Iterator[tuple[AnveoServer, str]]:
    server = AnveoServer()
    with serve(server) as base:
        yield server, base + PATH
        server.release.set()


def bridging_app(make_app: Any, url: str, **extra: Any) -> Harness:
    h: Harness = make_app(
        PHONEVERIFY_PROVIDER="anveo",
        PHONEVERIFY_ANVEO_URL=url,
        PHONEVERIFY_ANVEO_USER_KEY=USER_KEY,
        PHONEVERIFY_ANVEO_CALLFLOW=CALLFLOW,
        PHONEVERIFY_ANVEO_CALLER_ID="+12155550100",
        PHONEVERIFY_ANVEO_CONNECT_TO="12155550199",
        PHONEVERIFY_MAX_ATTEMPTS=1,
        **extra,
    )
    return h


def test_talk_to_us_has_its_own_budget_and_stays_on_the_offer(
    make_app: Any, anveo: tuple[AnveoServer, str]
) -> None:
    server, url = anveo
    # the number's budget and cool-down are spent by the verification itself
    h = bridging_app(
        make_app, url, PHONEVERIFY_NUMBER_COOLDOWN=60, PHONEVERIFY_CALLS_PER_NUMBER_PER_HOUR=1
    )
    c = h.client()
    token = start_page(c)
    pending = pending_token(c)
    pin = server.last("DIAL.CALLFLOW")["variables"]["VERIFICATIONCODE"]
    form(c, "/confirm", token, pin=wrong(pin))
    assert row(h, pending).status == "locked"
    page = c.get(WAIT).get_data(as_text=True)
    assert "Talk to us" in page and 'id="pv-talk" >' in page  # offered, not hidden
    for _ in range(2):
        r = form(c, "/talk", token, token=pending)
        assert (r.status_code, r.location) == (303, WAIT)
        page = c.get(WAIT).get_data(as_text=True)
        assert "connect you with our support team" in page and "Talk to us" in page
    bridged = [r for r in server.requests if r["action"] == "DIAL.CONNECT"]
    assert len(bridged) == 2
    r = form(c, "/talk", token, token=pending)  # the third in the hour: refused, still there
    assert (r.status_code, r.location) == (303, WAIT)
    page = c.get(WAIT).get_data(as_text=True)
    assert "Too many calls to our support team" in page and "Talk to us" in page
    assert len([r for r in server.requests if r["action"] == "DIAL.CONNECT"]) == 2
    r = post(c, "/talk", {"token": pending}, token=token)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0


def test_the_bridge_budget_is_a_setting(make_app: Any, anveo: tuple[AnveoServer, str]) -> None:
    server, url = anveo
    h = bridging_app(make_app, url, PHONEVERIFY_BRIDGE_CALLS_PER_USER_PER_HOUR=1)
    c = h.client()
    token = csrf(c)
    body = post(c, "/start", token=token).json
    pin = server.last("DIAL.CALLFLOW")["variables"]["VERIFICATIONCODE"]
    post(c, "/confirm", {"token": body["token"], "pin": wrong(pin)}, token=token)
    assert post(c, "/talk", {"token": body["token"]}, token=token).status_code == 200
    assert post(c, "/talk", {"token": body["token"]}, token=token).status_code == 429


def test_talk_answers_json_when_the_provider_cannot_bridge(harness: Harness) -> None:
    c = harness.client()
    token = csrf(c)
    body = post(c, "/start", token=token).json
    r = post(c, "/talk", {"token": body["token"]}, token=token)
    assert r.status_code == 404 and r.is_json
    assert r.json["error"] == "not_found" and "not available" in r.json["message"]


# -- the simulated phone follows its verification ---------------------------------------------


def test_cancel_on_the_wait_page_hangs_up_the_simulated_call(harness: Harness) -> None:
    c = harness.client()
    token = start_page(c)
    assert dev_calls(c)[-1]["state"] == "ringing"
    r = form(c, "/cancel", token, token=pending_token(c))
    assert r.status_code == 303
    assert dev_calls(c)[-1]["state"] == "ended"


def test_a_locked_verification_ends_its_simulated_call(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_MAX_ATTEMPTS=1)
    c = h.client()
    token = csrf(c)
    body = post(c, "/start", token=token).json
    call = dev_calls(c)[-1]["id"]
    post(c, f"/dev/phone/{call}/answer", token=token)
    assert dev_calls(c)[-1]["state"] == "answered"
    press(c, token, call, wrong(body["pin"]))
    assert row(h, body["token"]).status == "locked"
    assert dev_calls(c)[-1]["state"] == "ended"
    page = c.get("/phoneverify/dev/phone").get_data(as_text=True)
    assert 'name="digits"' not in page  # no keypad on an ended call


# -- digits from other keyboards --------------------------------------------------------------

FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")
ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
DEVANAGARI = str.maketrans("0123456789", "०१२३४५६७८९")


@pytest.mark.parametrize("table", [FULLWIDTH, ARABIC_INDIC, DEVANAGARI])
def test_the_right_pin_in_other_digits_confirms(make_app: Any, table: dict[int, str]) -> None:
    h = make_app(PHONEVERIFY_STYLE="spoken")
    c = h.client()
    token = csrf(c)
    body = post(c, "/start", token=token).json
    typed = spoken_pin(h, body["token"]).translate(table)
    r = post(c, "/confirm", {"token": body["token"], "pin": typed}, token=token)
    assert r.status_code == 200 and r.json["status"] == "verified"


def test_anything_else_in_a_pin_stays_a_wrong_pin(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_STYLE="spoken")
    c = h.client()
    token = csrf(c)
    body = post(c, "/start", token=token).json
    pin = spoken_pin(h, body["token"])
    for typed in (pin[:-1] + "Ⅸ", pin[:-1] + "²", "x" + pin[1:]):  # numeric, not decimal
        r = post(c, "/confirm", {"token": body["token"], "pin": typed}, token=token)
        assert r.json["error"] == "wrong_pin", typed
    assert row(h, body["token"]).attempts == 3


def test_the_simulated_keypad_takes_other_digits(harness: Harness) -> None:
    c = harness.client()
    token = csrf(c)
    body = post(c, "/start", token=token).json
    r = press(c, token, dev_calls(c)[-1]["id"], body["pin"].translate(ARABIC_INDIC))
    assert r.json["accepted"] is True


@pytest.mark.parametrize("table", [FULLWIDTH, ARABIC_INDIC])
def test_a_phone_number_in_other_digits_is_read(make_app: Any, table: dict[int, str]) -> None:
    h = make_app(PHONEVERIFY_ALLOW_ENROLMENT=True, PHONEVERIFY_DEFAULT_REGION="US")
    c = h.client("3")
    token = csrf(c)
    r = post(c, "/start", {"phone": "+1 201 555 0199".translate(table)}, token=token)
    assert r.status_code == 200, r.json
    assert row(h, r.json["token"]).phone == "+12015550199"


# -- quickstart -------------------------------------------------------------------------------


def test_no_user_loader_and_no_login_manager_is_a_config_error_naming_both_fixes(
    tmp_path: Any,
) -> None:
    app = Flask("bare", instance_path=str(tmp_path))
    app.config.update(
        TESTING=True,
        SECRET_KEY=SECRET,
        PHONEVERIFY_DATABASE_URI=f"sqlite:///{tmp_path}/pv.sqlite3",
    )
    PhoneVerify(app)

    @app.get("/billing")
    @phone_verified_required
    def billing() -> str:
        return "billing"

    with pytest.raises(ConfigError) as caught:
        app.test_client().get("/billing")
    message = str(caught.value)
    assert "LoginManager" in message and "@phoneverify.user_loader" in message


def test_with_a_base_template_the_pages_fill_its_title_block(make_app: Any, tmp_path: Any) -> None:
    h = make_app(PHONEVERIFY_BASE_TEMPLATE="site.html")
    folder = tmp_path / "site-templates"
    folder.mkdir()
    (folder / "site.html").write_text(
        "<!doctype html><html lang=en><title>{% block title %}Home{% endblock %} - Site</title>"
        "<body>{% block content %}{% endblock %}</body></html>"
    )
    from jinja2 import FileSystemLoader

    h.app.jinja_loader = FileSystemLoader(str(folder))
    c = h.client()
    assert "<title>Confirm your phone - Site</title>" in c.get("/phoneverify/").get_data(
        as_text=True
    )
    start_page(c)
    assert "<title>Answer your phone - Site</title>" in c.get(WAIT).get_data(as_text=True)
