"""`flask phoneverify ...` commands."""

from __future__ import annotations

import getpass
import io
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from flask_phoneverify.settings import CORE_SETTINGS

from .helpers import (
    SECRET,
    Harness,
    begin,
    csrf,
    events,
    post,
    row,
    state_of,
    verifications,
    verify_keypad,
)
from .loopback import serve
from .servers.xverify import XverifyServer


def test_callback_url_is_signed_for_the_provider(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_EXTERNAL_URL="https://bank.example")
    result = h.app.test_cli_runner().invoke(args=["phoneverify", "callback-url", "dev"])
    assert result.exit_code == 0, result.output
    url = result.output.strip().splitlines()[-1]
    assert url.startswith("https://bank.example/phoneverify/callback/dev/")
    token = url.rsplit("/", 1)[-1]
    h.ext.state(h.app).tokens.check_callback(token, "dev")


def test_callback_url_refuses_unknown_provider(make_app: Any) -> None:
    h = make_app()
    result = h.app.test_cli_runner().invoke(args=["phoneverify", "callback-url", "nope"])
    assert result.exit_code != 0 and "unknown provider" in result.output


def test_settings_reference_lists_every_core_setting(make_app: Any) -> None:
    h = make_app()
    result = h.app.test_cli_runner().invoke(args=["phoneverify", "settings"])
    assert result.exit_code == 0
    for s in CORE_SETTINGS:
        assert f"`{s.name}`" in result.output


# -- providers and check ------------------------------------------------------------------------


def cli(h: Harness, *args: str, **kw: Any) -> Any:
    return h.app.test_cli_runner().invoke(args=["phoneverify", *args], **kw)


def test_providers_lists_styles_and_whether_each_is_configured(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_XVERIFY_API_KEY="k" * 16, PHONEVERIFY_XVERIFY_DOMAIN="example.com")
    result = cli(h, "providers")
    assert result.exit_code == 0, result.output
    lines = {line[2:].split()[0]: line for line in result.output.splitlines()}
    assert lines["dev"].startswith("* ") and "keypad, spoken" in lines["dev"]
    assert "complete" in lines["dev"]
    assert lines["xverify"].startswith("  ") and lines["xverify"].rstrip().endswith("complete")
    assert "incomplete: PHONEVERIFY_VOICESHOT_MENU_ID" in lines["voiceshot"]
    assert "delivery" in lines["veratad"]


def test_check_passes_a_sound_configuration(make_app: Any) -> None:
    h = make_app()
    result = cli(h, "check")
    assert result.exit_code == 0, result.output
    assert "ok: database reachable" in result.output
    assert "warning: the provider is the simulated phone" in result.output
    assert "No problem found." in result.output


def test_check_wants_a_public_https_address_for_callbacks(make_app: Any) -> None:
    base = {
        "PHONEVERIFY_PROVIDER": "voiceshot",
        "PHONEVERIFY_VOICESHOT_MENU_ID": "1-1234",
        "PHONEVERIFY_VOICESHOT_CALLER_ID": "2015550100",
    }
    for url, why in (
        (None, "PHONEVERIFY_EXTERNAL_URL is not set"),
        ("http://bank.example", "is not https"),
        ("https://10.0.0.7", "a private address"),
        ("https://localhost:8443", "which the provider cannot reach"),
    ):
        extra = {"PHONEVERIFY_EXTERNAL_URL": url} if url else {}
        result = cli(make_app(**base, **extra), "check")
        assert result.exit_code == 1, (url, result.output)
        assert why in result.output and "fix: set PHONEVERIFY_EXTERNAL_URL" in result.output
    result = cli(make_app(**base, PHONEVERIFY_EXTERNAL_URL="https://bank.example"), "check")
    assert result.exit_code == 0, result.output
    assert "call events address is public https" in result.output


def test_check_reports_a_wsdl_that_does_not_load(make_app: Any, tmp_path: Any) -> None:
    broken = tmp_path / "jobs.wsdl"
    broken.write_text("this is not a WSDL")
    h = make_app(
        PHONEVERIFY_PROVIDER="phoneconfirm",
        PHONEVERIFY_PHONECONFIRM_USER_GUID="5a1543bb3fcc40a7b96e32eb0c8434c7",
        PHONEVERIFY_PHONECONFIRM_WSDL=str(broken),
    )
    result = cli(h, "check")
    assert result.exit_code == 1
    assert "problem: the WSDL of phoneconfirm does not load" in result.output
    assert "fix: check PHONEVERIFY_PHONECONFIRM_WSDL" in result.output
    assert "5a1543bb" not in result.output
    assert (
        "ok: the WSDL of phoneconfirm loads"
        in cli(
            make_app(
                PHONEVERIFY_PROVIDER="phoneconfirm",
                PHONEVERIFY_PHONECONFIRM_USER_GUID="5a1543bb3fcc40a7b96e32eb0c8434c7",
            ),
            "check",
        ).output
    )


def test_check_reports_missing_tables(tmp_path: Any) -> None:
    from flask import Flask
    from flask_sqlalchemy import SQLAlchemy

    from flask_phoneverify import PhoneVerify

    app = Flask("withdb", instance_path=str(tmp_path))
    app.config.update(
        TESTING=True,
        SECRET_KEY=SECRET,
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path}/app.sqlite3",
    )
    db = SQLAlchemy(app)
    PhoneVerify(app, db=db)
    result = app.test_cli_runner().invoke(args=["phoneverify", "check"])
    assert result.exit_code == 1
    assert "problem: tables missing: " in result.output
    assert "phoneverify_verifications" in result.output
    with app.app_context():
        db.create_all()
    result = app.test_cli_runner().invoke(args=["phoneverify", "check"])
    assert result.exit_code == 0, result.output


# -- call ----------------------------------------------------------------------------------------


def printed() -> str:
    """What the command running under CliRunner has printed so far (its stdout)."""
    sys.stdout.flush()
    return bytes(sys.stdout.buffer.getvalue()).decode()  # type: ignore[attr-defined]


def answer_keypad(h: Harness, errors: list[BaseException]) -> threading.Thread:
    """The person at the phone: once the simulated call rings, key in the PIN the command
    printed."""
    st = state_of(h)

    def run() -> None:
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                calls = st.provider.calls
                found = re.search(r"key in this PIN: (\d+)", printed())
                if calls and found:
                    call = calls[-1]
                    st.flow.apply_event(st.provider.press(call.id, call.owner, found.group(1)))
                    return
                time.sleep(0.05)
            raise AssertionError("the call never rang")
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_call_follows_a_keypad_call_on_the_simulated_phone(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_POLL_INTERVAL=0.1)
    errors: list[BaseException] = []
    thread = answer_keypad(h, errors)
    result = cli(h, "call", "+12015550177")
    thread.join(30)
    assert not errors, errors
    assert result.exit_code == 0, result.output
    assert "Calling +1******0177 via dev (keypad style)" in result.output
    assert "ringing" in result.output
    assert result.output.rstrip().endswith("Verified: the phone confirmed.")
    v = verifications(h)[0]
    assert v.status == "verified" and v.claimed_at is not None
    assert v.user_id == f"cli:{getpass.getuser()}" and v.enrol


def test_call_that_fails_exits_1(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_POLL_INTERVAL=0.1)
    st = state_of(h)

    def decline() -> None:
        deadline = time.monotonic() + 20
        while not st.provider.calls and time.monotonic() < deadline:
            time.sleep(0.05)
        call = st.provider.calls[-1]
        st.flow.apply_event(st.provider.hang_up(call.id, call.owner))

    thread = threading.Thread(target=decline)
    thread.start()
    result = cli(h, "call", "+12015550177")
    thread.join(30)
    assert result.exit_code == 1
    assert "Not verified: failed. The call was declined." in result.output


class Later(io.RawIOBase):
    """Standard input whose text is known only once it is read (the PIN the call spoke)."""

    def __init__(self, text: Callable[[], str]) -> None:
        self.text = text
        self.left = b""
        self.done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self.left and not self.done:
            self.left, self.done = (self.text() + "\n").encode(), True
        n = min(len(buffer), len(self.left))
        buffer[:n] = self.left[:n]
        self.left = self.left[n:]
        return n


def test_call_asks_for_the_spoken_pin_on_a_vendor(make_app: Any) -> None:
    server = XverifyServer(api_key="test-api-key", domain="example.com")
    with serve(server) as base:
        h = make_app(
            PHONEVERIFY_PROVIDER="xverify",
            PHONEVERIFY_XVERIFY_URL=base,
            PHONEVERIFY_XVERIFY_API_KEY="test-api-key",
            PHONEVERIFY_XVERIFY_DOMAIN="example.com",
        )
        result = cli(h, "call", "+12015550177", input=io.BufferedReader(Later(server.spoken_code)))
    assert result.exit_code == 0, result.output
    assert "via xverify (spoken style)" in result.output
    assert "PIN spoken in the call" in result.output
    assert "Verified" in result.output
    assert [r["path"] for r in server.requests] == [
        "/phoneconfirm/placecall/",
        "/phoneconfirm/verifycode/",
    ]
    assert "test-api-key" not in result.output


def test_call_on_another_provider_and_style(make_app: Any) -> None:
    server = XverifyServer(api_key="test-api-key", domain="example.com")
    with serve(server) as base:
        h = make_app(
            PHONEVERIFY_XVERIFY_URL=base,
            PHONEVERIFY_XVERIFY_API_KEY="test-api-key",
            PHONEVERIFY_XVERIFY_DOMAIN="example.com",
        )
        result = cli(
            h,
            "call",
            "+12015550177",
            "--provider",
            "xverify",
            input=io.BufferedReader(Later(server.spoken_code)),
        )
        assert result.exit_code == 0, result.output
        assert "via xverify (spoken style)" in result.output
        wrong_style = cli(h, "call", "+12015550177", "--provider", "xverify", "--style", "keypad")
    assert wrong_style.exit_code == 2 and "xverify cannot do keypad" in wrong_style.output
    assert cli(h, "call", "not a number").exit_code == 2
    assert cli(h, "call", "+12015550177", "--provider", "nope").exit_code == 2


def test_call_reports_a_provider_failure(make_app: Any) -> None:
    server = XverifyServer(api_key="test-api-key", domain="example.com")
    server.fail["placecall"] = "key"
    with serve(server) as base:
        h = make_app(
            PHONEVERIFY_PROVIDER="xverify",
            PHONEVERIFY_XVERIFY_URL=base,
            PHONEVERIFY_XVERIFY_API_KEY="test-api-key",
            PHONEVERIFY_XVERIFY_DOMAIN="example.com",
        )
        result = cli(h, "call", "+12015550177")
    assert result.exit_code == 1
    assert "the provider failed" in result.output
    assert "test-api-key" not in result.output


# -- show, reset, purge, stats -----------------------------------------------------------------


def test_show_takes_every_id_start_makes_even_when_chance_begins_one_with_a_dash(
    make_app: Any, monkeypatch: Any
) -> None:
    """A URL-safe random id begins with "-" once in 64; the command line would read it as
    an option, so start never keeps one."""
    import secrets
    import types

    import flask_phoneverify.flow

    real = secrets.token_urlsafe
    dealt: list[str] = []

    def dash_first(n: int | None = None) -> str:
        dealt.append("-" + real(n)[1:] if not dealt else real(n))
        return dealt[-1]

    chance = types.SimpleNamespace(**{k: getattr(secrets, k) for k in secrets.__all__})
    chance.token_urlsafe = dash_first
    monkeypatch.setattr(flask_phoneverify.flow, "secrets", chance)
    h = make_app()
    body = verify_keypad(h.client())
    v = row(h, body["token"])
    assert dealt[0].startswith("-") and v.id != dealt[0] and not v.id.startswith("-")
    result = cli(h, "show", v.id[:8])
    assert result.exit_code == 0, result.output
    assert f"id        {v.id}" in result.output


def test_show_prints_a_verification_and_its_events_masked(make_app: Any) -> None:
    h = make_app()
    body = verify_keypad(h.client())
    v = row(h, body["token"])
    result = cli(h, "show", v.id[:8])
    assert result.exit_code == 0, result.output
    assert f"id        {v.id}" in result.output
    assert "+1******0123" in result.output and "+12015550123" not in result.output
    for kind in ("started", "call_placed", "confirmed"):
        assert kind in result.output
    assert body["pin"] not in result.output
    assert cli(h, "show", "nope-nope").exit_code == 1


def test_reset_needs_exactly_one_target(make_app: Any) -> None:
    h = make_app()
    assert cli(h, "reset").exit_code == 2
    assert cli(h, "reset", "--number", "+12015550123", "--user", "1").exit_code == 2
    assert cli(h, "reset", "--ip", "not-an-ip").exit_code == 2


def test_reset_of_the_number_ends_its_cooldown(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_NUMBER_COOLDOWN=600, PHONEVERIFY_CALLS_PER_NUMBER_PER_HOUR=10)
    c = h.client()
    begin(c)
    r = post(c, "/start", token=csrf(c))
    assert r.status_code == 429 and "just made" in r.json["message"]
    other = cli(h, "reset", "--number", "+12015550124")
    assert other.exit_code == 0
    assert post(c, "/start", token=csrf(c)).status_code == 429  # another number's reset
    assert cli(h, "reset", "--number", "+12015550123").exit_code == 0
    assert post(c, "/start", token=csrf(c)).status_code == 200
    reset = events(h, "reset")
    assert [e.phone for e in reset] == ["+12015550124", "+12015550123"]


def test_reset_of_a_user_clears_their_wrong_pins(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_STYLE="spoken", PHONEVERIFY_MAX_FAILURES_PER_HOUR=2)
    c = h.client()
    token, body = begin(c)
    for _ in range(2):
        post(c, "/confirm", {"token": body["token"], "pin": "000000"}, token=token)
    r = post(c, "/start", token=csrf(c))
    assert r.status_code == 429 and "wrong PINs" in r.json["message"]
    assert cli(h, "reset", "--user", "1").exit_code == 0
    assert post(c, "/start", token=csrf(c)).status_code == 200
    assert events(h, "reset")[0].user_id == "1"


def test_reset_of_an_ipv6_client_clears_its_network(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_CALLS_PER_IP_PER_HOUR=1)
    h.add_users("4", phone="+12015550125")
    first, second = h.client("1"), h.client("4")
    for c in (first, second):
        c.environ_base["REMOTE_ADDR"] = "2001:db8:0:1::7"
    begin(first)
    assert post(second, "/start", token=csrf(second)).status_code == 429
    result = cli(h, "reset", "--ip", "2001:db8:0:1::ffff")
    assert result.exit_code == 0 and "2001:db8:0:1::/64" in result.output
    assert post(second, "/start", token=csrf(second)).status_code == 200


def test_purge_deletes_finished_past_retention_in_batches(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_CALLS_PER_NUMBER_PER_HOUR=10)
    c = h.client()
    old = [verify_keypad(c) for _ in range(3)]
    h.clock.advance(10 * 86400)
    begin(c)  # recent and open: kept
    assert stale_counters(h) > 0
    result = cli(h, "purge", "--older-than", "5", "--batch", "2")
    assert result.exit_code == 0, result.output
    assert "Deleted 3 verifications" in result.output
    left = verifications(h)
    assert len(left) == 1 and left[0].id not in {row_id(h, b) for b in old}
    assert all(e.at >= h.clock() - 5 * 86400 for e in events(h))
    assert stale_counters(h) == 0  # minute rows no limit reads any more


def stale_counters(h: Harness) -> int:
    """Counter rows of minutes more than two hours old (anchors and cool-downs aside)."""
    from sqlalchemy import func, select

    from flask_phoneverify.models import Counter

    first = int(h.clock() // 60) - 120
    with state_of(h).store.session() as s:
        query = select(func.count()).where(Counter.minute > 0, Counter.minute < first)
        return int(s.scalar(query) or 0)
    assert cli(h, "purge", "--older-than", "0").exit_code == 2


def row_id(h: Harness, body: dict[str, Any]) -> str:
    vid, _ = state_of(h).tokens.read_pending(body["token"], max_age=10**9)
    return str(vid)


def test_stats_per_provider_and_country_with_paused_countries(make_app: Any) -> None:
    h = make_app(
        PHONEVERIFY_FRAUD_GUARD_MIN_CONVERSION=0.9,
        PHONEVERIFY_FRAUD_GUARD_MIN_CALLS=2,
        PHONEVERIFY_CALLS_PER_NUMBER_PER_HOUR=10,
    )
    c = h.client()
    verify_keypad(c)
    h.clock.advance(5)
    token, body = begin(c)
    post(c, "/cancel", {"token": body["token"]}, token=token)
    h.clock.advance(30)
    other = h.client("2")
    r = post(other, "/start", token=csrf(other))  # one verified of two: paused
    assert r.status_code == 429
    result = cli(h, "stats", "--hours", "1")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = next(line for line in lines if line.startswith("provider"))
    assert header.split() == [
        "provider",
        "placed",
        "verified",
        "locked",
        "expired",
        "call_failed",
        "voicemail",
        "canceled",
        "conversion",
        "to_confirm",
    ]
    dev = next(line for line in lines if line.startswith("dev ")).split()
    assert dev == ["dev", "2", "1", "0", "0", "0", "0", "1", "50%", "0s"]
    us = next(line for line in lines if line.startswith("US ")).split()
    assert us[:3] == ["US", "2", "1"]
    assert any(line.startswith("Paused: US until") and "50% of 2" in line for line in lines)
