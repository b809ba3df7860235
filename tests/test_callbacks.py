"""The signed callback endpoint, from the outside: a served app and VoiceShot's loopback
server posting to it, forged and replayed posts, key rotation, size limits, CSRF."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from flask import Flask, request
from flask.testing import FlaskClient
from flask_wtf.csrf import CSRFProtect

from flask_phoneverify import PhoneVerify
from flask_phoneverify.models import Verification
from flask_phoneverify.tokens import Tokens

from . import providers_kit as kit
from .conftest import SECRET, DemoUser, FakeClock, Harness, csrf, get_json, post
from .loopback import serve
from .providers_kit import Live, callback_url, config
from .servers.voiceshot import MENU_ID, VoiceShotServer

# the shared fixtures: a loopback VoiceShot, and apps served on loopback that it posts to
voiceshot_server, vs, live = kit.voiceshot_server, kit.vs, kit.live

OLD_KEY = "the-old-secret-key-0123456789abcdef"
NEW_KEY = "the-new-secret-key-0123456789abcdef"
BOMB = (
    b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY a "aaaaaaaaaa">'
    b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
    b'<prompt menuid="1-1234" callid="CALL" promptid="1" keypress="&b;"/>'
)
EXTERNAL = (
    b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
    b'<prompt menuid="1-1234" callid="CALL" promptid="1" keypress="&e;"/>'
)


def send(url: str, body: bytes | Iterator[bytes], method: str = "POST") -> int:
    """POST raw XML the way VoiceShot does, from outside the app."""
    with httpx.Client(trust_env=False, timeout=10) as client:
        r = client.request(method, url, content=body, headers={"Content-Type": "text/xml"})
        return r.status_code


def keypress(callid: str, keys: str, **extra: str) -> bytes:
    more = "".join(f' {k}="{v}"' for k, v in extra.items())
    event = f'<prompt menuid="{MENU_ID}" callid="{callid}" promptid="1" keypress="{keys}"{more}/>'
    return event.encode()


def started(app: Live, user: str = "1") -> tuple[FlaskClient, str, dict[str, Any], str]:
    """Start a keypad verification; (client, csrf token, JSON body, verification id)."""
    client = app.h.client(user)
    token, r = app.start(client)
    assert r.status_code == 200, r.json
    return client, token, r.json, app.verification().id


def record(app: Live, vid: str) -> Verification:
    v = app.h.ext.state(app.h.app).store.get(vid)
    assert v is not None
    return v


def wrong(pin: str) -> str:
    return "000000" if pin != "000000" else "111111"


# -- the address is the proof --------------------------------------------------------------------


def test_unsigned_tampered_and_foreign_addresses_get_403(live: Callable[..., Live]) -> None:
    app = live()
    _client, _token, body, vid = started(app)
    event = keypress(app.callid(), body["pin"])
    good = app.server.events_url
    assert good is not None
    prefix, token = good.rsplit("/", 1)
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    foreign = Tokens([SECRET]).make_callback("anveo")
    other_site = Tokens(["another-site-secret-0123456789abcdef"]).make_callback("voiceshot")
    for address in ("unsigned", tampered, foreign, other_site, token[: len(token) // 2]):
        assert send(f"{prefix}/{address}", event) == 403
    assert send(f"{app.base}/phoneverify/callback/anveo/{token}", event) == 404
    assert send(good, event, method="GET") == 405
    assert record(app, vid).status == "calling" and record(app, vid).attempts == 0
    assert send(good, event) == 200
    assert record(app, vid).status == "verified"


def test_key_rotation_keeps_an_old_address_working(
    make_app: Callable[..., Harness], live: Callable[..., Live], vs: tuple[VoiceShotServer, str]
) -> None:
    before = make_app(**config(vs[1], SECRET_KEY=OLD_KEY))
    pasted = callback_url(before, "")  # the path pasted into VoiceShot's console before rotation
    rotated = live(SECRET_KEY=NEW_KEY, SECRET_KEY_FALLBACKS=[OLD_KEY])
    assert rotated.server.events_url != rotated.base + pasted  # new addresses use the new key
    _client, _token, body, vid = started(rotated)
    rotated.server.events_url = rotated.base + pasted
    assert rotated.server.press(rotated.callid(), body["pin"]) == 200
    assert record(rotated, vid).status == "verified"

    forgotten = live(SECRET_KEY=NEW_KEY)
    _client, _token, body, vid = started(forgotten, "2")
    assert send(forgotten.base + pasted, keypress(forgotten.callid(), body["pin"])) == 403
    assert record(forgotten, vid).status == "calling"


def test_the_cli_prints_the_public_address(make_app: Callable[..., Harness], vs: Any) -> None:
    h = make_app(**config(vs[1], PHONEVERIFY_EXTERNAL_URL="https://bank.example/"))
    result = h.app.test_cli_runner().invoke(args=["phoneverify", "callback-url", "voiceshot"])
    assert result.exit_code == 0 and "warning" not in result.output
    url = result.output.strip()
    assert url.startswith("https://bank.example/phoneverify/callback/voiceshot/")
    h.ext.state(h.app).tokens.check_callback(url.rsplit("/", 1)[-1], "voiceshot")


# -- what the route accepts ----------------------------------------------------------------------


def test_oversized_bodies_get_413_and_change_nothing(live: Callable[..., Live]) -> None:
    app = live(PHONEVERIFY_CALLBACK_MAX_BYTES=256)
    _client, _token, body, vid = started(app)
    url = app.server.events_url
    assert url is not None
    padded = keypress(app.callid(), body["pin"], note="x" * 200)
    assert len(padded) > 256
    assert send(url, padded) == 413
    assert send(url, iter([padded[:100], padded[100:]])) == 413  # chunked: no Content-Length
    assert record(app, vid).status == "calling"
    assert send(url, keypress(app.callid(), body["pin"])) == 200
    assert record(app, vid).status == "verified"


@pytest.mark.parametrize("hostile", [BOMB, EXTERNAL, b"<prompt menuid=", b"", b"\xff\xfe<x/>"])
def test_hostile_or_malformed_xml_gets_400_and_changes_nothing(
    live: Callable[..., Live], hostile: bytes
) -> None:
    app = live()
    _client, _token, _body, vid = started(app)
    assert app.server.events_url is not None
    assert send(app.server.events_url, hostile.replace(b"CALL", app.callid().encode())) == 400
    v = record(app, vid)
    assert (v.status, v.attempts, v.call) == ("calling", 0, "ringing")


# -- which events count --------------------------------------------------------------------------


def test_events_for_unknown_calls_change_nothing(live: Callable[..., Live]) -> None:
    app = live()
    _client, _token, body, vid = started(app)
    assert app.server.events_url is not None
    assert send(app.server.events_url, keypress(secrets.token_hex(16), body["pin"])) == 200
    assert send(app.server.events_url, keypress(vid, body["pin"])) == 200  # not the call id
    assert record(app, vid).status == "calling"


@pytest.mark.parametrize("ending", ["canceled", "failed", "expired", "verified"])
def test_events_for_finished_or_expired_calls_change_nothing(
    live: Callable[..., Live], ending: str
) -> None:
    app = live()
    client, token, body, vid = started(app)
    callid = app.callid()
    if ending == "canceled":
        post(client, "/cancel", {"token": body["token"]}, token=token)
    elif ending == "failed":
        app.server.hang_up(callid, "Unsuccessful", "No Answer")
    elif ending == "expired":
        app.h.clock.advance(601)
    else:
        app.server.press(callid, body["pin"])
    before = record(app, vid)
    assert app.server.press(callid, wrong(body["pin"])) == 200
    assert app.server.press(callid, body["pin"]) == 200
    after = record(app, vid)
    assert after.status == ending and after.attempts == 0
    assert after.verified_at == before.verified_at


def test_replayed_events_change_nothing(live: Callable[..., Live]) -> None:
    app = live()
    client, token, body, vid = started(app)
    old_call = app.callid()
    url = app.server.events_url
    assert url is not None
    app.server.press(old_call, wrong(body["pin"]))
    assert record(app, vid).attempts == 1
    replay = app.server.sent[-1][0]
    assert send(url, replay) == 200 and send(url, replay) == 200
    assert record(app, vid).attempts == 1

    resent = post(client, "/resend", {"token": body["token"]}, token=token).json
    assert app.callid() != old_call
    assert send(url, keypress(old_call, body["pin"])) == 200  # the old call's PIN and id
    assert send(url, keypress(old_call, resent["pin"])) == 200  # the old id, the new PIN
    v = record(app, vid)
    assert (v.status, v.attempts) == ("calling", 1)

    app.server.press(app.callid(), resent["pin"])
    verified = record(app, vid)
    assert verified.status == "verified"
    assert send(url, app.server.sent[-1][0]) == 200
    assert record(app, vid).attempts == 1 and record(app, vid).verified_at == verified.verified_at


def test_an_event_naming_another_number_changes_nothing(live: Callable[..., Live]) -> None:
    app = live()
    _client, _token, body, vid = started(app)
    call = app.server.calls[app.callid()]
    call.keys = body["pin"]
    summary = dict(status="Successful", comment="Human Answer")
    forged = app.server.summary(call, phonenumber="12015550999", **summary)
    assert app.server.post(forged) == 200
    v = record(app, vid)
    assert (v.status, v.attempts, v.call) == ("calling", 0, "ringing")
    assert app.server.post(app.server.summary(call, **summary)) == 200
    assert record(app, vid).status == "verified"


# -- CSRF: the callback is exempt, the pages are not ----------------------------------------------


@pytest.mark.parametrize("order", ["csrf-first", "csrf-last"])
def test_flask_wtf_csrf_protects_start_but_not_the_callback(
    tmp_path: Any, clock: FakeClock, vs: tuple[VoiceShotServer, str], order: str
) -> None:
    app = Flask("csrf_app", instance_path=str(tmp_path / "instance"))
    app.config.update(
        TESTING=True,
        SECRET_KEY=SECRET,
        PHONEVERIFY_DATABASE_URI=f"sqlite:///{tmp_path}/csrf.sqlite3",
        **config(vs[1]),
    )
    protect = CSRFProtect()
    if order == "csrf-first":
        protect.init_app(app)
    ext = PhoneVerify(clock=clock)
    users = {"1": DemoUser("1", "+12015550123")}

    @ext.user_loader
    def load() -> DemoUser | None:
        return users.get(request.headers.get("X-Test-User", ""))

    ext.init_app(app)
    if order == "csrf-last":
        protect.init_app(app)
    h = Harness(app=app, ext=ext, clock=clock, users=users)
    try:
        c = h.client()
        r = c.post("/phoneverify/start", json={}, headers={"Accept": "application/json"})
        assert r.status_code == 400 and b"CSRF" in r.data
        assert vs[0].posts == []
        body = post(c, "/start", token=csrf(c)).json
        assert body["status"] == "calling"
        with serve(app) as base:
            vs[0].events_url = callback_url(h, base)
            callid = list(vs[0].calls)[-1]
            forged = vs[0].events_url.rsplit("/", 1)[0] + "/forged"
            assert (
                send(forged, keypress(callid, body["pin"])) == 403
            )  # the token, not CSRF, decides
            assert vs[0].press(callid, body["pin"]) == 200
        assert get_json(c, f"/status?token={body['token']}").json["status"] == "verified"
    finally:
        ext.state(app).provider.close()


def test_a_summary_comment_reaches_the_log_as_one_line_without_the_number(
    live: Callable[..., Live], caplog: pytest.LogCaptureFixture
) -> None:
    """VoiceShot's own text (a failed call's comment) is cleaned before it is logged or
    audited: no line break, no number in clear."""
    caplog.set_level(logging.DEBUG)
    app = live()
    _client, _token, _body, vid = started(app)
    call = app.server.calls[app.callid()]
    forged = "Busy 2015550199\r\nphoneverify: verification FORGED confirmed"
    assert app.server.post(app.server.summary(call, status="Failed", comment=forged)) == 200
    assert record(app, vid).status == "failed"
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("flask_phoneverify")]
    assert any("failed" in m for m in ours)
    for message in ours:
        assert "\n" not in message and "\r" not in message and "2015550199" not in message
    events = app.h.ext.state(app.h.app).store.events(vid)
    assert all("2015550199" not in (e.detail or "") for e in events)
