"""Send and failure limits, decided inside the flow's transactions.

Every call costs money and rings someone's phone. Before a call is placed the
user's wrong PINs in the last hour, the number's cool-down, and the hourly calls
per number, per user, per client IP and for the whole app are checked.

Each limit keeps one counter row per key and minute (``phoneverify_counters``), so
a check reads at most the sixty rows of its hour, whatever the traffic. A call is
counted by adding itself first and then reading the sum: over a limit, the step
raises and its transaction rolls the count back. Two workers racing for the last
slot cannot both see room for themselves: on PostgreSQL the first one's row lock
holds the second until it commits; on SQLite a write step holds the write lock.
The cool-down row of a number is taken first, so simultaneous starts to one number
are serialised there. The window slides by whole minutes: an event stops counting
up to a minute before its hour is out.

Each budget's anchor row (minute 0) counts every call ever reserved under its key, and
a user's wrong-PIN anchor every wrong PIN. On PostgreSQL a start reads the windows in
the statement that counts it, so they are as they stood before it waited for any row
lock; the anchors, as the statement left them, say how many calls were reserved in
between (each adds at most one to the window) and whether a wrong PIN was counted.
When the window read plus those calls cannot pass the limit and no wrong PIN came in,
the call is within every limit; otherwise (near a limit, a wrong PIN meanwhile, an
anchor that did not grow) the windows are read again, exactly, before anything is
decided. When that statement is the step's own transaction (a start with no fraud guard)
the server itself judges the reading by the same rules and keeps the statement only when
they prove every limit met; otherwise the statement fails, changing nothing, and the
step runs again in a transaction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import RateLimited
from .i18n import N_, gettext, ngettext
from .phone import country_of
from .store import Tx, Window, Within

__all__ = ["Limits", "HOUR", "limit_of", "reset_keys"]

HOUR = 3600.0
MINUTE = 60
WINDOW = int(HOUR) // MINUTE  # minute rows in one hour

LAST_CALL = "last_call"
ENROL_LAST_CALL = "enrol_last"
WRONG_PIN = "wrong_pin"
APP_KEY = "*"
BRIDGE_USER = "bridge_user"
#: the minute of a budget's anchor row: locked by every start; it counts every call ever
#: reserved under its key and is never inside a window
ANCHOR = 0

#: a budget's refusal; %(wait)s is how long until a call may be asked again
TOO_MANY_TO_NUMBER = N_(
    "Too many calls to this number in the last hour. Please try again in %(wait)s."
)
TOO_MANY_FOR_ACCOUNT = N_(
    "Too many calls for your account in the last hour. Please try again in %(wait)s."
)
TOO_MANY_FROM_NETWORK = N_(
    "Too many calls from your network in the last hour. Please try again in %(wait)s."
)
TOO_MANY_TO_COUNTRY = N_(
    "Too many calls to this country in the last hour. Please try again in %(wait)s."
)
TOO_MANY_TO_SUPPORT = N_(
    "Too many calls to our support team for your account in the last hour. Please try again "
    "in %(wait)s."
)
TOO_MANY_FROM_SITE = N_(
    "Too many calls from this site in the last hour. Please try again in %(wait)s."
)


def minute_of(at: float) -> int:
    return int(at // MINUTE)


@dataclass(frozen=True)
class Limits:
    """The call and failure budgets, counted inside the flow's transactions so that every
    worker sees the same counts."""

    max_failures_per_hour: int
    per_number: int
    per_user: int
    per_ip: int
    global_per_hour: int
    number_cooldown: int
    per_country: int = 50
    #: calls to a number an account is enrolling (not its number on file) count on budgets
    #: of their own, so nobody can use up the calls that protect a number's owner
    enrol_per_number: int = 3
    enrol_per_user: int = 3
    #: calls to the support line for one user (after a failed or locked verification)
    bridge_per_user: int = 2

    def count_failure(self, tx: Tx, user_id: str, now: float) -> bool:
        """Count one wrong PIN against the user's hourly failures; True once the user has
        reached PHONEVERIFY_MAX_FAILURES_PER_HOUR (checked at every wrong PIN, so opening
        several verifications first buys no extra tries)."""
        minute = minute_of(now)
        # its anchor counts every wrong PIN, so a start that read the windows before this
        # committed sees that it missed one (see reserve_call)
        tx.bump([(WRONG_PIN, user_id, ANCHOR, 1), (WRONG_PIN, user_id, minute, 1)])
        rows = tx.counts([(WRONG_PIN, user_id)], minute - WINDOW + 1)[(WRONG_PIN, user_id)]
        return _over(rows, self.max_failures_per_hour, now, counted=0) is not None

    def failures_wait(self, tx: Tx, user_id: str, now: float) -> int | None:
        """Seconds until the user is back under PHONEVERIFY_MAX_FAILURES_PER_HOUR, or None
        when they are under it (what a recovery code checks before it is tried)."""
        first = minute_of(now) - WINDOW + 1
        rows = tx.counts([(WRONG_PIN, user_id)], first)[(WRONG_PIN, user_id)]
        return _over(rows, self.max_failures_per_hour, now, counted=0)

    def reserve_call(
        self,
        tx: Tx,
        *,
        user_id: str,
        phone: str,
        ip: str | None,
        now: float,
        check_failures: bool = True,
        enrol: bool = False,
    ) -> None:
        """Count one call against every limit, or raise RateLimited (the caller's
        transaction then rolls the count back). With ``check_failures``, a user with too
        many wrong PINs in the last hour is refused first. ``enrol``: a number typed by the
        user, counted on the enrolment budgets and cool-down."""
        budgets = self._budgets(user_id, phone, ip, enrol)
        minute = minute_of(now)
        # One statement locks the rows in order: the number's cool-down row, then each
        # budget's anchor row (minute 0, never inside a window), so starts in different
        # minutes serialise too, then the minute rows.
        # With ``check_failures`` the user's wrong-PIN anchor is taken last: a wrong PIN
        # counted while this start waited shows as its growth, and none can be counted
        # from then until this start commits.
        keys = [(scope, key) for scope, key, _, _ in budgets]
        rows_to_bump = [(scope, key, ANCHOR, 1) for scope, key, _, _ in budgets]
        rows_to_bump += [(scope, key, minute, 1) for scope, key, _, _ in budgets]
        failures = (WRONG_PIN, user_id)
        if check_failures:
            keys.append(failures)
            rows_to_bump.append((WRONG_PIN, user_id, ANCHOR, 0))
        first = minute - WINDOW + 1
        swap = (_cooldown_scope(enrol), phone, now)
        if tx.single:
            # The statement is its own transaction: it commits only when what it read
            # proves every limit met as below; otherwise it changes nothing and the step
            # runs again in a transaction (Recheck), where the windows are read exactly.
            within = Within(
                limits=tuple(limit for _, _, limit, _ in budgets),
                failures_cap=self.max_failures_per_hour if check_failures else None,
                now=now,
                cooldown=self.number_cooldown,
            )
            tx.count_within(rows_to_bump, swap=swap, keys=keys, first_minute=first, within=within)
            return
        last, window = tx.bump_and_look(rows_to_bump, swap=swap, keys=keys, first_minute=first)
        if not window.exact and not (
            all(_surely_within(window, (scope, key), limit) for scope, key, limit, _ in budgets)
            and window.after.get(failures, 0) == window.before.get(failures, 0)
        ):
            window = Window(tx.counts(keys, first))
        rows = window.rows
        if check_failures:
            wait = _over(rows[(WRONG_PIN, user_id)], self.max_failures_per_hour, now, counted=0)
            if wait is not None:
                raise RateLimited(
                    gettext(
                        "Too many wrong PINs. Please wait %(wait)s before asking for a new call.",
                        wait=_words(wait),
                    ),
                    retry_after=wait,
                ).limited(limit_of(WRONG_PIN))
        if last is not None and self.number_cooldown and now - last < self.number_cooldown:
            wait = max(1, math.ceil(self.number_cooldown - (now - last)))
            raise RateLimited(
                gettext(
                    "A call was just made to this number. Please wait %(wait)s, then ask again.",
                    wait=_words(wait),
                ),
                retry_after=wait,
            ).limited(limit_of(LAST_CALL))
        if not window.exact:
            return  # every budget surely within its limit
        for scope, key, limit, message in budgets:
            over = _over(rows[(scope, key)], limit, now, counted=1)
            if over is not None:
                raise RateLimited(gettext(message, wait=_words(over)), retry_after=over).limited(
                    scope
                )

    def reserve_bridge(self, tx: Tx, *, user_id: str, now: float) -> None:
        """Count one call to the support line against the user's bridge budget and the app's,
        or raise RateLimited. Not the number's budget or cool-down: a person locked out by
        those is exactly who asks to talk to someone."""
        minute = minute_of(now)
        budgets = [
            (BRIDGE_USER, user_id, self.bridge_per_user, TOO_MANY_TO_SUPPORT),
            ("app", APP_KEY, self.global_per_hour, TOO_MANY_FROM_SITE),
        ]
        tx.bump(
            [(scope, key, ANCHOR, 1) for scope, key, _, _ in budgets]
            + [(scope, key, minute, 1) for scope, key, _, _ in budgets]
        )
        rows = tx.counts([(scope, key) for scope, key, _, _ in budgets], minute - WINDOW + 1)
        for scope, key, limit, message in budgets:
            over = _over(rows[(scope, key)], limit, now, counted=1)
            if over is not None:
                raise RateLimited(gettext(message, wait=_words(over)), retry_after=over)

    def release_bridge(self, tx: Tx, *, user_id: str, at: float) -> None:
        """Give back what :meth:`reserve_bridge` counted at ``at`` for a call never placed."""
        minute = minute_of(at)
        tx.bump([(BRIDGE_USER, user_id, minute, -1), ("app", APP_KEY, minute, -1)])

    def release_call(
        self,
        tx: Tx,
        *,
        user_id: str,
        phone: str,
        ip: str | None,
        at: float,
        enrol: bool = False,
    ) -> None:
        """Give back what :meth:`reserve_call` counted at ``at`` for a call never placed."""
        tx.restore_last(_cooldown_scope(enrol), phone, at)
        minute = minute_of(at)
        budgets = self._budgets(user_id, phone, ip, enrol)
        tx.bump([(scope, key, minute, -1) for scope, key, _, _ in budgets])

    def keys_of(
        self, *, user_id: str, phone: str, ip: str | None, enrol: bool = False
    ) -> list[tuple[str, str]]:
        """The (scope, key)s a call of ``user_id`` to ``phone`` is judged on: the number's
        cool-down, each budget, the user's wrong PINs."""
        budgets = [(scope, key) for scope, key, _, _ in self._budgets(user_id, phone, ip, enrol)]
        return [(_cooldown_scope(enrol), phone), *budgets, (WRONG_PIN, user_id)]

    def _budgets(
        self, user_id: str, phone: str, ip: str | None, enrol: bool = False
    ) -> list[tuple[str, str, int, str]]:
        """The hourly budgets a call counts against, always in this order (row locks are
        taken in one order by every worker, so they cannot deadlock), each with the
        message its refusal shows (untranslated: whole sentences, for the catalogs)."""
        if enrol:
            budgets = [
                ("enrol_number", phone, self.enrol_per_number, TOO_MANY_TO_NUMBER),
                ("enrol_user", user_id, self.enrol_per_user, TOO_MANY_FOR_ACCOUNT),
            ]
        else:
            budgets = [
                ("number", phone, self.per_number, TOO_MANY_TO_NUMBER),
                ("user", user_id, self.per_user, TOO_MANY_FOR_ACCOUNT),
            ]
        if ip:
            budgets.append(("ip", ip, self.per_ip, TOO_MANY_FROM_NETWORK))
        budgets.append(("country", country_of(phone), self.per_country, TOO_MANY_TO_COUNTRY))
        budgets.append(("app", APP_KEY, self.global_per_hour, TOO_MANY_FROM_SITE))
        return budgets


#: the limits kept under a scope of their own name otherwise (a budget's is its scope)
_LIMIT_NAMES = {WRONG_PIN: "failures", LAST_CALL: "cooldown", ENROL_LAST_CALL: "cooldown"}


def limit_of(scope: str) -> str:
    """The name a refusal and the metrics give the limit kept under ``scope``."""
    return _LIMIT_NAMES.get(scope, scope)


def _cooldown_scope(enrol: bool) -> str:
    """The scope of a number's kept last-call time: its own for enrolment calls."""
    return ENROL_LAST_CALL if enrol else LAST_CALL


def reset_keys(
    *,
    number: str | None = None,
    user: str | None = None,
    ip: str | None = None,
    country: str | None = None,
) -> list[tuple[str, str]]:
    """The (scope, key) counter rows an operator's reset clears: every budget and cool-down
    keyed by the number (E.164), the user id (their wrong PINs too), the client network or
    the country. Given here, next to the scopes, so a new budget cannot be missed."""
    keys: list[tuple[str, str]] = []
    if number is not None:
        keys += [("number", number), ("enrol_number", number)]
        keys += [(LAST_CALL, number), (ENROL_LAST_CALL, number)]
    if user is not None:
        keys += [("user", user), ("enrol_user", user), (WRONG_PIN, user)]
    if ip is not None:
        keys.append(("ip", ip))
    if country is not None:
        keys.append(("country", country))
    return keys


def _surely_within(window: Window, key: tuple[str, str], limit: int) -> bool:
    """True when a window read before its statement's own count (and before any lock it
    waited for) proves the key within ``limit`` with that count: the calls reserved since
    it was read (its anchor's growth, the caller's own included) each add at most one to
    what it read. An anchor that did not grow by the caller's own call at least (an
    operator's reset deleted it meanwhile) proves nothing. (A reset in those milliseconds
    of an anchor that had counted exactly one call, now out of the window, and another
    start making it again, could let one call past a budget of one: a reset is the
    operator's choice to let the key call again.)"""
    grown = window.after.get(key, 0) - window.before.get(key, 0)
    if grown < 1:
        return False
    return sum(n for _, n in window.rows[key]) + grown <= limit


def _over(rows: list[tuple[int, int]], limit: int, now: float, *, counted: int) -> int | None:
    """Seconds until a key whose window holds ``rows`` (minute, count; oldest first) is
    back under ``limit``, or None when it is within it.

    ``counted``: how many of the rows' events are the caller's own (already added), so
    ``limit`` of them are allowed; with none, reaching ``limit`` is already over."""
    total = sum(n for _, n in rows)
    allowed = limit if counted else limit - 1
    if total <= allowed:
        return None
    to_drop = total - allowed  # events that must leave the window before the next call
    for minute, n in rows:
        to_drop -= n
        if to_drop <= 0:
            return max(1, math.ceil((minute + WINDOW) * MINUTE - now))
    return max(1, math.ceil((minute_of(now) + WINDOW) * MINUTE - now))


def _words(seconds: int) -> str:
    """A wait as the person reads it: seconds under a minute and a half, else minutes."""
    if seconds < 90:
        return ngettext("%(num)d second", "%(num)d seconds", seconds)
    return ngettext("%(num)d minute", "%(num)d minutes", math.ceil(seconds / 60))
