"""Veratad PhoneMatch5.0.Dialer: the wire format against a loopback server, every
documented failure, and the whole delivery-style flow through the extension."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
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
    CallRequest,
    CallState,
    Outcome,
    PlacedCall,
    Style,
)
from flask_phoneverify.providers.veratad import CONTINUE, GATEWAY, Veratad
from flask_phoneverify.testing import ProviderContract, Scenario

from .conftest import Harness, csrf, get_json, post
from .loopback import free_port, serve
from .servers.veratad import VeratadServer

USER = "api@example.com"
PASSWORD = "s3cret-pass"
AUDIO = "phoneverify.message"
NUMBER = "+12015550123"
CALL_ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[VeratadServer, str]]:
    """One loopback server for the module; each test resets it."""
    server = VeratadServer(user=USER, password=PASSWORD)
    with serve(server) as url:
        yield server, url


@pytest.fixture
def server(served: tuple[VeratadServer, str]) -> VeratadServer:
    served[0].reset()
    return served[0]


@pytest.fixture
def base(server: VeratadServer, served: tuple[VeratadServer, str]) -> str:
    return served[1]


@pytest.fixture(autouse=True)
def no_password_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every test: the password never reaches a log line, at any level."""
    caplog.set_level(logging.DEBUG)
    yield
    assert PASSWORD not in caplog.text


def settings(base: str, **config: Any) -> dict[str, Any]:
    return {
        "PHONEVERIFY_VERATAD_URL": base,
        "PHONEVERIFY_VERATAD_USER": USER,
        "PHONEVERIFY_VERATAD_PASSWORD": PASSWORD,
        "PHONEVERIFY_VERATAD_MESSAGE": AUDIO,
        **config,
    }


@pytest.fixture
def make(base: str, build_provider: Callable[..., Any]) -> Callable[..., Veratad]:
    def factory(url: str | None = None, **config: Any) -> Veratad:
        built: Veratad = build_provider(
            Veratad, settings(url or base, **config), style=Style.DELIVERY, app_name="Test"
        )
        return built

    return factory


@pytest.fixture
def provider(make: Callable[..., Veratad]) -> Veratad:
    return make()


def call(number: str = NUMBER) -> CallRequest:
    return CallRequest(
        number=number, pin="482915", style=Style.DELIVERY, call_id=CALL_ID, app_name="Test"
    )


def placed(reference: str | None) -> PlacedCall:
    return PlacedCall(reference, CALL_ID, NUMBER, Style.DELIVERY)


def assert_secret_free(error: ProviderError) -> None:
    for text in (str(error), error.message, error.detail or ""):
        assert PASSWORD not in text


# -- the gateway request ----------------------------------------------------------------------


def test_gateway_sends_the_documented_body(provider: Veratad, server: VeratadServer) -> None:
    ticket = provider.place_call(call())
    sent = server.last(GATEWAY)
    assert sent["method"] == "POST" and sent["path"] == "/process/comprehensive/gateway"
    assert sent["query"] == b""
    assert sent["content_type"].startswith("application/json")
    assert json.loads(sent["raw"]) == {
        "user": USER,
        "pass": PASSWORD,
        "service": "PhoneMatch5.0.Dialer",
        "reference": CALL_ID,
        "options": {"outofband": {"message": AUDIO, "do_not_send_to_types": []}},
        "target": {"phone": "2015550123"},
    }
    assert ticket.reference in server.calls
    assert ticket.call is CallState.RINGING


def test_numbers_outside_north_america_keep_their_country_code(
    provider: Veratad, server: VeratadServer
) -> None:
    provider.place_call(call("+447700900123"))
    assert json.loads(server.last(GATEWAY)["raw"])["target"] == {"phone": "447700900123"}


def test_do_not_send_to_types_are_sent_lower_case_once(
    make: Callable[..., Veratad], server: VeratadServer
) -> None:
    make(PHONEVERIFY_VERATAD_DO_NOT_SEND_TO_TYPES="VoIP, landline, voip").place_call(call())
    body = json.loads(server.last(GATEWAY)["raw"])
    assert body["options"]["outofband"]["do_not_send_to_types"] == ["voip", "landline"]


@pytest.mark.parametrize(
    ("behaviour", "words"),
    [
        ("suppressed", "internet (VoIP) or landline lines are not accepted"),
        ("send_failed", "could not be placed"),
        ("invalid", "not valid"),
    ],
)
def test_gateway_fail_details_become_readable_refusals(
    make: Callable[..., Veratad], server: VeratadServer, behaviour: str, words: str
) -> None:
    server.fail["gateway"] = behaviour
    provider = make(PHONEVERIFY_VERATAD_DO_NOT_SEND_TO_TYPES=["voip", "landline"])
    with pytest.raises(ProviderRejected) as caught:
        provider.place_call(call())
    assert words in caught.value.message
    assert (caught.value.detail or "").startswith("Veratad gateway: FAIL ")
    assert_secret_free(caught.value)


def test_a_suppressed_line_type_is_refused_by_the_vendor(
    make: Callable[..., Veratad], server: VeratadServer
) -> None:
    server.line_types["2015550123"] = "mobile"
    with pytest.raises(ProviderRejected) as caught:
        make(PHONEVERIFY_VERATAD_DO_NOT_SEND_TO_TYPES=["mobile"]).place_call(call())
    assert caught.value.message.startswith("Calls to mobile lines are not accepted")
    assert "SUPPRESSED SENDING CODE" in (caught.value.detail or "")


def test_wrong_credentials_are_a_configuration_error(make: Callable[..., Veratad]) -> None:
    with pytest.raises(ProviderConfigError) as caught:
        make(PHONEVERIFY_VERATAD_PASSWORD="wrong-password-9").place_call(call())
    detail = caught.value.detail or ""
    assert "Invalid Credentials" in detail and "PHONEVERIFY_VERATAD_PASSWORD" in detail
    assert "wrong-password-9" not in detail + str(caught.value)


def test_a_password_echoed_at_the_length_bound_leaves_no_prefix(
    provider: Veratad, server: VeratadServer
) -> None:
    server.fail["gateway"] = "echo_password"
    with pytest.raises(ProviderConfigError) as caught:
        provider.place_call(call())
    detail = caught.value.detail or ""
    assert "pass=***" in detail  # cut out before the text was bounded, not after
    assert PASSWORD[:4] not in detail


@pytest.mark.parametrize(
    ("behaviour", "kind", "words"),
    [
        ("auth", ProviderConfigError, "account settings"),
        ("bad_phone_error", ProviderRejected, "could not call this number"),
        ("refused", ProviderRejected, "refused to place the call"),
        ("http401", ProviderConfigError, "account settings"),
    ],
)
def test_the_error_envelope_is_a_provider_error(
    provider: Veratad, server: VeratadServer, behaviour: str, kind: type[ProviderError], words: str
) -> None:
    server.fail["gateway"] = behaviour
    with pytest.raises(kind) as caught:
        provider.place_call(call())
    assert words in caught.value.message
    assert caught.value.retryable is False
    assert_secret_free(caught.value)


def test_server_errors_are_retryable(provider: Veratad, server: VeratadServer) -> None:
    server.fail["gateway"] = "server"
    with pytest.raises(ProviderUnavailable) as caught:
        provider.place_call(call())
    assert caught.value.retryable


def test_connection_refused(make: Callable[..., Veratad]) -> None:
    with pytest.raises(ProviderUnavailable) as caught:
        make(f"http://127.0.0.1:{free_port()}").place_call(call())
    assert "could not be reached" in caught.value.message


def test_timeout(make: Callable[..., Veratad], server: VeratadServer) -> None:
    server.fail["gateway"] = "slow"
    server.slow_seconds = 1.0
    with pytest.raises(ProviderUnavailable) as caught:
        make(PHONEVERIFY_VERATAD_TIMEOUT=0.2).place_call(call())
    assert "in time" in caught.value.message


@pytest.mark.parametrize("behaviour", ["not_json", "wrong_shape", "no_result", "no_token"])
def test_unreadable_answers_are_protocol_errors(
    provider: Veratad, server: VeratadServer, behaviour: str
) -> None:
    server.fail["gateway"] = behaviour
    with pytest.raises(ProviderProtocolError) as caught:
        provider.place_call(call())
    assert caught.value.retryable
    assert_secret_free(caught.value)


def test_a_wrong_base_url_names_the_setting(make: Callable[..., Veratad], base: str) -> None:
    with pytest.raises(ProviderConfigError) as caught:
        make(base + "/v2").place_call(call())
    assert "PHONEVERIFY_VERATAD_URL" in (caught.value.detail or "")


# -- the status request -----------------------------------------------------------------------


def test_continue_sends_the_documented_body(provider: Veratad, server: VeratadServer) -> None:
    ticket = provider.place_call(call())
    provider.call_status(placed(ticket.reference))
    sent = server.last(CONTINUE)
    assert sent["method"] == "POST" and sent["path"] == "/process/continue"
    assert sent["content_type"].startswith("application/json")
    assert json.loads(sent["raw"]) == {"dialer": {"return": "status"}, "token": ticket.reference}


def test_pending_then_pass(provider: Veratad, server: VeratadServer) -> None:
    server.pending_polls = 2
    ticket = provider.place_call(call())
    for _ in range(2):
        report = provider.call_status(placed(ticket.reference))
        assert report.outcome is Outcome.PENDING and report.call is CallState.RINGING
    report = provider.call_status(placed(ticket.reference))
    assert report.outcome is Outcome.CONFIRMED and report.call is CallState.DELIVERED
    assert "ALL CHECKS PASSED" in (report.detail or "")


def test_undelivered_fails_with_a_reason(provider: Veratad, server: VeratadServer) -> None:
    server.pending_polls = 0
    server.fail["continue"] = "undelivered"
    ticket = provider.place_call(call())
    report = provider.call_status(placed(ticket.reference))
    assert report.outcome is Outcome.FAILED and report.call is CallState.ENDED
    assert report.reason == "The call could not be delivered to your phone. Please try again."
    assert "MESSAGE COULD NOT BE DELIVERED" in (report.detail or "")


def test_an_unknown_token_is_a_provider_error(provider: Veratad, server: VeratadServer) -> None:
    with pytest.raises(ProviderRejected) as caught:
        provider.call_status(placed("no-such-token"))
    assert "Invalid token" in (caught.value.detail or "")


@pytest.mark.parametrize(
    ("behaviour", "kind"),
    [
        ("auth", ProviderConfigError),
        ("server", ProviderUnavailable),
        ("not_json", ProviderProtocolError),
        ("no_result", ProviderProtocolError),
    ],
)
def test_continue_failures(
    provider: Veratad, server: VeratadServer, behaviour: str, kind: type[ProviderError]
) -> None:
    ticket = provider.place_call(call())
    server.fail["continue"] = behaviour
    with pytest.raises(kind) as caught:
        provider.call_status(placed(ticket.reference))
    assert_secret_free(caught.value)


# -- configuration ----------------------------------------------------------------------------


def veratad_config(base: str, **extra: Any) -> dict[str, Any]:
    return {
        "PHONEVERIFY_PROVIDER": "veratad",
        "PHONEVERIFY_VERATAD_URL": base,
        "PHONEVERIFY_VERATAD_USER": USER,
        "PHONEVERIFY_VERATAD_PASSWORD": PASSWORD,
        "PHONEVERIFY_VERATAD_MESSAGE": AUDIO,
        **extra,
    }


def test_delivery_must_be_chosen_explicitly(make_app: Callable[..., Harness], base: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_app(**veratad_config(base))
    assert caught.value.key == "PHONEVERIFY_STYLE" and "'delivery'" in str(caught.value)


@pytest.mark.parametrize("style", ["keypad", "spoken"])
def test_other_styles_are_refused(
    make_app: Callable[..., Harness], base: str, style: str, build_provider: Callable[..., Any]
) -> None:
    with pytest.raises(ConfigError) as caught:
        make_app(**veratad_config(base, PHONEVERIFY_STYLE=style))
    assert caught.value.key == "PHONEVERIFY_STYLE" and "delivery" in str(caught.value)
    with pytest.raises(ConfigError) as direct:
        build_provider(Veratad, settings(base), style=Style(style))
    assert "delivery" in str(direct.value)


def test_delivery_style_warns_once_what_it_does_not_prove(
    make_app: Callable[..., Harness], base: str, caplog: pytest.LogCaptureFixture
) -> None:
    make_app(**veratad_config(base, PHONEVERIFY_STYLE="delivery"))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "not that the user holds" in warnings[0].getMessage()


@pytest.mark.parametrize(
    "missing",
    ["PHONEVERIFY_VERATAD_USER", "PHONEVERIFY_VERATAD_PASSWORD", "PHONEVERIFY_VERATAD_MESSAGE"],
)
def test_credentials_and_message_are_required(
    make_app: Callable[..., Harness], base: str, missing: str
) -> None:
    config = veratad_config(base, PHONEVERIFY_STYLE="delivery")
    del config[missing]
    with pytest.raises(ConfigError) as caught:
        make_app(**config)
    assert caught.value.key == missing


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"PHONEVERIFY_VERATAD_DO_NOT_SEND_TO_TYPES": ["fax"]}, "voip, mobile, landline"),
        ({"PHONEVERIFY_VERATAD_DO_NOT_SEND_TO_TYPES": "voip,mobile,landline"}, "every line type"),
        ({"PHONEVERIFY_VERATAD_URL": "production.idresponse.com"}, "http(s) address"),
    ],
)
def test_settings_that_do_not_fit_are_refused(
    base: str, config: dict[str, Any], words: str, build_provider: Callable[..., Any]
) -> None:
    with pytest.raises(ConfigError) as caught:
        build_provider(Veratad, settings(base, **config), style=Style.DELIVERY)
    assert words in str(caught.value)
    assert caught.value.key in config


# -- the whole flow through the extension ----------------------------------------------------


@pytest.fixture
def app(make_app: Callable[..., Harness], base: str) -> Harness:
    return make_app(**veratad_config(base, PHONEVERIFY_STYLE="delivery"))


def start(h: Harness) -> tuple[Any, str, Any]:
    c = h.client()
    token = csrf(c)
    return c, token, post(c, "/start", token=token)


def test_delivery_flow_verifies_once_the_call_is_delivered(
    app: Harness, server: VeratadServer
) -> None:
    server.pending_polls = 1
    c, token, r = start(app)
    assert r.status_code == 200, r.json
    body = r.json
    assert body["style"] == "delivery" and body["call"] == "ringing" and "pin" not in body
    pending = body["token"]
    status = get_json(c, f"/status?token={pending}").json
    assert status["status"] == "calling" and status["call"] == "ringing"
    assert len([q for q in server.requests if q["path"] == CONTINUE]) == 1
    # within the poll interval nobody asks Veratad again
    assert get_json(c, f"/status?token={pending}").json["status"] == "calling"
    assert len([q for q in server.requests if q["path"] == CONTINUE]) == 1
    r = post(c, "/confirm", {"token": pending}, token=token)
    assert r.status_code == 409
    app.clock.advance(2)
    status = get_json(c, f"/status?token={pending}").json
    assert status["status"] == "verified" and status["call"] == "delivered"
    r = post(c, "/confirm", {"token": pending}, token=token)
    assert r.status_code == 200 and r.json["status"] == "verified"
    assert c.get("/secret").status_code == 200


def test_a_renewed_token_in_a_pending_answer_is_used_next(
    app: Harness, server: VeratadServer
) -> None:
    """ "Take the template returned and submit again": a PENDING answer may carry a new
    token, and the next status request sends that one."""
    server.pending_polls = 2
    server.rotate_tokens = True
    c, _token, r = start(app)
    pending = r.json["token"]
    for _ in range(3):
        status = get_json(c, f"/status?token={pending}").json
        app.clock.advance(2)
    assert status["status"] == "verified", status
    sent = [json.loads(q["raw"])["token"] for q in server.requests if q["path"] == CONTINUE]
    assert len(sent) == 3 and len(set(sent)) == 3


def test_undelivered_call_fails_the_verification(app: Harness, server: VeratadServer) -> None:
    server.pending_polls = 0
    server.fail["continue"] = "undelivered"
    c, token, r = start(app)
    status = get_json(c, f"/status?token={r.json['token']}").json
    assert status["status"] == "failed"
    assert status["message"] == "The call could not be delivered to your phone. Please try again."
    assert c.get("/secret").status_code == 302


def test_status_outage_keeps_the_verification_open(app: Harness, server: VeratadServer) -> None:
    server.pending_polls = 0
    c, token, r = start(app)
    pending = r.json["token"]
    server.fail["continue"] = "server"
    assert get_json(c, f"/status?token={pending}").json["status"] == "calling"
    del server.fail["continue"]
    app.clock.advance(2)
    assert get_json(c, f"/status?token={pending}").json["status"] == "verified"


@pytest.mark.parametrize(
    ("behaviour", "status", "words"),
    [
        ("suppressed", 502, "are not accepted here"),
        ("send_failed", 502, "could not be placed"),
        ("invalid", 502, "not valid"),
        ("auth", 502, "account settings"),
        ("server", 503, "try again"),
    ],
)
def test_start_failures_show_a_clear_message(
    app: Harness, server: VeratadServer, behaviour: str, status: int, words: str
) -> None:
    server.fail["gateway"] = behaviour
    c, token, r = start(app)
    assert r.status_code == status
    assert r.json["error"] == "provider_error" and words in r.json["message"]
    assert PASSWORD not in r.get_data(as_text=True)


def test_close_closes_the_http_client(provider: Veratad) -> None:
    provider.place_call(call())
    provider.close()
    assert provider.client.is_closed
    with pytest.raises(RuntimeError, match="closed"):
        provider.place_call(call())


# -- the provider contract ----------------------------------------------------------------------


class VeratadVendor:
    """The loopback Veratad acting the contract's scenarios (it cannot send hostile JSON,
    and a busy line is not something its dialer reports apart from undelivered)."""

    scenarios = frozenset(
        {
            Scenario.ANSWER,
            Scenario.DECLINE,
            Scenario.BAD_NUMBER,
            Scenario.SERVER_ERROR,
            Scenario.GARBAGE,
            Scenario.HANG,
        }
    )
    PLACE = {
        Scenario.BAD_NUMBER: ("gateway", "invalid"),
        Scenario.SERVER_ERROR: ("gateway", "server"),
        Scenario.GARBAGE: ("gateway", "not_json"),
        Scenario.HANG: ("gateway", "slow"),
        Scenario.DECLINE: ("continue", "undelivered"),
    }
    STATUS = {Scenario.GARBAGE: "not_json", Scenario.SERVER_ERROR: "server"}

    def __init__(self, server: VeratadServer, url: str) -> None:
        self.server, self.url = server, url

    def act(self, scenario: Scenario, *, on: str = "place") -> None:
        self.server.fail.clear()
        if on == "status":
            self.server.fail["continue"] = self.STATUS[scenario]
        elif scenario in self.PLACE:
            endpoint, behaviour = self.PLACE[scenario]
            self.server.fail[endpoint] = behaviour

    def answer(self, keys: str | None) -> str | None:
        return None  # the dialer plays its message; the person only listens

    def events_to(self, url: str) -> None:
        """Veratad posts no events."""


class TestVeratadContract(ProviderContract):
    provider = Veratad

    def settings(self, url: str) -> dict[str, Any]:
        return {**settings(url), "PHONEVERIFY_PROVIDER": "veratad"}

    @pytest.fixture
    def phoneverify_vendor(
        self, server: VeratadServer, served: tuple[VeratadServer, str]
    ) -> Iterator[VeratadVendor]:
        yield VeratadVendor(server, served[1])
        server.fail.clear()
