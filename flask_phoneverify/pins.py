"""PINs: drawn from ``secrets``, kept only as a keyed hash, checked in constant time.

The hash key is derived from the app's SECRET_KEY (and each of
SECRET_KEY_FALLBACKS, so a key rotation does not break open verifications); the
verification id is mixed in so one hash is useless for another verification.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence

__all__ = ["new_pin", "PinHasher", "derive_key"]

_KEY_LABEL = b"flask-phoneverify pin hash v1"


def new_pin(length: int) -> str:
    """A PIN from ``secrets``, so it cannot be predicted from earlier ones."""
    return "".join(secrets.choice("0123456789") for _ in range(length))


class PinHasher:
    """Keyed PIN hashes, so a copy of the database does not reveal open PINs (a six-digit PIN
    falls to a plain hash at once) and a hash is worthless without the app's key."""

    def __init__(self, secret_keys: Sequence[str | bytes]) -> None:
        """``secret_keys``: the current key first, then the fallbacks."""
        self._keys = [derive_key(k, _KEY_LABEL) for k in secret_keys]

    def hash(self, verification_id: str, pin: str) -> str:
        """What is stored instead of the PIN; always under the current key."""
        return self._digest(self._keys[0], verification_id, pin)

    def check(self, verification_id: str, pin: str, stored: str) -> bool:
        """True when ``pin`` matches under any key, so a key rotation does not break open
        verifications; compared in constant time, so timing reveals nothing."""
        ok = False
        for key in self._keys:
            ok |= hmac.compare_digest(self._digest(key, verification_id, pin), stored)
        return ok

    @staticmethod
    def _digest(key: bytes, verification_id: str, pin: str) -> str:
        msg = f"{verification_id}\x00{pin}".encode()
        return hmac.new(key, msg, hashlib.sha256).hexdigest()


def derive_key(secret: str | bytes, label: bytes) -> bytes:
    """A key of its own for one purpose (``label``), derived from a SECRET_KEY, so no two
    uses of the app's key ever share one."""
    return hmac.new(_as_bytes(secret), label, hashlib.sha256).digest()


def _as_bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode()
