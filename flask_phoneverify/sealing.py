"""Sealing: what must be read back later but never stored in clear.

The simulated phone shows a spoken call's PIN on its page, from any worker, so the
PIN is kept in the database, encrypted (Fernet: AES-CBC with an HMAC) under a key
derived from SECRET_KEY; SECRET_KEY_FALLBACKS still open what older keys sealed.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from .pins import derive_key

__all__ = ["Sealer"]

_LABEL = b"flask-phoneverify seal v1"


class Sealer:
    """Encrypts short texts under keys derived from the app's secret keys."""

    def __init__(self, secret_keys: Sequence[str | bytes], label: bytes = _LABEL) -> None:
        """``secret_keys``: the current key first, then the fallbacks; ``label``: one per
        purpose, so what one part seals no other part opens."""
        self._fernet = MultiFernet(
            [Fernet(base64.urlsafe_b64encode(derive_key(k, label))) for k in secret_keys]
        )

    def seal(self, text: str) -> bytes:
        """``text`` encrypted under the current key."""
        return self._fernet.encrypt(text.encode())

    def open(self, sealed: bytes | str) -> str | None:
        """The text, or None when no current key opens it (the key was rotated away, or
        it was tampered with)."""
        try:
            return self._fernet.decrypt(sealed).decode()
        except (InvalidToken, UnicodeDecodeError, ValueError, TypeError):
            return None
