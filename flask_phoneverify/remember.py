"""Remember this device: after a phone confirmation with "Remember this device", later
logins on that browser open the gate without a call for PHONEVERIFY_REMEMBER_DAYS days.

The browser keeps a cookie (``phoneverify_device``: signed, HttpOnly, SameSite=Lax,
Secure on HTTPS) naming a random device id, the user and a keyed hash of the number
confirmed; the store keeps a record per device (a keyed hash of the id, never the id),
so :func:`forget_remembered_devices` and a changed number revoke it on the server.

The gate asks this module only when the session holds no marker and the cookie is
there: at most once per login, never on the gated path of a verified session. The
marker such a login gets is flagged ``remembered``: it never satisfies a ``max_age=``
view, which still asks for a call.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable, Sequence
from typing import Any

from flask import Response, after_this_request, has_request_context, request
from itsdangerous import BadData, TimestampSigner, URLSafeTimedSerializer
from sqlalchemy.exc import SQLAlchemyError

from .models import EventKind
from .pins import derive_key
from .store import Store

__all__ = ["COOKIE", "Devices", "wants_remember"]

log = logging.getLogger("flask_phoneverify")

COOKIE = "phoneverify_device"
SALT = "phoneverify.device"
DAY = 86400


def wants_remember(value: Any) -> bool:
    """The confirm form's checkbox, or JSON ``"remember": true``."""
    if isinstance(value, bool):
        return value
    return isinstance(value, str) and value.strip().lower() in ("1", "on", "true", "yes")


class Devices:
    """The app's remembered devices: the cookie's serializer and the store's records."""

    def __init__(
        self,
        store: Store,
        secret_keys: Sequence[str | bytes],
        clock: Callable[[], float],
        days: int,
    ) -> None:
        class Signer(TimestampSigner):
            def get_timestamp(self) -> int:
                return int(clock())

        keys: list[Any] = list(reversed(secret_keys))  # signs with the last, accepts all
        self.serializer = URLSafeTimedSerializer(keys, salt=SALT, signer=Signer)
        self.id_key = derive_key(secret_keys[0], b"flask-phoneverify device id v1")
        self.store = store
        self.clock = clock
        self.days = days

    @property
    def enabled(self) -> bool:
        """True when devices may be remembered (``PHONEVERIFY_REMEMBER_DAYS`` above 0)."""
        return self.days > 0

    def _id_hash(self, device_id: str) -> str:
        return hmac.new(self.id_key, device_id.encode(), hashlib.sha256).hexdigest()

    def remember(self, user_id: str, tag: str | None, ip: str | None) -> None:
        """Record this device for ``user_id`` and the number ``tag`` names, and set its
        cookie on this request's answer."""
        now = self.clock()
        device_id = secrets.token_urlsafe(24)
        row = {
            "id_hash": self._id_hash(device_id),
            "user_id": user_id,
            "number_tag": tag,
            "created_at": now,
            "expires_at": now + self.days * DAY,
            "used_at": None,
        }

        def step(tx: Any) -> None:
            tx.forget_devices(user_id, now)  # the user's expired records go as new ones come
            tx.add_device(row)
            tx.record(
                {"kind": EventKind.DEVICE_REMEMBERED, "at": now, "user_id": user_id, "ip": ip}
            )

        self.store.write(step)
        value = self.serializer.dumps({"d": device_id, "u": user_id, "h": tag})
        max_age = self.days * DAY

        @after_this_request
        def _set(response: Response) -> Response:
            response.set_cookie(
                COOKIE,
                value,
                max_age=max_age,
                path="/",
                secure=request.is_secure,
                httponly=True,
                samesite="Lax",
            )
            return response

    def after_confirm(
        self, user_id: str, tag: str | None, *, enrolled: bool, remember: Any, ip: str | None
    ) -> bool:
        """After a phone confirmation: a newly confirmed number revokes the devices
        remembered for the old one; "Remember this device" remembers this one. True when
        it did. (Off, nothing is written: the gate then never reads the records, and each
        is bound to its number anyway.)"""
        if not self.enabled:
            return False
        if enrolled:
            self.forget(user_id, "a new number was confirmed")
        if not wants_remember(remember):
            return False
        self.remember(user_id, tag, ip)
        return True

    def recall(self, user_id: str, tag: str | None, ip: str | None) -> bool:
        """True when this request carries a device cookie of ``user_id`` for the number
        ``tag`` names that is still on record (marking it used, audited). A cookie that can
        never work again (expired, revoked, another number) is deleted, so it costs no
        further query; another user's cookie on a shared browser is left alone."""
        raw = request.cookies.get(COOKIE)
        if not raw or not self.enabled:
            return False
        try:
            data = self.serializer.loads(raw, max_age=self.days * DAY)
        except BadData:
            _drop_cookie()
            return False
        if not isinstance(data, dict) or not isinstance(data.get("d"), str):
            _drop_cookie()
            return False
        if data.get("u") != user_id:
            return False
        if data.get("h") != tag:
            _drop_cookie()
            return False
        now = self.clock()
        id_hash = self._id_hash(data["d"])

        def step(tx: Any) -> bool:
            if not tx.use_device(id_hash, user_id, tag, now):
                return False
            tx.record({"kind": EventKind.DEVICE_LOGIN, "at": now, "user_id": user_id, "ip": ip})
            return True

        try:
            known = self.store.write(step)
        except SQLAlchemyError as e:
            # The gate runs in the app's views: a database outage costs the person a call
            # (the verify page says what is wrong), never an error page here.
            log.error("phoneverify: remembered device not checked: %s", type(e).__name__)
            return False
        if known:
            log.info("phoneverify: a remembered device opened the gate")
            return True
        _drop_cookie()
        return False

    def forget(self, user_id: str, reason: str) -> int:
        """Revoke every remembered device of ``user_id``; how many there were."""
        now = self.clock()

        def step(tx: Any) -> int:
            gone: int = tx.forget_devices(user_id)
            if gone:
                tx.record(
                    {
                        "kind": EventKind.DEVICES_FORGOTTEN,
                        "at": now,
                        "user_id": user_id,
                        "detail": f"{gone} device(s): {reason}",
                    }
                )
            return gone

        return self.store.write(step)


def _drop_cookie() -> None:
    """Delete the device cookie with this request's answer."""
    if not has_request_context():  # pragma: no cover - always called from a request
        return

    @after_this_request
    def _drop(response: Response) -> Response:
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="Lax")
        return response
