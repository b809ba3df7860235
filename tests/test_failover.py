"""Failover between listed providers, the shared circuit breaker, and the end of a
verification whose status requests keep failing."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import event

from flask_phoneverify import ConfigError
from flask_phoneverify.testing import DevPhoneDriver

from .conftest import Harness
from .helpers import begin, csrf, events, get_json, log_text, post, row
from .loopback import free_port, serve
from .servers.veratad import VeratadServer
from .servers.xverify import XverifyServer

KEY = "failover-api-key"


@pytest.fixture(scope="module")
def xverify_served() -> Iterator[tuple[XverifyServer, str]]:
    server = XverifyServer(api_key=KEY, domain="example.com")
    with serve(server) as url:
        yield server, url


@pytest.fixture
def xv(xverify_served: tuple[XverifyServer, str]) -> tuple[XverifyServer, str]:
    xverify_served[0].reset()
    return xverify_served


def xverify(url: str) -> dict[str, Any]:
    return {
        "PHONEVERIFY_XVERIFY_URL": url,
        "PHONEVERIFY_XVERIFY_API_KEY": KEY,
        "PHONEVERIFY_XVERIFY_DOMAIN": "example.com",
        "PHONEVERIFY_XVERIFY_TIMEOUT": 0.5,
    }


def xverify_then_dev(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "PHONEVERIFY_PROVIDER": ["xverify", "dev"],
        "PHONEVERIFY_STYLE": "spoken",
        **xverify(url),
        **extra,
    }


def placecalls(server: XverifyServer) -> int:
    return sum(1 for r in server.requests if r["path"] == "/phoneconfirm/placecall/")


# -- failover ----------------------------------------------------------------------------------


def test_a_dead_first_provider_hands_the_call_to_the_next(
    make_app: Callable[..., Harness], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flask_phoneverify")
    h = make_app(**xverify_then_dev(f"http://127.0.0.1:{free_port()}"))
    c = h.client()
    token, body = begin(c)
    v = row(h, body["token"])
    assert v.provider == "dev" and v.status == "calling"
    [failover] = events(h, "failover")
    assert "xverify failed (ProviderUnavailable" in (failover.detail or "")
    assert "dev places the call" in (failover.detail or "")
    assert [e.detail for e in events(h, "call_placed")] == ["via dev"]
    logged = log_text(caplog)
    assert "provider xverify could not place the call" in logged and "trying dev" in logged
    assert "via dev" in logged
    pin = DevPhoneDriver(c).spoken_code()  # the simulated phone of the second provider
    r = post(c, "/confirm", {"token": body["token"], "pin": pin}, token=token)
    assert r.status_code == 200, r.json
    assert c.get("/secret").data == b"the secret"


@pytest.mark.parametrize("behaviour", ["server", "not_json", "slow", "key"])
def test_every_fault_of_the_provider_fails_over(
    make_app: Callable[..., Harness], xv: tuple[XverifyServer, str], behaviour: str
) -> None:
    server, url = xv
    server.fail["placecall"] = behaviour
    h = make_app(**xverify_then_dev(url))
    _, body = begin(h.client())
    assert row(h, body["token"]).provider == "dev"


def test_a_number_the_provider_refuses_is_not_called_through_another(
    make_app: Callable[..., Harness], xv: tuple[XverifyServer, str]
) -> None:
    server, url = xv
    server.fail["placecall"] = "number"
    h = make_app(**xverify_then_dev(url))
    c = h.client()
    r = post(c, "/start", {}, token=csrf(c))
    assert r.status_code == 502 and r.json["error"] == "provider_error"
    assert not h.ext.state(h.app).provider_named("dev").calls  # the dev phone never rang
    assert not events(h, "failover")


def test_a_call_the_first_provider_places_stays_with_it(
    make_app: Callable[..., Harness], xv: tuple[XverifyServer, str]
) -> None:
    server, url = xv
    h = make_app(**xverify_then_dev(url))
    c = h.client()
    token, body = begin(c)
    assert row(h, body["token"]).provider == "xverify"
    assert [e.detail for e in events(h, "call_placed")] == ["via xverify"]
    r = post(c, "/confirm", {"token": body["token"], "pin": server.spoken_code()}, token=token)
    assert r.status_code == 200, r.json


def test_every_listed_provider_must_do_the_style(make_app: Callable[..., Harness]) -> None:
    with pytest.raises(ConfigError, match="PHONEVERIFY_PROVIDER lists 'xverify'.*keypad"):
        make_app(PHONEVERIFY_PROVIDER=["dev", "xverify"], **xverify("http://127.0.0.1:1"))
    with pytest.raises(ConfigError, match="PHONEVERIFY_STYLE.*'veratad' cannot do"):
        make_app(
            PHONEVERIFY_PROVIDER="xverify,veratad",
            PHONEVERIFY_STYLE="spoken",
            PHONEVERIFY_VERATAD_USER="u",
            PHONEVERIFY_VERATAD_PASSWORD="p",
            PHONEVERIFY_VERATAD_MESSAGE="m",
            **xverify("http://127.0.0.1:1"),
        )


@pytest.mark.parametrize(
    ("value", "fix"), [([], "name a provider"), (["dev", "dev"], "list each provider once")]
)
def test_a_list_naming_no_provider_or_one_twice_is_refused(
    make_app: Callable[..., Harness], value: list[str], fix: str
) -> None:
    with pytest.raises(ConfigError, match=fix):
        make_app(PHONEVERIFY_PROVIDER=value)


# -- the circuit breaker -------------------------------------------------------------------------


def test_the_breaker_skips_a_failing_provider_then_tries_it_after_the_cool_down(
    make_app: Callable[..., Harness], xv: tuple[XverifyServer, str]
) -> None:
    server, url = xv
    server.fail["placecall"] = "server"
    h = make_app(
        **xverify_then_dev(url, PHONEVERIFY_BREAKER_FAILURES=2, PHONEVERIFY_BREAKER_COOLDOWN=60)
    )
    h.add_users("4", "5", "6", phone="+12015550199")
    for uid in ("1", "2"):
        _, body = begin(h.client(uid))
        assert row(h, body["token"]).provider == "dev"
    assert placecalls(server) == 2
    _, body = begin(h.client("4"))  # open: xverify is not asked
    assert row(h, body["token"]).provider == "dev" and placecalls(server) == 2
    h.clock.advance(61)
    server.fail.clear()
    _, body = begin(h.client("5"))  # the cool-down is over: tried again, and it works
    assert row(h, body["token"]).provider == "xverify" and placecalls(server) == 3


def test_a_fault_after_the_cool_down_opens_the_breaker_again_at_once(
    make_app: Callable[..., Harness], xv: tuple[XverifyServer, str]
) -> None:
    server, url = xv
    server.fail["placecall"] = "server"
    h = make_app(**xverify_then_dev(url, PHONEVERIFY_BREAKER_FAILURES=2))
    h.add_users("4", "5", phone="+12015550199")
    for uid in ("1", "2"):
        begin(h.client(uid))
    h.clock.advance(61)
    begin(h.client("4"))
    assert placecalls(server) == 3
    begin(h.client("5"))
    assert placecalls(server) == 3


def test_the_breaker_is_shared_by_every_worker_through_the_store(
    make_app: Callable[..., Harness], xv: tuple[XverifyServer, str], tmp_path: Any
) -> None:
    server, url = xv
    shared = f"sqlite:///{tmp_path}/shared.sqlite3"
    config = xverify_then_dev(url, PHONEVERIFY_BREAKER_FAILURES=1, PHONEVERIFY_DATABASE_URI=shared)
    first, second = make_app(**config), make_app(**config)
    begin(second.client("2"))  # the second worker has read the breakers: all closed
    server.fail["placecall"] = "server"
    begin(first.client("1"))  # the first worker's call trips xverify's breaker
    assert placecalls(server) == 2
    first.clock.advance(1)  # (one clock) the second worker reads the breakers again
    _, body = begin(second.client("1"))
    assert row(second, body["token"]).provider == "dev" and placecalls(server) == 2


def test_when_every_provider_is_skipped_start_answers_503_retryable(
    make_app: Callable[..., Harness], xv: tuple[XverifyServer, str]
) -> None:
    server, url = xv
    server.fail["placecall"] = "server"
    h = make_app(PHONEVERIFY_PROVIDER="xverify", PHONEVERIFY_BREAKER_FAILURES=1, **xverify(url))
    c = h.client()
    token = csrf(c)
    assert post(c, "/start", {}, token=token).status_code == 503
    r = post(c, "/start", {}, token=token)
    assert r.status_code == 503
    assert r.json["error"] == "provider_error" and r.json["retryable"] is True
    assert r.json["message"]
    assert placecalls(server) == 1
    assert len(events(h, "started")) == 1  # the skipped start counted nothing


def test_the_breaker_costs_no_query_when_nothing_fails(
    make_app: Callable[..., Harness], xv: tuple[XverifyServer, str]
) -> None:
    server, url = xv
    h = make_app(**xverify_then_dev(url))
    h.add_users("4", phone="+12015550199")
    begin(h.client("1"))  # the first start of the process reads the breakers once
    engine = h.ext.state(h.app).store.engine
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        seen.append(f"{statement} {params}")

    event.listen(engine, "before_cursor_execute", record)
    try:
        begin(h.client("4"))
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert seen and not [s for s in seen if "breaker" in s]


def test_a_stale_copy_of_the_breakers_is_read_in_the_admitting_transaction(
    make_app: Callable[..., Harness], xv: tuple[XverifyServer, str]
) -> None:
    server, url = xv
    h = make_app(**xverify_then_dev(url))
    h.add_users("4", "5", phone="+12015550199")
    begin(h.client("1"))
    engine = h.ext.state(h.app).store.engine
    counted: list[tuple[int, int]] = []
    for uid, wait in (("4", 0), ("5", 2)):  # a fresh copy, then one two seconds old
        h.clock.advance(wait)
        began: list[int] = []
        reads: list[str] = []

        def on_begin(_conn: Any, began: list[int] = began) -> None:
            began.append(1)

        def on_execute(
            _c: Any, _cur: Any, statement: str, params: Any, *_: Any, reads: list[str] = reads
        ) -> None:
            if "breaker" in str(params):
                reads.append(statement)

        event.listen(engine, "begin", on_begin)
        event.listen(engine, "before_cursor_execute", on_execute)
        try:
            begin(h.client(uid))
        finally:
            event.remove(engine, "begin", on_begin)
            event.remove(engine, "before_cursor_execute", on_execute)
        counted.append((len(began), len(reads)))
    assert counted[0][1] == 0 and counted[1][1] == 1
    assert counted[0][0] == counted[1][0]  # no transaction of its own


# -- status requests that keep failing -------------------------------------------------------------


@pytest.fixture(scope="module")
def veratad_served() -> Iterator[tuple[VeratadServer, str]]:
    server = VeratadServer(user="u@example.com", password="pw-0123456789")
    with serve(server) as url:
        yield server, url


def veratad(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "PHONEVERIFY_PROVIDER": "veratad",
        "PHONEVERIFY_STYLE": "delivery",
        "PHONEVERIFY_VERATAD_URL": url,
        "PHONEVERIFY_VERATAD_USER": "u@example.com",
        "PHONEVERIFY_VERATAD_PASSWORD": "pw-0123456789",
        "PHONEVERIFY_VERATAD_MESSAGE": "m",
        "PHONEVERIFY_POLL_INTERVAL": 0,
        **extra,
    }


def test_consecutive_failed_status_requests_end_the_verification(
    make_app: Callable[..., Harness], veratad_served: tuple[VeratadServer, str]
) -> None:
    server, url = veratad_served
    server.reset(pending_polls=100)
    h = make_app(**veratad(url, PHONEVERIFY_MAX_POLL_ERRORS=3))
    c = h.client()
    token, body = begin(c)
    status = f"/status?token={body['token']}"
    server.fail["continue"] = "not_json"
    for _ in range(2):
        assert get_json(c, status).json["status"] == "calling"
    server.fail.clear()  # one good answer: the count starts again
    assert get_json(c, status).json["status"] == "calling"
    server.fail["continue"] = "server"
    assert [get_json(c, status).json["status"] for _ in range(2)] == ["calling", "calling"]
    answer = get_json(c, status).json
    assert answer["status"] == "failed"
    assert answer["message"] == (
        "The phone service could not tell us how the call went. Please try again in a moment."
    )
    [failed] = events(h, "provider_error")
    assert "veratad: 3 status requests failed in a row" in (failed.detail or "")
    server.fail.clear()
    h.clock.advance(60)
    r = post(c, "/start", {}, token=token)  # the user can call again
    assert r.status_code == 200, r.json


def test_the_simulated_phone_is_linked_when_it_is_listed_after_a_vendor(
    make_app: Callable[..., Harness], xv: tuple[XverifyServer, str]
) -> None:
    _, url = xv
    h = make_app(**xverify_then_dev(url))
    page = h.client().get("/phoneverify/").get_data(as_text=True)
    assert "simulated phone" in page
