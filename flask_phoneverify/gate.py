"""The gate: ``@phone_verified_required`` and the session marker it reads.

The marker binds the verified state to the user id and the time of
verification; it is rotated on every success and dropped on logout or when
another user is logged in. Reading it costs no database query and no provider
call: the gated path stays as cheap as Flask-Login's ``login_required``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar, overload

from flask import Flask, abort, current_app, jsonify, redirect, request, session, url_for
from werkzeug.wrappers import Response

from .redirects import safe_next
from .state import AppState, state

__all__ = [
    "phone_verified_required",
    "is_phone_verified",
    "forget_phone_verification",
    "current_identity",
    "Identity",
    "wants_json",
]

F = TypeVar("F", bound=Callable[..., Any])

MARKER = "_phoneverify"
EXEMPT_METHODS = frozenset({"OPTIONS"})


@dataclass(frozen=True)
class Identity:
    user: Any
    id: str
    phone: str | None


def current_identity(st: AppState | None = None) -> Identity | None:
    """The logged-in user: the app's ``user_loader``, else Flask-Login's current_user."""
    st = st or state()
    loader = st.hooks.user_loader
    if loader is not None:
        user = loader()
    else:
        user = _flask_login_user()
    if user is None or getattr(user, "is_authenticated", True) is False:
        return None
    get_id = getattr(user, "get_id", None)
    uid = get_id() if callable(get_id) else getattr(user, "id", None)
    if uid is None:
        return None
    phone = getattr(user, st.settings.user_phone_attr, None)
    return Identity(user=user, id=str(uid), phone=str(phone) if phone else None)


def _flask_login_user() -> Any:
    if not hasattr(current_app, "login_manager"):
        raise RuntimeError(
            "flask-phoneverify needs to know the current user: set up Flask-Login, or register "
            "a function with @phoneverify.user_loader."
        )
    from flask_login import current_user

    return current_user._get_current_object()


def is_phone_verified(max_age: int | None = None) -> bool:
    """True when the current user confirmed their phone in this session, within
    PHONEVERIFY_VERIFIED_TTL and ``max_age`` seconds."""
    st = state()
    identity = current_identity(st)
    return identity is not None and _marker_fresh(st, identity, max_age)


def _marker_fresh(st: AppState, identity: Identity, max_age: int | None) -> bool:
    """The session marker names this user and is young enough; another user's is dropped."""
    marker = session.get(MARKER)
    if not isinstance(marker, dict):
        return False
    if marker.get("u") != identity.id:
        forget_phone_verification()  # another user: switching back must verify again
        return False
    at = marker.get("t")
    if not isinstance(at, int | float):
        return False
    age = st.clock() - at
    limit = st.settings.verified_ttl if max_age is None else min(max_age, st.settings.verified_ttl)
    return bool(0 <= age < limit)


def mark_verified(user_id: str, at: float) -> None:
    """Set (and rotate) the marker after a successful verification."""
    session[MARKER] = {"u": user_id, "t": at, "n": secrets.token_urlsafe(8)}


def forget_phone_verification() -> None:
    """Drop the verified state (call it where the app logs a user out or switches user)."""
    session.pop(MARKER, None)


def wants_json() -> bool:
    """The request prefers JSON: it sent JSON, or ranks application/json above text/html."""
    if request.is_json:
        return True
    accept = request.accept_mimetypes
    return accept["application/json"] > accept["text/html"]


@overload
def phone_verified_required(func: F) -> F: ...


@overload
def phone_verified_required(*, max_age: int | None = None) -> Callable[[F], F]: ...


def phone_verified_required(
    func: F | None = None, *, max_age: int | None = None
) -> F | Callable[[F], F]:
    """Let the view run only once the current user's phone is confirmed.

    ``max_age``: seconds since the confirmation, for step-up on sensitive views."""

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if request.method in EXEMPT_METHODS:
                return current_app.ensure_sync(view)(*args, **kwargs)
            st = state()  # one lookup of the app state and one of the user per request
            identity = current_identity(st)
            if identity is None:
                return anonymous()
            if not _marker_fresh(st, identity, max_age):
                return _no_store(current_app.make_response(_unverified(st)))
            response = current_app.make_response(current_app.ensure_sync(view)(*args, **kwargs))
            return _no_store(response)

        return wrapper  # type: ignore[return-value]

    if func is not None:
        return decorate(func)
    return decorate


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    response.headers.setdefault("Vary", "Cookie")
    return response


def anonymous() -> Any:
    manager = getattr(current_app, "login_manager", None)
    if manager is not None:
        return manager.unauthorized()
    abort(401)


def _unverified(st: AppState) -> Any:
    handler = st.hooks.unverified_handler
    if handler is not None:
        return handler()
    next_path = safe_next(request.full_path.rstrip("?")) if request.method == "GET" else None
    verify_url = (
        url_for("phoneverify.verify", next=next_path)
        if next_path
        else url_for("phoneverify.verify")
    )
    if wants_json() or request.method not in ("GET", "HEAD"):
        body = jsonify(
            error="phone_verification_required",
            message="Please confirm your phone to continue.",
            verify_url=verify_url,
        )
        body.status_code = 401
        return body
    return redirect(verify_url)


def connect_login_signals(app: Flask) -> None:
    """Drop the verified state when Flask-Login logs a user out or in."""
    try:
        from flask_login import user_logged_in, user_logged_out
    except ImportError:
        return

    def _drop(sender: Any, **extra: Any) -> None:
        forget_phone_verification()

    user_logged_out.connect(_drop, app, weak=False)
    user_logged_in.connect(_drop, app, weak=False)
