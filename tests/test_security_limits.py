"""Security rule 5: toll fraud and call bombing. Calls limited per number, user, client IP and
app, with a cool-down per number, held across workers; number types and countries refused
before any call.

Each test drives the real flow, store and views (the test client, or a real loopback
server with threads), so it fails when the rule breaks. docs/security.md maps every rule
to its source and to the tests proving it; the tests keep their rule-numbered names.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import httpx
import phonenumbers
import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from flask_phoneverify.models import Verification

from .helpers import (
    begin,
    calls_placed,
    csrf,
    events,
    post,
    state_of,
)
from .loopback import serve

# == Rule 5: toll fraud and call bombing =====================================================


def assert_refused_with_retry(r: Any) -> None:
    assert r.status_code == 429 and r.json["error"] == "rate_limited", r.json
    wait = int(r.headers["Retry-After"])
    assert wait > 0
    assert re.search(r"\d+ (seconds|minutes)", r.json["message"]), r.json["message"]


def test_rule_05_calls_per_number_are_limited(make_app: Any) -> None:
    """Many accounts enrolling one victim's number cannot ring it more than the limit."""
    h = make_app(
        PHONEVERIFY_ALLOW_ENROLMENT=True,
        PHONEVERIFY_CALLS_PER_NUMBER_PER_HOUR=3,
        PHONEVERIFY_CALLS_PER_IP_PER_HOUR=100,
    )
    h.add_users("a", "b", "c", "d")
    for uid in ("a", "b", "c"):
        begin(h.client(uid), phone="+12015550100")
    c = h.client("d")
    r = post(c, "/start", {"phone": "+12015550100"}, token=csrf(c))
    assert_refused_with_retry(r)
    assert "this number" in r.json["message"]
    assert calls_placed(h) == 3
    begin(h.client("1"))  # another number is not affected
    h.clock.advance(3601)
    begin(c, phone="+12015550100")
    assert calls_placed(h) == 5


def test_rule_05_calls_per_user_are_limited(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_CALLS_PER_USER_PER_HOUR=2, PHONEVERIFY_CALLS_PER_NUMBER_PER_HOUR=50)
    c = h.client()
    token, body = begin(c)
    assert post(c, "/resend", {"token": body["token"]}, token=token).status_code == 200
    assert_refused_with_retry(post(c, "/resend", {"token": body["token"]}, token=token))
    r = post(c, "/start", token=token)
    assert_refused_with_retry(r)
    assert "your account" in r.json["message"]
    r = c.post("/phoneverify/start", data={"csrf_token": token})
    assert r.status_code == 303 and int(r.headers["Retry-After"]) > 0  # Post/Redirect/Get
    assert b"Too many calls" in c.get(r.location).data
    assert calls_placed(h) == 2


def test_rule_05_calls_per_client_ip_are_limited_and_forwarded_for_is_not_trusted(
    make_app: Any,
) -> None:
    h = make_app(
        PHONEVERIFY_ALLOW_ENROLMENT=True,
        PHONEVERIFY_CALLS_PER_IP_PER_HOUR=2,
        PHONEVERIFY_DEFAULT_REGION="US",
    )
    h.add_users("a", "b", "c")
    numbers = {"a": "+12015550101", "b": "+12015550102", "c": "+12015550103"}

    def client(uid: str, ip: str, forwarded: str | None = None) -> FlaskClient:
        c = h.client(uid)
        c.environ_base["REMOTE_ADDR"] = ip
        if forwarded:
            c.environ_base["HTTP_X_FORWARDED_FOR"] = forwarded
        return c

    begin(client("a", "198.51.100.7"), phone=numbers["a"])
    begin(client("b", "198.51.100.7", "203.0.113.1"), phone=numbers["b"])
    # a spoofed X-Forwarded-For does not buy a new budget without ProxyFix
    c = client("c", "198.51.100.7", "203.0.113.99")
    r = post(c, "/start", {"phone": numbers["c"]}, token=csrf(c))
    assert_refused_with_retry(r)
    assert "network" in r.json["message"]
    assert calls_placed(h) == 2
    begin(client("c", "198.51.100.8"), phone=numbers["c"])
    assert {e.ip for e in events(h, "call")} == {"198.51.100.7", "198.51.100.8"}


def test_rule_05_behind_proxyfix_each_client_address_is_counted(make_app: Any) -> None:
    from werkzeug.middleware.proxy_fix import ProxyFix

    h = make_app(PHONEVERIFY_ALLOW_ENROLMENT=True, PHONEVERIFY_CALLS_PER_IP_PER_HOUR=1)
    h.app.wsgi_app = ProxyFix(h.app.wsgi_app, x_for=1)  # type: ignore[method-assign]
    h.add_users("a", "b", "c")

    def client(uid: str, forwarded: str) -> FlaskClient:
        c = h.client(uid)
        c.environ_base["REMOTE_ADDR"] = "10.0.0.1"  # the proxy
        c.environ_base["HTTP_X_FORWARDED_FOR"] = forwarded
        return c

    begin(client("a", "203.0.113.1"), phone="+12015550101")
    begin(client("b", "203.0.113.2"), phone="+12015550102")
    c = client("c", "203.0.113.1")
    assert_refused_with_retry(post(c, "/start", {"phone": "+12015550103"}, token=csrf(c)))
    assert [e.ip for e in events(h, "call")] == ["203.0.113.1", "203.0.113.2"]


def test_rule_05_global_call_budget(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_ALLOW_ENROLMENT=True, PHONEVERIFY_CALLS_PER_HOUR=2)
    h.add_users("a", "b", "c")
    for i, uid in enumerate(("a", "b")):
        c = h.client(uid)
        c.environ_base["REMOTE_ADDR"] = f"198.51.100.{i + 1}"
        begin(c, phone=f"+1201555010{i + 1}")
    c = h.client("c")
    c.environ_base["REMOTE_ADDR"] = "198.51.100.9"
    r = post(c, "/start", {"phone": "+12015550109"}, token=csrf(c))
    assert_refused_with_retry(r)
    assert calls_placed(h) == 2


def test_rule_05_cool_down_between_calls_to_one_number(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_NUMBER_COOLDOWN=30)
    c = h.client()
    token, body = begin(c)
    h.clock.advance(10)
    r = post(c, "/resend", {"token": body["token"]}, token=token)
    assert_refused_with_retry(r)
    assert int(r.headers["Retry-After"]) == 20 and "20 seconds" in r.json["message"]
    r = post(c, "/start", token=token)
    assert_refused_with_retry(r)
    assert calls_placed(h) == 1
    h.clock.advance(20)
    assert post(c, "/resend", {"token": body["token"]}, token=token).status_code == 200
    assert calls_placed(h) == 2


def _example(type_name: str) -> str:
    kind = getattr(phonenumbers.PhoneNumberType, type_name)
    for region in ["US", "GB", "FR", "DE", *sorted(phonenumbers.SUPPORTED_REGIONS)]:
        number = phonenumbers.example_number_for_type(region, kind)
        if number is not None and phonenumbers.number_type(number) == kind:
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    raise LookupError(type_name)  # pragma: no cover


REFUSED_TYPES = ["PREMIUM_RATE", "SHARED_COST", "UAN", "PAGER", "VOICEMAIL", "PERSONAL_NUMBER"]


@pytest.mark.parametrize("type_name", REFUSED_TYPES)
def test_rule_05_refused_number_types_are_never_called(make_app: Any, type_name: str) -> None:
    h = make_app(PHONEVERIFY_ALLOW_ENROLMENT=True)
    number = _example(type_name)
    c = h.client("3")
    r = post(c, "/start", {"phone": number}, token=csrf(c))
    assert r.status_code == 400 and "cannot be called" in r.json["message"], (number, r.json)
    # a number already on file is held to the same policy
    h.users["1"].phone = number
    c = h.client("1")
    r = post(c, "/start", token=csrf(c))
    assert r.status_code == 400
    assert calls_placed(h) == 0 and events(h, "call") == []
    with state_of(h).store.session() as s:
        assert list(s.scalars(select(Verification))) == []


def test_rule_05_only_allowed_countries_are_called(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_ALLOW_ENROLMENT=True, PHONEVERIFY_ALLOWED_COUNTRIES=["US", "CA"])
    c = h.client("3")
    token = csrf(c)
    for number in ("+447400123456", "+33612345678", "+8613800138000"):
        r = post(c, "/start", {"phone": number}, token=token)
        assert r.status_code == 400 and "country" in r.json["message"], (number, r.json)
    assert calls_placed(h) == 0 and events(h, "call") == []
    begin(c, phone="+12015550101")
    assert calls_placed(h) == 1


def test_rule_05_limits_hold_across_worker_processes(make_app: Any, tmp_path: Any) -> None:
    shared = f"sqlite:///{tmp_path}/shared.sqlite3"
    config = {
        "PHONEVERIFY_DATABASE_URI": shared,
        "PHONEVERIFY_CALLS_PER_NUMBER_PER_HOUR": 3,
        "PHONEVERIFY_CALLS_PER_USER_PER_HOUR": 50,
    }
    one, two = make_app(**config), make_app(**config)
    begin(one.client())
    begin(two.client())
    begin(one.client())
    for h in (two, one):
        c = h.client()
        assert_refused_with_retry(post(c, "/start", token=csrf(c)))
    assert calls_placed(one, two) == 3


def test_rule_05_limits_hold_under_a_race_across_workers(make_app: Any, tmp_path: Any) -> None:
    shared = f"sqlite:///{tmp_path}/race.sqlite3"
    config = {
        "PHONEVERIFY_DATABASE_URI": shared,
        "PHONEVERIFY_CALLS_PER_NUMBER_PER_HOUR": 3,
        "PHONEVERIFY_CALLS_PER_USER_PER_HOUR": 50,
        "PHONEVERIFY_CALLS_PER_IP_PER_HOUR": 50,
    }
    workers = [make_app(**config), make_app(**config)]
    for w in workers:
        _ = state_of(w).store.engine  # tables created before the race (see the test below)
    n = 10
    results: list[int] = []
    headers = {"Accept": "application/json", "X-Test-User": "1"}
    with serve(workers[0].app) as base0, serve(workers[1].app) as base1:
        clients = []
        for i in range(n):
            c = httpx.Client(timeout=60, base_url=(base0, base1)[i % 2], headers=headers)
            token = c.get("/phoneverify/").json()["csrf_token"]
            clients.append((c, token))
        barrier = threading.Barrier(n)

        def go(c: httpx.Client, token: str) -> None:
            barrier.wait()
            r = c.post("/phoneverify/start", json={}, headers={"X-CSRFToken": token})
            results.append(r.status_code)

        threads = [threading.Thread(target=go, args=pair) for pair in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for c, _ in clients:
            c.close()
    assert sorted(results) == [200] * 3 + [429] * (n - 3), results
    assert calls_placed(*workers) == 3
    assert len(events(workers[0], "call")) == 3


def test_rule_05_workers_starting_together_share_one_fresh_database(
    make_app: Any, tmp_path: Any
) -> None:
    shared = f"sqlite:///{tmp_path}/fresh.sqlite3"
    workers = [make_app(PHONEVERIFY_DATABASE_URI=shared) for _ in range(4)]
    results: list[int] = []
    barrier = threading.Barrier(len(workers))
    with (
        serve(workers[0].app) as b0,
        serve(workers[1].app) as b1,
        serve(workers[2].app) as b2,
        serve(workers[3].app) as b3,
    ):
        clients = []
        for i, base in enumerate((b0, b1, b2, b3)):
            c = httpx.Client(
                timeout=60,
                base_url=base,
                headers={"Accept": "application/json", "X-Test-User": "12"[i % 2]},
            )
            clients.append((c, c.get("/phoneverify/").json()["csrf_token"]))

        def go(c: httpx.Client, token: str) -> None:
            barrier.wait()
            r = c.post("/phoneverify/start", json={}, headers={"X-CSRFToken": token})
            results.append(r.status_code)

        threads = [threading.Thread(target=go, args=pair) for pair in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for c, _ in clients:
            c.close()
    # two verifications each for two users: within every limit, so each start is placed
    assert results == [200] * len(workers), results
    assert calls_placed(*workers) == len(workers)


def test_rule_05_ipv6_clients_are_counted_per_network(make_app: Any) -> None:
    """Ten addresses of one IPv6 /64 share one per-IP budget; another /64 has its own, and
    PHONEVERIFY_IPV6_PREFIX narrows the network."""
    h = make_app(
        PHONEVERIFY_ALLOW_ENROLMENT=True,
        PHONEVERIFY_CALLS_PER_IP_PER_HOUR=2,
        PHONEVERIFY_DEFAULT_REGION="US",
    )
    users = [f"v{i}" for i in range(10)]
    h.add_users(*users)
    codes = []
    for i, uid in enumerate(users):
        c = h.client(uid)
        c.environ_base["REMOTE_ADDR"] = f"2001:db8:1:2:{i:x}::{i + 1:x}"
        codes.append(post(c, "/start", {"phone": f"+1201555{i + 200:04d}"}, token=csrf(c)))
    assert [r.status_code for r in codes] == [200, 200] + [429] * 8
    assert "network" in codes[2].json["message"]
    c = h.client(users[2])
    c.environ_base["REMOTE_ADDR"] = "2001:db8:1:3::1"
    assert post(c, "/start", {"phone": "+12015550202"}, token=csrf(c)).status_code == 200
    assert {e.ip for e in events(h, "call")} == {"2001:db8:1:2::/64", "2001:db8:1:3::/64"}

    narrow = make_app(
        PHONEVERIFY_ALLOW_ENROLMENT=True,
        PHONEVERIFY_CALLS_PER_IP_PER_HOUR=1,
        PHONEVERIFY_DEFAULT_REGION="US",
        PHONEVERIFY_IPV6_PREFIX=128,
    )
    narrow.add_users("w1", "w2")
    for i, uid in enumerate(("w1", "w2")):
        c = narrow.client(uid)
        c.environ_base["REMOTE_ADDR"] = f"2001:db8::{i + 1}"
        r = post(c, "/start", {"phone": f"+1201555{i + 300:04d}"}, token=csrf(c))
        assert r.status_code == 200


def test_rule_05_simultaneous_http_starts_to_one_number_place_one_call(make_app: Any) -> None:
    """Three users sharing one number press "Call me" at the same instant on a threaded
    server: the 30 s cool-down lets exactly one call through."""
    h = make_app(PHONEVERIFY_NUMBER_COOLDOWN=30)
    h.add_users("s1", "s2", "s3")
    for uid in ("s1", "s2", "s3"):
        h.users[uid].phone = "+12015550177"
    barrier = threading.Barrier(3)
    codes: list[int] = []
    with serve(h.app) as base:

        def go(uid: str) -> None:
            with httpx.Client(base_url=base, headers={"X-Test-User": uid}) as c:
                token = c.get("/phoneverify/", headers={"Accept": "application/json"}).json()[
                    "csrf_token"
                ]
                barrier.wait(30)
                r = c.post("/phoneverify/start", json={}, headers={"X-CSRFToken": token})
                codes.append(r.status_code)

        threads = [threading.Thread(target=go, args=(uid,)) for uid in ("s1", "s2", "s3")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert sorted(codes) == [200, 429, 429], codes
    assert calls_placed(h) == 1


NON_GEOGRAPHIC = ["+881612345678", "+870773111632", "+8823421234", "+883510012345"]


def test_rule_05_non_geographic_numbers_are_refused_unless_named(make_app: Any) -> None:
    """Satellite and international network numbers (toll-fraud targets that phonenumbers
    classes as mobile or VoIP) never reach the provider unless their code is allowed."""
    from flask_phoneverify.errors import ConfigError

    h = make_app(PHONEVERIFY_ALLOW_ENROLMENT=True)
    c = h.client("3")  # no number on file: enrolment
    token = csrf(c)
    for number in NON_GEOGRAPHIC:
        r = post(c, "/start", {"phone": number}, token=token)
        assert r.status_code == 400 and "satellite" in r.json["message"], (number, r.json)
    assert calls_placed(h) == 0
    allowed = make_app(
        PHONEVERIFY_ALLOW_ENROLMENT=True, PHONEVERIFY_ALLOWED_NON_GEOGRAPHIC_CODES=["881"]
    )
    c = allowed.client("3")
    assert post(c, "/start", {"phone": NON_GEOGRAPHIC[0]}, token=csrf(c)).status_code == 200
    with pytest.raises(ConfigError, match="PHONEVERIFY_ALLOWED_NON_GEOGRAPHIC_CODES"):
        make_app(PHONEVERIFY_ALLOWED_NON_GEOGRAPHIC_CODES=["44"])


def test_rule_05_calls_per_country_are_capped_across_the_app(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_ALLOW_ENROLMENT=True, PHONEVERIFY_CALLS_PER_COUNTRY_PER_HOUR=2)
    h.add_users("k1", "k2", "k3", "k4")
    codes = []
    for i, uid in enumerate(("k1", "k2", "k3")):
        c = h.client(uid)
        codes.append(post(c, "/start", {"phone": f"+1201555{i + 400:04d}"}, token=csrf(c)))
    assert [r.status_code for r in codes] == [200, 200, 429]
    assert "country" in codes[2].json["message"] and codes[2].headers["Retry-After"]
    c = h.client("k4")  # another country has its own budget
    assert post(c, "/start", {"phone": "+442079460123"}, token=csrf(c)).status_code == 200


def test_rule_05_enrolling_another_accounts_number_cannot_lock_its_owner_out(
    make_app: Any,
) -> None:
    """An account with no number types the victim's number three times, 31 s apart,
    canceling each call: it uses up the enrolment budget of that number, never the
    owner's. The owner still verifies with the number on file, and the refusal the
    attacker gets does not say whose number it is."""
    h = make_app(PHONEVERIFY_ALLOW_ENROLMENT=True, PHONEVERIFY_NUMBER_COOLDOWN=30)
    h.add_users("attacker", "accomplice")
    victim_number = h.users["1"].phone
    attacker = h.client("attacker")
    token = csrf(attacker)
    for _ in range(3):
        r = post(attacker, "/start", {"phone": victim_number}, token=token)
        assert r.status_code == 200
        post(attacker, "/cancel", {"token": r.json["token"]}, token=token)
        h.clock.advance(31)
    r = post(attacker, "/start", {"phone": victim_number}, token=token)
    assert r.status_code == 429  # the enrolment budgets are used up
    accomplice = h.client("accomplice")  # the number's enrolment budget is shared
    r = post(accomplice, "/start", {"phone": victim_number}, token=csrf(accomplice))
    assert r.status_code == 429 and "this number" in r.json["message"]
    assert "account" not in r.json["message"] and "owner" not in r.json["message"]
    victim = h.client("1")
    r = post(victim, "/start", token=csrf(victim))  # the number on file: its own budget
    assert r.status_code == 200, r.json
