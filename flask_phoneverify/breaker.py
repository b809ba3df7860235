"""The providers' circuit breakers, shared by every worker through the store.

A provider that failed through its own fault (see
:func:`flask_phoneverify.providers.vendor.provider_fault`)
PHONEVERIFY_BREAKER_FAILURES times in a row is skipped for
PHONEVERIFY_BREAKER_COOLDOWN seconds; the first call after the cool-down tries it
again, and one more fault skips it again at once. The counts live in the
counters table (one row per provider), so every worker sees them.

Starting a verification must not pay a round trip for this while nothing fails,
so each process keeps what it last read for at most :data:`REFRESH` seconds (of
the extension's clock), reads it again inside the transaction that admits a call
(one statement, no transaction of its own), and counts its own faults into that
copy as it writes them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable

from .store import Store, Tx

__all__ = ["Breaker", "REFRESH"]

log = logging.getLogger("flask_phoneverify")

#: seconds a process trusts the breaker states it read
REFRESH = 1.0


class Breaker:
    """The circuit breakers of one app's providers, read from and written to its store."""

    def __init__(
        self, store: Store, clock: Callable[[], float], *, failures: int, cooldown: float
    ) -> None:
        self.store = store
        self.clock = clock
        self.failures = failures
        self.cooldown = cooldown
        self._states: dict[str, tuple[int, float | None]] = {}
        self._read_at = -math.inf

    def skipped(self, names: Iterable[str], tx: Tx) -> set[str]:
        """The providers among ``names`` whose breaker is open now; the states are read
        again, in the caller's transaction ``tx``, when this process's copy is stale."""
        now = self.clock()
        if not 0 <= now - self._read_at < REFRESH:
            self._states = tx.breakers()
            self._read_at = now
        states = self._states
        return {
            name
            for name in names
            if (until := states.get(name, (0, None))[1]) is not None and until > now
        }

    def fault(self, tx: Tx, name: str) -> None:
        """Count a fault of ``name`` in the step's transaction."""
        n, until = tx.breaker_fault(name, self.clock(), self.failures, self.cooldown)
        self._states[name] = (n, until)
        if n >= self.failures:
            log.warning(
                "phoneverify: provider %s skipped for %g s after %d faults in a row",
                name,
                self.cooldown,
                n,
            )

    def success(self, name: str) -> None:
        """``name`` placed a call: forget its faults, with a write only when this process
        last saw some (another worker's success or the next fault corrects a stale copy)."""
        if self._states.get(name, (0, None))[0] == 0:
            return
        self.store.write(lambda tx: tx.breaker_reset(name))
        self._states[name] = (0, None)
