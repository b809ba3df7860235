"""Anveo against a loopback server that reads the XML as Anveo documents it."""

from __future__ import annotations

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
from flask_phoneverify.providers.anveo import Anveo
from flask_phoneverify.providers.base import CallRequest, CallState, Outcome, PlacedCall, Style
from flask_phoneverify.testing import ProviderContract, Scenario

from .conftest import Harness, csrf, get_json, post
from .loopback import free_port, serve
from .servers.anveo import PATH, USER_KEY, AnveoServer

CALLFLOW = "a3348f81491bfb538cd2dbbda9e3c43c1e88ab22"
CALL_ID = "0123456789abcdef0123456789abcdef"


def config(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "PHONEVERIFY_PROVIDER": "anveo",
        "PHONEVERIFY_ANVEO_URL": url,
        "PHONEVERIFY_ANVEO_USER_KEY": USER_KEY,
        "PHONEVERIFY_ANVEO_CALLFLOW": CALLFLOW,
        "PHONEVERIFY_ANVEO_CALLER_ID": "+12155550100",
        **extra,
    }


@pytest.fixture(scope="module")
def anveo_server() -> Iterator[tuple[AnveoServer, str]]:
    anveo = AnveoServer()
    with serve(anveo) as base:
        yield anveo, base + PATH
        anveo.release.set()


@pytest.fixture
def server(anveo_server: tuple[AnveoServer, str]) -> Iterator[tuple[AnveoServer, str]]:
    anveo_server[0].reset()
    yield anveo_server
    anveo_server[0].release.set()


@pytest.fixture
def build(
    server: tuple[AnveoServer, str], build_provider: Callable[..., Any]
) -> Callable[..., Anveo]:
    """An Anveo provider built from settings the way init_app builds it."""

    def factory(url: str | None = None, **extra: Any) -> Anveo:
        built: Anveo = build_provider(Anveo, config(url or server[1], **extra), style=Style.SPOKEN)
        return built

    return factory


def call(pin: str = "123456", number: str = "+12015550123") -> CallRequest:
    return CallRequest(number, pin, Style.SPOKEN, CALL_ID, "Example Bank")


# -- wire format -------------------------------------------------------------------------------


def test_dial_callflow_sends_the_pin_in_the_code_variable(
    server: tuple[AnveoServer, str], build: Callable[..., Anveo]
) -> None:
    anveo, _ = server
    ticket = build().place_call(call("908172"))
    sent = anveo.last("DIAL.CALLFLOW")
    assert sent["params"] == {
        "PHONENUMBER": "12015550123",
        "CALLERID": "12155550100",
        "CALLFLOW": CALLFLOW,
    }
    assert sent["variables"] == {"VERIFICATIONCODE": "908172"}
    assert sent["headers"]["Content-Type"] == "application/xml; charset=UTF-8"
    assert ticket.reference in anveo.dials and ticket.call is CallState.RINGING


def test_optional_settings_are_sent_as_documented(
    server: tuple[AnveoServer, str], build: Callable[..., Anveo]
) -> None:
    anveo, _ = server
    anveo.signature = "396cdfaff3491f457b95e51a5ebd89ad516d623d"
    provider = build(
        PHONEVERIFY_ANVEO_TEST=True,
        PHONEVERIFY_ANVEO_MEMO="login check",
        PHONEVERIFY_ANVEO_BILLING_CODE="2fa",
        PHONEVERIFY_ANVEO_SIGNATURE=anveo.signature,
        PHONEVERIFY_ANVEO_CODE_VARIABLE="PIN",
        PHONEVERIFY_ANVEO_MAX_CALL_DURATION=5,  # DIAL.CONNECT only: the server refuses it here
    )
    provider.place_call(call("111222"))
    sent = anveo.last("DIAL.CALLFLOW")
    assert sent["params"]["TEST"] == "TRUE"
    assert sent["params"]["MEMO"] == "login check" and sent["params"]["BILLINGCODE"] == "2fa"
    assert sent["variables"] == {"PIN": "111222"}


@pytest.mark.parametrize(
    ("result", "state"),
    [
        ("NONE", CallState.RINGING),
        ("INIT", CallState.RINGING),
        ("START", CallState.ANSWERED),
        ("END", CallState.ENDED),
    ],
)
def test_getstatus_results_are_call_progress_only(
    server: tuple[AnveoServer, str], build: Callable[..., Anveo], result: str, state: CallState
) -> None:
    anveo, _ = server
    provider = build()
    ticket = provider.place_call(call())
    anveo.dials[ticket.reference].status = result
    report = provider.call_status(
        PlacedCall(ticket.reference, CALL_ID, "+12015550123", Style.SPOKEN)
    )
    assert report.call is state and report.outcome is Outcome.PENDING and report.digits is None
    assert anveo.last("DIAL.GETSTATUS")["params"] == {"REQUESTID": ticket.reference}


def test_status_errors_never_end_the_verification(
    server: tuple[AnveoServer, str], build: Callable[..., Anveo]
) -> None:
    provider = build()
    placed = PlacedCall("unknown-request", CALL_ID, "+12015550123", Style.SPOKEN)
    with pytest.raises(ProviderProtocolError) as e:  # the server's own "Invalid REQUESTID"
        provider.call_status(placed)
    assert e.value.retryable and "Invalid REQUESTID" in (e.value.detail or "")
    server[0].script["DIAL.GETSTATUS"] = "bad_status"
    with pytest.raises(ProviderProtocolError, match="could not read"):
        provider.call_status(placed)


# -- failures ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [
        ("error:Invalid USERKEY", ProviderConfigError),
        ("error:Insufficient balance", ProviderConfigError),
        ("error:Invalid PHONENUMBER", ProviderRejected),
        ("http500", ProviderUnavailable),
        ("http403", ProviderConfigError),
        ("not_xml", ProviderProtocolError),
        ("dtd", ProviderProtocolError),
        ("wrong_root", ProviderProtocolError),
        ("no_requestid", ProviderProtocolError),
    ],
)
def test_every_failure_is_a_provider_error(
    server: tuple[AnveoServer, str],
    build: Callable[..., Anveo],
    behaviour: str,
    error: type[ProviderError],
) -> None:
    server[0].script["DIAL.CALLFLOW"] = behaviour
    with pytest.raises(error) as e:
        build().place_call(call())
    assert e.value.message and e.value.detail
    assert USER_KEY not in str(e.value) + (e.value.detail or "")


def test_an_unclassified_error_keeps_its_text_for_the_log(
    server: tuple[AnveoServer, str], build: Callable[..., Anveo]
) -> None:
    server[0].script["DIAL.CALLFLOW"] = "error:Call flow is busy"
    with pytest.raises(ProviderError) as e:
        build().place_call(call())
    assert type(e.value) is ProviderError and not e.value.retryable
    assert e.value.detail == "Anveo ERROR on DIAL.CALLFLOW: Call flow is busy"
    assert "busy" not in e.value.message


def test_the_servers_own_refusal_of_a_wrong_key(
    server: tuple[AnveoServer, str], build: Callable[..., Anveo]
) -> None:
    with pytest.raises(ProviderConfigError) as e:
        build(PHONEVERIFY_ANVEO_USER_KEY="not-the-key").place_call(call())
    assert "Invalid USERKEY" in (e.value.detail or "")


def test_credentials_and_numbers_echoed_by_the_vendor_are_scrubbed(
    server: tuple[AnveoServer, str], build: Callable[..., Anveo]
) -> None:
    server[0].script["DIAL.CALLFLOW"] = f"error:USERKEY {USER_KEY} is disabled for 12015550123"
    with pytest.raises(ProviderConfigError) as e:
        build().place_call(call())
    assert e.value.detail == (
        "Anveo ERROR on DIAL.CALLFLOW: USERKEY [redacted] is disabled for [number]"
    )


def test_timeout_and_refused_connection_are_unavailable(
    server: tuple[AnveoServer, str], build: Callable[..., Anveo]
) -> None:
    server[0].script["DIAL.CALLFLOW"] = "slow"
    with pytest.raises(ProviderUnavailable, match="did not answer in time"):
        build(PHONEVERIFY_ANVEO_TIMEOUT=0.2).place_call(call())
    server[0].release.set()
    refused = build(url=f"http://127.0.0.1:{free_port()}{PATH}")
    with pytest.raises(ProviderUnavailable, match="could not be reached"):
        refused.place_call(call())


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("PHONEVERIFY_ANVEO_USER_KEY", None),
        ("PHONEVERIFY_ANVEO_CALLFLOW", ""),
        ("PHONEVERIFY_ANVEO_CALLER_ID", "215-555-0100"),
        ("PHONEVERIFY_ANVEO_CODE_VARIABLE", "VERIFICATION CODE"),
        ("PHONEVERIFY_ANVEO_CONNECT_TO", "support"),
        ("PHONEVERIFY_ANVEO_URL", "www.anveo.com/api/v3.asp"),
    ],
)
def test_settings_that_cannot_work_are_refused_at_init(
    make_app: Callable[..., Harness], key: str, value: Any
) -> None:
    with pytest.raises(ConfigError) as e:
        make_app(**config("https://www.anveo.com/api/v3.asp", **{key: value}))
    assert e.value.key == key


def test_keypad_style_is_refused_at_init(make_app: Callable[..., Harness]) -> None:
    with pytest.raises(ConfigError, match="cannot do"):
        make_app(**config("https://www.anveo.com/api/v3.asp", PHONEVERIFY_STYLE="keypad"))


# -- bridge ------------------------------------------------------------------------------------


def test_bridge_dials_the_user_then_the_support_line(
    server: tuple[AnveoServer, str], build: Callable[..., Anveo]
) -> None:
    assert build().can_bridge is False
    provider = build(
        PHONEVERIFY_ANVEO_CONNECT_TO="+12155550199",
        PHONEVERIFY_ANVEO_MAX_CALL_DURATION=15,
        PHONEVERIFY_ANVEO_TEST=True,
    )
    assert provider.can_bridge is True
    reference = provider.bridge("+12015550123")
    sent = server[0].last("DIAL.CONNECT")
    assert sent["params"] == {
        "PHONENUMBER": "12015550123",
        "DESTPHONENUMBER": "12155550199",
        "MAXCALLDURATION": "15",
        "TEST": "TRUE",
    }
    assert reference in server[0].dials


# -- the whole flow through the extension ---------------------------------------------------------


def test_spoken_flow_polls_status_then_checks_the_typed_pin(
    server: tuple[AnveoServer, str], make_app: Callable[..., Harness]
) -> None:
    anveo, url = server
    h = make_app(**config(url))
    c = h.client()
    token = csrf(c)
    body = post(c, "/start", token=token).json
    assert body["style"] == "spoken" and "pin" not in body
    pin = anveo.last("DIAL.CALLFLOW")["variables"]["VERIFICATIONCODE"]
    dial = anveo.dials[next(iter(anveo.dials))]

    def status() -> Any:
        return get_json(c, f"/status?token={body['token']}").json

    dial.status = "INIT"
    assert status()["call"] == "ringing"
    dial.status = "START"
    assert status()["call"] == "ringing"  # within the poll interval: Anveo is not asked again
    assert sum(r["action"] == "DIAL.GETSTATUS" for r in anveo.requests) == 1
    h.clock.advance(2)
    assert status()["call"] == "answered"
    dial.status = "END"
    h.clock.advance(2)
    assert status() | {"expires_at": None} == {
        "status": "calling",
        "call": "ended",
        "attempts_left": 5,
        "expires_at": None,
        "message": "The call has ended.",
        "can_bridge": False,
    }
    wrong = "000000" if pin != "000000" else "111111"
    r = post(c, "/confirm", {"token": body["token"], "pin": wrong}, token=token)
    assert r.status_code == 400 and r.json["attempts_left"] == 4
    r = post(c, "/confirm", {"token": body["token"], "pin": pin}, token=token)
    assert r.status_code == 200 and r.json["status"] == "verified"
    assert c.get("/secret").status_code == 200


def test_a_refused_call_fails_the_verification_without_leaking_the_key(
    server: tuple[AnveoServer, str], make_app: Callable[..., Harness], caplog: Any
) -> None:
    anveo, url = server
    anveo.script["DIAL.CALLFLOW"] = f"error:Invalid USERKEY {USER_KEY}"
    h = make_app(**config(url))
    c = h.client()
    with caplog.at_level(logging.DEBUG):
        r = post(c, "/start", token=csrf(c))
    assert r.status_code == 502 and r.json["error"] == "provider_error"
    assert "account settings" in r.json["message"]
    assert USER_KEY not in r.get_data(as_text=True) and USER_KEY not in caplog.text
    assert "Invalid USERKEY" in caplog.text  # the vendor's words reach the log, scrubbed
    assert c.get("/secret").status_code == 302


def test_status_trouble_keeps_the_spoken_verification_open(
    server: tuple[AnveoServer, str], make_app: Callable[..., Harness]
) -> None:
    anveo, url = server
    h = make_app(**config(url))
    c = h.client()
    token = csrf(c)
    body = post(c, "/start", token=token).json
    anveo.script["DIAL.GETSTATUS"] = "http500"
    assert get_json(c, f"/status?token={body['token']}").json["status"] == "calling"
    anveo.script["DIAL.GETSTATUS"] = "error:Internal error"
    h.clock.advance(2)
    assert get_json(c, f"/status?token={body['token']}").json["status"] == "calling"
    pin = anveo.last("DIAL.CALLFLOW")["variables"]["VERIFICATIONCODE"]
    r = post(c, "/confirm", {"token": body["token"], "pin": pin}, token=token)
    assert r.json["status"] == "verified"


def test_talk_to_us_bridges_a_locked_verification_and_verifies_nobody(
    server: tuple[AnveoServer, str], make_app: Callable[..., Harness]
) -> None:
    anveo, url = server
    h = make_app(
        **config(url, PHONEVERIFY_ANVEO_CONNECT_TO="12155550199"), PHONEVERIFY_MAX_ATTEMPTS=2
    )
    c = h.client()
    token = csrf(c)
    body = post(c, "/start", token=token).json
    r = post(c, "/talk", {"token": body["token"]}, token=token)
    assert r.status_code == 400 and "failed or locked" in r.json["message"]
    pin = anveo.last("DIAL.CALLFLOW")["variables"]["VERIFICATIONCODE"]
    wrong = "000000" if pin != "000000" else "111111"
    post(c, "/confirm", {"token": body["token"], "pin": wrong}, token=token)
    r = post(c, "/confirm", {"token": body["token"], "pin": wrong}, token=token)
    assert r.status_code == 429
    assert get_json(c, f"/status?token={body['token']}").json["can_bridge"] is True
    r = post(c, "/talk", {"token": body["token"]}, token=token)
    assert r.status_code == 200 and r.json["status"] == "bridging"
    assert anveo.last("DIAL.CONNECT")["params"] == {
        "PHONENUMBER": "12015550123",
        "DESTPHONENUMBER": "12155550199",
    }
    assert get_json(c, f"/status?token={body['token']}").json["status"] == "locked"
    assert c.get("/secret").status_code == 302


def test_talk_is_not_offered_without_a_support_number(
    server: tuple[AnveoServer, str], make_app: Callable[..., Harness]
) -> None:
    h = make_app(**config(server[1]))
    c = h.client()
    token = csrf(c)
    body = post(c, "/start", token=token).json
    assert get_json(c, f"/status?token={body['token']}").json["can_bridge"] is False
    assert post(c, "/talk", {"token": body["token"]}, token=token).status_code == 404
    assert not any(r["action"] == "DIAL.CONNECT" for r in server[0].requests)


def test_close_closes_the_http_client(
    server: tuple[AnveoServer, str], build: Callable[..., Anveo]
) -> None:
    provider = build()
    provider.place_call(call())
    provider.close()
    assert provider.client.is_closed
    with pytest.raises(RuntimeError, match="closed"):
        provider.place_call(call())


def test_a_support_call_that_fails_gives_back_its_cool_down_and_budget(
    server: tuple[AnveoServer, str], make_app: Callable[..., Harness]
) -> None:
    """A bridge the vendor refused never rang anyone: it costs no cool-down and no call
    of the hour's budget."""
    anveo, url = server
    h = make_app(
        **config(url, PHONEVERIFY_ANVEO_CONNECT_TO="12155550199"),
        PHONEVERIFY_MAX_ATTEMPTS=1,
        PHONEVERIFY_NUMBER_COOLDOWN=60,
        PHONEVERIFY_CALLS_PER_NUMBER_PER_HOUR=2,
    )
    c = h.client()
    token = csrf(c)
    body = post(c, "/start", token=token).json
    pin = anveo.last("DIAL.CALLFLOW")["variables"]["VERIFICATIONCODE"]
    wrong = "000000" if pin != "000000" else "111111"
    assert (
        post(c, "/confirm", {"token": body["token"], "pin": wrong}, token=token).status_code == 429
    )
    h.clock.advance(61)  # past the start's cool-down
    anveo.script["DIAL.CONNECT"] = "error:Service temporarily unavailable"
    r = post(c, "/talk", {"token": body["token"]}, token=token)
    assert r.status_code in (502, 503) and r.json["error"] == "provider_error"
    del anveo.script["DIAL.CONNECT"]
    r = post(c, "/talk", {"token": body["token"]}, token=token)  # no cool-down left behind
    assert r.status_code == 200 and r.json["status"] == "bridging"


# -- the provider contract ----------------------------------------------------------------------


class AnveoVendor:
    """The loopback Anveo acting the contract's scenarios (its dial status knows no
    declined or busy call: NONE, INIT, START, END)."""

    scenarios = frozenset(
        {
            Scenario.ANSWER,
            Scenario.BAD_NUMBER,
            Scenario.SERVER_ERROR,
            Scenario.GARBAGE,
            Scenario.HOSTILE,
            Scenario.HANG,
        }
    )
    SCRIPTS = {
        Scenario.BAD_NUMBER: "error:Invalid PHONENUMBER",
        Scenario.SERVER_ERROR: "http500",
        Scenario.GARBAGE: "not_xml",
        Scenario.HOSTILE: "dtd",
        Scenario.HANG: "slow",
    }

    def __init__(self, server: AnveoServer, url: str) -> None:
        self.server, self.url = server, url

    def act(self, scenario: Scenario, *, on: str = "place") -> None:
        self.server.script.clear()
        action = "DIAL.GETSTATUS" if on == "status" else "DIAL.CALLFLOW"
        if scenario in self.SCRIPTS:
            self.server.script[action] = self.SCRIPTS[scenario]

    def answer(self, keys: str | None) -> str | None:
        dial = list(self.server.dials.values())[-1]
        dial.status = "START"
        return dial.variables["VERIFICATIONCODE"]

    def events_to(self, url: str) -> None:
        """Anveo is polled; it posts nothing."""


class TestAnveoContract(ProviderContract):
    provider = Anveo

    def settings(self, url: str) -> dict[str, Any]:
        return config(url)

    @pytest.fixture
    def phoneverify_vendor(self, server: tuple[AnveoServer, str]) -> AnveoVendor:
        return AnveoVendor(*server)
