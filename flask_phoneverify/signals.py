"""Signals, sent with the app as sender (Flask's blinker namespace), each once its change
is committed, never carrying a PIN or a credential.

Every signal about a verification gets ``verification=``, a :class:`VerificationInfo`:

- ``verification_started(app, verification)``: a verification began, or a resend asked for
  a new call.
- ``call_placed(app, verification)``: the provider accepted a call (again on a resend).
- ``call_failed(app, verification, message)``: one provider attempt failed: the call was
  not placed, or the provider reported it failed (busy, no answer, voicemail...).
- ``phone_verified(app, user, phone, verification)``: a verification succeeded and was
  taken into the user's session.
- ``phone_enrolled(app, user, phone, verification)``: a number typed on the verify page was
  verified; the app may now store ``phone`` (E.164; see also ``@phoneverify.phone_saver``).
- ``verification_failed(app, verification, reason)``: a verification ended unverified, once;
  ``reason`` is one of :data:`FAILURE_REASONS`.
- ``recovery_code_used(app, user, codes_left)``: a recovery code opened the gate.
- ``country_paused(app, country, until, calls, conversion)``: the fraud guard paused calls
  to a country (once per pause, whichever worker decided it).

:class:`Notifier` is what the flow and the views send them through: it also keeps the
Prometheus metrics (:mod:`flask_phoneverify.metrics`) when they are on.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from blinker import Namespace

from .phone import country_of, mask

if TYPE_CHECKING:
    from flask import Flask

    from .metrics import Metrics
    from .models import Verification

__all__ = [
    "VerificationInfo",
    "verification_started",
    "call_placed",
    "call_failed",
    "phone_verified",
    "phone_enrolled",
    "verification_failed",
    "country_paused",
    "recovery_code_used",
    "FAILURE_REASONS",
    "failure_reason",
    "Notifier",
]

_signals = Namespace()

verification_started = _signals.signal("verification-started")
call_placed = _signals.signal("call-placed")
call_failed = _signals.signal("call-failed")
phone_verified = _signals.signal("phone-verified")
phone_enrolled = _signals.signal("phone-enrolled")
verification_failed = _signals.signal("verification-failed")
recovery_code_used = _signals.signal("recovery-code-used")  # (app, user, codes_left)
country_paused = _signals.signal("country-paused")

#: the ``reason=`` values of ``verification_failed`` (and the failure outcomes in metrics)
FAILURE_REASONS = ("locked", "expired", "call_failed", "voicemail", "canceled")

#: words of a failed call's recorded reason that say a machine answered
_VOICEMAIL_WORDS = ("voicemail", "answering machine")


def failure_reason(status: str, reason: str | None) -> str | None:
    """The signal's reason for a verification that ended in ``status`` with the readable
    ``reason`` stored on it; None while it is open or once it verified. Works on stored
    rows, so ``flask phoneverify stats`` sorts past failures the same way."""
    if status in ("locked", "expired", "canceled"):
        return status
    if status == "failed":
        text = (reason or "").lower()
        return "voicemail" if any(w in text for w in _VOICEMAIL_WORDS) else "call_failed"
    return None


@dataclass(frozen=True)
class VerificationInfo:
    """What receivers learn of a verification: never its PIN, token or full number."""

    id: str
    user_id: str
    style: str
    provider: str
    status: str
    masked_phone: str
    country: str

    @classmethod
    def of(cls, v: Verification) -> VerificationInfo:
        """What receivers may learn of ``v``."""
        return cls(
            id=v.id,
            user_id=v.user_id,
            style=str(v.style),
            provider=v.provider,
            status=str(v.status),
            masked_phone=mask(v.phone),
            country=v.country or country_of(v.phone),
        )


class Notifier:
    """Sends the signals for one app (its sender) and counts the metrics when they are on.

    Holds the app weakly: the app owns its state, which owns this."""

    def __init__(self, app: Flask | None = None, metrics: Metrics | None = None) -> None:
        self._app = weakref.ref(app) if app is not None else None
        self.metrics = metrics

    def _sender(self, *signals: Any) -> Any:
        """The app, when one of ``signals`` has a receiver (else None: nothing to build)."""
        app = self._app() if self._app is not None else None
        return app if app is not None and any(s.receivers for s in signals) else None

    def started(self, v: Verification) -> None:
        """A verification began, or a resend asked for a new call."""
        if (app := self._sender(verification_started)) is not None:
            verification_started.send(app, verification=VerificationInfo.of(v))

    def placed(self, v: Verification) -> None:
        """The provider accepted a call."""
        if self.metrics is not None:
            self.metrics.call(v.provider, v.style, "placed")
        if (app := self._sender(call_placed)) is not None:
            call_placed.send(app, verification=VerificationInfo.of(v))

    def call_failed(self, v: Verification, message: str, *, placed: bool) -> None:
        """One failed provider attempt: ``placed`` False when the call never happened."""
        if self.metrics is not None:
            outcome = "not_placed"
            if placed:
                outcome = (
                    "voicemail" if failure_reason("failed", message) == "voicemail" else "failed"
                )
            self.metrics.call(v.provider, v.style, outcome)
        if (app := self._sender(call_failed)) is not None:
            call_failed.send(app, verification=VerificationInfo.of(v), message=message)

    def ended(self, v: Verification, reason: str) -> None:
        """The verification ended unverified (once): ``reason`` from FAILURE_REASONS."""
        if self.metrics is not None:
            self.metrics.verification(reason)
        if (app := self._sender(verification_failed)) is not None:
            verification_failed.send(app, verification=VerificationInfo.of(v), reason=reason)

    def claimed(self, v: Verification, user: Any) -> None:
        """The verification was taken into the user's session."""
        if self.metrics is not None:
            self.metrics.verification("verified")
        if (app := self._sender(phone_verified, phone_enrolled)) is None:
            return
        info = VerificationInfo.of(v)
        if v.enrol:
            phone_enrolled.send(app, user=user, phone=v.phone, verification=info)
        phone_verified.send(app, user=user, phone=v.phone, verification=info)

    def refused(self, limit: str) -> None:
        """A start refused by ``limit``."""
        if self.metrics is not None:
            self.metrics.refusal(limit)

    def rechecked(self, limits: Iterable[str]) -> None:
        """A start whose one statement could not prove ``limits`` met (read again)."""
        if self.metrics is not None:
            for limit in limits:
                self.metrics.recheck(limit)

    def paused(self, country: str, until: float, calls: int, conversion: float) -> None:
        """The fraud guard paused calls to ``country`` (once per pause)."""
        if (app := self._sender(country_paused)) is not None:
            country_paused.send(
                app, country=country, until=until, calls=calls, conversion=conversion
            )

    def observed(self, provider: str, operation: str, seconds: float) -> None:
        """A provider request timed by the caller (one made inside a transaction)."""
        if self.metrics is not None:
            self.metrics.request(provider, operation, seconds)

    def timed(self, provider: str, operation: str) -> Any:
        """A context manager timing one request to the provider (a no-op without metrics)."""
        if self.metrics is None:
            return nullcontext()
        return self._timed(self.metrics, provider, operation)

    @staticmethod
    @contextmanager
    def _timed(metrics: Metrics, provider: str, operation: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            metrics.request(provider, operation, time.perf_counter() - began)
