"""Xverify Phone Confirm: the wire format against a loopback server, every failure,
and the whole spoken-style flow through the extension."""

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
from flask_phoneverify.providers.base import CallRequest, CallState, PlacedCall, Style
from flask_phoneverify.providers.xverify import PLACECALL, VERIFYCODE, Xverify

from .conftest import Harness, csrf, get_json, post
from .loopback import free_port, serve
from .servers.xverify import XverifyServer

KEY = "test-api-key"
DOMAIN = "example.com"
NUMBER = "+12015550123"


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[XverifyServer, str]]:
    """One loopback server for the module; each test resets it."""
    server = XverifyServer(api_key=KEY, domain=DOMAIN)
    with serve(server) as url:
        yield server, url


@pytest.fixture
def server(served: tuple[XverifyServer, str]) -> XverifyServer:
    served[0].reset()
    return served[0]


@pytest.fixture
def base(server: XverifyServer, served: tuple[XverifyServer, str]) -> str:
    return served[1]


@pytest.fixture(autouse=True)
def no_secret_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every test: the API key and the query string never reach a log line of ours or of
    the HTTP libraries, at any level (werkzeug's lines are the vendor's side)."""
    caplog.set_level(logging.DEBUG)
    yield
    ours = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("werkzeug"))
    assert KEY not in ours
    assert "apikey=" not in ours


def settings(base: str, **config: Any) -> dict[str, Any]:
    return {
        "PHONEVERIFY_XVERIFY_URL": base,
        "PHONEVERIFY_XVERIFY_API_KEY": KEY,
        "PHONEVERIFY_XVERIFY_DOMAIN": DOMAIN,
        **config,
    }


@pytest.fixture
def make(base: str, build_provider: Callable[..., Any]) -> Callable[..., Xverify]:
    def factory(url: str | None = None, **config: Any) -> Xverify:
        built: Xverify = build_provider(
            Xverify, settings(url or base, **config), style=Style.SPOKEN, app_name="Test"
        )
        return built

    return factory


@pytest.fixture
def provider(make: Callable[..., Xverify]) -> Xverify:
    return make()


def call(number: str = NUMBER, pin: str = "482915") -> CallRequest:
    return CallRequest(
        number=number, pin=pin, style=Style.SPOKEN, call_id="c" * 32, app_name="Test"
    )


def placed(reference: str | None, number: str = NUMBER) -> PlacedCall:
    return PlacedCall(reference, "c" * 32, number, Style.SPOKEN)


def assert_secret_free(error: ProviderError) -> None:
    for text in (str(error), error.message, error.detail or ""):
        assert KEY not in text and "apikey" not in text and "482915" not in text


# -- placecall on the wire ------------------------------------------------------------------


def test_placecall_sends_the_documented_query(provider: Xverify, server: XverifyServer) -> None:
    ticket = provider.place_call(call())
    sent = server.last(PLACECALL)
    assert sent["method"] == "GET" and sent["path"] == "/phoneconfirm/placecall/"
    assert sent["query"] == [
        ("phone", "2015550123"),
        ("type", "json"),
        ("country_code", "1"),
        ("code", "482915"),
        ("apikey", KEY),
        ("domain", DOMAIN),
    ]
    assert sent["body"] == b""
    assert ticket.reference == next(iter(server.calls))
    assert ticket.call is CallState.RINGING


def test_placecall_splits_a_number_outside_north_america(
    provider: Xverify, server: XverifyServer
) -> None:
    provider.place_call(call("+447700900123"))
    query = dict(server.last(PLACECALL)["query"])
    assert (query["country_code"], query["phone"]) == ("44", "7700900123")


def test_redial_settings_are_sent_only_when_set(
    make: Callable[..., Xverify], server: XverifyServer
) -> None:
    make(PHONEVERIFY_XVERIFY_REDIAL_COUNT=2, PHONEVERIFY_XVERIFY_REDIAL_INTERVAL=30).place_call(
        call()
    )
    query = dict(server.last(PLACECALL)["query"])
    assert (query["redial_count"], query["redial_interval"]) == ("2", "30")
    assert "call_place_time" not in query and "call_place_tile" not in query
    make(PHONEVERIFY_XVERIFY_REDIAL_COUNT=0).place_call(call())
    query = dict(server.last(PLACECALL)["query"])
    assert query["redial_count"] == "0" and "redial_interval" not in query


def test_httpx_request_log_has_the_path_but_not_the_query(
    provider: Xverify, caplog: pytest.LogCaptureFixture
) -> None:
    provider.place_call(call())
    lines = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert any("/phoneconfirm/placecall/" in line for line in lines), lines
    assert not any("?" in line or "2015550123" in line or "482915" in line for line in lines)


def test_xml_answers_are_asked_for_and_read(
    make: Callable[..., Xverify], server: XverifyServer
) -> None:
    provider = make(PHONEVERIFY_XVERIFY_RESPONSE_TYPE="xml")
    ticket = provider.place_call(call())
    assert dict(server.last(PLACECALL)["query"])["type"] == "xml"
    assert ticket.reference in server.calls
    assert provider.check_code(placed(ticket.reference), "482915") is True
    assert dict(server.last(VERIFYCODE)["query"])["type"] == "xml"
    assert provider.check_code(placed(ticket.reference), "000000") is False


@pytest.mark.parametrize("wrapper", ["phoneconfirm", "xvresponse", "response"])
def test_the_wrapper_is_read_whatever_its_key(
    provider: Xverify, server: XverifyServer, wrapper: str
) -> None:
    server.wrapper = wrapper
    assert provider.place_call(call()).reference in server.calls


def test_error_may_be_a_string(provider: Xverify, server: XverifyServer) -> None:
    server.error_as_string = True
    assert provider.place_call(call()).reference in server.calls
    server.fail["placecall"] = "key"
    with pytest.raises(ProviderConfigError):
        provider.place_call(call())


# -- placecall failures -----------------------------------------------------------------------


def test_an_invalid_number_blames_the_number(provider: Xverify, server: XverifyServer) -> None:
    server.fail["placecall"] = "number"
    with pytest.raises(ProviderRejected) as caught:
        provider.place_call(call())
    assert "number" in caught.value.message
    assert "Invalid phone number" in (caught.value.detail or "")
    assert_secret_free(caught.value)


@pytest.mark.parametrize("behaviour", ["key", "credit", "refused"])
def test_account_and_request_errors_blame_the_account(
    provider: Xverify, server: XverifyServer, behaviour: str
) -> None:
    server.fail["placecall"] = behaviour
    with pytest.raises(ProviderConfigError) as caught:
        provider.place_call(call())
    assert "account" in caught.value.message
    assert caught.value.retryable is False
    assert "message=" in (caught.value.detail or "")
    assert_secret_free(caught.value)


def test_a_key_echoed_by_xverify_is_blotted_out(provider: Xverify, server: XverifyServer) -> None:
    server.fail["placecall"] = "echo_key"
    with pytest.raises(ProviderConfigError) as caught:
        provider.place_call(call())
    assert "API key *** expired" in (caught.value.detail or "")
    assert_secret_free(caught.value)


def test_a_wrong_api_key_is_a_configuration_error(make: Callable[..., Xverify]) -> None:
    with pytest.raises(ProviderConfigError) as caught:
        make(PHONEVERIFY_XVERIFY_API_KEY="wrong-key-123").place_call(call())
    assert "PHONEVERIFY_XVERIFY_API_KEY" in (caught.value.detail or "")
    assert "wrong-key-123" not in str(caught.value) + (caught.value.detail or "")


def test_503_is_an_untrusted_domain(provider: Xverify, server: XverifyServer) -> None:
    server.fail["placecall"] = "domain"
    with pytest.raises(ProviderConfigError) as caught:
        provider.place_call(call())
    detail = caught.value.detail or ""
    assert "PHONEVERIFY_XVERIFY_DOMAIN" in detail and "503" in detail
    assert "/phoneconfirm/placecall/" in detail
    assert_secret_free(caught.value)


def test_a_domain_the_server_does_not_trust_gets_503(make: Callable[..., Xverify]) -> None:
    with pytest.raises(ProviderConfigError) as caught:
        make(PHONEVERIFY_XVERIFY_DOMAIN="other.example").place_call(call())
    assert "'other.example'" in (caught.value.detail or "")


def test_server_errors_are_retryable(provider: Xverify, server: XverifyServer) -> None:
    server.fail["placecall"] = "server"
    with pytest.raises(ProviderUnavailable) as caught:
        provider.place_call(call())
    assert caught.value.retryable
    assert_secret_free(caught.value)


def test_connection_refused(make: Callable[..., Xverify]) -> None:
    with pytest.raises(ProviderUnavailable) as caught:
        make(f"http://127.0.0.1:{free_port()}").place_call(call())
    assert "could not be reached" in caught.value.message
    assert_secret_free(caught.value)
    assert "?" not in (caught.value.detail or "")


def test_timeout(make: Callable[..., Xverify], server: XverifyServer) -> None:
    server.fail["placecall"] = "slow"
    server.slow_seconds = 1.0
    with pytest.raises(ProviderUnavailable) as caught:
        make(PHONEVERIFY_XVERIFY_TIMEOUT=0.2).place_call(call())
    assert "in time" in caught.value.message
    assert_secret_free(caught.value)


@pytest.mark.parametrize(
    "behaviour", ["not_json", "wrong_shape", "no_wrapper", "no_transaction", "bad_status"]
)
def test_unreadable_answers_are_protocol_errors(
    provider: Xverify, server: XverifyServer, behaviour: str
) -> None:
    server.fail["placecall"] = behaviour
    with pytest.raises(ProviderProtocolError) as caught:
        provider.place_call(call())
    assert_secret_free(caught.value)


def test_hostile_xml_is_refused(make: Callable[..., Xverify], server: XverifyServer) -> None:
    server.fail["placecall"] = "hostile_xml"
    with pytest.raises(ProviderProtocolError):
        make(PHONEVERIFY_XVERIFY_RESPONSE_TYPE="xml").place_call(call())


def test_a_wrong_base_url_names_the_setting(make: Callable[..., Xverify], base: str) -> None:
    with pytest.raises(ProviderConfigError) as caught:
        make(base + "/nowhere").place_call(call())
    assert "HTTP 404" in (caught.value.detail or "")
    assert "PHONEVERIFY_XVERIFY_URL" in (caught.value.detail or "")


# -- verifycode -------------------------------------------------------------------------------


def test_verifycode_sends_the_documented_query(provider: Xverify, server: XverifyServer) -> None:
    ticket = provider.place_call(call())
    assert provider.check_code(placed(ticket.reference), "482915") is True
    sent = server.last(VERIFYCODE)
    assert sent["method"] == "GET" and sent["path"] == "/phoneconfirm/verifycode/"
    assert sent["query"] == [
        ("transaction_number", ticket.reference),
        ("code", "482915"),
        ("apikey", KEY),
        ("domain", DOMAIN),
        ("type", "json"),
    ]


def test_verifycode_invalid_is_a_wrong_code(provider: Xverify, server: XverifyServer) -> None:
    ticket = provider.place_call(call())
    assert provider.check_code(placed(ticket.reference), "111111") is False
    assert provider.check_code(placed("999"), "482915") is False  # unknown transaction


def test_verifycode_account_errors_raise(provider: Xverify, server: XverifyServer) -> None:
    ticket = provider.place_call(call())
    server.fail["verifycode"] = "key"
    with pytest.raises(ProviderConfigError):
        provider.check_code(placed(ticket.reference), "482915")
    server.fail["verifycode"] = "domain"
    with pytest.raises(ProviderConfigError) as caught:
        provider.check_code(placed(ticket.reference), "482915")
    assert "PHONEVERIFY_XVERIFY_DOMAIN" in (caught.value.detail or "")
    server.fail["verifycode"] = "server"
    with pytest.raises(ProviderUnavailable):
        provider.check_code(placed(ticket.reference), "482915")


def test_verify_remote_off_asks_nothing(
    make: Callable[..., Xverify], server: XverifyServer
) -> None:
    provider = make(PHONEVERIFY_XVERIFY_VERIFY_REMOTE=False)
    ticket = provider.place_call(call())
    assert provider.check_code(placed(ticket.reference), "482915") is None
    assert not [r for r in server.requests if r["path"] == VERIFYCODE]


# -- configuration ----------------------------------------------------------------------------


def test_keypad_style_is_refused_at_init_app(
    make_app: Callable[..., Harness], base: str, build_provider: Callable[..., Any]
) -> None:
    with pytest.raises(ConfigError) as caught:
        make_app(
            PHONEVERIFY_PROVIDER="xverify",
            PHONEVERIFY_STYLE="keypad",
            PHONEVERIFY_XVERIFY_URL=base,
            PHONEVERIFY_XVERIFY_API_KEY=KEY,
            PHONEVERIFY_XVERIFY_DOMAIN=DOMAIN,
        )
    assert caught.value.key == "PHONEVERIFY_STYLE"
    assert "'keypad'" in str(caught.value) and str(caught.value).endswith("spoken.")
    with pytest.raises(ConfigError) as direct:
        build_provider(Xverify, settings(base), style=Style.KEYPAD)
    assert direct.value.key == "PHONEVERIFY_STYLE" and "'spoken'" in str(direct.value)


@pytest.mark.parametrize("missing", ["PHONEVERIFY_XVERIFY_API_KEY", "PHONEVERIFY_XVERIFY_DOMAIN"])
def test_key_and_domain_are_required(
    make_app: Callable[..., Harness], base: str, missing: str
) -> None:
    config = {
        "PHONEVERIFY_PROVIDER": "xverify",
        "PHONEVERIFY_XVERIFY_URL": base,
        "PHONEVERIFY_XVERIFY_API_KEY": KEY,
        "PHONEVERIFY_XVERIFY_DOMAIN": DOMAIN,
    }
    del config[missing]
    with pytest.raises(ConfigError) as caught:
        make_app(**config)
    assert caught.value.key == missing


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"PHONEVERIFY_XVERIFY_URL": "ftp://x"}, "PHONEVERIFY_XVERIFY_URL"),
        ({"PHONEVERIFY_XVERIFY_REDIAL_INTERVAL": 30}, "PHONEVERIFY_XVERIFY_REDIAL_INTERVAL"),
        ({"PHONEVERIFY_XVERIFY_RESPONSE_TYPE": "csv"}, "PHONEVERIFY_XVERIFY_RESPONSE_TYPE"),
        ({"PHONEVERIFY_XVERIFY_REDIAL_COUNT": -1}, "PHONEVERIFY_XVERIFY_REDIAL_COUNT"),
    ],
)
def test_settings_that_do_not_fit_are_refused(
    base: str, config: dict[str, Any], key: str, build_provider: Callable[..., Any]
) -> None:
    with pytest.raises(ConfigError) as caught:
        build_provider(Xverify, settings(base, **config), style=Style.SPOKEN)
    assert caught.value.key == key


# -- the whole flow through the extension ----------------------------------------------------


@pytest.fixture
def app(make_app: Callable[..., Harness], base: str) -> Harness:
    return make_app(
        PHONEVERIFY_PROVIDER="xverify",
        PHONEVERIFY_XVERIFY_URL=base,
        PHONEVERIFY_XVERIFY_API_KEY=KEY,
        PHONEVERIFY_XVERIFY_DOMAIN=DOMAIN,
    )


def start(h: Harness) -> tuple[Any, str, Any]:
    c = h.client()
    token = csrf(c)
    r = post(c, "/start", token=token)
    return c, token, r


def test_spoken_flow_verifies_with_the_code_the_call_spoke(
    app: Harness, server: XverifyServer
) -> None:
    c, token, r = start(app)
    assert r.status_code == 200, r.json
    body = r.json
    assert body["style"] == "spoken" and body["call"] == "ringing" and "pin" not in body
    status = get_json(c, f"/status?token={body['token']}").json
    assert status["status"] == "calling" and status["call"] == "ringing"
    app.clock.advance(5)
    assert get_json(c, f"/status?token={body['token']}").json["call"] == "ringing"
    spoken = server.spoken_code()
    r = post(c, "/confirm", {"token": body["token"], "pin": spoken}, token=token)
    assert r.status_code == 200 and r.json["status"] == "verified", r.json
    assert dict(server.last(VERIFYCODE)["query"])["code"] == spoken
    assert c.get("/secret").status_code == 200


def test_wrong_pin_is_counted_without_asking_xverify(app: Harness, server: XverifyServer) -> None:
    c, token, r = start(app)
    wrong = "000000" if server.spoken_code() != "000000" else "111111"
    r = post(c, "/confirm", {"token": r.json["token"], "pin": wrong}, token=token)
    assert r.status_code == 400 and r.json["error"] == "wrong_pin"
    assert r.json["attempts_left"] == 4
    assert not [q for q in server.requests if q["path"] == VERIFYCODE]


def test_xverify_saying_invalid_counts_as_a_wrong_pin(app: Harness, server: XverifyServer) -> None:
    c, token, r = start(app)
    server.fail["verifycode"] = "invalid"
    r = post(c, "/confirm", {"token": r.json["token"], "pin": server.spoken_code()}, token=token)
    assert r.status_code == 400 and r.json["error"] == "wrong_pin"
    assert r.json["attempts_left"] == 4
    assert c.get("/secret").status_code == 302


def test_verifycode_outage_keeps_the_verification_open(app: Harness, server: XverifyServer) -> None:
    c, token, r = start(app)
    pending = r.json["token"]
    server.fail["verifycode"] = "server"
    r = post(c, "/confirm", {"token": pending, "pin": server.spoken_code()}, token=token)
    assert r.status_code == 503 and r.json["retryable"] is True
    del server.fail["verifycode"]
    r = post(c, "/confirm", {"token": pending, "pin": server.spoken_code()}, token=token)
    assert r.status_code == 200 and r.json["status"] == "verified"


def test_verifycode_request_error_is_not_a_wrong_pin(app: Harness, server: XverifyServer) -> None:
    """A non-zero error is "a problem with the request" (the seed): Xverify did not check
    the code, so the right PIN must not be counted as a wrong attempt."""
    c, token, r = start(app)
    pending = r.json["token"]
    server.fail["verifycode"] = "refused"
    r = post(c, "/confirm", {"token": pending, "pin": server.spoken_code()}, token=token)
    assert r.status_code == 503 and r.json["error"] == "provider_error"
    assert get_json(c, f"/status?token={pending}").json["attempts_left"] == 5
    del server.fail["verifycode"]
    r = post(c, "/confirm", {"token": pending, "pin": server.spoken_code()}, token=token)
    assert r.status_code == 200


def test_flow_without_remote_check(
    make_app: Callable[..., Harness], base: str, server: XverifyServer
) -> None:
    h = make_app(
        PHONEVERIFY_PROVIDER="xverify",
        PHONEVERIFY_XVERIFY_URL=base,
        PHONEVERIFY_XVERIFY_API_KEY=KEY,
        PHONEVERIFY_XVERIFY_DOMAIN=DOMAIN,
        PHONEVERIFY_XVERIFY_VERIFY_REMOTE=False,
    )
    c, token, r = start(h)
    r = post(c, "/confirm", {"token": r.json["token"], "pin": server.spoken_code()}, token=token)
    assert r.status_code == 200 and r.json["status"] == "verified"
    assert not [q for q in server.requests if q["path"] == VERIFYCODE]


@pytest.mark.parametrize(
    ("behaviour", "status", "words"),
    [
        ("number", 502, "could not call this number"),
        ("domain", 502, "account settings"),
        ("credit", 502, "account settings"),
        ("server", 503, "try again"),
    ],
)
def test_start_failures_show_a_clear_message(
    app: Harness, server: XverifyServer, behaviour: str, status: int, words: str
) -> None:
    server.fail["placecall"] = behaviour
    c, token, r = start(app)
    assert r.status_code == status
    assert r.json["error"] == "provider_error" and words in r.json["message"]
    assert KEY not in r.get_data(as_text=True)


def test_start_failure_page_in_html(app: Harness, server: XverifyServer) -> None:
    server.fail["placecall"] = "number"
    c = app.client()
    r = c.post("/phoneverify/start", data={"csrf_token": csrf(c)})
    assert r.status_code == 303  # Post/Redirect/Get: the verify page shows the error once
    page = c.get(r.location).get_data(as_text=True)
    assert "could not call this number" in page and KEY not in page


def test_close_closes_the_http_client(provider: Xverify) -> None:
    provider.place_call(call())
    provider.close()
    assert provider.client.is_closed
    with pytest.raises(RuntimeError, match="closed"):
        provider.place_call(call())
