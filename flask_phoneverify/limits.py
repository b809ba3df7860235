"""Send and failure limits, counted in the database so they hold across workers.

Every call costs money and rings someone's phone. Before a call is placed:
the user's wrong PINs in the last hour, the number's cool-down, and the hourly
calls per number, per user, per client IP and for the whole app are checked.

A call is counted by *reserving* it: its event is written first, then the
events up to and including it are counted; over a limit, the reservation is
withdrawn and the call refused. Two workers racing for the last slot cannot
both see room for themselves, so the limits are not overshot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import RateLimited
from .store import Store

__all__ = ["Limits", "HOUR"]

HOUR = 3600.0


@dataclass(frozen=True)
class Limits:
    max_failures_per_hour: int
    per_number: int
    per_user: int
    per_ip: int
    global_per_hour: int
    number_cooldown: int

    def check_failures(self, store: Store, user_id: str, now: float) -> None:
        """Refuse new calls once a user has too many wrong PINs in the last hour."""
        count, oldest = store.window("wrong_pin", now - HOUR, user_id=user_id)
        if count >= self.max_failures_per_hour:
            wait = _until(oldest, now)
            raise RateLimited(
                f"Too many wrong PINs. Please wait {_words(wait)} before asking for a new call.",
                retry_after=wait,
            )

    def reserve_call(
        self,
        store: Store,
        *,
        user_id: str,
        phone: str,
        ip: str | None,
        now: float,
        verification_id: str | None = None,
    ) -> int:
        """Count one call against every limit; returns the reservation's event id."""
        last = store.last_event_at("call", phone=phone)
        if last is not None and now - last < self.number_cooldown:
            wait = max(1, math.ceil(self.number_cooldown - (now - last)))
            raise RateLimited(
                f"A call was just made to this number. Please wait {_words(wait)}, then ask again.",
                retry_after=wait,
            )
        event_id = store.record(
            "call", now, user_id=user_id, phone=phone, ip=ip, verification_id=verification_id
        )
        since = now - HOUR
        checks: list[tuple[dict[str, str], int, str]] = [
            ({"phone": phone}, self.per_number, "to this number"),
            ({"user_id": user_id}, self.per_user, "for your account"),
            ({}, self.global_per_hour, "from this site"),
        ]
        if ip:
            checks.insert(2, ({"ip": ip}, self.per_ip, "from your network"))
        for match, limit, what in checks:
            count, oldest = store.window("call", since, upto_id=event_id, **match)
            if count > limit:
                store.forget_event(event_id)
                wait = _until(oldest, now)
                raise RateLimited(
                    f"Too many calls {what} in the last hour. Please try again in {_words(wait)}.",
                    retry_after=wait,
                )
        return event_id


def _until(oldest: float | None, now: float) -> int:
    """Seconds until the oldest event in the window leaves it."""
    if oldest is None:
        return 60
    return max(1, math.ceil(oldest + HOUR - now))


def _words(seconds: int) -> str:
    if seconds < 90:
        return f"{seconds} seconds"
    return f"{math.ceil(seconds / 60)} minutes"
