"""A stateful property test of the whole flow on the simulated phone.

Hypothesis drives one user through random sequences of start, status, confirm
with right and wrong PINs, resend, cancel, key presses on the phone (right and
wrong), answers, hang-ups, another browser session trying the right PIN, and
clock jumps, on a fresh app (its own database) per example. After every step
the invariants of the issue's rule 12 are checked against the real database:

- never verified without the right PIN or the phone's confirmation;
- verified at most once: the gate opens once per verification;
- never unlocked once locked (no status ever leaves a final state);
- attempts never above the limit;
- nothing accepted after expiry;
- calls placed never above the limits.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from typing import Any

from flask import Flask, request
from flask.testing import FlaskClient
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from sqlalchemy import select

from flask_phoneverify import PhoneVerify, phone_verified, phone_verified_required
from flask_phoneverify.models import Event, Verification

from .helpers import SECRET, DemoUser, FakeClock, csrf

PHONE = "+12015550123"
MAX_ATTEMPTS = 3
TTL = 600
PER_NUMBER = 3
PER_USER = 5
COOLDOWN = 30
MAX_FAILURES = 6
VERIFIED_TTL = 43200
HOUR = 3600.0
JSON = {"Accept": "application/json"}


@dataclass
class Seen:
    """What the test knows of one verification."""

    token: str
    pin: str
    evidence: bool = False  # the right PIN was typed or keyed in for it
    final: str | None = None  # the first final status seen
    opened: int = 0  # confirms answered 200 (the gate opened)


class PhoneFlow(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.mkdtemp(prefix="pv-stateful-")
        self.clock = FakeClock()
        self.seen: dict[str, Seen] = {}
        self.current: str | None = None
        self.call_times: list[float] = []
        self.signals: list[str] = []
        self.gate_until = 0.0

    # -- setup -------------------------------------------------------------------------------
    @initialize(style=st.sampled_from(["keypad", "spoken"]))
    def build(self, style: str) -> None:
        self.style = style
        app = Flask(f"stateful_{style}", instance_path=self.folder)
        app.config.update(
            TESTING=True,
            SECRET_KEY=SECRET,
            PHONEVERIFY_DATABASE_URI=f"sqlite:///{self.folder}/pv.sqlite3",
            PHONEVERIFY_STYLE=style,
            PHONEVERIFY_TTL=TTL,
            PHONEVERIFY_MAX_ATTEMPTS=MAX_ATTEMPTS,
            PHONEVERIFY_CALLS_PER_NUMBER_PER_HOUR=PER_NUMBER,
            PHONEVERIFY_CALLS_PER_USER_PER_HOUR=PER_USER,
            PHONEVERIFY_NUMBER_COOLDOWN=COOLDOWN,
            PHONEVERIFY_MAX_FAILURES_PER_HOUR=MAX_FAILURES,
            PHONEVERIFY_VERIFIED_TTL=VERIFIED_TTL,
        )
        ext = PhoneVerify(clock=self.clock)
        user = DemoUser("1", PHONE)

        @ext.user_loader
        def load() -> DemoUser | None:
            return user if request.headers.get("X-Test-User") == "1" else None

        ext.init_app(app)

        @app.get("/secret")
        @phone_verified_required
        def secret() -> str:
            return "the secret"

        self.app = app
        self.st = ext.state(app)
        self.on_verified = lambda sender, **extra: self.signals.append(extra["phone"])
        phone_verified.connect(self.on_verified, app)
        self.client = self._client()
        self.thief = self._client()  # the same user in another browser session
        self.csrf = self._csrf(self.client)
        self.thief_csrf = self._csrf(self.thief)

    def teardown(self) -> None:
        if hasattr(self, "app"):
            phone_verified.disconnect(self.on_verified, self.app)
            self.st.provider.close()
            self.st.store.engine.dispose()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _client(self) -> FlaskClient:
        c = self.app.test_client()
        c.environ_base["HTTP_X_TEST_USER"] = "1"
        return c

    def _csrf(self, c: FlaskClient) -> str:
        return csrf(c)

    # -- helpers -------------------------------------------------------------------------------
    def _post(self, path: str, body: dict[str, Any], *, thief: bool = False) -> Any:
        c, token = (self.thief, self.thief_csrf) if thief else (self.client, self.csrf)
        return c.post("/phoneverify" + path, json=body, headers={**JSON, "X-CSRFToken": token})

    def _row(self, vid: str) -> Verification:
        v = self.st.store.get(vid)
        assert v is not None
        return v

    def _vid(self, token: str) -> str:
        vid, _ = self.st.tokens.read_pending(token, max_age=10**9)
        return vid

    def _dev_call(self, vid: str) -> Any:
        v = self._row(vid)
        return next((c for c in reversed(self.st.provider.calls) if c.call_id == v.call_id), None)

    def _calls_placed(self) -> int:
        return len(self.st.provider.calls)

    def _track_calls(self, before: int) -> int:
        placed = self._calls_placed() - before
        self.call_times.extend([self.clock()] * placed)
        return placed

    def _open_and_live(self, vid: str) -> bool:
        v = self._row(vid)
        return v.status == "calling" and self.clock() < v.expires_at

    def _wrong(self, pin: str, offset: int) -> str:
        """Another PIN of the same length (never the right one, whatever the offset)."""
        space = 10 ** len(pin)
        step = (offset - 1) % (space - 1) + 1
        return str((int(pin) + step) % space).zfill(len(pin))

    # -- rules: the page -----------------------------------------------------------------------
    @rule()
    def start(self) -> None:
        before = self._calls_placed()
        r = self._post("/start", {})
        placed = self._track_calls(before)
        if r.status_code == 200:
            assert placed == 1
            token = r.json["token"]
            vid = self._vid(token)
            pin = r.json["pin"] if self.style == "keypad" else self._dev_call(vid).pin
            assert ("pin" in r.json) == (self.style == "keypad")
            self.seen[vid] = Seen(token=token, pin=pin)
            self.current = vid
        else:
            assert placed == 0
            assert r.status_code in (400, 429), (r.status_code, r.json)
            event(f"start refused: {r.json['message'].split('.')[0]}")
            if r.status_code == 429:
                assert int(r.headers["Retry-After"]) > 0

    @precondition(lambda self: self.current is not None)
    @rule()
    def resend(self) -> None:
        assert self.current is not None
        seen = self.seen[self.current]
        before = self._calls_placed()
        r = self._post("/resend", {"token": seen.token})
        placed = self._track_calls(before)
        if r.status_code == 200:
            assert placed == 1
            seen.pin = r.json["pin"] if self.style == "keypad" else self._dev_call(self.current).pin
            seen.evidence = seen.evidence and self._row(self.current).status != "calling"
        else:
            assert placed == 0 and r.status_code in (400, 409, 429), r.status_code

    @precondition(lambda self: self.current is not None)
    @rule()
    def cancel(self) -> None:
        assert self.current is not None
        r = self._post("/cancel", {"token": self.seen[self.current].token})
        assert r.status_code in (200, 400, 409, 429), r.status_code

    @precondition(lambda self: self.current is not None)
    @rule()
    def status(self) -> None:
        assert self.current is not None
        token = self.seen[self.current].token
        r = self.client.get("/phoneverify/status", query_string={"token": token}, headers=JSON)
        assert r.status_code in (200, 400), r.status_code
        if r.status_code == 200:
            assert r.json["attempts_left"] >= 0

    @precondition(lambda self: self.current is not None)
    @rule()
    def confirm_right(self) -> None:
        assert self.current is not None
        vid, seen = self.current, self.seen[self.current]
        before = self._row(vid)
        live = self._open_and_live(vid)
        if self.style == "spoken":
            seen.evidence = True  # typed right; whether it counts is the flow's business
            r = self._post("/confirm", {"token": seen.token, "pin": seen.pin})
            if live and before.attempts < MAX_ATTEMPTS:
                assert r.status_code == 200, (r.status_code, r.json)
        else:
            r = self._post("/confirm", {"token": seen.token})
            if before.status == "verified" and before.claimed_at is None:
                if self.clock() - before.created_at < TTL:  # a claim at the end is too late
                    assert r.status_code == 200, (r.status_code, r.json)
        if r.status_code == 200:
            seen.opened += 1
            confirmed = self._row(vid).verified_at  # the marker is dated at the phone's word
            self.gate_until = (confirmed or self.clock()) + VERIFIED_TTL
            event(f"{self.style}: the gate opened")
        else:
            assert r.status_code in (400, 409, 429), (r.status_code, r.json)

    @precondition(lambda self: self.current is not None)
    @rule(
        offset=st.integers(min_value=1, max_value=10**6 - 1),
        times=st.integers(min_value=1, max_value=MAX_ATTEMPTS + 1),
    )
    def confirm_wrong(self, offset: int, times: int) -> None:
        """Wrong PINs typed on the page, one or a brute-force burst."""
        assert self.current is not None
        vid, seen = self.current, self.seen[self.current]
        for i in range(times):
            before = self._row(vid)
            live = self._open_and_live(vid)
            pin = self._wrong(seen.pin, offset + i)
            r = self._post("/confirm", {"token": seen.token, "pin": pin})
            # keypad pages take no PIN: a confirm only claims what the phone confirmed
            assert r.status_code != 200 or (self.style == "keypad" and before.status == "verified")
            if r.status_code == 200:
                seen.opened += 1
                confirmed = self._row(vid).verified_at
                self.gate_until = (confirmed or self.clock()) + VERIFIED_TTL
            elif self.style == "spoken" and live:
                after = self._row(vid)
                assert after.attempts == before.attempts + 1, (before.attempts, after.attempts)
                assert r.json["error"] in ("wrong_pin", "locked"), r.json

    @precondition(lambda self: self.current is not None)
    @rule()
    def thief_confirms(self) -> None:
        """Another browser session of the same user, with the right PIN: refused."""
        assert self.current is not None
        seen = self.seen[self.current]
        before = self._row(self.current)
        r = self._post("/confirm", {"token": seen.token, "pin": seen.pin}, thief=True)
        assert r.status_code in (400, 403), r.status_code
        after = self._row(self.current)
        assert (after.attempts, after.claimed_at) == (before.attempts, before.claimed_at)

    # -- rules: the phone ----------------------------------------------------------------------
    def _phone(self, action: str, digits: str | None = None) -> Any:
        assert self.current is not None
        call = self._dev_call(self.current)
        if call is None:
            return None
        body = {"digits": digits} if digits is not None else {}
        return self._post(f"/dev/phone/{call.id}/{action}", body)

    @precondition(lambda self: self.current is not None and self.style == "keypad")
    @rule()
    def press_right(self) -> None:
        assert self.current is not None
        vid, seen = self.current, self.seen[self.current]
        live = self._open_and_live(vid)
        call = self._dev_call(vid)
        seen.evidence = True
        r = self._phone("keys", seen.pin)
        if r is None:
            return
        if live and call is not None and call.state.value != "ended":
            assert r.status_code == 200 and r.json["accepted"] is True, r.json

    @precondition(lambda self: self.current is not None and self.style == "keypad")
    @rule(
        offset=st.integers(min_value=1, max_value=10**6 - 1),
        times=st.integers(min_value=1, max_value=MAX_ATTEMPTS + 1),
    )
    def press_wrong(self, offset: int, times: int) -> None:
        """Wrong keys on the phone, one or a burst."""
        assert self.current is not None
        for i in range(times):
            r = self._phone("keys", self._wrong(self.seen[self.current].pin, offset + i))
            if r is not None and r.status_code == 200:
                assert r.json["accepted"] is False

    @precondition(lambda self: self.current is not None and self.style == "spoken")
    @rule()
    def press_on_a_spoken_call(self) -> None:
        """Keys other than the one digit a spoken call asks for hang up without the code
        (or are refused, before the answer and after the code); they count no attempt."""
        assert self.current is not None
        before = self._row(self.current)
        r = self._phone("keys", self.seen[self.current].pin)
        assert r is None or r.status_code in (200, 400)
        if r is not None and r.status_code == 200:
            assert r.json["heard"] is False
        after = self._row(self.current)
        assert (after.status, after.attempts) == (before.status, before.attempts)

    @precondition(lambda self: self.current is not None)
    @rule()
    def answer(self) -> None:
        r = self._phone("answer")
        assert r is None or r.status_code in (200, 400)

    @precondition(lambda self: self.current is not None)
    @rule()
    def voicemail(self) -> None:
        """Voicemail answers a ringing call: it fails, and hears no code."""
        r = self._phone("voicemail")
        assert r is None or r.status_code in (200, 400)

    @precondition(lambda self: self.current is not None)
    @rule()
    def hang_up(self) -> None:
        r = self._phone("hangup")
        assert r is None or r.status_code in (200, 400)

    # -- rules: time -------------------------------------------------------------------------
    @rule(seconds=st.sampled_from([1, 10, 29, 31, 120, 599, 600, 601, 1800, 3601]))
    def wait(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @rule()
    def visit_gated_page(self) -> None:
        r = self.client.get("/secret")
        expected = 200 if self.clock() < self.gate_until else 302
        assert r.status_code == expected, (r.status_code, self.clock(), self.gate_until)
        assert self.thief.get("/secret").status_code == 302

    # -- invariants ------------------------------------------------------------------------------
    @invariant()
    def verifications_keep_their_rules(self) -> None:
        if not hasattr(self, "st"):
            return
        with self.st.store.session() as s:
            rows = list(s.scalars(select(Verification)))
        assert {v.id for v in rows} == set(self.seen)
        with self.st.store.session() as s:
            wrong_pins = len(list(s.scalars(select(Event).where(Event.kind == "wrong_pin"))))
        for v in rows:
            seen = self.seen[v.id]
            assert 0 <= v.attempts <= MAX_ATTEMPTS, v.attempts
            if seen.final == "verified" and v.status == "expired":
                # a confirmation never claimed by the verification's end expires with it
                assert v.claimed_at is None and self.clock() >= v.expires_at
                seen.final = "expired"
            if seen.final is not None:
                assert v.status == seen.final, (seen.final, v.status)  # never unlocked
            elif v.status != "calling":
                event(f"{self.style}: reached {v.status}")
                seen.final = v.status
            if v.status == "locked":  # its own tries, or the user's hourly failure cap
                assert v.attempts == MAX_ATTEMPTS or wrong_pins >= MAX_FAILURES
            if v.status == "verified":
                assert seen.evidence, "verified without the right PIN or the phone's word"
                assert v.verified_at is not None and v.verified_at < v.expires_at
            if v.claimed_at is not None:
                assert v.status == "verified" and v.claimed_at <= v.expires_at
            assert seen.opened <= 1 and seen.opened == (1 if v.claimed_at is not None else 0)
        assert len(self.signals) == sum(s.opened for s in self.seen.values())

    @invariant()
    def calls_stay_within_the_limits(self) -> None:
        if not hasattr(self, "st"):
            return
        with self.st.store.session() as s:
            reserved = list(s.scalars(select(Event).where(Event.kind == "call")))
        assert len(reserved) == self._calls_placed() == len(self.call_times)
        for t in self.call_times:
            in_hour = [u for u in self.call_times if t - HOUR <= u <= t]
            assert len(in_hour) <= min(PER_NUMBER, PER_USER), (t, in_hour)
        for earlier, later in zip(self.call_times, self.call_times[1:], strict=False):
            assert later - earlier >= COOLDOWN, (earlier, later)


# Shrinking is off: each step builds on a real app and database, so minimising a failing
# run can take minutes. The failing run is printed step by step all the same; add
# Phase.shrink to ``phases`` to minimise it.
PhoneFlow.TestCase.settings = settings(
    max_examples=80,
    stateful_step_count=50,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestPhoneFlow = PhoneFlow.TestCase
