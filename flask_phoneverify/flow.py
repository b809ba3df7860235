"""The verification state machine: start, refresh, confirm, resend, cancel, events.

It knows nothing of HTTP: views hand it plain values and turn its
:class:`~flask_phoneverify.errors.FlowError` and ``ProviderError`` into responses.

``status`` only moves forward: calling -> verified | failed | expired | locked |
canceled, each move a conditional UPDATE guarded by ``status = 'calling'``.
The call's own progress (queued, ringing, answered, delivered, ended) is the
separate ``call`` field. Polled providers are asked for news at most once per
PHONEVERIFY_POLL_INTERVAL per verification, however often pages poll: the
first request to claim the slot (a conditional UPDATE of ``polled_at``) asks.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from .errors import BadInput, Forbidden, Locked, NotOpen, ProviderError, RateLimited, WrongPin
from .limits import Limits
from .models import OPEN, Verification
from .phone import check_calling_code, check_policy, mask
from .pins import PinHasher, new_pin
from .providers.base import (
    CallEvent,
    CallReport,
    CallRequest,
    CallState,
    Outcome,
    PlacedCall,
    Provider,
    Style,
)
from .store import Store

__all__ = ["Flow", "Started", "Policy", "session_ref"]

log = logging.getLogger("flask_phoneverify")

MESSAGES = {
    "verified": "Your phone is confirmed.",
    "expired": "This verification has expired. Please start again.",
    "locked": "Too many wrong PINs: this verification is locked. Please start a new one later.",
    "canceled": "This verification was canceled.",
    "failed": "The call did not go through.",
}
CALL_MESSAGES = {
    "queued": "Placing the call…",
    "ringing": "Calling your phone…",
    "answered": "The call was answered.",
    "delivered": "The call has delivered the code.",
    "ended": "The call has ended.",
}


def session_ref(nonce: str) -> str:
    """What the store keeps of the asking session's nonce."""
    return hashlib.sha256(nonce.encode()).hexdigest()


@dataclass(frozen=True)
class Policy:
    allowed_regions: frozenset[str]
    refused_types: frozenset[int]


@dataclass(frozen=True)
class Started:
    verification: Verification
    pin: str  # handed to the page only in keypad style


class Flow:
    def __init__(
        self,
        *,
        store: Store,
        provider: Provider,
        hasher: PinHasher,
        limits: Limits,
        policy: Policy,
        clock: Callable[[], float],
        ttl: int,
        max_attempts: int,
        pin_length: int,
        poll_interval: float,
        app_name: str,
    ) -> None:
        self.store = store
        self.provider = provider
        self.hasher = hasher
        self.limits = limits
        self.policy = policy
        self.clock = clock
        self.ttl = ttl
        self.max_attempts = max_attempts
        self.pin_length = pin_length
        self.poll_interval = poll_interval
        self.app_name = app_name

    @property
    def style(self) -> Style:
        return self.provider.style

    # -- start and resend ---------------------------------------------------------------
    def start(
        self,
        *,
        user_id: str,
        phone: str,
        enrol: bool,
        session: str,
        ip: str | None,
        callback_url: str | None,
    ) -> Started:
        """Check the policy and limits, store the verification, place the call."""
        now = self.clock()
        vid = secrets.token_urlsafe(16)
        self._admit(user_id=user_id, phone=phone, ip=ip, now=now, verification_id=vid)
        pin = new_pin(self.pin_length)
        v = Verification(
            id=vid,
            user_id=user_id,
            phone=phone,
            enrol=enrol,
            provider=self.provider.name,
            style=self.style.value,
            status=OPEN,
            call=CallState.QUEUED.value,
            call_id=_call_id(),
            provider_ref=None,
            pin_hash=self.hasher.hash(vid, pin),
            attempts=0,
            sends=1,
            session_ref=session,
            reason=None,
            created_at=now,
            expires_at=now + self.ttl,
            polled_at=0.0,
            event_at=0.0,
        )
        self.store.add(v)
        self._audit("started", v, ip=ip)
        self._place(v, pin, callback_url)
        return Started(self._load(vid), pin)

    def resend(
        self, vid: str, *, user_id: str, session: str, ip: str | None, callback_url: str | None
    ) -> Started:
        """A new call and a new PIN for the same verification; attempts are kept."""
        v = self.owned(vid, user_id=user_id, session=session)
        self._require_open(v)
        self._admit(user_id=user_id, phone=v.phone, ip=ip, now=self.clock(), verification_id=vid)
        pin = new_pin(self.pin_length)
        changed = self.store.change(
            vid,
            where={"call_id": v.call_id},
            pin_hash=self.hasher.hash(vid, pin),
            call_id=_call_id(),
            provider_ref=None,
            call=CallState.QUEUED.value,
            sends=v.sends + 1,
            polled_at=0.0,
            event_at=0.0,
        )
        if not changed:
            raise NotOpen("This verification changed meanwhile. Please reload the page.")
        v = self._load(vid)
        self._audit("resent", v, ip=ip)
        self._place(v, pin, callback_url)
        return Started(self._load(vid), pin)

    def _admit(
        self, *, user_id: str, phone: str, ip: str | None, now: float, verification_id: str
    ) -> None:
        """May this call be placed? The number policy, the user's wrong PINs and the call
        limits, before any provider is asked; a refusal is logged and audited."""
        try:
            check_policy(phone, self.policy.allowed_regions, self.policy.refused_types)
            check_calling_code(phone, self.provider.calling_codes)
            self.limits.check_failures(self.store, user_id, now)
            self.limits.reserve_call(
                self.store,
                user_id=user_id,
                phone=phone,
                ip=ip,
                now=now,
                verification_id=verification_id,
            )
        except (BadInput, RateLimited) as e:
            self.store.record("refused", now, user_id=user_id, phone=phone, ip=ip, detail=e.message)
            log.warning("phoneverify: call to %s refused: %s", mask(phone), e.message)
            raise

    def _place(self, v: Verification, pin: str, callback_url: str | None) -> None:
        request = CallRequest(
            number=v.phone,
            pin=pin,
            style=Style(v.style),
            call_id=v.call_id,
            app_name=self.app_name,
            callback_url=callback_url,
        )
        try:
            ticket = self.provider.place_call(request)
        except ProviderError as e:
            self._fail(v, e.message, detail=e.detail or type(e).__name__, kind="provider_error")
            raise
        self.store.change(
            v.id,
            where={"call_id": v.call_id},
            provider_ref=ticket.reference,
            call=ticket.call.value,
        )
        log.info(
            "phoneverify: call placed to %s via %s (verification %s, %s style)",
            mask(v.phone),
            v.provider,
            v.id[:8],
            v.style,
        )
        self._audit("call_placed", v)

    # -- reading -----------------------------------------------------------------------
    def owned(self, vid: str, *, user_id: str, session: str | None = None) -> Verification:
        """The verification, if it belongs to this user (and session, when given)."""
        v = self.store.get(vid)
        if v is None:
            raise BadInput("This verification does not exist. Please start again.")
        if v.user_id != user_id:
            raise Forbidden("This verification belongs to someone else.")
        if session is not None and not secrets.compare_digest(v.session_ref, session):
            raise Forbidden("This verification was started in another browser session.")
        return v

    def _expire(self, v: Verification) -> Verification:
        """Close it when its time is up."""
        if v.is_open and self.clock() >= v.expires_at:
            if self.store.change(v.id, status="expired", reason=MESSAGES["expired"]):
                self._audit("expired", v)
            return self._load(v.id)
        return v

    def refresh(self, v: Verification) -> Verification:
        """Expire it when its time is up; ask a polled provider for news when due."""
        now = self.clock()
        v = self._expire(v)
        if not (v.is_open and self.provider.polled and v.provider_ref) or _settled(v):
            return v
        if now - max(v.polled_at, v.event_at) < self.poll_interval:
            return v
        if not self.store.change(v.id, where={"polled_at": v.polled_at}, polled_at=now):
            return self._load(v.id)  # another request is asking right now
        placed = PlacedCall(v.provider_ref, v.call_id, v.phone, Style(v.style))
        try:
            report = self.provider.call_status(placed)
        except ProviderError as e:
            if e.retryable:
                log.warning(
                    "phoneverify: status of verification %s unavailable: %s",
                    v.id[:8],
                    e.detail or e,
                )
                return self._load(v.id)
            self._fail(v, e.message, detail=e.detail or type(e).__name__, kind="provider_error")
            return self._load(v.id)
        self._apply(v, report)
        return self._load(v.id)

    # -- confirming ---------------------------------------------------------------------
    def confirm(self, vid: str, pin: str | None, *, user_id: str, session: str) -> Verification:
        """Spoken style: check the typed PIN. Keypad and delivery: take the provider's word.

        Returns the verification once it is verified and taken into this session
        (which happens once); raises otherwise."""
        v = self.refresh(self.owned(vid, user_id=user_id, session=session))
        if v.status == "verified":
            if self.store.claim(v.id, self.clock()):
                return self._load(v.id)
            raise NotOpen("This verification has already been used.")
        self._require_open(v)
        if Style(v.style) is Style.KEYPAD:
            raise NotOpen(
                "The phone has not confirmed yet. Answer the call and key in the PIN shown here.",
                pending=True,
            )
        if Style(v.style) is Style.DELIVERY:
            raise NotOpen(
                "The call has not been delivered yet. Answer your phone, then try again.",
                pending=True,
            )
        pin = "".join(ch for ch in (pin or "") if not ch.isspace() and ch != "-")
        if not pin:
            raise BadInput("Please enter the PIN from the call.")
        right = len(pin) <= 32 and self.hasher.check(v.id, pin, v.pin_hash)
        if right:
            remote = self.provider.check_code(
                PlacedCall(v.provider_ref, v.call_id, v.phone, Style(v.style)), pin
            )
            right = remote is not False
        if not right:
            return self._wrong_pin(v)
        now = self.clock()
        if not self.store.change(
            v.id,
            where={"pin_hash": v.pin_hash},
            status="verified",
            verified_at=now,
            claimed_at=now,
            reason=None,
        ):
            v = self._load(v.id)
            raise NotOpen(self.message(v) if not v.is_open else "Please try again.")
        v = self._load(v.id)
        self._audit("confirmed", v)
        log.info("phoneverify: verification %s confirmed for %s", v.id[:8], mask(v.phone))
        return v

    def _wrong_pin(self, v: Verification) -> Verification:
        counted = self.store.add_attempt(v.id, self.max_attempts)
        if counted is None:
            raise NotOpen(self.message(self._load(v.id)))
        attempts, status = counted
        self._audit("wrong_pin", v)
        if status == "locked":  # this attempt locked it: audited and logged once
            self._audit("locked", v)
            log.warning(
                "phoneverify: verification %s locked after %d wrong PINs", v.id[:8], attempts
            )
            raise Locked(MESSAGES["locked"], attempts_left=0)
        left = self.max_attempts - attempts
        raise WrongPin(
            f"That PIN is not right. {left} {'try' if left == 1 else 'tries'} left.",
            attempts_left=left,
        )

    def cancel(self, vid: str, *, user_id: str, session: str) -> Verification:
        v = self.owned(vid, user_id=user_id, session=session)
        self._require_open(v)
        if not self.store.change(v.id, status="canceled", reason=MESSAGES["canceled"]):
            self._require_open(self._load(v.id))
        self._audit("canceled", v)
        return self._load(v.id)

    def bridge(self, vid: str, *, user_id: str, session: str, ip: str | None) -> str:
        """Connect a user whose verification failed or locked to the support line.
        It costs a call like any other, so the same limits apply; it verifies nothing."""
        v = self.owned(vid, user_id=user_id, session=session)
        if v.status not in ("failed", "locked"):
            raise BadInput(
                "Talking to support is offered once a verification has failed or locked."
            )
        now = self.clock()
        self.limits.reserve_call(
            self.store, user_id=user_id, phone=v.phone, ip=ip, now=now, verification_id=v.id
        )
        reference = self.provider.bridge(v.phone)
        self._audit("bridge", v, ip=ip, detail=f"reference {reference[:12]}")
        return reference

    # -- provider reports --------------------------------------------------------------
    def apply_event(self, event: CallEvent) -> bool:
        """A callback event: counts only for a live verification of this provider whose
        current call id (and number, when the event carries one) it names."""
        v = self.store.by_call_id(self.provider.name, event.call_id)
        if v is None or not v.is_open:
            return False
        if event.number is not None and event.number != v.phone:
            log.warning(
                "phoneverify: event for call of verification %s names another number", v.id[:8]
            )
            return False
        v = self._expire(v)  # never a status request to the vendor from its own callback
        if not v.is_open:
            return False
        self.store.change(v.id, where={"call_id": event.call_id}, event_at=self.clock())
        self._apply(v, event.report)
        return True

    def _apply(self, v: Verification, report: CallReport) -> None:
        guard = {"call_id": v.call_id}
        if report.reference and report.reference != v.provider_ref:
            self.store.change(v.id, where=guard, provider_ref=report.reference)
        if report.call is not None and _CALL_ORDER[report.call] > _CALL_ORDER[CallState(v.call)]:
            self.store.change(v.id, where=guard, call=report.call.value)
        if report.digits is not None:
            if self.hasher.check(v.id, report.digits, v.pin_hash):
                self._verify(v, via="keypad")
            else:
                try:
                    self._wrong_pin(v)
                except (WrongPin, Locked, NotOpen):
                    pass
            return
        if report.outcome is Outcome.CONFIRMED:
            if Style(v.style) is Style.SPOKEN:
                self.store.change(v.id, where=guard, call=CallState.DELIVERED.value)
            else:
                self._verify(v, via=v.style)
        elif report.outcome is Outcome.FAILED:
            self._fail(
                v, report.reason or MESSAGES["failed"], detail=report.detail, kind="call_failed"
            )

    def _verify(self, v: Verification, *, via: str) -> None:
        now = self.clock()
        if now >= v.expires_at:
            return
        if self.store.change(
            v.id, where={"call_id": v.call_id}, status="verified", verified_at=now, reason=None
        ):
            self._audit("confirmed", v, detail=f"by the provider ({via})")
            log.info("phoneverify: verification %s confirmed on the phone (%s)", v.id[:8], via)

    def _fail(self, v: Verification, reason: str, *, detail: str | None, kind: str) -> None:
        if self.store.change(v.id, status="failed", reason=reason):
            self._audit(kind, v, detail=detail)
            log.warning(
                "phoneverify: verification %s to %s failed: %s",
                v.id[:8],
                mask(v.phone),
                detail or reason,
            )

    # -- helpers ------------------------------------------------------------------------
    def _load(self, vid: str) -> Verification:
        v = self.store.get(vid)
        assert v is not None
        return v

    def _require_open(self, v: Verification) -> None:
        if v.is_open:
            return
        if v.status == "locked":
            raise Locked(MESSAGES["locked"], attempts_left=0)
        raise NotOpen(self.message(v))

    def message(self, v: Verification) -> str:
        if v.status == OPEN:
            return CALL_MESSAGES.get(v.call, "")
        if v.status == "failed" and v.reason:
            return v.reason
        return MESSAGES.get(v.status, "")

    def attempts_left(self, v: Verification) -> int:
        return max(self.max_attempts - v.attempts, 0)

    def _audit(
        self, kind: str, v: Verification, *, ip: str | None = None, detail: str | None = None
    ) -> None:
        self.store.record(
            kind,
            self.clock(),
            verification_id=v.id,
            user_id=v.user_id,
            phone=v.phone,
            ip=ip,
            detail=detail,
        )


def _settled(v: Verification) -> bool:
    """Nothing more to learn from the provider: the call ended, or (spoken style) it
    delivered the PIN and only the typed PIN can decide now."""
    return v.call == CallState.ENDED.value or (
        v.style == Style.SPOKEN.value and v.call == CallState.DELIVERED.value
    )


#: a call's progress only moves forward (a late "answered" never hides "delivered")
_CALL_ORDER = {state: rank for rank, state in enumerate(CallState)}


def _call_id() -> str:
    """Random per call and unrelated to the verification id (which tokens reveal)."""
    return secrets.token_hex(16)
