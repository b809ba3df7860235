"""Per-app state: what ``init_app`` built for one app, and its lookup.

Everyone below the extension object (views, gate, CSRF, CLI) finds the app's
settings, provider, store and flow here; this module imports no view, so nothing
in the package imports in a cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app

from .flow import Flow
from .providers.base import Provider, Style
from .settings import Settings
from .store import Store
from .tokens import Tokens

if TYPE_CHECKING:
    from .recovery import Recovery
    from .remember import Devices

__all__ = ["AppState", "Hooks", "state", "KEY"]

#: where the per-app state is kept in ``app.extensions``
KEY = "phoneverify.state"


@dataclass
class Hooks:
    """The functions an app registered on the extension object (shared by its apps)."""

    user_loader: Callable[[], Any] | None = None
    phone_saver: Callable[[Any, str], Any] | None = None
    unverified_handler: Callable[[], Any] | None = None
    #: ``func(attempt)`` before any call is placed; raises CallRefused to refuse it
    before_call: Callable[[Any], Any] | None = None


@dataclass
class AppState:
    """Everything built for one app by ``init_app``."""

    settings: Settings
    provider: Provider
    store: Store
    flow: Flow
    tokens: Tokens
    clock: Callable[[], float]
    hooks: Hooks = field(default_factory=Hooks)
    #: keys the hash of the confirmed number kept in the session marker
    marker_key: bytes = b""
    #: the same, derived from each of SECRET_KEY_FALLBACKS (markers from before a rotation)
    marker_fallback_keys: tuple[bytes, ...] = ()
    #: recovery codes (PHONEVERIFY_RECOVERY_CODES) and remembered devices (_REMEMBER_DAYS)
    recovery: Recovery | None = None
    devices: Devices | None = None

    @property
    def style(self) -> Style:
        """The confirmation style of this app's provider."""
        return self.provider.style

    def close(self) -> None:
        """Release the provider's network clients and the store's own engine."""
        self.provider.close()
        self.store.close()


def state(app: Flask | None = None) -> AppState:
    """The app's state (the current app by default); a clear error without init_app."""
    extensions = (app or current_app).extensions
    try:
        found: AppState = extensions[KEY]
    except KeyError:
        raise RuntimeError(
            "flask-phoneverify is not set up on the current Flask app."
            " Did you forget to call 'init_app', or PhoneVerify(app)?"
        ) from None
    return found
