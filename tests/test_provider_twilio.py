"""Twilio Programmable Voice against a loopback Twilio that speaks its wire format, signs
what it posts and plays the call (a person, or voicemail)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from flask.testing import FlaskClient

from flask_phoneverify.errors import ConfigError
from flask_phoneverify.providers.base import CallbackRequest, Style
from flask_phoneverify.providers.twilio import Twilio, signature

from .helpers import Harness, csrf, get_json, log_text, post, row
from .loopback import free_port, serve
from .servers.twilio import ACCOUNT_SID, AUTH_TOKEN, FROM, Call, TwilioServer

NUMBER = "+12015550123"
VOICEMAIL = "The call reached voicemail, not you."


def twilio_config(api: str, external: str, **extra: Any) -> dict[str, Any]:
    return {
        "PHONEVERIFY_PROVIDER": "twilio",
        "PHONEVERIFY_TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "PHONEVERIFY_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "PHONEVERIFY_TWILIO_FROM": FROM,
        "PHONEVERIFY_TWILIO_URL": api,
        "PHONEVERIFY_EXTERNAL_URL": external,
        **extra,
    }


@pytest.fixture(scope="module")
def twilio_server() -> Iterator[tuple[TwilioServer, str]]:
    server = TwilioServer()
    with serve(server) as base:
        yield server, base
    server.close()


@pytest.fixture
def tw(twilio_server: tuple[TwilioServer, str]) -> tuple[TwilioServer, str]:
    twilio_server[0].reset()
    return twilio_server


@dataclass
class Live:
    """An app served on loopback at the address PHONEVERIFY_EXTERNAL_URL names."""

    h: Harness
    server: TwilioServer
    client: FlaskClient
    token: str = ""
    pending: str = ""

    def start(self) -> dict[str, Any]:
        self.token = csrf(self.client)
        r = post(self.client, "/start", token=self.token)
        assert r.status_code == 200, r.json
        self.pending = r.json["token"]
        body: dict[str, Any] = r.json
        return body

    def call(self) -> Call:
        return list(self.server.calls.values())[-1]

    def created(self) -> dict[str, list[str]]:
        form: dict[str, list[str]] = {}
        for name, value in self.server.requests[-1]["form"]:
            form.setdefault(name, []).append(value)
        return form

    def status(self) -> dict[str, Any]:
        r = get_json(self.client, f"/status?token={self.pending}")
        assert r.status_code == 200, r.json
        answer: dict[str, Any] = r.json
        return answer

    def confirm(self, pin: str | None = None) -> Any:
        body = {"token": self.pending, **({"pin": pin} if pin is not None else {})}
        return post(self.client, "/confirm", body, token=self.token)


@pytest.fixture
def live(make_app: Callable[..., Harness], tw: tuple[TwilioServer, str]) -> Iterator[Any]:
    with ExitStack() as stack:

        def factory(**extra: Any) -> Live:
            server, api = tw
            port = free_port()
            h = make_app(**twilio_config(api, f"http://127.0.0.1:{port}", **extra))
            stack.enter_context(serve(h.app, port=port))
            return Live(h, server, h.client())

        yield factory


def said(call: Call) -> str:
    return " ".join(call.heard)


def spoken_forms(pin: str) -> list[str]:
    return [pin, " ".join(pin), ", ".join(pin)]


# -- the signature --------------------------------------------------------------------------------


def test_signature_matches_twilios_documented_example() -> None:
    params = [
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+12349013030"),
        ("Digits", "1234"),
        ("From", "+12349013030"),
        ("To", "+18005551212"),
    ]
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert signature("12345", url, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    assert signature("12345", url, list(reversed(params))) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


# -- keypad ---------------------------------------------------------------------------------------


def test_keypad_call_is_created_as_twilio_documents_and_verifies(live: Any) -> None:
    lv: Live = live()
    body = lv.start()
    pin = body["pin"]
    request = lv.server.requests[-1]
    assert request["method"] == "POST"
    assert request["path"] == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json"
    assert request["auth"] == (ACCOUNT_SID, AUTH_TOKEN)
    form = lv.created()
    assert form["To"] == [NUMBER] and form["From"] == [FROM]
    assert form["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]
    assert form["MachineDetection"] == ["Enable"] and form["Method"] == ["POST"]
    assert "Twiml" not in form  # with detection, Twilio fetches the script once it knows who
    callback = urlsplit(form["StatusCallback"][0])
    assert callback.netloc == urlsplit(form["Url"][0]).netloc
    assert callback.path.startswith("/phoneverify/callback/twilio/")
    assert all(pin not in value for values in form.values() for value in values)
    call = lv.call()
    assert row(lv.h, lv.pending).provider_ref == call.sid

    lv.server.ring(call.sid)
    lv.server.answer(call.sid)
    assert "key in the PIN shown on your screen" in said(call)
    gather = call.gather
    assert gather is not None
    assert (gather.get("numDigits"), gather.get("finishOnKey"), gather.get("input")) == (
        "6",
        "#",
        "dtmf",
    )
    assert all(form not in said(call) for form in spoken_forms(pin))
    assert lv.status()["call"] == "answered"

    # a wrong PIN counts as an attempt, and the call asks again
    wrong = str((int(pin) + 1) % 10**6).zfill(6)
    lv.server.press(call.sid, wrong + "#")
    assert row(lv.h, lv.pending).attempts == 1
    assert "That PIN is not right" in call.heard[-1]
    assert call.gather is not None
    assert lv.confirm().status_code == 409  # the phone has not confirmed

    lv.server.press(call.sid, pin + "#")
    assert call.heard[-1] == "Thank you. You are confirmed. Goodbye."
    assert call.status == "completed"
    assert all(p["status"] == 200 for p in lv.server.posted)
    assert all(
        "text/xml" in p["content_type"] for p in lv.server.posted if "step=status" not in p["url"]
    )
    r = lv.confirm()
    assert r.status_code == 200, r.json
    assert lv.h.client().get("/secret").status_code == 302  # another session: not verified
    assert lv.client.get("/secret").status_code == 200


def test_keypad_call_without_machine_detection_sends_inline_twiml(live: Any) -> None:
    lv: Live = live(PHONEVERIFY_TWILIO_MACHINE_DETECTION=False)
    pin = lv.start()["pin"]
    form = lv.created()
    assert "Url" not in form and "MachineDetection" not in form
    twiml = form["Twiml"][0]
    assert twiml.startswith("<Response><Gather") and 'finishOnKey="#"' in twiml
    assert pin not in twiml
    call = lv.call()
    lv.server.answer(call.sid)
    lv.server.press(call.sid, pin)
    assert row(lv.h, lv.pending).status == "verified"


def test_keys_locked_out_say_goodbye_and_hang_up(live: Any) -> None:
    lv: Live = live(PHONEVERIFY_MAX_ATTEMPTS=2)
    pin = lv.start()["pin"]
    call = lv.call()
    lv.server.answer(call.sid)
    wrong = str((int(pin) + 1) % 10**6).zfill(6)
    lv.server.press(call.sid, wrong)
    lv.server.press(call.sid, wrong)
    assert row(lv.h, lv.pending).status == "locked"
    assert call.heard[-1] == "That PIN is not right. Goodbye." and call.status == "completed"


def test_keypad_call_that_ends_without_keys_fails(live: Any) -> None:
    lv: Live = live()
    lv.start()
    call = lv.call()
    lv.server.answer(call.sid)
    lv.server.silence(call.sid)
    assert call.heard[-1] == "We did not get any keys. Goodbye."
    status = lv.status()
    assert status["status"] == "failed"
    assert status["message"] == "The call ended before the PIN was entered."


# -- spoken: the code only after the digit --------------------------------------------------------


def _digit(call: Call) -> str:
    text = said(call)
    assert "To hear your code, press " in text, text
    return text.split("To hear your code, press ", 1)[1][0]


def test_spoken_code_is_spoken_only_after_the_digit(
    live: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    lv: Live = live(PHONEVERIFY_STYLE="spoken")
    body = lv.start()
    assert "pin" not in body
    call = lv.call()
    lv.server.answer(call.sid)
    digit = _digit(call)
    assert call.gather is not None and call.gather.get("numDigits") == "1"
    v = row(lv.h, lv.pending)
    # the code is nowhere in clear: not in the create request, the row, the TwiML so far
    sealed = dict(parse_qsl(urlsplit(lv.created()["Url"][0]).query))["s"]
    lv.server.press(call.sid, digit)
    heard = call.heard[-1]
    assert heard.startswith("Your code is ")
    pin = "".join(ch for ch in heard.split(".")[0] if ch.isdigit())
    assert len(pin) == 6
    everything = [str(lv.server.requests), repr(v.__dict__), sealed, *map(repr, call.documents[:1])]
    for text in everything:
        assert all(form not in text for form in spoken_forms(pin)), text
    assert call.status == "completed"
    assert (lv.status()["status"], lv.status()["call"]) == ("calling", "ended")
    r = lv.confirm(pin)
    assert r.status_code == 200, r.json
    assert all(form not in log_text(caplog) for form in spoken_forms(pin))
    assert AUTH_TOKEN not in log_text(caplog)


def test_spoken_wrong_digit_or_silence_hangs_up_without_the_code(live: Any) -> None:
    lv: Live = live(PHONEVERIFY_STYLE="spoken")
    lv.start()
    call = lv.call()
    lv.server.answer(call.sid)
    digit = _digit(call)
    other = "1" if digit != "1" else "2"
    lv.server.press(call.sid, other)
    assert call.status == "completed" and not any("code is" in h for h in call.heard)
    assert lv.status()["status"] == "calling"  # the person can ask for a new call

    r = post(lv.client, "/resend", {"token": lv.pending}, token=lv.token)
    assert r.status_code == 200, r.json
    call = lv.call()
    lv.server.answer(call.sid)
    lv.server.silence(call.sid)
    assert call.heard[-1] == "Goodbye." and call.status == "completed"
    assert not any("code is" in h for h in call.heard)


@pytest.mark.parametrize("answered_event_first", [True, False])
def test_voicemail_detected_never_hears_the_code_and_fails(
    live: Any, answered_event_first: bool
) -> None:
    """Whether the "answered" status callback or the script's fetch reaches us first."""
    lv: Live = live(PHONEVERIFY_STYLE="spoken")
    lv.start()
    call = lv.call()
    if not answered_event_first:
        call.events = ["completed"]
    lv.server.answer(call.sid, by="machine_start")
    assert call.heard == [] and call.status == "completed"
    assert len(call.documents) == 1 and b"<Hangup" in call.documents[0]
    status = lv.status()
    assert (status["status"], status["message"], status["reason"]) == (
        "failed",
        VOICEMAIL,
        "voicemail",
    )


def test_voicemail_without_detection_hears_only_the_prompt(live: Any) -> None:
    """No detection: the machine records the prompt; a greeting's key tone is not the digit
    (one of nine), and the code is never said."""
    lv: Live = live(PHONEVERIFY_STYLE="spoken", PHONEVERIFY_TWILIO_MACHINE_DETECTION=False)
    lv.start()
    twiml = lv.created()["Twiml"][0]
    assert "To hear your code, press" in twiml
    call = lv.call()
    lv.server.answer(call.sid, by="machine_start")
    digit = _digit(call)
    lv.server.press(call.sid, "0" if digit != "0" else "1")  # the greeting's tone
    assert not any("code is" in h for h in call.heard) and call.status == "completed"


# -- status ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("final", "message"),
    [
        ("busy", "The line was busy. Please try again."),
        ("no-answer", "Nobody answered the call. Please try again."),
        ("failed", "The call did not go through."),
    ],
)
def test_status_callback_of_an_unanswered_call_fails_it(
    live: Any, final: str, message: str
) -> None:
    lv: Live = live()
    lv.start()
    lv.server.end_unanswered(lv.call().sid, final)
    status = lv.status()
    assert (status["status"], status["message"]) == ("failed", message)


def test_status_is_polled_when_no_callback_came(live: Any) -> None:
    lv: Live = live()
    lv.start()
    call = lv.call()
    call.status = "in-progress"  # Twilio knows, but posted nothing
    lv.h.clock.advance(5)
    assert lv.status()["call"] == "answered"
    assert lv.server.requests[-1]["path"].endswith(f"/Calls/{call.sid}.json")
    assert lv.server.requests[-1]["method"] == "GET"
    call.status = "no-answer"
    lv.h.clock.advance(5)
    status = lv.status()
    assert (status["status"], status["message"]) == (
        "failed",
        "Nobody answered the call. Please try again.",
    )


# -- refused requests -----------------------------------------------------------------------------


def test_unsigned_or_forged_requests_are_refused(live: Any) -> None:
    lv: Live = live()
    pin = lv.start()["pin"]
    call = lv.call()
    lv.server.sign_requests = False
    lv.server.answer(call.sid)
    assert lv.server.posted[-1]["status"] == 403
    assert row(lv.h, lv.pending).call == "queued"  # nothing unsigned was taken

    lv.server.sign_requests = True
    lv.server.auth_token, real = "not-the-auth-token", lv.server.auth_token
    try:
        lv.server.answer(call.sid)
    finally:
        lv.server.auth_token = real
    assert lv.server.posted[-1]["status"] == 403

    # a genuine signature over other keys, replayed with the PIN: refused too
    keys_url = next(p["url"] for p in lv.server.posted if "step=answer" in p["url"])
    keys_url = keys_url.replace("step=answer", "step=keys")
    params = [("CallSid", call.sid), ("AccountSid", ACCOUNT_SID), ("Digits", "000000")]
    good = signature(AUTH_TOKEN, keys_url, params)
    params[2] = ("Digits", pin)
    r = lv.h.client(None).post(
        urlsplit(keys_url).path + "?" + urlsplit(keys_url).query,
        data=dict(params),
        headers={"X-Twilio-Signature": good},
    )
    assert r.status_code == 403
    v = row(lv.h, lv.pending)
    assert (v.status, v.attempts) == ("calling", 0)


def test_sealed_code_from_another_call_does_not_open(live: Any) -> None:
    lv: Live = live(PHONEVERIFY_STYLE="spoken")
    lv.start()
    first = dict(parse_qsl(urlsplit(lv.created()["Url"][0]).query))
    r = post(lv.client, "/resend", {"token": lv.pending}, token=lv.token)
    assert r.status_code == 200
    second = dict(parse_qsl(urlsplit(lv.created()["Url"][0]).query))
    base = lv.created()["Url"][0].split("?")[0]
    url = f"{base}?step=digit&c={second['c']}&s={first['s']}"
    params = [("CallSid", lv.call().sid), ("AccountSid", ACCOUNT_SID), ("Digits", "1")]
    r = lv.h.client(None).post(
        urlsplit(url).path + "?" + urlsplit(url).query,
        data=dict(params),
        headers={"X-Twilio-Signature": signature(AUTH_TOKEN, url, params)},
    )
    assert r.status_code == 400 and b"code is" not in r.data


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "status", "retryable"),
    [
        ("error:21211:400", 502, False),
        ("error:21212:400", 502, False),
        ("error:20429:429", 503, True),
        ("error:20003:401", 502, False),
        ("http500", 503, True),
        ("garbage", 503, True),
        ("empty_json", 503, True),
    ],
)
def test_twilio_errors_map_to_provider_errors(
    live: Any, script: str, status: int, retryable: bool, caplog: pytest.LogCaptureFixture
) -> None:
    lv: Live = live()
    lv.server.script["create"] = script
    token = csrf(lv.client)
    r = post(lv.client, "/start", token=token)
    assert (r.status_code, r.json["error"], r.json["retryable"]) == (
        status,
        "provider_error",
        retryable,
    )
    assert AUTH_TOKEN not in log_text(caplog) and "2015550123" not in log_text(caplog)


def test_echoed_credentials_and_forged_lines_never_reach_the_log(
    live: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    lv: Live = live()
    lv.server.script["create"] = "echo"
    r = post(lv.client, "/start", token=csrf(lv.client))
    assert (r.status_code, r.json["retryable"]) == (502, False)
    ours = [rec.getMessage() for rec in caplog.records if rec.name == "flask_phoneverify"]
    assert any("Twilio error 20003" in m for m in ours), ours
    for message in ours:
        assert "\n" not in message and "\r" not in message
        assert "12015550199" not in message and AUTH_TOKEN not in message
    assert AUTH_TOKEN not in r.get_data(as_text=True)


def test_invalid_to_is_the_numbers_fault(live: Any) -> None:
    lv: Live = live()
    lv.server.script["create"] = "error:21211:400"
    r = post(lv.client, "/start", token=csrf(lv.client))
    assert "could not call this number" in r.json["message"]


def test_wrong_auth_token_is_a_settings_error(live: Any) -> None:
    lv: Live = live(PHONEVERIFY_TWILIO_AUTH_TOKEN="wrong-token")
    r = post(lv.client, "/start", token=csrf(lv.client))
    assert (r.status_code, r.json["retryable"]) == (502, False)
    assert lv.server.requests[-1]["auth"] == (ACCOUNT_SID, "wrong-token")


# -- settings -------------------------------------------------------------------------------------


def test_external_url_is_required(make_app: Callable[..., Harness]) -> None:
    config = twilio_config("http://127.0.0.1:9", "")
    config["PHONEVERIFY_EXTERNAL_URL"] = None
    with pytest.raises(ConfigError) as info:
        make_app(**config)
    assert info.value.key == "PHONEVERIFY_EXTERNAL_URL"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("PHONEVERIFY_TWILIO_ACCOUNT_SID", "not-a-sid"),
        ("PHONEVERIFY_TWILIO_FROM", "2015550100"),
        ("PHONEVERIFY_TWILIO_URL", "ftp://api.twilio.com"),
    ],
)
def test_bad_settings_are_refused(make_app: Callable[..., Harness], key: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_app(**{**twilio_config("http://127.0.0.1:9", "https://example.com"), key: value})
    assert info.value.key == key


def test_parse_callback_needs_a_signature(build_provider: Callable[..., Any]) -> None:
    from flask_phoneverify.errors import Forbidden

    provider = build_provider(
        Twilio, twilio_config("http://127.0.0.1:9", "https://example.com"), style=Style.KEYPAD
    )
    body = f"CallSid=CA{'0' * 32}&AccountSid={ACCOUNT_SID}&CallStatus=ringing".encode()
    request = CallbackRequest(
        "https://example.com/cb?step=status&c=abc",
        body=body,
        content_type="application/x-www-form-urlencoded",
    )
    with pytest.raises(Forbidden):
        provider.parse_callback(request)
    signed = CallbackRequest(
        request.url,
        headers={"x-twilio-signature": signature(AUTH_TOKEN, request.url, request.form)},
        body=body,
        content_type=request.content_type,
    )
    [event] = provider.parse_callback(signed)
    assert event.call_id == "abc" and event.report.reference == f"CA{'0' * 32}"


def test_signature_is_checked_over_the_address_seen_through_external_url(
    make_app: Callable[..., Harness],
) -> None:
    """Behind a proxy the app is reached at another address than Twilio requested: the
    signature holds over the public one, and only over it."""
    h = make_app(**twilio_config("http://127.0.0.1:9", "https://verify.example.com"))
    token = h.ext.state(h.app).tokens.make_callback("twilio")
    path = f"/phoneverify/callback/twilio/{token}?step=status&c=0123abcd"
    params = [
        ("CallSid", "CA" + "1" * 32),
        ("AccountSid", ACCOUNT_SID),
        ("CallStatus", "ringing"),
        ("To", NUMBER),
    ]
    for signed_url, expected in (
        ("https://verify.example.com" + path, 200),
        ("http://localhost" + path, 403),
        ("https://verify.example.com" + path.replace("0123abcd", "0123abce"), 403),
    ):
        r = h.client(None).post(
            path,
            data=dict(params),
            headers={"X-Twilio-Signature": signature(AUTH_TOKEN, signed_url, params)},
        )
        assert r.status_code == expected, (signed_url, r.data)
    assert b"This request is not signed by Twilio." in r.data


def test_a_flood_of_form_fields_is_refused_not_a_crash(make_app: Callable[..., Harness]) -> None:
    h = make_app(**twilio_config("http://127.0.0.1:9", "https://verify.example.com"))
    token = h.ext.state(h.app).tokens.make_callback("twilio")
    body = "&".join(f"f{i}=x" for i in range(1000))
    r = h.client(None).post(
        f"/phoneverify/callback/twilio/{token}?step=status&c=ab",
        data=body,
        content_type="application/x-www-form-urlencoded",
        headers={"X-Twilio-Signature": "x"},
    )
    assert r.status_code == 403


def test_signed_requests_of_any_shape_never_answer_500(make_app: Callable[..., Harness]) -> None:
    """Signed (so they get past the signature) but otherwise anything: a readable answer."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    h = make_app(**twilio_config("http://127.0.0.1:9", "https://verify.example.com"))
    token = h.ext.state(h.app).tokens.make_callback("twilio")
    text = st.text(max_size=40)
    names = st.sampled_from(
        ["CallSid", "AccountSid", "CallStatus", "Digits", "AnsweredBy", "To", "From", "x"]
    )
    values = st.one_of(
        text, st.sampled_from(["CA" + "1" * 32, ACCOUNT_SID, "completed", "machine_start"])
    )

    @settings(
        max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(
        fields=st.lists(st.tuples(names, values), max_size=8),
        step=st.sampled_from(["answer", "keys", "digit", "status", "", "x"]),
        call_id=st.sampled_from(["ab", "", "c" * 80]),
        sealed=st.one_of(st.none(), text),
    )
    def run(fields: list[tuple[str, str]], step: str, call_id: str, sealed: str | None) -> None:
        from urllib.parse import urlencode

        query = {"step": step, "c": call_id, **({"s": sealed} if sealed is not None else {})}
        path = f"/phoneverify/callback/twilio/{token}?{urlencode(query)}"
        body = urlencode(fields)
        form = parse_qsl(body, keep_blank_values=True)
        r = h.client(None).post(
            path,
            data=body,
            content_type="application/x-www-form-urlencoded",
            headers={
                "X-Twilio-Signature": signature(
                    AUTH_TOKEN, "https://verify.example.com" + path, form
                )
            },
        )
        assert r.status_code in (200, 400), (r.status_code, r.data[:200])

    run()
