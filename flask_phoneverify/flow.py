"""The verification state machine: start, refresh, confirm, resend, cancel, events.

It knows nothing of HTTP: views hand it plain values and turn its
:class:`~flask_phoneverify.errors.FlowError` and ``ProviderError`` into responses.

``status`` only moves forward: calling -> verified | failed | expired | locked |
canceled, each move a conditional UPDATE guarded by ``status = 'calling'``.
The call's own progress (queued, ringing, answered, delivered, ended) is the
separate ``call`` field.

Each step is one short transaction holding its reads, its writes and its audit
event (:meth:`Store.write`); a provider is only ever asked between transactions.
``start`` is one transaction for the limits, the new verification and its events,
the call, then one transaction for the call's reference (or, when the call was
never placed, its failure and the release of what it counted). A status poll that
asks the provider nothing writes nothing; polled providers are asked at most once
per PHONEVERIFY_POLL_INTERVAL per verification, and what they said is kept in one
transaction guarded by the ``polled_at`` the asking request saw;
PHONEVERIFY_MAX_POLL_ERRORS failed status requests in a row fail the verification.

Failover: PHONEVERIFY_PROVIDER may list providers. A call is placed by the first
whose circuit breaker (:mod:`.breaker`) is closed and that can call the number;
when placing fails through the provider's fault
(:func:`~flask_phoneverify.providers.vendor.provider_fault`), the next places it
for the same verification, under a new call id, one transaction recording the
switch. The verification's ``provider`` names the provider of its current call,
which is asked for its status and whose events count.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.exc import SQLAlchemyError

from .breaker import Breaker
from .errors import (
    BadInput,
    CallRefused,
    CountryPaused,
    FlowError,
    Forbidden,
    Locked,
    NotOpen,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    WrongPin,
)
from .guard import CallAttempt, FraudGuard, Pause, attempt_for
from .i18n import N_, gettext, ngettext, translate
from .limits import Limits, limit_of
from .models import EventKind, Status, Verification
from .phone import ascii_digits, check_calling_code, check_policy, country_of, mask
from .pins import PinHasher, new_pin
from .providers.base import (
    VOICEMAIL_REASON,
    CallEvent,
    CallReport,
    CallRequest,
    CallState,
    CallTicket,
    Outcome,
    PlacedCall,
    Provider,
    Style,
)
from .providers.vendor import provider_fault
from .signals import Notifier, failure_reason
from .store import Recheck, Store, Tx, detached

__all__ = [
    "Flow",
    "Started",
    "Applied",
    "Policy",
    "session_ref",
    "reason_code",
    "MESSAGES",
    "CallbackURL",
]

#: the events address a provider sends with each call: one address, or built per provider
CallbackURL = str | Callable[[Provider], str | None] | None

log = logging.getLogger("flask_phoneverify")

#: what a page says of each status and call progress; kept in English (a closed
#: verification's reason is stored), translated where shown (:meth:`Flow.message`)
MESSAGES = {
    Status.VERIFIED: N_("Your phone is confirmed."),
    Status.EXPIRED: N_("This verification has expired. Please start again."),
    Status.LOCKED: N_(
        "Too many wrong PINs: this verification is locked. Please start a new one later."
    ),
    Status.CANCELED: N_("This verification was canceled."),
    Status.FAILED: N_("The call did not go through."),
}
#: a verification whose status requests failed PHONEVERIFY_MAX_POLL_ERRORS times in a row
POLL_FAILED = N_(
    "The phone service could not tell us how the call went. Please try again in a moment."
)
#: every listed provider is skipped by its circuit breaker
ALL_SKIPPED = N_("The phone service is not answering right now. Please try again in a moment.")
CALL_MESSAGES = {
    CallState.QUEUED: N_("Placing the call…"),
    CallState.RINGING: N_("Calling your phone…"),
    CallState.ANSWERED: N_("The call was answered."),
    CallState.DELIVERED: N_("The call has delivered the code."),
    CallState.ENDED: N_("The call has ended."),
}


#: failure reasons a client can tell apart (``reason`` in the status answer), by message
REASONS = {VOICEMAIL_REASON: "voicemail"}
#: seconds a worker runs starts whose one statement needed a second look in a transaction
NEAR_FOR = 60.0
#: keys of those a worker remembers at most
NEAR_KEPT = 10_000


def reason_code(v: Verification) -> str | None:
    """The machine-readable reason a failed verification failed, when it has one."""
    return REASONS.get(v.reason or "") if v.status == Status.FAILED else None


def session_ref(nonce: str) -> str:
    """What the store keeps of the asking session's nonce."""
    return hashlib.sha256(nonce.encode()).hexdigest()


def wrong_pin_message(left: int) -> str:
    return ngettext(
        "That PIN is not right. %(num)d try left.",
        "That PIN is not right. %(num)d tries left.",
        left,
    )


@dataclass(frozen=True)
class Policy:
    """Which numbers may be called at all, checked before anything is counted."""

    allowed_regions: frozenset[str]
    refused_types: frozenset[int]
    allowed_non_geographic: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Started:
    """A placed call: the verification and its PIN."""

    verification: Verification
    pin: str  # handed to the page only in keypad style


@dataclass(frozen=True)
class Applied:
    """What a call event did: whether it named the verification's current call, and
    the verification as the event left it."""

    current: bool
    verification: Verification | None
    event: CallEvent | None = None


class BeforeCallHooks(Protocol):
    """Where the app's ``before_call`` function is found (the extension's hooks), read at
    each call so a function registered after init_app counts."""

    before_call: Callable[[CallAttempt], object] | None


class Flow:
    """The verification state machine, free of HTTP: each step is one short transaction of the
    store, and a provider is asked only between transactions."""

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
        relay_key: bytes,
        providers: Sequence[Provider] = (),
        breaker: Breaker | None = None,
        max_poll_errors: int = 5,
        notify: Notifier | None = None,
        hooks: BeforeCallHooks | None = None,
        guard: FraudGuard | None = None,
    ) -> None:
        self.store = store
        #: every provider listed, in order of preference (``provider``: the first)
        self.providers: tuple[Provider, ...] = tuple(providers) or (provider,)
        self._by_name = {p.name: p for p in self.providers}
        self.breaker = breaker
        self.max_poll_errors = max_poll_errors
        self.hasher = hasher
        self.limits = limits
        self.policy = policy
        self.clock = clock
        self.ttl = ttl
        self.max_attempts = max_attempts
        self.pin_length = pin_length
        self.poll_interval = poll_interval
        self.app_name = app_name
        self.relay_key = relay_key
        #: signals and metrics, sent once a step has committed
        self.notify = notify or Notifier()
        self.hooks = hooks
        self.guard = guard
        #: the limits' (scope, key)s a start's one statement could not prove, and when
        #: (this worker's hint for :meth:`_admit`)
        self._near: dict[tuple[str, str], float] = {}

    @property
    def provider(self) -> Provider:
        """The first provider listed: its style is every verification's."""
        return self.providers[0]

    @provider.setter
    def provider(self, provider: Provider) -> None:
        """Use ``provider`` alone (a flow copy for one call on another provider)."""
        self.providers = (provider,)
        self._by_name = {provider.name: provider}

    @property
    def style(self) -> Style:
        """The style every new verification takes: the provider's, chosen once at init_app."""
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
        callback_url: CallbackURL,
        user: Any = None,
        locale: str | None = None,
    ) -> Started:
        """Check the policy, the app's before_call function, the limits and the fraud guard
        and store the verification (one transaction), place the call, then keep the call's
        reference (another). ``locale``: the asking request's, kept so every call of this
        verification speaks it (when the provider can)."""
        now = self.clock()
        self._check_number(user_id=user_id, phone=phone, ip=ip, now=now)
        self._before_call(
            user=user, user_id=user_id, phone=phone, ip=ip, now=now, purpose="start", enrol=enrol
        )
        candidates: list[Provider] = []
        pin = new_pin(self.pin_length)
        vid = _verification_id()
        v = detached(
            dict(
                id=vid,
                user_id=user_id,
                phone=phone,
                enrol=enrol,
                provider=self.provider.name,  # the first candidate's, once admitted
                style=self.style.value,
                status=Status.CALLING.value,
                call=CallState.QUEUED.value,
                call_id=_call_id(),
                provider_ref=None,
                pin_hash=self.hasher.hash(vid, pin),
                attempts=0,
                sends=1,
                session_ref=session,
                ip=ip,
                reason=None,
                created_at=now,
                sent_at=now,
                expires_at=now + self.ttl,
                polled_at=0.0,
                event_at=0.0,
                poll_errors=0,
                verified_at=None,
                claimed_at=None,
                country=country_of(phone),
                locale=locale,
            )
        )

        def admit(tx: Tx) -> None:
            # as new each time: the store runs a step again after a lost connection or a
            # Recheck, and the first provider may differ then
            v.provider_ref, v.call = None, CallState.QUEUED.value
            candidates[:] = self._candidates(phone, tx)
            first = v.provider = candidates[0].name
            kinds = [EventKind.STARTED, EventKind.CALL]
            if candidates[0].in_store:
                self._ring(tx, v, candidates[0], pin, callback_url)
                kinds.append(EventKind.CALL_PLACED)
            tx.add(v)
            self._audit(tx, v, *kinds, ip=ip, at=now, notes={EventKind.CALL_PLACED: f"via {first}"})
            self.limits.reserve_call(tx, user_id=user_id, phone=phone, ip=ip, now=now, enrol=enrol)
            self._guard(tx, user_id=user_id, phone=phone, now=now)
            tx.after_commit(lambda: self.notify.started(v))

        # With no fraud guard to consult, its writes are one statement (see _admit).
        single = self.guard is None and self.store.proves_limits
        self._admit(admit, user_id=user_id, phone=phone, ip=ip, now=now, single=single, enrol=enrol)
        if candidates[0].in_store:
            self._rang(v, candidates[0], pin, callback_url)
            return Started(v, pin)
        return Started(self._place(v, pin, callback_url, candidates), pin)

    def resend(
        self,
        vid: str,
        *,
        user_id: str,
        session: str,
        ip: str | None,
        callback_url: CallbackURL,
        user: Any = None,
    ) -> Started:
        """A new call and a new PIN for the same verification; attempts are kept."""
        now = self.clock()
        v = self.current(vid, user_id=user_id, session=session)
        self._require_open(v)
        self._check_number(user_id=user_id, phone=v.phone, ip=ip, now=now)
        self._before_call(
            user=user,
            user_id=user_id,
            phone=v.phone,
            ip=ip,
            now=now,
            purpose="resend",
            enrol=v.enrol,
        )
        candidates: list[Provider] = []
        pin = new_pin(self.pin_length)
        values = {
            "provider": self.provider.name,
            "pin_hash": self.hasher.hash(vid, pin),
            "call_id": _call_id(),
            "provider_ref": None,
            "call": CallState.QUEUED.value,
            "sends": v.sends + 1,
            "polled_at": 0.0,
            "event_at": 0.0,
            "poll_errors": 0,
            "sent_at": now,
            "ip": ip,
        }

        old_call = v.call_id
        for name, value in values.items():
            setattr(v, name, value)

        def admit(tx: Tx) -> None:
            v.provider_ref, v.call = None, CallState.QUEUED.value  # as new each time
            values.update(provider_ref=None, call=CallState.QUEUED.value)
            candidates[:] = self._candidates(v.phone, tx)
            first = values["provider"] = v.provider = candidates[0].name
            kinds = [EventKind.RESENT, EventKind.CALL]
            if candidates[0].in_store:
                self._ring(tx, v, candidates[0], pin, callback_url)
                values.update(provider_ref=v.provider_ref, call=v.call)
                kinds.append(EventKind.CALL_PLACED)
            if not tx.change(vid, where={"call_id": old_call}, **values):
                raise NotOpen(
                    gettext("This verification changed meanwhile. Please reload the page.")
                )
            self._audit(tx, v, *kinds, ip=ip, at=now, notes={EventKind.CALL_PLACED: f"via {first}"})
            self.limits.reserve_call(
                tx, user_id=user_id, phone=v.phone, ip=ip, now=now, enrol=v.enrol
            )
            self._guard(tx, user_id=user_id, phone=v.phone, now=now)
            tx.after_commit(lambda: self.notify.started(v))

        self._admit(admit, user_id=user_id, phone=v.phone, ip=ip, now=now)
        if candidates[0].in_store:
            self._rang(v, candidates[0], pin, callback_url)
            return Started(v, pin)
        return Started(self._place(v, pin, callback_url, candidates), pin)

    def _check_number(self, *, user_id: str, phone: str, ip: str | None, now: float) -> None:
        """May this number be called at all? Checked before anything is counted."""
        try:
            check_policy(
                phone,
                self.policy.allowed_regions,
                self.policy.refused_types,
                self.policy.allowed_non_geographic,
            )
            if not any(_can_call(p, phone) for p in self.providers):
                check_calling_code(phone, self.provider.calling_codes)
        except BadInput as e:
            self._refused(e, user_id=user_id, phone=phone, ip=ip, now=now, limit="policy")
            raise

    def _candidates(self, phone: str, tx: Tx) -> list[Provider]:
        """The providers that may place a call to ``phone`` now, in order of preference:
        those that can call its country, less those whose breaker is open (read in the
        admitting transaction when the process's copy is over a second old). None left:
        503, retryable, and the transaction (so nothing counted) rolled back."""
        able = [p for p in self.providers if _can_call(p, phone)]
        if self.breaker is None:
            return able
        skipped = self.breaker.skipped((p.name for p in able), tx)
        ready = [p for p in able if p.name not in skipped]
        if not ready:
            log.warning(
                "phoneverify: call to %s not placed: every provider is skipped (%s)",
                mask(phone),
                ", ".join(p.name for p in able),
            )
            raise ProviderUnavailable(
                gettext(ALL_SKIPPED), detail="every provider's breaker is open"
            )
        return ready

    def provider_of(self, v: Verification) -> Provider | None:
        """The provider of ``v``'s current call (None: one no longer configured)."""
        return self._by_name.get(v.provider)

    def _before_call(
        self,
        *,
        user: Any,
        user_id: str,
        phone: str,
        ip: str | None,
        now: float,
        purpose: str,
        enrol: bool,
    ) -> None:
        """The app's before_call function, before anything is counted: a CallRefused it
        raises is audited and answered 403; nothing is counted or placed."""
        func = self.hooks.before_call if self.hooks is not None else None
        if func is None:
            return
        attempt = attempt_for(
            number=phone,
            user=user,
            user_id=user_id,
            ip=ip,
            style=self.style.value,
            purpose=purpose,
            enrol=enrol,
        )
        try:
            func(attempt)
        except CallRefused as e:
            self._refused(e, user_id=user_id, phone=phone, ip=ip, now=now, limit="before_call")
            raise

    def _guard(self, tx: Tx, *, user_id: str, phone: str, now: float) -> None:
        """The fraud guard, once the limits admitted the call (inside their transaction)."""
        if self.guard is None:
            return
        decided = self.guard.check(
            tx, country=country_of(phone), user_id=user_id, phone=phone, now=now
        )
        if decided is not None:
            self._announce(tx, decided, now)

    def _announce(self, tx: Tx, pause: Pause, now: float) -> None:
        """A pause this worker set: audited, logged and signalled once."""
        tx.record({"kind": EventKind.COUNTRY_PAUSED, "at": now, "detail": _pause_detail(pause)})

        def announce() -> None:
            log.warning(
                "phoneverify: calls to %s paused for %d s: %.0f%% of %d ended verifications "
                "verified",
                pause.country,
                round(pause.until - now),
                pause.conversion * 100,
                pause.calls,
            )
            self.notify.paused(pause.country, pause.until, pause.calls, pause.conversion)

        tx.after_commit(announce)

    def _admit(
        self,
        step: Callable[[Tx], None],
        *,
        user_id: str,
        phone: str,
        ip: str | None,
        now: float,
        single: bool = False,
        enrol: bool = False,
    ) -> None:
        """Run the step that counts the call; a refusal rolls it back, then is audited.
        ``single``: the step's writes are one statement, which on PostgreSQL is its own
        transaction (one round trip, row locks held only while it runs) and commits only
        when it proves every limit met. When it cannot (Recheck: it changed nothing) the
        step runs again in a transaction, and for a minute this worker sends starts
        judged on the limits it could not prove straight there: each failed statement is
        an error line in PostgreSQL's log, and someone at a limit would repeat it."""
        try:
            if single and not self._near_limit(user_id=user_id, phone=phone, ip=ip, enrol=enrol):
                try:
                    self.store.write_one(step)
                    return
                except Recheck as e:
                    self._note_near_limit(e.keys)
                    self.notify.rechecked(limit_of(scope) for scope, _ in e.keys)
            self.store.write(step)
        except RateLimited as e:
            self._refused(e, user_id=user_id, phone=phone, ip=ip, now=now, limit=e.limit)
            raise

    def _near_limit(self, *, user_id: str, phone: str, ip: str | None, enrol: bool) -> bool:
        """Did a start judged on any of this call's limits need a second look lately?"""
        near = self._near
        if not near:  # nothing to look up: no need to name the limits
            return False
        now = time.monotonic()
        judged = self.limits.keys_of(user_id=user_id, phone=phone, ip=ip, enrol=enrol)
        return any(now - near.get(key, -NEAR_FOR) < NEAR_FOR for key in judged)

    def _note_near_limit(self, keys: tuple[tuple[str, str], ...]) -> None:
        if len(self._near) > NEAR_KEPT:  # a hint, not state: forgetting costs a retry
            self._near.clear()
        now = time.monotonic()
        self._near.update(dict.fromkeys(keys, now))

    def _refused(
        self,
        e: FlowError,
        *,
        user_id: str,
        phone: str,
        ip: str | None,
        now: float,
        limit: str = "limit",
    ) -> None:
        log.warning("phoneverify: call to %s refused: %s", mask(phone), e.message)

        def step(tx: Tx) -> None:
            tx.record(
                {
                    "kind": EventKind.REFUSED,
                    "at": now,
                    "user_id": user_id,
                    "phone": phone,
                    "ip": ip,
                    "detail": e.message,
                }
            )
            pause = e.pause if isinstance(e, CountryPaused) else None
            if isinstance(pause, Pause) and tx.guard_pause(
                pause.country, pause.until, pause.calls, pause.conversion, now
            ):
                self._announce(tx, pause, now)

        self.store.write(step)
        self.notify.refused(limit)

    def _request(
        self, v: Verification, pin: str, callback_url: CallbackURL, provider: Provider
    ) -> CallRequest:
        return CallRequest(
            number=v.phone,
            pin=pin,
            style=Style(v.style),
            call_id=v.call_id,
            app_name=self.app_name,
            callback_url=self._callback_for(provider, callback_url),
            locale=v.locale,
        )

    def _ring(
        self, tx: Tx, v: Verification, provider: Provider, pin: str, callback_url: CallbackURL
    ) -> None:
        """An ``in_store`` provider's call, placed in the step that admits it: a refusal
        by the limits rolls the call back with everything else."""
        request = self._request(v, pin, callback_url, provider)
        began = time.perf_counter()
        ticket = provider.ring(tx, request, owner=v.user_id)
        took = time.perf_counter() - began
        tx.after_commit(lambda: self.notify.observed(v.provider, "place_call", took))
        v.provider_ref, v.call = ticket.reference, ticket.call.value

    def _rang(
        self, v: Verification, provider: Provider, pin: str, callback_url: CallbackURL
    ) -> None:
        provider.announce(self._request(v, pin, callback_url, provider))
        self.notify.placed(v)
        self._log_placed(v)

    def _log_placed(self, v: Verification) -> None:
        log.info(
            "phoneverify: call placed to %s via %s (verification %s, %s style)",
            mask(v.phone),
            v.provider,
            v.id[:8],
            v.style,
        )

    def _place(
        self,
        v: Verification,
        pin: str,
        callback_url: CallbackURL,
        candidates: Sequence[Provider],
    ) -> Verification:
        """Place the call outside any transaction, failing over to the next candidate
        when a provider fails through its own fault; then record what became of it."""
        for index, provider in enumerate(candidates):
            request = self._request(v, pin, callback_url, provider)
            try:
                with self.notify.timed(provider.name, "place_call"):
                    ticket = provider.place_call(request)
                break
            except ProviderError as e:
                failure, fault = e, provider_fault(e)
                after = candidates[index + 1] if fault and index + 1 < len(candidates) else None
                if after is None or not self._hand_over(v, failure, after):
                    self._give_up(v, failure, fault)
                    raise
        else:  # pragma: no cover - the loop always breaks or raises
            raise AssertionError("no provider to place the call")
        if self.breaker is not None:
            self.breaker.success(provider.name)
        try:
            self.store.write(lambda tx: self._placed(tx, v, ticket))
        except SQLAlchemyError as e:
            # The phone is ringing: the person gets the wait page; events that name the
            # call still reach the stored verification.
            log.error(
                "phoneverify: call of verification %s placed but not recorded: %s",
                v.id[:8],
                type(e).__name__,
            )
            self.notify.placed(v)
            return v
        self.notify.placed(v)
        self._log_placed(v)
        return v

    def _placed(self, tx: Tx, v: Verification, ticket: CallTicket) -> None:
        """Keep the call's reference; its progress only if no event moved it on already."""
        stored = tx.placed(v.id, v.call_id, ticket.reference, ticket.call.value)
        if stored is not None:
            v.provider_ref, v.call = ticket.reference, stored
        self._audit(tx, v, EventKind.CALL_PLACED, detail=f"via {v.provider}")

    def _hand_over(self, v: Verification, e: ProviderError, after: Provider) -> bool:
        return self.store.write(lambda tx: self._fail_over(tx, v, e, after))

    def _give_up(self, v: Verification, e: ProviderError, fault: bool) -> None:
        self.store.write(lambda tx: self._not_placed(tx, v, e, fault=fault))

    def _callback_for(self, provider: Provider, callback_url: CallbackURL) -> str | None:
        if callable(callback_url):
            return callback_url(provider)
        return callback_url if provider is self.provider else None

    def _fail_over(self, tx: Tx, v: Verification, e: ProviderError, after: Provider) -> bool:
        """``v``'s provider failed through its own fault: count the fault on its breaker,
        hand the call to ``after`` under a new call id (the failed provider's late events
        name the old one, and no longer count). False when the verification closed
        meanwhile."""
        if self.breaker is not None:
            self.breaker.fault(tx, v.provider)
        call_id = _call_id()
        if not tx.change(v.id, where={"call_id": v.call_id}, call_id=call_id, provider=after.name):
            return False
        failed, reason = v.provider, e.detail or type(e).__name__
        detail = f"{failed} failed ({type(e).__name__}: {reason}); {after.name} places the call"
        self._audit(tx, v, EventKind.FAILOVER, detail=detail)
        log.warning(
            "phoneverify: provider %s could not place the call of verification %s (%s: %s); "
            "trying %s",
            failed,
            v.id[:8],
            type(e).__name__,
            reason,
            after.name,
        )
        v.call_id, v.provider = call_id, after.name
        return True

    def _not_placed(
        self, tx: Tx, v: Verification, e: ProviderError, *, fault: bool = False
    ) -> None:
        """The call never happened: fail the verification, give back what it counted."""
        if fault and self.breaker is not None:
            self.breaker.fault(tx, v.provider)
        detail = f"{v.provider}: {e.detail or type(e).__name__}"
        self._fail(tx, v, e.message, detail=detail, placed=False)
        tx.rename_events(v.id, EventKind.CALL, EventKind.CALL_RELEASED, v.sent_at)
        self.limits.release_call(
            tx, user_id=v.user_id, phone=v.phone, ip=v.ip, at=v.sent_at, enrol=v.enrol
        )

    # -- reading -----------------------------------------------------------------------
    def owned(self, vid: str, *, user_id: str, session: str | None = None) -> Verification:
        """The verification, if it belongs to this user (and session, when given)."""
        return self._owned(self.store.read(lambda tx: tx.get(vid)), user_id, session)

    @staticmethod
    def _owned(v: Verification | None, user_id: str, session: str | None) -> Verification:
        if v is None:
            raise BadInput(gettext("This verification does not exist. Please start again."))
        if v.user_id != user_id:
            raise Forbidden(gettext("This verification belongs to someone else."))
        if session is not None and not secrets.compare_digest(v.session_ref, session):
            raise Forbidden(gettext("This verification was started in another browser session."))
        return v

    def current(self, vid: str, *, user_id: str, session: str | None = None) -> Verification:
        """The verification as it stands now: read, expired when its time is up, and a
        polled provider asked for news when due."""
        return self.refresh(self.owned(vid, user_id=user_id, session=session))

    def refresh(self, v: Verification) -> Verification:
        """Expire it when its time is up; ask a polled provider for news when due."""
        now = self.clock()
        if now >= v.expires_at and (
            v.is_open or (v.status == Status.VERIFIED and v.claimed_at is None)
        ):
            return self.store.write(lambda tx: self._expire(tx, v.id))
        provider = self.provider_of(v)
        if provider is None or not (v.is_open and provider.polled and v.provider_ref):
            return v
        if _settled(v) or now - max(v.polled_at, v.event_at) < self.poll_interval:
            return v
        placed = PlacedCall(v.provider_ref, v.call_id, v.phone, Style(v.style))
        try:
            with self.notify.timed(provider.name, "call_status"):
                report: CallReport | None = provider.call_status(placed)
            error: ProviderError | None = None
        except ProviderError as e:
            report, error = None, e
            if e.retryable:
                log.warning(
                    "phoneverify: status of verification %s unavailable from %s: %s",
                    v.id[:8],
                    provider.name,
                    e.detail or e,
                )
        # failed status requests in a row: a garbage, wrong-shaped or 5xx answer each
        errors = v.poll_errors + 1 if error is not None and error.retryable else 0

        def learn(tx: Tx) -> Verification:
            guard = {"polled_at": v.polled_at, "call_id": v.call_id}
            values: dict[str, float | int] = {"polled_at": now}
            if errors != v.poll_errors:
                values["poll_errors"] = errors
            if not tx.change(v.id, where=guard, **values):
                return _found(tx.get(v.id))  # another request asked meanwhile
            v.polled_at, v.poll_errors = now, errors
            if error is not None and not error.retryable:
                self._fail(tx, v, error.message, detail=error.detail or type(error).__name__)
            elif error is not None and errors >= self.max_poll_errors:
                last = error.detail or type(error).__name__
                detail = f"{provider.name}: {errors} status requests failed in a row, the last: "
                self._fail(tx, v, POLL_FAILED, detail=detail + last)
            elif report is not None:
                self._apply(tx, v, report, now)
            return v

        return self.store.write(learn)

    def _expire(self, tx: Tx, vid: str) -> Verification:
        """Close it at its end: open, or confirmed by the phone but never claimed (a claim
        after the end is refused, so the confirmation expires with it)."""
        v = _found(tx.get(vid))
        if v.is_open:
            changed = tx.change(v.id, status=Status.EXPIRED.value, reason=MESSAGES[Status.EXPIRED])
        else:
            changed = tx.expire_unclaimed(v.id, MESSAGES[Status.EXPIRED])
        if changed:
            self._audit(tx, v, EventKind.EXPIRED)
            v.status, v.reason = Status.EXPIRED.value, MESSAGES[Status.EXPIRED]
            self._ended(tx, v, "expired")
        return v

    # -- confirming ---------------------------------------------------------------------
    def confirm(self, vid: str, pin: str | None, *, user_id: str, session: str) -> Verification:
        """Spoken style: check the typed PIN. Keypad and delivery: take the provider's word.

        Returns the verification once it is verified and taken into this session
        (which happens once); raises otherwise."""
        now = self.clock()
        if self.style is not Style.SPOKEN:  # the phone's word: claim it in one statement
            claimed = self.store.write_one(lambda tx: tx.claim_own(vid, user_id, session, now))
            if claimed is not None:
                return claimed
        elif (typed := _typed_pin(pin)) and len(typed) <= 32:
            # The right PIN for a call whose provider has nothing to add: one statement.
            # Anything else (wrong, expired, a PIN hashed under an older key) is decided
            # below, as if this had not been tried.
            pin_hash = self.hasher.hash(vid, typed)
            confirmed = self.store.write_one(
                lambda tx: tx.confirm_own(
                    vid,
                    user_id=user_id,
                    session=session,
                    style=Style.SPOKEN.value,
                    pin_hash=pin_hash,
                    now=now,
                    providers=self._checked_here(),
                    kind=EventKind.CONFIRMED.value,
                )
            )
            if confirmed is not None:
                return _confirmed(confirmed)
        v = self.current(vid, user_id=user_id, session=session)
        if v.status == Status.VERIFIED:
            return self.store.write_one(lambda tx: self._claim(tx, v))
        self._require_open(v)
        if Style(v.style) is Style.KEYPAD:
            raise NotOpen(
                gettext(
                    "The phone has not confirmed yet. Answer the call and key in the PIN shown "
                    "here."
                ),
                pending=True,
            )
        if Style(v.style) is Style.DELIVERY:
            raise NotOpen(
                gettext("The call has not been delivered yet. Answer your phone, then try again."),
                pending=True,
            )
        pin = _typed_pin(pin)
        if not pin:
            raise BadInput(gettext("Please enter the PIN from the call."))
        right = len(pin) <= 32 and self.hasher.check(v.id, pin, v.pin_hash)
        if right:
            provider = self.provider_of(v)
            remote = None
            if provider is not None:
                with self.notify.timed(provider.name, "check_code"):
                    remote = provider.check_code(
                        PlacedCall(v.provider_ref, v.call_id, v.phone, Style(v.style)), pin
                    )
            right = remote is not False
        if not right:
            raise self.store.write(lambda tx: self._wrong_pin(tx, v))

        def verify(tx: Tx) -> Verification:
            now = self.clock()
            if not tx.change_recording(  # one conditional update with its event
                v.id,
                self._events(v, EventKind.CONFIRMED, at=now),
                where={"pin_hash": v.pin_hash},
                status=Status.VERIFIED.value,
                verified_at=now,
                claimed_at=now,
                reason=None,
            ):
                latest = _found(tx.get(v.id))
                raise NotOpen(
                    self.message(latest) if not latest.is_open else gettext("Please try again.")
                )
            v.status, v.verified_at, v.claimed_at, v.reason = Status.VERIFIED, now, now, None
            return v

        return _confirmed(self.store.write_one(verify))

    def _checked_here(self) -> tuple[str, ...]:
        """The providers whose spoken PINs are checked here alone: not polled (a poll
        may bring news that ends the call) and with no check of their own."""
        return tuple(
            p.name
            for p in self.providers
            if not p.polled and getattr(p.check_code, "__func__", None) is Provider.check_code
        )

    def _claim(self, tx: Tx, v: Verification) -> Verification:
        now = self.clock()
        if not tx.claim(v.id, now):
            raise NotOpen(gettext("This verification has already been used."))
        v.claimed_at = now
        return v

    def _wrong_pin(self, tx: Tx, v: Verification) -> FlowError:
        """Count one wrong PIN, with its audit event; returns the error to raise once the
        count is committed."""
        counted = tx.add_attempt(v.id, self.max_attempts)
        if counted is None:
            raise NotOpen(self.message(_found(tx.get(v.id))))
        attempts, status = counted
        v.attempts, v.status = attempts, status
        if self.limits.count_failure(tx, v.user_id, self.clock()):
            self._lock_all(tx, v)
            status = v.status = Status.LOCKED.value
        if status == Status.LOCKED:  # this attempt locked it: audited and logged once
            self._audit(tx, v, EventKind.WRONG_PIN, EventKind.LOCKED)
            self._ended(tx, v, "locked")
            log.warning(
                "phoneverify: verification %s locked after %d wrong PINs", v.id[:8], attempts
            )
            return Locked(translate(MESSAGES[Status.LOCKED]), attempts_left=0)
        self._audit(tx, v, EventKind.WRONG_PIN)
        left = self.max_attempts - attempts
        return WrongPin(wrong_pin_message(left), attempts_left=left)

    def _lock_all(self, tx: Tx, v: Verification) -> None:
        """The user reached the hourly failure cap: every open verification of theirs
        locks, this one included (its own lock is audited by the caller)."""
        for other in tx.open_of_user(v.user_id):
            if tx.change(other.id, status=Status.LOCKED.value) and other.id != v.id:
                self._audit(tx, other, EventKind.LOCKED, detail="the hourly failure cap")
                other.status = Status.LOCKED.value
                self._ended(tx, other, "locked")
        log.warning("phoneverify: user's verifications locked at the hourly failure cap")

    def cancel(self, vid: str, *, user_id: str, session: str) -> Verification:
        """Cancel an open verification of this user and session (the user gave up)."""

        def step(tx: Tx) -> Verification:
            v = self._owned(tx.get(vid), user_id, session)
            self._require_open(v)
            if not tx.change(v.id, status=Status.CANCELED.value, reason=MESSAGES[Status.CANCELED]):
                self._require_open(_found(tx.get(v.id)))
            self._audit(tx, v, EventKind.CANCELED)
            v.status, v.reason = Status.CANCELED.value, MESSAGES[Status.CANCELED]
            self._ended(tx, v, "canceled")
            return v

        return self.store.write(step)

    def end_session(self, session: str) -> int:
        """Cancel every open verification of a login session that ended; returns how many."""

        def step(tx: Tx) -> int:
            ended = tx.open_of_session(session)
            for v in ended:
                if tx.change(v.id, status=Status.CANCELED.value, reason=MESSAGES[Status.CANCELED]):
                    self._audit(tx, v, EventKind.CANCELED, detail="the login session ended")
                    v.status = Status.CANCELED.value
                    self._ended(tx, v, "canceled")
            return len(ended)

        if not self.store.read(lambda tx: tx.open_of_session(session)):
            return 0  # the usual case: one read, no write lock
        return self.store.write(step)

    def bridge(
        self, vid: str, *, user_id: str, session: str, ip: str | None, user: Any = None
    ) -> str:
        """Connect a user whose verification failed or locked to the support line; it
        verifies nothing. It costs a call, counted on a budget of its own
        (PHONEVERIFY_BRIDGE_CALLS_PER_USER_PER_HOUR) and the app's, never on the
        verification's number and cool-down, which are what locked the person out."""
        now = self.clock()
        if self.hooks is not None and self.hooks.before_call is not None:
            known = self.owned(vid, user_id=user_id, session=session)
            self._before_call(
                user=user,
                user_id=user_id,
                phone=known.phone,
                ip=ip,
                now=now,
                purpose="bridge",
                enrol=known.enrol,
            )

        def admit(tx: Tx) -> Verification:
            v = self._owned(tx.get(vid), user_id, session)
            if v.status not in (Status.FAILED, Status.LOCKED):
                raise BadInput(
                    gettext(
                        "Talking to support is offered once a verification has failed or locked."
                    )
                )
            self.limits.reserve_bridge(tx, user_id=user_id, now=now)
            return v

        v = self.store.write(admit)
        try:
            with self.notify.timed(v.provider, "bridge"):
                reference = self.provider.bridge(v.phone)
        except ProviderError:
            self.store.write(lambda tx: self.limits.release_bridge(tx, user_id=user_id, at=now))
            raise
        detail = f"reference {reference[:12]}"
        self.store.write(lambda tx: self._audit(tx, v, EventKind.BRIDGE, ip=ip, detail=detail))
        return reference

    # -- provider reports --------------------------------------------------------------
    def apply_event(
        self, event: CallEvent | Callable[[Tx], CallEvent], *, provider: str | None = None
    ) -> Applied:
        """A callback event from ``provider`` (the first listed by default): counts only for
        a live verification whose current call that provider placed, whose call id (and
        number, when the event carries one) it names. Never a status request to the vendor
        from its own callback. ``event`` may be a function that reads it in the step's
        transaction (the simulated phone's actions)."""
        now = self.clock()
        name = self.provider.name if provider is None else provider

        def step(tx: Tx) -> Applied:
            e = event(tx) if callable(event) else event
            return dataclasses.replace(apply(tx, e), event=e)

        def apply(tx: Tx, event: CallEvent) -> Applied:
            v = tx.by_call_id(name, event.call_id)
            if v is None or not v.is_open:
                return Applied(False, v)
            if event.number is not None and event.number != v.phone:
                log.warning(
                    "phoneverify: event for call of verification %s names another number",
                    v.id[:8],
                )
                return Applied(False, v)
            if now >= v.expires_at:
                return Applied(False, self._expire(tx, v.id))
            try:
                self._apply(tx, v, event.report, now, event_at=now)
            except NotOpen:
                pass  # it closed meanwhile: the event changes nothing
            return Applied(True, v)

        return self.store.write(step)

    def _apply(
        self,
        tx: Tx,
        v: Verification,
        report: CallReport,
        now: float,
        *,
        event_at: float | None = None,
    ) -> None:
        """What a provider said, inside the step's transaction; ``v`` follows it."""
        guard = {"call_id": v.call_id}
        values: dict[str, str | float] = {}
        if event_at is not None:
            values["event_at"] = event_at
        if report.reference and report.reference != v.provider_ref:
            values["provider_ref"] = report.reference
        if report.call is not None and _earlier(CallState(v.call), report.call):
            values["call"] = report.call.value
        progress = CallState(str(values.get("call", v.call)))
        spoken = Style(v.style) is Style.SPOKEN
        if (
            report.outcome is Outcome.CONFIRMED
            and spoken
            and _earlier(progress, CallState.DELIVERED)
        ):
            values["call"] = CallState.DELIVERED.value

        def progress_only() -> None:
            if values:
                tx.change(v.id, where=guard, **values)
                for name, value in values.items():
                    setattr(v, name, value)

        if report.digits is not None:
            if getattr(report, "once", False) and not tx.first_relay(
                v.call_id, report.digits, now, self.relay_key
            ):
                progress_only()
                return  # the same entry, reported again (an event, then the summary)
            if self.hasher.check(v.id, report.digits, v.pin_hash):
                self._verify(tx, v, via="keypad", now=now, progress=values)
            else:
                progress_only()
                self._wrong_pin(tx, v)  # counted; the phone's caller hears the outcome
            return
        if report.outcome is Outcome.CONFIRMED and Style(v.style) is not Style.SPOKEN:
            self._verify(tx, v, via=v.style, now=now, progress=values)
            return
        progress_only()
        if report.outcome is Outcome.FAILED:
            reason = report.reason or MESSAGES[Status.FAILED]
            self._fail(tx, v, reason, detail=report.detail, kind=EventKind.CALL_FAILED)
        elif report.outcome is Outcome.VOICEMAIL:  # a machine answered: it never hears a code
            detail = report.detail or "voicemail"
            self._fail(tx, v, VOICEMAIL_REASON, detail=detail, kind=EventKind.CALL_FAILED)

    def _verify(
        self,
        tx: Tx,
        v: Verification,
        *,
        via: str,
        now: float,
        progress: dict[str, str | float] | None = None,
    ) -> None:
        """Verified, with the call's ``progress`` that came with the news (one UPDATE)."""
        progress = progress or {}
        if now >= v.expires_at:
            if progress and tx.change(v.id, where={"call_id": v.call_id}, **progress):
                for name, value in progress.items():
                    setattr(v, name, value)
            return
        verified: dict[str, str | float | None] = {
            "status": Status.VERIFIED.value,
            "verified_at": now,
            "reason": None,
        }
        changes: dict[str, str | float | None] = {**progress, **verified}
        if tx.change(v.id, where={"call_id": v.call_id}, **changes):
            for name, change in changes.items():
                setattr(v, name, change)
            self._audit(tx, v, EventKind.CONFIRMED, detail=f"by the provider ({via})")
            log.info("phoneverify: verification %s confirmed on the phone (%s)", v.id[:8], via)

    def _fail(
        self,
        tx: Tx,
        v: Verification,
        reason: str,
        *,
        detail: str | None,
        kind: EventKind = EventKind.PROVIDER_ERROR,
        placed: bool = True,
    ) -> None:
        """The call failed (``placed`` False: it never happened), and the verification with
        it: one ``call_failed`` and one ``verification_failed`` once committed."""
        if tx.change(v.id, where={"call_id": v.call_id}, status=Status.FAILED.value, reason=reason):
            v.status, v.reason = Status.FAILED.value, reason
            self._audit(tx, v, kind, detail=detail)
            info = _copy(v)
            tx.after_commit(lambda: self.notify.call_failed(info, reason, placed=placed))
            self._ended(tx, v, failure_reason(v.status, reason) or "call_failed")
            log.warning(
                "phoneverify: verification %s to %s failed: %s",
                v.id[:8],
                mask(v.phone),
                detail or reason,
            )

    # -- helpers ------------------------------------------------------------------------
    def _ended(self, tx: Tx, v: Verification, reason: str) -> None:
        """``v`` ended unverified in this step: ``verification_failed`` once it commits (a
        copy, as ``v`` may change before then)."""
        info = _copy(v)
        tx.after_commit(lambda: self.notify.ended(info, reason))

    def _require_open(self, v: Verification) -> None:
        if v.is_open:
            return
        if v.status == Status.LOCKED:
            raise Locked(translate(MESSAGES[Status.LOCKED]), attempts_left=0)
        raise NotOpen(self.message(v))

    def message(self, v: Verification) -> str:
        """What the page says about ``v`` now, in the reader's language (a reason
        stored in English is translated here)."""
        if v.status == Status.CALLING:
            return translate(CALL_MESSAGES.get(CallState(v.call)))
        if v.status == Status.FAILED and v.reason:
            return translate(v.reason)
        return translate(MESSAGES.get(Status(v.status)))

    def attempts_left(self, v: Verification) -> int:
        """Wrong PINs ``v`` may still take before it locks."""
        return max(self.max_attempts - v.attempts, 0)

    def _audit(
        self,
        tx: Tx,
        v: Verification,
        *kinds: EventKind,
        ip: str | None = None,
        detail: str | None = None,
        at: float | None = None,
        notes: dict[EventKind, str] | None = None,
    ) -> None:
        """Record ``kinds`` for ``v`` in the step's transaction (one statement); ``at``:
        the step's own time where another record must match it; ``notes``: a detail of
        its own for some kinds."""
        tx.record(*self._events(v, *kinds, ip=ip, detail=detail, at=at, notes=notes))

    def _events(
        self,
        v: Verification,
        *kinds: EventKind,
        ip: str | None = None,
        detail: str | None = None,
        at: float | None = None,
        notes: dict[EventKind, str] | None = None,
    ) -> list[dict[str, Any]]:
        """The audit events :meth:`_audit` records, for a step that writes them itself."""
        at = self.clock() if at is None else at
        return [
            {
                "kind": kind,
                "at": at,
                "verification_id": v.id,
                "user_id": v.user_id,
                "phone": v.phone,
                "ip": ip,
                "detail": (notes or {}).get(kind, detail),
            }
            for kind in kinds
        ]


def _confirmed(v: Verification) -> Verification:
    """``v``, confirmed by its typed PIN, logged (its id's start and the masked number)."""
    log.info("phoneverify: verification %s confirmed for %s", v.id[:8], mask(v.phone))
    return v


def _typed_pin(pin: str | None) -> str:
    """The PIN as typed, reduced to its digits: any keyboard's digits count as their
    value, spaces and dashes are dropped, anything else stays (a wrong PIN)."""
    return "".join(ch for ch in ascii_digits(pin or "") if not ch.isspace() and ch != "-")


def _copy(v: Verification) -> Verification:
    """A detached copy of ``v`` as it is now, for a notice sent after the commit."""
    return detached(v.__dict__)


def _pause_detail(pause: Pause) -> str:
    return f"{pause.country}: {pause.conversion:.0%} of {pause.calls} ended verifications verified"


def _found(v: Verification | None) -> Verification:
    if v is None:  # rows are never deleted while a request follows them
        raise BadInput(gettext("This verification does not exist. Please start again."))
    return v


def _settled(v: Verification) -> bool:
    """Nothing more to learn from the provider: the call ended, or (spoken style) it
    delivered the PIN and only the typed PIN can decide now."""
    return v.call == CallState.ENDED.value or (
        v.style == Style.SPOKEN.value and v.call == CallState.DELIVERED.value
    )


#: a call's progress only moves forward (a late "answered" never hides "delivered")
_CALL_ORDER = {state: rank for rank, state in enumerate(CallState)}


def _can_call(provider: Provider, phone: str) -> bool:
    try:
        check_calling_code(phone, provider.calling_codes)
    except BadInput:
        return False
    return True


def _verification_id() -> str:
    """128 random bits, URL-safe, never starting with "-": operators type ids (or their
    first characters) after ``flask phoneverify show``, where a leading "-" reads as an
    option."""
    while True:
        vid = secrets.token_urlsafe(16)
        if vid[0] != "-":
            return vid


def _call_id() -> str:
    """Random per call and unrelated to the verification id (which tokens reveal)."""
    return secrets.token_hex(16)


def _earlier(state: CallState, than: CallState) -> bool:
    return _CALL_ORDER[state] < _CALL_ORDER[than]
