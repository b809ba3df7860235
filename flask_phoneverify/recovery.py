"""Recovery codes: a way back for people who lost their phone.

A user who has just confirmed their phone (at most :data:`FRESH` seconds ago) may
generate a set of PHONEVERIFY_RECOVERY_CODES one-time codes. Each is 10 characters
from a 32-character alphabet without look-alikes (no 0/O, 1/I/l): 50 bits from
``secrets``, shown grouped as ``ABCD-EFGH-JK``. They are shown once and kept only as
keyed hashes (HMAC-SHA256 under a key derived from SECRET_KEY, the user id mixed in);
a new set replaces the old in one transaction.

Using a code is one write step: the user's hourly failure cap is checked first (the
same counter as wrong PINs), the typed code is compared with every stored hash (and
with dummy hashes up to a full set, so the work is the same whether the user has ten
codes, two or none), and a match is spent by one conditional DELETE: of two requests
racing with one code, one sees the row go. A wrong code counts one failure and, at
the cap, locks the user's open verifications like a wrong PIN does; its answer is the
same generic message for everyone.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import BadInput, FlowError, Locked
from .i18n import N_, gettext
from .limits import Limits
from .models import EventKind, Status
from .pins import derive_key
from .store import Store, Tx

__all__ = [
    "ALPHABET",
    "FRESH",
    "Recovery",
    "Recovered",
    "WrongCode",
    "new_code",
    "normalise",
    "WRONG_CODE",
    "recovery_codes_left",
]

log = logging.getLogger("flask_phoneverify")

#: 32 characters, none that reads like another (no 0/O, 1/I/l): 5 bits each
ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
LENGTH = 10  # 50 bits
#: seconds a phone confirmation may be old for generating a new set
FRESH = 600
#: refusals, translated where raised
WRONG_CODE = N_("That recovery code is not valid. Check it and try again.")
LOCKED = N_(
    "Too many wrong PINs or recovery codes. Your account is locked for now: please try again later."
)
_KEY_LABEL = b"flask-phoneverify recovery code v1"


class WrongCode(FlowError):
    """A recovery code that is not one of the user's unused codes (the same answer
    whether or not the user has any)."""

    status, code = 400, "wrong_code"


def new_code() -> str:
    """One code from ``secrets``, grouped for reading: ``ABCD-EFGH-JK``."""
    raw = "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
    return f"{raw[:4]}-{raw[4:8]}-{raw[8:]}"


def normalise(typed: str) -> str:
    """What a person typed, forgiven: case, spaces and dashes do not matter."""
    return "".join(ch for ch in typed.upper() if not ch.isspace() and ch not in "-‐‑–—")


@dataclass(frozen=True)
class Recovered:
    """A code that worked: how many the user has left."""

    left: int


class Recovery:
    """The app's recovery codes: making sets, counting and spending codes."""

    def __init__(
        self,
        *,
        store: Store,
        limits: Limits,
        secret_keys: Sequence[str | bytes],
        clock: Callable[[], float],
        count: int,
    ) -> None:
        self.store = store
        self.limits = limits
        self.clock = clock
        self.count = count
        self._keys = [derive_key(k, _KEY_LABEL) for k in secret_keys]
        #: compared when the user has fewer codes than a full set, so the work is the same
        self._dummies = [
            hmac.new(secrets.token_bytes(32), b"dummy", hashlib.sha256).hexdigest()
            for _ in range(max(count, 1))
        ]

    @property
    def enabled(self) -> bool:
        """True when recovery codes are on (``PHONEVERIFY_RECOVERY_CODES`` above 0)."""
        return self.count > 0

    def _hash(self, key: bytes, user_id: str, code: str) -> str:
        return hmac.new(key, f"{user_id}\x00{code}".encode(), hashlib.sha256).hexdigest()

    def generate(self, user_id: str, *, ip: str | None) -> list[str]:
        """A new set of codes for ``user_id``; the old set stops working. The codes are
        returned to be shown once and are never kept."""
        codes = [new_code() for _ in range(self.count)]
        hashes = [self._hash(self._keys[0], user_id, normalise(c)) for c in codes]
        now = self.clock()

        def step(tx: Tx) -> None:
            tx.replace_recovery(user_id, hashes, now)
            tx.record(
                {
                    "kind": EventKind.RECOVERY_CODES,
                    "at": now,
                    "user_id": user_id,
                    "ip": ip,
                    "detail": f"{len(codes)} new codes; the old set no longer works",
                }
            )

        self.store.write(step)
        log.info("phoneverify: a new set of %d recovery codes was made", len(codes))
        return codes

    def left(self, user_id: str) -> int:
        """How many unused codes ``user_id`` has (one count query)."""
        return self.store.read(lambda tx: tx.recovery_left(user_id))

    def use(self, user_id: str, typed: Any, *, ip: str | None) -> Recovered:
        """Spend the code ``typed`` for ``user_id``; raises WrongCode, Locked or BadInput."""
        if not isinstance(typed, str) or not typed.strip():
            raise BadInput(gettext("Please enter one of your recovery codes."))
        if len(typed) > 64:
            raise WrongCode(gettext(WRONG_CODE))
        code = normalise(typed)
        candidates = [self._hash(key, user_id, code) for key in self._keys]

        def step(tx: Tx) -> Recovered | FlowError:
            now = self.clock()
            wait = self.limits.failures_wait(tx, user_id, now)
            if wait is not None:
                return Locked(gettext(LOCKED), retry_after=wait, attempts_left=0)
            stored = tx.recovery_hashes(user_id)
            padded = stored + self._dummies[: max(self.count - len(stored), 0)]
            match: str | None = None
            for h in padded:
                hit = False
                for c in candidates:
                    hit |= hmac.compare_digest(h, c)
                if hit and match is None:
                    match = h
            if match is not None and match in stored and tx.use_recovery(user_id, match):
                left = len(stored) - 1
                tx.record(
                    {
                        "kind": EventKind.RECOVERY_USED,
                        "at": now,
                        "user_id": user_id,
                        "ip": ip,
                        "detail": f"{left} codes left",
                    }
                )
                return Recovered(left)
            return self._wrong(tx, user_id, ip, now)

        outcome = self.store.write(step)
        if isinstance(outcome, FlowError):
            raise outcome  # raised once its count and audit event are committed
        log.info("phoneverify: a recovery code was used (%d left)", outcome.left)
        return outcome

    def _wrong(self, tx: Tx, user_id: str, ip: str | None, now: float) -> FlowError:
        """Count a wrong code against the user's hourly failures, as a wrong PIN is; at
        the cap every open verification of the user locks."""
        locked = self.limits.count_failure(tx, user_id, now)
        event = {"at": now, "user_id": user_id, "ip": ip}
        tx.record({**event, "kind": EventKind.RECOVERY_FAILED})
        if not locked:
            return WrongCode(gettext(WRONG_CODE))
        for v in tx.open_of_user(user_id):
            if tx.change(v.id, status=Status.LOCKED.value):
                tx.record(
                    {
                        **event,
                        "kind": EventKind.LOCKED,
                        "verification_id": v.id,
                        "phone": v.phone,
                        "detail": "the hourly failure cap",
                    }
                )
        log.warning("phoneverify: user locked at the hourly failure cap (recovery codes)")
        wait = self.limits.failures_wait(tx, user_id, now)
        return Locked(LOCKED, retry_after=wait, attempts_left=0)


def recovery_codes_left(user: Any) -> int:
    """How many unused recovery codes ``user`` has (0 when the feature is off)."""
    from .gate import _user_id
    from .state import state

    uid = _user_id(user)
    if uid is None:
        raise ValueError("recovery_codes_left needs a user with an id")
    recovery = state().recovery
    if recovery is None or not recovery.enabled:
        return 0
    return recovery.left(uid)
