"""VoiceShot against a loopback server that reads posts as VoiceShot documents them and
posts its call events to the app's callback address, as VoiceShot does."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from flask_phoneverify.errors import (
    ConfigError,
    ProviderConfigError,
    ProviderError,
    ProviderProtocolError,
    ProviderRejected,
    ProviderUnavailable,
)
from flask_phoneverify.providers.base import (
    CallbackReply,
    CallbackRequest,
    CallReport,
    CallRequest,
    CallState,
    Outcome,
    PlacedCall,
    Style,
)
from flask_phoneverify.providers.voiceshot import ERRORS, PROXY_URL, VoiceShot

from . import providers_kit as kit
from .conftest import Harness, get_json, post
from .loopback import free_port, serve
from .providers_kit import Live, config
from .servers.voiceshot import MENU_ID, PATH, VoiceShotServer


def cb(body: bytes) -> CallbackRequest:
    """An XML post to our callback address, as VoiceShot makes it."""
    return CallbackRequest("https://example.com/cb", body=body, content_type="text/xml")


# the shared fixtures: a loopback VoiceShot, and apps served on loopback that it posts to
voiceshot_server, vs, live = kit.voiceshot_server, kit.vs, kit.live

CALL_ID = "0123456789abcdef0123456789abcdef"
NUMBER = "+12015550123"


@pytest.fixture
def build(
    vs: tuple[VoiceShotServer, str], build_provider: Callable[..., Any]
) -> Callable[..., VoiceShot]:
    """A VoiceShot provider built from settings the way init_app builds it."""

    def factory(style: Style = Style.KEYPAD, url: str | None = None, **extra: Any) -> VoiceShot:
        built: VoiceShot = build_provider(VoiceShot, config(url or vs[1], **extra), style=style)
        return built

    return factory


def request(style: Style = Style.KEYPAD, pin: str = "123456", number: str = NUMBER) -> CallRequest:
    return CallRequest(number, pin, style, CALL_ID, "Example Bank")


def spoken_pin(tts: str) -> str:
    found = re.search(r"Your PIN is ([\d, ]+)\.", tts)
    assert found, tts
    return found.group(1).replace(", ", "")


# -- wire format -------------------------------------------------------------------------------


def test_keypad_call_asks_for_the_pin_without_saying_it(
    vs: tuple[VoiceShotServer, str], build: Callable[..., VoiceShot]
) -> None:
    server, _ = vs
    ticket = build().place_call(request(pin="908172"))
    assert ticket.reference == CALL_ID and ticket.call is CallState.RINGING
    sent = server.posts[-1]
    assert sent["headers"]["Content-Type"] == "text/xml"
    root = sent["root"]
    assert root.attrib == {"menuid": MENU_ID, "action": "0", "callerid": "2015550100"}
    assert [child.tag for child in root] == ["prompts", "phonenumbers"]
    call = server.calls[CALL_ID]
    assert call.number == "2015550123" and call.callerid == "2015550100"
    assert "Example Bank" in call.tts and "key in the PIN" in call.tts
    assert not re.search(r"9\D*0\D*8\D*1\D*7\D*2", call.tts)
    assert set(call.prompts) == {"1"}


def test_spoken_call_says_the_pin_digit_by_digit(
    vs: tuple[VoiceShotServer, str], build: Callable[..., VoiceShot]
) -> None:
    build(Style.SPOKEN).place_call(request(Style.SPOKEN, pin="908172"))
    tts = vs[0].calls[CALL_ID].tts
    assert tts.count("9, 0, 8, 1, 7, 2") == 2 and spoken_pin(tts) == "908172"


def test_numbers_outside_north_america_are_refused_before_any_request(
    vs: tuple[VoiceShotServer, str], build: Callable[..., VoiceShot]
) -> None:
    with pytest.raises(ProviderRejected, match=r"North American numbers \(\+1\) only"):
        build().place_call(request(number="+442079460000"))
    assert vs[0].posts == []


@pytest.mark.parametrize("errorid", sorted(ERRORS))
def test_every_documented_errorid_has_a_readable_reason(
    vs: tuple[VoiceShotServer, str], build: Callable[..., VoiceShot], errorid: int
) -> None:
    vs[0].script["0"] = f"errorid:{errorid}"
    cls, _message, reason = ERRORS[errorid]
    with pytest.raises(cls) as e:
        build().place_call(request())
    assert type(e.value) is cls and not e.value.retryable
    assert "errorid" not in e.value.message and e.value.message.endswith(".")
    assert e.value.detail is not None and e.value.detail.startswith(f"VoiceShot errorid {errorid}:")
    assert reason in e.value.detail


def test_unregistered_ip_is_a_configuration_error_that_says_so(
    vs: tuple[VoiceShotServer, str], build: Callable[..., VoiceShot]
) -> None:
    vs[0].registered = False
    with pytest.raises(ProviderConfigError) as e:
        build().place_call(request())
    assert "IP address is not registered with VoiceShot" in e.value.message
    assert "register this server's address" in (e.value.detail or "")


def test_the_servers_own_checks_are_mapped(
    vs: tuple[VoiceShotServer, str], build: Callable[..., VoiceShot]
) -> None:
    with pytest.raises(ProviderConfigError) as e:
        build(PHONEVERIFY_VOICESHOT_MENU_ID="1-9999").place_call(request())
    assert (e.value.detail or "").startswith("VoiceShot errorid 19:")
    vs[0].script["0"] = "errorid:99"
    with pytest.raises(ProviderError) as other:
        build().place_call(request())
    assert type(other.value) is ProviderError and "undocumented" in (other.value.detail or "")


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [
        ("http500", ProviderUnavailable),
        ("http404", ProviderProtocolError),
        ("not_xml", ProviderProtocolError),
        ("dtd", ProviderProtocolError),
        ("wrong_root", ProviderProtocolError),
        ("no_errorid", ProviderProtocolError),
        ("bad_errorid", ProviderProtocolError),
    ],
)
def test_broken_answers_are_provider_errors(
    vs: tuple[VoiceShotServer, str],
    build: Callable[..., VoiceShot],
    behaviour: str,
    error: type[ProviderError],
) -> None:
    vs[0].script["0"] = behaviour
    with pytest.raises(error) as e:
        build().place_call(request())
    assert e.value.message and e.value.detail


def test_connection_failure_retries_once_at_the_fallback(
    vs: tuple[VoiceShotServer, str], build: Callable[..., VoiceShot]
) -> None:
    down = f"http://127.0.0.1:{free_port()}{PATH}"
    build(url=down, PHONEVERIFY_VOICESHOT_FALLBACK_URL=vs[1]).place_call(request())
    assert list(vs[0].calls) == [CALL_ID]
    with pytest.raises(ProviderUnavailable, match="could not be reached"):
        build(url=down).place_call(request())


def test_a_timeout_is_not_retried_so_no_call_is_placed_twice(
    vs: tuple[VoiceShotServer, str], build: Callable[..., VoiceShot]
) -> None:
    fallback = VoiceShotServer()
    vs[0].script["0"] = "slow"
    with serve(fallback) as other:
        provider = build(
            PHONEVERIFY_VOICESHOT_TIMEOUT=0.2, PHONEVERIFY_VOICESHOT_FALLBACK_URL=other
        )
        with pytest.raises(ProviderUnavailable, match="did not answer in time"):
            provider.place_call(request())
        vs[0].release.set()
    fallback.close()
    assert fallback.posts == []


@pytest.mark.parametrize(
    ("url", "fallback", "expected"),
    [
        ("https://api.voiceshot.com/ivrapi.asp", None, PROXY_URL),
        ("https://api.voiceshot.com/ivrapi.asp", "", None),
        ("http://127.0.0.1:9/ivrapi.asp", None, None),
        (
            "http://127.0.0.1:9/ivrapi.asp",
            "http://127.0.0.1:10/ivrapi.asp",
            "http://127.0.0.1:10/ivrapi.asp",
        ),
    ],
)
def test_fallback_address_defaults(
    build: Callable[..., VoiceShot], url: str, fallback: str | None, expected: str | None
) -> None:
    provider = build(url=url, PHONEVERIFY_VOICESHOT_FALLBACK_URL=fallback)
    assert provider.fallback_url == expected


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("PHONEVERIFY_VOICESHOT_MENU_ID", None),
        ("PHONEVERIFY_VOICESHOT_MENU_ID", "1 1234"),
        ("PHONEVERIFY_VOICESHOT_CALLER_ID", None),
        ("PHONEVERIFY_VOICESHOT_CALLER_ID", "555-0100"),
        ("PHONEVERIFY_VOICESHOT_CALLER_ID", "+442079460000"),
        ("PHONEVERIFY_VOICESHOT_URL", "api.voiceshot.com/ivrapi.asp"),
        ("PHONEVERIFY_VOICESHOT_FALLBACK_URL", "apiproxy"),
    ],
)
def test_settings_that_cannot_work_are_refused_at_init(
    make_app: Callable[..., Harness], key: str, value: Any
) -> None:
    with pytest.raises(ConfigError) as e:
        make_app(**config("https://api.voiceshot.com/ivrapi.asp", **{key: value}))
    assert e.value.key == key


def test_caller_id_may_be_written_as_e164(build: Callable[..., VoiceShot]) -> None:
    assert build(PHONEVERIFY_VOICESHOT_CALLER_ID="+12015550100").caller_id == "2015550100"
    assert build(PHONEVERIFY_VOICESHOT_CALLER_ID=2015550100).caller_id == "2015550100"


# -- call query (action 3) ---------------------------------------------------------------------


def test_call_query_reads_the_call_like_a_summary(
    vs: tuple[VoiceShotServer, str], build: Callable[..., VoiceShot]
) -> None:
    server, _ = vs
    provider = build()
    provider.place_call(request())
    placed = PlacedCall(CALL_ID, CALL_ID, NUMBER, Style.KEYPAD)
    assert provider.call_status(placed) == CallReport()  # not finished: no news
    query = server.posts[-1]["root"]
    assert query.attrib == {"action": "3", "menuid": MENU_ID}
    assert [(e.tag, e.attrib) for e in query.iter("phonenumber")] == [
        ("phonenumber", {"callid": CALL_ID})
    ]
    server.keypress_events = server.summaries = False
    server.press(CALL_ID, "123456#")
    server.hang_up(CALL_ID)
    report = provider.call_status(placed)
    assert report.digits == "123456" and report.call is CallState.ENDED and report.once
    assert provider.call_status(placed) == report  # told again: the flow counts it once


@pytest.mark.parametrize(
    ("status", "comment", "reason"),
    [
        ("Unsuccessful", "No Answer", "The call was not answered."),
        ("Unsuccessful", "Busy", "The line was busy. Please try again in a moment."),
        ("Failed", "Invalid Number", "The number could not be reached."),
        ("Unsuccessful", "", "The call did not go through."),
    ],
)
def test_calls_that_reach_nobody_fail_with_a_readable_reason(
    vs: tuple[VoiceShotServer, str],
    build: Callable[..., VoiceShot],
    status: str,
    comment: str,
    reason: str,
) -> None:
    server, _ = vs
    server.summaries = False
    provider = build(Style.SPOKEN)
    provider.place_call(request(Style.SPOKEN))
    server.hang_up(CALL_ID, status, comment)
    report = provider.call_status(PlacedCall(CALL_ID, CALL_ID, NUMBER, Style.SPOKEN))
    assert report.outcome is Outcome.FAILED and report.reason == reason
    assert report.detail is not None and status in report.detail


@pytest.mark.parametrize(
    ("status", "comment"),
    [
        ("Successful", "Answering Machine"),
        ("Unsuccessful", "Machine Answer"),
        ("Successful", "Voicemail"),
    ],
)
@pytest.mark.parametrize("style", [Style.SPOKEN, Style.KEYPAD])
def test_a_machine_answer_is_voicemail_even_when_successful(
    vs: tuple[VoiceShotServer, str],
    build: Callable[..., VoiceShot],
    status: str,
    comment: str,
    style: Style,
) -> None:
    server, _ = vs
    server.summaries = False
    provider = build(style)
    provider.place_call(request(style))
    server.hang_up(CALL_ID, status, comment)
    report = provider.call_status(PlacedCall(CALL_ID, CALL_ID, NUMBER, style))
    assert (report.outcome, report.call) == (Outcome.VOICEMAIL, CallState.ENDED)
    assert report.detail is not None and comment in report.detail


def test_voicemail_summary_fails_the_verification_with_its_reason(
    live: Callable[..., Live],
) -> None:
    app = live(PHONEVERIFY_STYLE="spoken")
    c = app.h.client()
    _token, r = app.start(c)
    assert app.server.hang_up(app.callid(), "Successful", "Answering Machine") == 200
    status = get_json(c, f"/status?token={r.json['token']}").json
    assert (status["status"], status["reason"], status["message"]) == (
        "failed",
        "voicemail",
        "The call reached voicemail, not you.",
    )


def test_call_query_errors_are_provider_errors(
    vs: tuple[VoiceShotServer, str], build: Callable[..., VoiceShot]
) -> None:
    vs[0].script["3"] = "errorid:1"
    with pytest.raises(ProviderConfigError, match="not registered"):
        build().call_status(PlacedCall(CALL_ID, CALL_ID, NUMBER, Style.KEYPAD))
    vs[0].script["3"] = "not_xml"
    with pytest.raises(ProviderProtocolError):
        build().call_status(PlacedCall(CALL_ID, CALL_ID, NUMBER, Style.KEYPAD))


# -- events VoiceShot posts --------------------------------------------------------------------


def test_keypress_events_relay_the_keys_of_prompt_1_marked_once(
    build: Callable[..., VoiceShot],
) -> None:
    provider = build()
    event = f'<prompt menuid="{MENU_ID}" callid="{CALL_ID}" promptid="1" keypress="908172#"/>'
    [parsed] = provider.parse_callback(cb(event.encode()))
    assert parsed.call_id == CALL_ID and parsed.report.digits == "908172"
    assert parsed.report.call is CallState.ANSWERED and parsed.number is None
    assert parsed.report.once  # the flow counts these digits once per call and number
    # a replay (to this worker or another) is relayed again: no memory in the provider
    assert build().parse_callback(cb(event.encode())) == [parsed]
    assert provider.parse_callback(cb(event.encode())) == [parsed]
    other_prompt = event.replace('promptid="1"', 'promptid="2"').replace("908172", "5")
    other_menu = event.replace(MENU_ID, "1-9999").replace("908172", "6")
    assert provider.parse_callback(cb(other_prompt.encode())) == []
    assert provider.parse_callback(cb(other_menu.encode())) == []
    assert build(Style.SPOKEN).parse_callback(cb(event.encode())) == []


@pytest.mark.parametrize("digits", [11, 10])
def test_summary_carries_the_number_and_the_keys(
    vs: tuple[VoiceShotServer, str], build: Callable[..., VoiceShot], digits: int
) -> None:
    server, _ = vs
    server.summary_digits = digits
    provider = build()
    provider.place_call(request())
    server.calls[CALL_ID].keys = "123456"
    server.calls[CALL_ID].status, server.calls[CALL_ID].comment = "Successful", "Human Answer"
    [event] = provider.parse_callback(cb(server.summary(server.calls[CALL_ID])))
    assert event.number == NUMBER and event.report.digits == "123456" and event.report.once
    [again] = provider.parse_callback(cb(server.summary(server.calls[CALL_ID])))
    assert again == event  # repeated for the flow to count once, in the database


def test_summary_without_keys_fails_a_keypad_call_and_delivers_a_spoken_one(
    vs: tuple[VoiceShotServer, str], build: Callable[..., VoiceShot]
) -> None:
    server, _ = vs
    keypad = build()
    keypad.place_call(request())
    call = server.calls[CALL_ID]
    call.status, call.comment = "Successful", "Human Answer"
    [event] = keypad.parse_callback(cb(server.summary(call)))
    assert event.report.outcome is Outcome.FAILED
    assert event.report.reason == "The call ended before the PIN was keyed in."
    [spoken] = build(Style.SPOKEN).parse_callback(cb(server.summary(call)))
    assert spoken.report.outcome is Outcome.CONFIRMED and spoken.report.digits is None
    assert not spoken.report.once and not event.report.once  # no digits, nothing to count


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not xml",
        b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        b'<prompt menuid="1-1234" callid="x" promptid="1" keypress="&e;"/>',
        b"<html/>",
        b'<prompt menuid="1-1234" promptid="1" keypress="1"/>',
        b'<campaign menuid="1-1234" callid="x" status="Successful" phonenumber="+44 20"/>',
    ],
)
def test_events_we_cannot_read_are_refused(build: Callable[..., VoiceShot], body: bytes) -> None:
    with pytest.raises(ProviderProtocolError):
        build().parse_callback(cb(body))


def test_answer_and_hangup_events_change_nothing(build: Callable[..., VoiceShot]) -> None:
    provider = build()
    answer = f'<campaign menuid="{MENU_ID}" callid="{CALL_ID}" action="4" callerid="2015550100"/>'
    hangup = f'<campaign menuid="{MENU_ID}" callid="{CALL_ID}" action="5" duration="24"/>'
    assert provider.parse_callback(cb(answer.encode())) == []
    assert provider.parse_callback(cb(hangup.encode())) == []
    assert provider.callback_reply(cb(b""), []) == CallbackReply("", "text/plain")


# -- the whole flow through the extension, events posted to the served app ---------------------


def test_keypad_flow_verifies_from_the_keypress_event(live: Callable[..., Live]) -> None:
    app = live()
    c = app.h.client()
    token, r = app.start(c)
    body = r.json
    assert r.status_code == 200 and body["style"] == "keypad" and len(body["pin"]) == 6
    assert body["pin"] not in app.server.calls[app.callid()].tts
    assert get_json(c, f"/status?token={body['token']}").json["call"] == "ringing"
    assert app.server.press(app.callid(), body["pin"] + "#") == 200
    assert get_json(c, f"/status?token={body['token']}").json["status"] == "verified"
    assert app.server.hang_up(app.callid()) == 200  # the summary that follows changes nothing
    r = post(c, "/confirm", {"token": body["token"]}, token=token)
    assert r.status_code == 200 and r.json["status"] == "verified"
    assert c.get("/secret").status_code == 200


PLACED = "UPDATE phoneverify_verifications SET call=CASE"


def test_a_call_placed_but_not_recorded_still_leads_to_the_wait_page(
    live: Callable[..., Live],
) -> None:
    """The phone rings even when the database fails right after the vendor placed the
    call: the person gets the wait page (never a 500), and the call's events still reach
    the stored verification."""
    import sqlite3

    from sqlalchemy import event

    app = live()
    st = app.h.ext.state(app.h.app)
    broken = {"on": True, "hits": 0}

    def fail(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if broken["on"] and statement.startswith(PLACED):
            broken["hits"] += 1
            raise sqlite3.OperationalError("disk I/O error")

    event.listen(st.store.engine, "before_cursor_execute", fail)
    c = app.h.client()
    token, _ = app.start(c)
    r = c.post("/phoneverify/start", data={"csrf_token": token})
    assert r.status_code == 303 and r.headers["Location"].endswith("/phoneverify/wait")
    page = c.get("/phoneverify/wait")
    assert page.status_code == 200 and "Answer your phone" in page.get_data(as_text=True)
    body = post(c, "/start", token=token).json
    assert body["status"] == "calling" and body["pin"]
    assert broken["hits"] == 3  # every start met the failure
    broken["on"] = False
    event.remove(st.store.engine, "before_cursor_execute", fail)
    assert app.server.press(app.callid(), body["pin"] + "#") == 200
    assert app.verification().status == "verified"
    assert post(c, "/confirm", {"token": body["token"]}, token=token).status_code == 200


def test_wrong_keys_count_as_an_attempt_then_the_right_ones_verify(
    live: Callable[..., Live],
) -> None:
    app = live()
    c = app.h.client()
    _token, r = app.start(c)
    body = r.json
    wrong = "000000" if body["pin"] != "000000" else "111111"
    app.server.press(app.callid(), wrong)
    status = get_json(c, f"/status?token={body['token']}").json
    assert status["status"] == "calling" and status["attempts_left"] == 4
    app.server.press(app.callid(), body["pin"])
    assert get_json(c, f"/status?token={body['token']}").json["status"] == "verified"


def test_keypad_flow_verifies_from_the_summary_alone(live: Callable[..., Live]) -> None:
    app = live()
    app.server.keypress_events = False
    c = app.h.client()
    _token, r = app.start(c)
    app.server.press(app.callid(), r.json["pin"])
    assert app.server.sent == []
    assert app.server.hang_up(app.callid()) == 200
    assert app.verification().status == "verified"


def test_keypad_flow_verifies_from_the_call_query_when_no_event_comes(
    live: Callable[..., Live],
) -> None:
    app = live()
    app.server.events_url = None
    app.server.keypress_events = app.server.summaries = False
    c = app.h.client()
    _token, r = app.start(c)
    body = r.json
    app.server.press(app.callid(), body["pin"])
    app.server.hang_up(app.callid())
    assert get_json(c, f"/status?token={body['token']}").json["status"] == "verified"
    assert [p["action"] for p in app.server.posts] == ["0", "3"]


def test_keypad_call_ended_without_keys_fails_with_the_reason(live: Callable[..., Live]) -> None:
    app = live()
    c = app.h.client()
    _token, r = app.start(c)
    app.server.hang_up(app.callid())
    status = get_json(c, f"/status?token={r.json['token']}").json
    assert status["status"] == "failed"
    assert status["message"] == "The call ended before the PIN was keyed in."


def test_spoken_flow_delivers_then_checks_the_typed_pin(live: Callable[..., Live]) -> None:
    app = live(PHONEVERIFY_STYLE="spoken")
    c = app.h.client()
    token, r = app.start(c)
    body = r.json
    assert body["style"] == "spoken" and "pin" not in body
    pin = spoken_pin(app.server.calls[app.callid()].tts)
    assert app.server.hang_up(app.callid()) == 200
    status = get_json(c, f"/status?token={body['token']}").json
    assert status["call"] == "delivered" and status["status"] == "calling"
    r = post(c, "/confirm", {"token": body["token"], "pin": pin}, token=token)
    assert r.status_code == 200 and r.json["status"] == "verified"
    assert c.get("/secret").status_code == 200


def test_unanswered_call_fails_the_verification(live: Callable[..., Live]) -> None:
    app = live(PHONEVERIFY_STYLE="spoken")
    c = app.h.client()
    _token, r = app.start(c)
    app.server.hang_up(app.callid(), "Unsuccessful", "No Answer")
    status = get_json(c, f"/status?token={r.json['token']}").json
    assert status["status"] == "failed" and status["message"] == "The call was not answered."


def test_a_number_outside_north_america_gets_a_clear_message(live: Callable[..., Live]) -> None:
    app = live(PHONEVERIFY_ALLOW_ENROLMENT=True)
    _token, r = app.start(app.h.client("3"), phone="+442079460000")
    assert r.status_code == 400  # refused before any call is counted or placed
    assert "numbers starting with +1" in r.json["message"]
    assert app.server.posts == []


def test_unregistered_ip_is_explained_when_starting(live: Callable[..., Live]) -> None:
    app = live()
    app.server.registered = False
    c = app.h.client()
    _token, r = app.start(c)
    assert r.status_code == 502 and "not registered with VoiceShot" in r.json["message"]
    assert c.get("/secret").status_code == 302


@pytest.mark.parametrize("status", ["Pending", "In Progress", "Queued", "Calling"])
def test_a_call_query_mid_call_keeps_the_verification_open(
    live: Callable[..., Live], status: str
) -> None:
    app = live()
    app.server.events_url = None
    c = app.h.client()
    _token, r = app.start(c)
    app.server.calls[app.callid()].status = status  # what a call query made mid-call may say
    answer = get_json(c, f"/status?token={r.json['token']}").json
    assert [p["action"] for p in app.server.posts] == ["0", "3"]
    assert answer["status"] == "calling"


def test_close_closes_the_http_client(build: Callable[..., VoiceShot]) -> None:
    provider = build()
    provider.place_call(request())
    provider.close()
    assert provider.client.is_closed
    with pytest.raises(RuntimeError, match="closed"):
        provider.place_call(request())
