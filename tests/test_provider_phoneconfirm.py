"""PhoneConfirm through zeep against the loopback Jobs.asmx: the wire format, every
failure, the packaged WSDL, and the whole flow in both styles."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import defusedxml.ElementTree as SafeET
import httpx
import pytest

from flask_phoneverify.errors import (
    ConfigError,
    ProviderConfigError,
    ProviderError,
    ProviderProtocolError,
    ProviderUnavailable,
)
from flask_phoneverify.providers.base import CallRequest, CallState, Outcome, PlacedCall, Style
from flask_phoneverify.providers.phoneconfirm import (
    FAILED_REASON,
    KEYPAD_REASON,
    PACKAGED_WSDL,
    SPOKEN_REASON,
    PhoneConfirm,
    TransactionMismatch,
)

from .conftest import Harness, csrf, get_json, post
from .loopback import free_port, serve
from .servers.phoneconfirm import NS, PATH, SOAP, USER_GUID, PhoneConfirmServer

CALL_ID = "0123456789abcdef0123456789abcdef"
NUMBER = "+12015550123"


class _Current:
    """One loopback listener per module; each test gets a fresh service behind it."""

    def __init__(self) -> None:
        self.app = PhoneConfirmServer()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        return self.app(environ, start_response)


@pytest.fixture(scope="module")
def loopback() -> Iterator[tuple[_Current, str]]:
    current = _Current()
    with serve(current) as base:
        yield current, base + PATH


@pytest.fixture
def server(loopback: tuple[_Current, str]) -> Iterator[PhoneConfirmServer]:
    srv = PhoneConfirmServer()
    loopback[0].app = srv
    yield srv
    srv.release.set()


@pytest.fixture
def url(loopback: tuple[_Current, str], server: PhoneConfirmServer) -> str:
    return loopback[1]


@pytest.fixture
def make_provider(url: str) -> Iterator[Callable[..., PhoneConfirm]]:
    made: list[PhoneConfirm] = []

    def factory(style: Style = Style.KEYPAD, pin_length: int = 6, **options: Any) -> PhoneConfirm:
        opts: dict[str, Any] = {"user_guid": USER_GUID, "url": url, "timeout": 5.0}
        opts.update(options)
        provider = PhoneConfirm(opts, style=style, pin_length=pin_length, app_name="Example Bank")
        made.append(provider)
        return provider

    yield factory
    for p in made:
        p.close()


def request(style: Style = Style.KEYPAD, pin: str = "428913") -> CallRequest:
    return CallRequest(NUMBER, pin, style, CALL_ID, "Example Bank")


def placed(reference: str, style: Style = Style.KEYPAD, call_id: str = CALL_ID) -> PlacedCall:
    return PlacedCall(reference, call_id, NUMBER, style)


def phoneconfirm_app(make_app: Callable[..., Harness], url: str, **config: Any) -> Harness:
    return make_app(
        PHONEVERIFY_PROVIDER="phoneconfirm",
        PHONEVERIFY_PHONECONFIRM_URL=url,
        PHONEVERIFY_PHONECONFIRM_USER_GUID=USER_GUID,
        **config,
    )


# -- the wire ---------------------------------------------------------------------------------


def test_keypad_call_is_add_job_confirmation_with_our_pin(
    make_provider: Callable[..., PhoneConfirm], server: PhoneConfirmServer
) -> None:
    ticket = make_provider().place_call(request())
    got = server.last("AddJob")
    assert got.method == "POST" and got.path == PATH
    assert got.content_type == "text/xml; charset=utf-8"
    assert got.soap_action == '"http://tempuri.org/AddJob"'
    root = SafeET.fromstring(got.body)
    assert root.tag == f"{{{SOAP}}}Envelope"
    assert [c.tag for c in root.find(f"{{{SOAP}}}Body")] == [f"{{{NS}}}AddJob"]
    assert got.params == {
        "UserGuid": USER_GUID,
        "Number": "12015550123",
        "Text": "This is Example Bank. To confirm it is you, key in the PIN shown on your screen.",
        "PIN": "428913",
        "TransactionID": CALL_ID,
        "JobType": "Confirmation",
    }
    assert ticket.reference == server.last_job().guid and ticket.call is CallState.QUEUED
    assert server.operations() == ["AddJob"]


def test_spoken_call_is_notification_with_pin_in_the_text(
    make_provider: Callable[..., PhoneConfirm], server: PhoneConfirmServer
) -> None:
    make_provider(Style.SPOKEN).place_call(request(Style.SPOKEN))
    params = server.last("AddJob").params
    assert params["JobType"] == "Notification" and params["PIN"] == "428913"
    assert "@PIN" in params["Text"] and "Example Bank" in params["Text"]
    assert "428913" not in params["Text"]


def test_job_details_go_through_add_job_ex(
    make_provider: Callable[..., PhoneConfirm], server: PhoneConfirmServer
) -> None:
    provider = make_provider(
        thank_you_file="bye.wav", extension="204#", extension_delay=3, max_call_duration=90
    )
    provider.place_call(request())
    params = server.last("AddJobEx").params
    assert "TransactionID" not in params
    assert params["JobType"] == "Confirmation" and params["Number"] == "12015550123"
    assert params["JobDetails"] == {
        "TransactionID": CALL_ID,
        "ThankYouFile": "bye.wav",
        "Extension": "204#",
        "ExtensionDelay": 3,
        "MaxCallDuration": 90,
        "SingleDigitMode": False,
        "NotificationType": "Phone",
    }
    assert server.last_job().transaction_id == CALL_ID
    assert server.operations() == ["AddJobEx"]


def test_add_job_ex_sends_the_net_defaults_for_unset_value_fields(
    make_provider: Callable[..., PhoneConfirm], server: PhoneConfirmServer
) -> None:
    make_provider(thank_you_file="bye.wav").place_call(request())
    details = server.last("AddJobEx").params["JobDetails"]
    assert details["ExtensionDelay"] == 0 and details["MaxCallDuration"] == 0
    assert "Extension" not in details and "ReplyEmail" not in details


def test_text_may_start_with_an_uploaded_file(
    make_provider: Callable[..., PhoneConfirm], server: PhoneConfirmServer
) -> None:
    text = "@File=welcome.wav Please key in the PIN on your screen."
    make_provider(text=text).place_call(request())
    assert server.last("AddJob").params["Text"] == text


@pytest.mark.parametrize(
    ("style", "stage", "result", "call", "outcome", "reason"),
    [
        (Style.KEYPAD, "Waiting", False, CallState.QUEUED, Outcome.PENDING, None),
        (Style.KEYPAD, "Processing", False, CallState.RINGING, Outcome.PENDING, None),
        (Style.KEYPAD, "Processed", True, CallState.ENDED, Outcome.CONFIRMED, None),
        (Style.KEYPAD, "Processed", False, CallState.ENDED, Outcome.FAILED, KEYPAD_REASON),
        (Style.SPOKEN, "Processed", True, CallState.DELIVERED, Outcome.CONFIRMED, None),
        (Style.SPOKEN, "Processed", False, CallState.ENDED, Outcome.FAILED, SPOKEN_REASON),
        (Style.SPOKEN, "Failed", False, CallState.ENDED, Outcome.FAILED, FAILED_REASON),
    ],
)
def test_job_status_maps_onto_our_states(
    make_provider: Callable[..., PhoneConfirm],
    server: PhoneConfirmServer,
    style: Style,
    stage: str,
    result: bool,
    call: CallState,
    outcome: Outcome,
    reason: str | None,
) -> None:
    provider = make_provider(style)
    ticket = provider.place_call(request(style))
    server.settle(ticket.reference, stage, result=result)
    report = provider.call_status(placed(ticket.reference, style))
    assert (report.call, report.outcome, report.reason) == (call, outcome, reason)
    assert server.last("GetJobStatus").params == {"JobGuid": ticket.reference}
    assert server.last("GetJobStatus").soap_action == '"http://tempuri.org/GetJobStatus"'


def test_failed_job_keeps_error_code_and_description_for_the_log_only(
    make_provider: Callable[..., PhoneConfirm], server: PhoneConfirmServer
) -> None:
    provider = make_provider()
    ticket = provider.place_call(request())
    server.settle(
        ticket.reference,
        "Failed",
        error_code="17",
        error_desc="Line busy calling 12015550123\n   at PhoneConfirm.Dialer.Dial()",
    )
    report = provider.call_status(placed(ticket.reference))
    assert report.reason == FAILED_REASON
    assert report.detail is not None and "17" in report.detail and "Line busy" in report.detail
    assert "Dialer" not in report.detail and "2015550123" not in report.detail


def test_a_status_naming_another_transaction_is_refused(
    make_provider: Callable[..., PhoneConfirm], server: PhoneConfirmServer
) -> None:
    provider = make_provider()
    ticket = provider.place_call(request())
    server.settle(ticket.reference, "Processed", result=True)
    with pytest.raises(TransactionMismatch) as caught:
        provider.call_status(placed(ticket.reference, call_id="f" * 32))
    assert caught.value.retryable is False
    server.script["GetJobStatus"] = "wrong_transaction"
    with pytest.raises(TransactionMismatch):
        provider.call_status(placed(ticket.reference))


# -- failures -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("behaviour", "error", "retryable", "words"),
    [
        ("client_fault", ProviderConfigError, False, "refused the request"),
        ("server_fault", ProviderUnavailable, True, "try again"),
        ("http_400", ProviderConfigError, False, "refused the request"),
        ("http_404", ProviderConfigError, False, "refused the request"),
        ("http_500_empty", ProviderUnavailable, True, "having trouble"),
        ("http_503", ProviderUnavailable, True, "having trouble"),
        ("redirect", ProviderConfigError, False, "refused the request"),
        ("not_xml", ProviderProtocolError, True, "could not read"),
        ("bad_shape", ProviderProtocolError, True, "could not read"),
        ("empty_body", ProviderProtocolError, True, "could not read"),
        ("no_result", ProviderProtocolError, True, "could not read"),
        ("billion_laughs", ProviderProtocolError, True, "could not read"),
        ("external_entity", ProviderProtocolError, True, "could not read"),
    ],
)
def test_each_failure_of_add_job_is_a_readable_provider_error(
    make_provider: Callable[..., PhoneConfirm],
    server: PhoneConfirmServer,
    behaviour: str,
    error: type[ProviderError],
    retryable: bool,
    words: str,
) -> None:
    server.script["AddJob"] = behaviour
    with pytest.raises(error) as caught:
        make_provider().place_call(request())
    e = caught.value
    assert type(e) is error and e.retryable is retryable
    assert words in e.message.lower()
    assert "System." not in e.message and " at " not in e.message
    assert server.operations() == ["AddJob"]


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [
        ("server_fault", ProviderUnavailable),
        ("client_fault", ProviderConfigError),
        ("http_503", ProviderUnavailable),
        ("bad_shape", ProviderProtocolError),
        ("no_result", ProviderProtocolError),
        ("billion_laughs", ProviderProtocolError),
        ("unknown_stage", ProviderProtocolError),
    ],
)
def test_each_failure_of_get_job_status_is_a_provider_error(
    make_provider: Callable[..., PhoneConfirm],
    server: PhoneConfirmServer,
    behaviour: str,
    error: type[ProviderError],
) -> None:
    provider = make_provider()
    ticket = provider.place_call(request())
    server.script["GetJobStatus"] = behaviour
    with pytest.raises(error):
        provider.call_status(placed(ticket.reference))


def test_fault_detail_keeps_a_scrubbed_first_line(
    make_provider: Callable[..., PhoneConfirm], server: PhoneConfirmServer
) -> None:
    server.script["AddJob"] = "server_fault"
    with pytest.raises(ProviderUnavailable) as caught:
        make_provider().place_call(request())
    detail = caught.value.detail or ""
    assert "soap:Server" in detail and "Server was unable to process request" in detail
    assert "suspended" in detail
    assert USER_GUID not in detail and "[UserGuid]" in detail
    assert "2015550123" not in detail and "\n" not in detail and "WebServiceHandler" not in detail


def test_timeout_is_retryable(
    make_provider: Callable[..., PhoneConfirm], server: PhoneConfirmServer
) -> None:
    server.script["AddJob"] = "slow"
    with pytest.raises(ProviderUnavailable) as caught:
        make_provider(timeout=0.3).place_call(request())
    assert "did not answer in time" in caught.value.message and caught.value.retryable


def test_connection_refused_is_retryable(make_provider: Callable[..., PhoneConfirm]) -> None:
    provider = make_provider(url=f"http://127.0.0.1:{free_port()}{PATH}")
    with pytest.raises(ProviderUnavailable) as caught:
        provider.place_call(request())
    assert "could not be reached" in caught.value.message and caught.value.retryable


def test_the_user_guid_never_reaches_messages_details_or_logs(
    make_provider: Callable[..., PhoneConfirm],
    server: PhoneConfirmServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"
    provider = make_provider(user_guid=wrong)
    with pytest.raises(ProviderError) as caught:
        provider.place_call(request())  # the service echoes the wrong UserGuid in its fault
    assert wrong in server.received[-1].body.decode()
    texts = [str(caught.value), caught.value.message, caught.value.detail or "", caplog.text]
    assert not any(wrong in t or wrong.upper() in t for t in texts)
    assert "[UserGuid]" in (caught.value.detail or "")


def test_the_server_refuses_what_asmx_refuses(url: str) -> None:
    """The loopback service is strict, so the wire tests above mean something."""

    def send(body: str, action: str = '"http://tempuri.org/GetJobStatus"', **headers: str) -> Any:
        h = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": action, **headers}
        return httpx.post(url, content=body.encode(), headers=h)

    def envelope(inner: str) -> str:
        return f'<s:Envelope xmlns:s="{SOAP}"><s:Body>{inner}</s:Body></s:Envelope>'

    good = envelope(f'<GetJobStatus xmlns="{NS}"><JobGuid>x</JobGuid></GetJobStatus>')
    r = send(good, action="http://tempuri.org/GetJobStatus")  # unquoted
    assert (
        r.status_code == 500
        and b"did not recognize the value of HTTP Header SOAPAction" in r.content
    )
    r = send(
        envelope('<GetJobStatus xmlns="http://example.org/"><JobGuid>x</JobGuid></GetJobStatus>')
    )
    assert r.status_code == 500 and b"<faultcode>soap:Client</faultcode>" in r.content
    assert b"Server was unable to read request." in r.content and b"was not expected" in r.content
    r = send(envelope(f'<GetJobStatus xmlns="{NS}"><JobGUID>x</JobGUID></GetJobStatus>'))
    assert (
        b"soap:Client" in r.content and b"&lt;JobGUID xmlns='http://tempuri.org/'&gt;" in r.content
    )
    bad_enum = envelope(
        f'<AddJob xmlns="{NS}"><UserGuid>{USER_GUID}</UserGuid><JobType>Call</JobType></AddJob>'
    )
    r = send(bad_enum, action='"http://tempuri.org/AddJob"')
    assert b"'Call' is not a valid value for JobType" in r.content
    r = send(good.replace("</s:Body>", ""))
    assert r.status_code == 400 and r.content == b""
    r = send(good, **{"Content-Type": "application/soap+xml; charset=utf-8"})
    assert r.status_code == 415
    r = send(good)
    assert r.status_code == 500 and b"soap:Server" in r.content and b"Job not found" in r.content


# -- the WSDL -----------------------------------------------------------------------------


def test_the_packaged_wsdl_loads_without_network(
    make_provider: Callable[..., PhoneConfirm], monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = make_provider()

    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"network used: {args!r}")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(provider.session, "get", no_network)
    service = provider.service()
    assert provider.wsdl == str(PACKAGED_WSDL) and PACKAGED_WSDL.is_file()
    for operation in (
        "AddJob",
        "AddJobEx",
        "GetJobStatus",
        "SendConfirmation",
        "SendConfirmationEx",
    ):
        assert callable(getattr(service, operation))
    assert service._binding_options["address"] == provider.url
    assert provider.service() is service  # built once, reused


def test_a_wsdl_url_is_read_on_first_use_not_at_init(
    make_provider: Callable[..., PhoneConfirm], server: PhoneConfirmServer, url: str
) -> None:
    provider = make_provider(wsdl=url + "?wsdl")
    assert server.received == []
    provider.place_call(request())
    provider.place_call(request())
    assert [(r.method, r.query) for r in server.received] == [
        ("GET", "wsdl"),
        ("POST", ""),
        ("POST", ""),
    ]


def test_an_unreachable_wsdl_url_is_retryable(make_provider: Callable[..., PhoneConfirm]) -> None:
    provider = make_provider(wsdl=f"http://127.0.0.1:{free_port()}/soap/Jobs.asmx?wsdl")
    with pytest.raises(ProviderUnavailable):
        provider.place_call(request())


def test_a_wsdl_without_the_jobs_binding_is_a_config_error(
    make_provider: Callable[..., PhoneConfirm], tmp_path: Path
) -> None:
    other = tmp_path / "other.wsdl"
    other.write_text(PACKAGED_WSDL.read_text().replace('name="JobsSoap"', 'name="OtherSoap"'))
    provider = make_provider(wsdl=str(other))
    with pytest.raises(ProviderConfigError) as caught:
        provider.place_call(request())
    assert caught.value.retryable is False and "JobsSoap" in (caught.value.detail or "")


def test_a_live_wsdl_in_another_namespace_is_used_by_its_binding_name(
    make_provider: Callable[..., PhoneConfirm], tmp_path: Path
) -> None:
    vendor = tmp_path / "vendor.wsdl"
    vendor.write_text(
        PACKAGED_WSDL.read_text().replace("http://tempuri.org/", "http://vendor.example/")
    )
    service = make_provider(wsdl=str(vendor)).service()
    assert service._binding.name.text == "{http://vendor.example/}JobsSoap"


# -- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("style", "options", "key", "words"),
    [
        (Style.KEYPAD, {"text": "Please press @PIN now."}, "TEXT", "read the PIN out"),
        (Style.KEYPAD, {"text": "Please press @pin now."}, "TEXT", "read the PIN out"),
        (Style.SPOKEN, {"text": "Hello from the bank."}, "TEXT", "has no @PIN"),
        (Style.SPOKEN, {"text": "Say @PIN then @VoiceConfirmation"}, "TEXT", "records"),
        (Style.KEYPAD, {"text": "@File= Key in the PIN."}, "TEXT", "without a file name"),
        (Style.KEYPAD, {"text": "   "}, "TEXT", "is empty"),
        (Style.KEYPAD, {"extension_delay": 2}, "EXTENSION_DELAY", "without an extension"),
        (Style.KEYPAD, {"extension": "12 ext 4"}, "EXTENSION", "digits, * and #"),
        (Style.KEYPAD, {"user_guid": " "}, "USER_GUID", "is empty"),
        (Style.KEYPAD, {"url": "www.phoneconfirm.com/soap/Jobs.asmx"}, "URL", "http(s) address"),
        (Style.KEYPAD, {"wsdl": "/nowhere/jobs.wsdl"}, "WSDL", "not a file"),
    ],
)
def test_settings_that_do_not_fit_are_refused_at_init(
    make_provider: Callable[..., PhoneConfirm],
    style: Style,
    options: dict[str, Any],
    key: str,
    words: str,
) -> None:
    with pytest.raises(ConfigError) as caught:
        make_provider(style, **options)
    assert caught.value.key == f"PHONEVERIFY_PHONECONFIRM_{key}"
    assert words in str(caught.value)


@pytest.mark.parametrize("value", [True, False, "false"])
def test_the_removed_single_digit_mode_is_refused_by_init_app(
    make_app: Callable[..., Harness], url: str, server: PhoneConfirmServer, value: object
) -> None:
    with pytest.raises(ConfigError) as caught:
        phoneconfirm_app(make_app, url, PHONEVERIFY_PHONECONFIRM_SINGLE_DIGIT_MODE=value)
    assert caught.value.key == "PHONEVERIFY_PHONECONFIRM_SINGLE_DIGIT_MODE"
    assert "was removed" in str(caught.value) and "delete it" in str(caught.value)
    assert server.received == []


def test_job_details_never_ask_for_single_digit_mode(
    make_provider: Callable[..., PhoneConfirm], server: PhoneConfirmServer
) -> None:
    make_provider(max_call_duration=60).place_call(request())
    assert server.last("AddJobEx").params["JobDetails"]["SingleDigitMode"] is False


def test_an_app_name_cannot_smuggle_a_call_variable(url: str, server: PhoneConfirmServer) -> None:
    provider = PhoneConfirm(
        {"user_guid": USER_GUID, "url": url, "timeout": 5.0},
        style=Style.KEYPAD,
        pin_length=6,
        app_name="Acme @PIN @File=x.wav",
    )
    try:
        provider.place_call(request())
    finally:
        provider.close()
    text = server.last("AddJob").params["Text"]
    assert "@" not in text and "Acme PIN File=x.wav" in text


def test_init_app_requires_the_user_guid_and_touches_no_network(
    make_app: Callable[..., Harness], url: str, server: PhoneConfirmServer
) -> None:
    with pytest.raises(ConfigError) as caught:
        make_app(PHONEVERIFY_PROVIDER="phoneconfirm", PHONEVERIFY_PHONECONFIRM_URL=url)
    assert caught.value.key == "PHONEVERIFY_PHONECONFIRM_USER_GUID"
    with pytest.raises(ConfigError, match="read the PIN out"):
        phoneconfirm_app(make_app, url, PHONEVERIFY_PHONECONFIRM_TEXT="Press @PIN.")
    phoneconfirm_app(make_app, url, PHONEVERIFY_PHONECONFIRM_WSDL=url + "?wsdl")
    assert server.received == []


# -- the whole flow ----------------------------------------------------------------------------


def test_keypad_flow_through_the_extension(
    make_app: Callable[..., Harness], url: str, server: PhoneConfirmServer
) -> None:
    h = phoneconfirm_app(make_app, url)
    c = h.client()
    token = csrf(c)
    body = post(c, "/start", token=token).json
    assert body["style"] == "keypad" and body["call"] == "queued"
    job = server.last_job()
    assert job.job_type == "Confirmation" and job.pin == body["pin"] and job.number == "12015550123"
    assert body["pin"] not in job.text
    status = get_json(c, f"/status?token={body['token']}").json
    assert status["status"] == "calling" and status["call"] == "queued"
    server.answer(job)
    get_json(c, f"/status?token={body['token']}")  # within the poll interval: not asked
    assert server.operations().count("GetJobStatus") == 1
    h.clock.advance(2)
    status = get_json(c, f"/status?token={body['token']}").json
    assert status["call"] == "ringing" and server.operations().count("GetJobStatus") == 2
    r = post(c, "/confirm", {"token": body["token"]}, token=token)
    assert r.status_code == 409
    server.hang_up(job)
    h.clock.advance(2)
    assert get_json(c, f"/status?token={body['token']}").json["status"] == "verified"
    r = post(c, "/confirm", {"token": body["token"]}, token=token)
    assert r.status_code == 200 and r.json["status"] == "verified"
    assert c.get("/secret").data == b"the secret"
    assert not any(op.startswith("SendConfirmation") for op in server.operations())


def test_spoken_flow_through_the_extension(
    make_app: Callable[..., Harness], url: str, server: PhoneConfirmServer
) -> None:
    h = phoneconfirm_app(make_app, url, PHONEVERIFY_STYLE="spoken")
    c = h.client()
    token = csrf(c)
    body = post(c, "/start", token=token).json
    assert body["style"] == "spoken" and "pin" not in body
    job = server.last_job()
    assert job.job_type == "Notification" and "@PIN" in job.text
    server.answer(job)
    server.hang_up(job)
    status = get_json(c, f"/status?token={body['token']}").json
    assert status["status"] == "calling" and status["call"] == "delivered"
    r = post(
        c,
        "/confirm",
        {"token": body["token"], "pin": "000000" if job.pin != "000000" else "111111"},
        token=token,
    )
    assert r.status_code == 400 and r.json["error"] == "wrong_pin"
    r = post(c, "/confirm", {"token": body["token"], "pin": job.pin}, token=token)
    assert r.status_code == 200 and r.json["status"] == "verified"
    assert not any(op.startswith("SendConfirmation") for op in server.operations())


def test_wrong_keys_on_the_phone_are_named_as_such(
    make_app: Callable[..., Harness], url: str, server: PhoneConfirmServer
) -> None:
    h = phoneconfirm_app(make_app, url)
    c = h.client()
    body = post(c, "/start", token=csrf(c)).json
    server.settle(server.last_job().guid, "Processed", result=False, pin_out="111111")
    status = get_json(c, f"/status?token={body['token']}").json
    assert status["status"] == "failed"
    assert status["message"] == "The keys pressed on the phone did not match the PIN on the screen."


@pytest.mark.parametrize(
    ("stage", "reason", "audit"),
    [
        ("Processed", KEYPAD_REASON, "ConfirmationResult false"),
        ("Failed", FAILED_REASON, "ErrorCode 31: Number unreachable"),
    ],
)
def test_a_call_that_fails_fails_the_verification_with_a_reason(
    make_app: Callable[..., Harness],
    url: str,
    server: PhoneConfirmServer,
    stage: str,
    reason: str,
    audit: str,
) -> None:
    h = phoneconfirm_app(make_app, url)
    c = h.client()
    token = csrf(c)
    body = post(c, "/start", token=token).json
    job = server.last_job()
    server.settle(
        job.guid,
        stage,
        error_code="31" if stage == "Failed" else "0",
        error_desc="Number unreachable" if stage == "Failed" else None,
    )
    status = get_json(c, f"/status?token={body['token']}").json
    assert status["status"] == "failed" and status["message"] == reason
    st = h.ext.state(h.app)
    vid = st.tokens.read_pending(body["token"], max_age=600)[0]
    details = [e.detail or "" for e in st.store.events(vid) if e.kind == "call_failed"]
    assert len(details) == 1 and audit in details[0]


def test_a_fault_on_start_shows_a_clear_message_and_a_retry(
    make_app: Callable[..., Harness], url: str, server: PhoneConfirmServer
) -> None:
    h = phoneconfirm_app(make_app, url)
    c = h.client()
    token = csrf(c)
    server.script["AddJob"] = "server_fault"
    r = post(c, "/start", token=token)
    assert r.status_code == 503 and r.json["retryable"] is True
    assert (
        r.json["message"]
        == "PhoneConfirm could not handle the call just now. Please try again in a moment."
    )
    server.script["AddJob"] = "client_fault"
    r = c.post("/phoneverify/start", data={"csrf_token": token})
    assert r.status_code == 303  # Post/Redirect/Get: the verify page says it, with "Call me"
    shown = c.get(r.location).data
    assert b"Call me" in shown and b"refused the request" in shown
    for page in (shown, c.get("/phoneverify/").data):
        assert USER_GUID.encode() not in page and b"System." not in page
    server.script.clear()
    assert post(c, "/start", token=token).status_code == 200


def test_a_status_for_another_transaction_fails_the_verification(
    make_app: Callable[..., Harness], url: str, server: PhoneConfirmServer
) -> None:
    h = phoneconfirm_app(make_app, url)
    c = h.client()
    token = csrf(c)
    body = post(c, "/start", token=token).json
    server.settle(server.last_job().guid, "Processed", result=True)
    server.script["GetJobStatus"] = "wrong_transaction"
    status = get_json(c, f"/status?token={body['token']}").json
    assert status["status"] == "failed" and status["message"] == TransactionMismatch.default_message


def test_an_unavailable_status_keeps_the_call_going(
    make_app: Callable[..., Harness], url: str, server: PhoneConfirmServer
) -> None:
    h = phoneconfirm_app(make_app, url)
    c = h.client()
    token = csrf(c)
    body = post(c, "/start", token=token).json
    server.script["GetJobStatus"] = "http_503"
    assert get_json(c, f"/status?token={body['token']}").json["status"] == "calling"
    server.script.clear()
    server.settle(server.last_job().guid, "Processed", result=True)
    h.clock.advance(2)
    assert get_json(c, f"/status?token={body['token']}").json["status"] == "verified"


# -- the command-line form ----------------------------------------------------------------------


def test_the_cli_server_plays_the_person_who_answers() -> None:
    lines: list[str] = []
    srv = PhoneConfirmServer(out=lines.append)
    with serve(srv) as base:
        provider = PhoneConfirm(
            {"user_guid": USER_GUID, "url": base + PATH, "timeout": 5.0},
            style=Style.KEYPAD,
            pin_length=6,
            app_name="Example Bank",
        )
        spoken = PhoneConfirm(
            {"user_guid": USER_GUID, "url": base + PATH, "timeout": 5.0},
            style=Style.SPOKEN,
            pin_length=6,
            app_name="Example Bank",
        )
        try:
            keypad = provider.place_call(request(pin="551177"))
            srv.answer(srv.jobs[keypad.reference])
            assert provider.call_status(placed(keypad.reference)).call is CallState.RINGING
            srv.hang_up(srv.jobs[keypad.reference])
            assert provider.call_status(placed(keypad.reference)).outcome is Outcome.CONFIRMED
            said = spoken.place_call(request(Style.SPOKEN, pin="902614"))
            srv.answer(srv.jobs[said.reference])
        finally:
            provider.close()
            spoken.close()
    out = "\n".join(lines)
    assert "keys in 551177" in out and "'This is Example Bank. To confirm" in out
    assert "Your PIN is 9 0 2 6 1 4" in out and "PIN spoken: 902614" in out
    assert "2015550123" not in out


def test_the_cli_server_starts_and_serves_the_wsdl() -> None:
    port = free_port()
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.servers.phoneconfirm", "--port", str(port)],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        banner = [proc.stdout.readline(), proc.stdout.readline()]
        assert USER_GUID in banner[0] and f"http://127.0.0.1:{port}" in banner[1]
        r = httpx.get(f"http://127.0.0.1:{port}{PATH}?wsdl")
        assert r.status_code == 200
        assert f'location="http://127.0.0.1:{port}{PATH}"'.encode() in r.content
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_close_closes_the_session_zeep_sends_through(
    make_provider: Callable[..., PhoneConfirm], server: PhoneConfirmServer, url: str
) -> None:
    provider = make_provider()
    provider.place_call(request())
    pools = provider.session.get_adapter(url).poolmanager.pools  # type: ignore[attr-defined]
    assert len(pools) == 1  # the kept-alive connection to the service
    provider.close()
    assert len(pools) == 0
