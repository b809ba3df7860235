"""Signed tokens, one serializer per purpose, each with its own salt.

- pending: the verification id and user id, held by the browser; max_age = TTL for
  every POST, TTL + READ_GRACE for reading its status (GET /status and /wait).
- callback: the provider name, in the address a provider posts its events to;
  long-lived because it is pasted once into a vendor console.
- csrf: the session's CSRF secret (when Flask-WTF is not in charge).

Every serializer takes the current SECRET_KEY and Flask's SECRET_KEY_FALLBACKS,
so a key rotation keeps tokens signed with the old key working.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from itsdangerous import BadData, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

from .errors import BadInput, Forbidden
from .i18n import gettext

__all__ = ["Tokens", "READ_GRACE"]

#: seconds past a verification's lifetime its pending token still reads it (status and
#: wait page only, never a POST), so a page left open learns it expired instead of failing
READ_GRACE = 600

PENDING_SALT = "phoneverify.pending"
CALLBACK_SALT = "phoneverify.callback"
CSRF_SALT = "phoneverify.csrf"


class Tokens:
    """The app's signed tokens, one salt per purpose, so a token made for one purpose is
    refused for any other."""

    def __init__(
        self, secret_keys: Sequence[str | bytes], clock: Callable[[], float] = time.time
    ) -> None:
        """``secret_keys``: the current key first, then the fallbacks. ``clock`` dates
        tokens, so they expire on the same clock as the verifications they carry."""

        class Signer(TimestampSigner):
            def get_timestamp(self) -> int:
                return int(clock())

        # itsdangerous signs with the last key and accepts all of them.
        keys: list[Any] = list(reversed(secret_keys))
        self.pending = URLSafeTimedSerializer(keys, salt=PENDING_SALT, signer=Signer)
        self.callback = URLSafeTimedSerializer(keys, salt=CALLBACK_SALT, signer=Signer)
        self.csrf = URLSafeTimedSerializer(keys, salt=CSRF_SALT, signer=Signer)

    def make_pending(self, verification_id: str, user_id: str) -> str:
        """The browser's handle on its open verification, bound to the user so another user
        cannot take it over."""
        return self.pending.dumps({"v": verification_id, "u": user_id})

    def read_pending(self, token: Any, max_age: int) -> tuple[str, str]:
        """(verification id, user id); BadInput for anything malformed, tampered or expired."""
        if not isinstance(token, str) or not token or len(token) > 512:
            raise BadInput(
                gettext("The verification token is missing or malformed. Please start again.")
            )
        try:
            data = self.pending.loads(token, max_age=max_age)
        except SignatureExpired:
            raise BadInput(gettext("This verification has expired. Please start again.")) from None
        except BadData:
            raise BadInput(
                gettext("The verification token is not valid. Please start again.")
            ) from None
        if not (
            isinstance(data, dict)
            and isinstance(data.get("v"), str)
            and isinstance(data.get("u"), str)
        ):
            raise BadInput(gettext("The verification token is not valid. Please start again."))
        return data["v"], data["u"]

    def make_callback(self, provider: str) -> str:
        """The token in a provider's callback address, so only posts to an address we gave
        out are read."""
        return self.callback.dumps({"p": provider})

    def check_callback(self, token: str, provider: str) -> None:
        """Forbidden unless ``token`` was made by us for ``provider``."""
        try:
            data = self.callback.loads(token)
        except BadData:
            raise Forbidden(gettext("This callback address is not signed by this site.")) from None
        if not isinstance(data, dict) or data.get("p") != provider:
            raise Forbidden(gettext("This callback address belongs to another provider."))
