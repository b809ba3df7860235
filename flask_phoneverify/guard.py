"""Checks before a call is placed, beyond the static rules and the hourly budgets.

- :class:`CallAttempt`: what an app's ``@phoneverify.before_call`` function is shown (its
  own fraud scoring, number lookups); it refuses by raising
  :class:`~flask_phoneverify.errors.CallRefused`.
- :class:`FraudGuard`: pauses a country whose recent calls stopped converting. Toll fraud
  (a pumper starting calls to numbers that earn per minute) passes the static rules, but
  its calls never end verified. When PHONEVERIFY_FRAUD_GUARD_MIN_CONVERSION is set and at
  least MIN_CALLS verifications to one country that started within WINDOW seconds have
  ended with fewer than that share verified, calls to that country are refused for
  COOLDOWN seconds, except to a number its user has verified before.

The guard runs inside the start's transaction, once the limits admitted it: one
primary-key read of the country's guard row (``phoneverify_guard``, shared by every
worker). The conversion itself is computed at most once per country every
:data:`CHECK_EVERY` seconds, by whichever start's conditional update takes that turn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import phonenumbers

from .errors import CountryPaused
from .i18n import gettext
from .store import Tx

__all__ = ["CallAttempt", "FraudGuard", "Pause", "attempt_for", "CHECK_EVERY"]

#: seconds between two computations of one country's conversion
CHECK_EVERY = 10.0

_TYPE_NAMES = {
    getattr(phonenumbers.PhoneNumberType, name): name
    for name in dir(phonenumbers.PhoneNumberType)
    if name.isupper() and isinstance(getattr(phonenumbers.PhoneNumberType, name), int)
}


@dataclass(frozen=True)
class CallAttempt:
    """A call about to be placed, as the app's ``before_call`` function sees it.

    ``purpose``: ``start``, ``resend`` or ``bridge`` (the support line); ``user``: the
    app's user object (None for ``flask phoneverify call``); ``country``: ISO 3166 alpha-2,
    None for non-geographic numbers; ``number_type``: phonenumbers' type name
    (``MOBILE``, ``FIXED_LINE``, ``VOIP``...)."""

    number: str
    country: str | None
    number_type: str
    user: Any
    user_id: str
    ip: str | None
    style: str
    purpose: str = "start"
    enrol: bool = False


def attempt_for(
    *,
    number: str,
    user: Any,
    user_id: str,
    ip: str | None,
    style: str,
    purpose: str,
    enrol: bool,
) -> CallAttempt:
    """The read-only :class:`CallAttempt` the before-call hook receives."""
    parsed = phonenumbers.parse(number, None)
    region = phonenumbers.region_code_for_number(parsed)
    return CallAttempt(
        number=number,
        country=None if region in (None, "001", "ZZ") else region,
        number_type=_TYPE_NAMES.get(phonenumbers.number_type(parsed), "UNKNOWN"),
        user=user,
        user_id=user_id,
        ip=ip,
        style=style,
        purpose=purpose,
        enrol=enrol,
    )


@dataclass(frozen=True)
class Pause:
    """A pause the guard decided: until when, over how many ended verifications, at what
    share verified."""

    country: str
    until: float
    calls: int
    conversion: float


@dataclass(frozen=True)
class FraudGuard:
    """The conversion watch on calls per country (``PHONEVERIFY_FRAUD_GUARD_*``): pauses a
    country whose recent calls stop converting, for all workers, through the store."""

    min_conversion: float
    min_calls: int = 20
    window: int = 3600
    cooldown: int = 3600

    def check(self, tx: Tx, *, country: str, user_id: str, phone: str, now: float) -> Pause | None:
        """Inside an admitted start's transaction: raise CountryPaused when ``country`` is
        paused or must be now; return a pause this start decided but is exempt from (the
        caller announces it once committed), else None."""
        row = tx.guard_row(country)
        if row is not None and row[1] is not None and row[1] > now:
            if not tx.verified_before(user_id, phone):
                raise self._refusal(row[1] - now)
            return None
        if row is not None and now - row[0] < CHECK_EVERY:
            return None
        if not tx.guard_claim(country, None if row is None else row[0], now):
            return None  # another start is computing it
        ended, verified = tx.conversion(country, now - self.window, now)
        if ended < self.min_calls or verified / ended >= self.min_conversion:
            return None
        pause = Pause(country, now + self.cooldown, ended, verified / ended)
        if tx.verified_before(user_id, phone):
            return (
                pause
                if tx.guard_pause(country, pause.until, ended, pause.conversion, now)
                else None
            )
        error = self._refusal(self.cooldown)
        error.pause = pause  # the refusal's own transaction records it (this one rolls back)
        raise error

    @staticmethod
    def _refusal(wait: float) -> CountryPaused:
        return CountryPaused(
            gettext(
                "Calls to numbers in this country are paused for a while. Please try again later."
            ),
            retry_after=max(1, math.ceil(wait)),
        )
