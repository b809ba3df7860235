"""The gate: ``@phone_verified_required`` and the session marker it reads.

The marker binds the verified state to the user id and the time of
verification; it is rotated on every success and dropped on logout or when
another user is logged in. Reading it costs no database query and no provider
call: the gated path stays as cheap as Flask-Login's ``login_required``.

A marker set by a remembered device or a recovery code carries a flag (``f``) and
never satisfies ``max_age=``. Only a session with no marker and a device cookie makes
the gate ask the store (:mod:`.remember`), once per login.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import inspect
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar, overload

from flask import (
    Flask,
    abort,
    current_app,
    has_request_context,
    jsonify,
    redirect,
    request,
    session,
    url_for,
)
from werkzeug.wrappers import Response

from . import phone as phones
from .errors import BadInput, ConfigError
from .flow import session_ref
from .i18n import gettext
from .redirects import safe_next
from .remember import COOKIE

try:  # Flask-Login is optional: apps without it register a user_loader
    from flask_login import current_user as _login_user
    from flask_login import user_logged_in, user_logged_out
except ImportError:  # pragma: no cover - depends on the installed extras
    _login_user = user_logged_in = user_logged_out = None
try:  # the contexts themselves: the gate runs on every gated request, and each access
    # through Flask's proxies (session, g) costs about as much as the rest of its check
    from flask.globals import _cv_app, _cv_request
except ImportError:  # pragma: no cover - a Flask that keeps its contexts elsewhere
    _cv_app = _cv_request = None  # type: ignore[assignment]
from .state import AppState, state

__all__ = [
    "phone_verified_required",
    "is_phone_verified",
    "forget_phone_verification",
    "forget_remembered_devices",
    "current_identity",
    "Identity",
    "wants_json",
]

F = TypeVar("F", bound=Callable[..., Any])

MARKER = "_phoneverify"
#: the session's pending verification (token, next page, keypad PIN) and its nonce
PENDING = "_phoneverify_pending"
NONCE = "_phoneverify_sid"


@dataclass(frozen=True)
class Identity:
    """The logged-in user as the extension needs it: the object, its id and its number."""

    user: Any
    id: str
    phone: str | None


def current_identity(st: AppState | None = None) -> Identity | None:
    """The logged-in user: the app's ``user_loader``, else Flask-Login's current_user."""
    st = st or state()
    user = _user(st)
    uid = _user_id(user)
    if uid is None:
        return None
    phone = getattr(user, st.settings.user_phone_attr, None)
    return Identity(user=user, id=uid, phone=str(phone) if phone else None)


def _user(st: AppState, app: Flask | None = None) -> Any:
    loader = st.hooks.user_loader
    if loader is not None:
        return loader()
    if _login_user is None or not hasattr(app or current_app, "login_manager"):
        raise ConfigError(
            "@phoneverify.user_loader",
            "is not registered and the app has no Flask-Login LoginManager, so flask-phoneverify "
            "cannot tell who the current user is",
            "set up Flask-Login (login_manager = LoginManager(app)), or register a function "
            "that returns the current user with @phoneverify.user_loader",
        )
    loaded = _loaded_login_user()
    return loaded if loaded is not None else _login_user._get_current_object()


def _loaded_login_user() -> Any:
    """The user Flask-Login already loaded for this request (``login_required`` does,
    before the gate), read without its proxy; None when not loaded yet."""
    ctx = _cv_app.get(None) if _cv_app is not None else None
    return getattr(ctx.g, "_login_user", None) if ctx is not None else None


def _current_app() -> Flask:
    """The current app, without the proxy."""
    ctx = _cv_app.get(None) if _cv_app is not None else None
    app: Flask = ctx.app if ctx is not None else current_app._get_current_object()  # type: ignore[attr-defined]
    return app


def _session() -> Any:
    """This request's session, without the proxy."""
    ctx = _cv_request.get(None) if _cv_request is not None else None
    return ctx.session if ctx is not None else session


def _user_id(user: Any) -> str | None:
    """The id of a logged-in user, or None for nobody (or an anonymous user)."""
    if user is None or getattr(user, "is_authenticated", True) is False:
        return None
    get_id = getattr(user, "get_id", None)
    uid = get_id() if callable(get_id) else getattr(user, "id", None)
    return None if uid is None else str(uid)


def is_phone_verified(max_age: int | None = None) -> bool:
    """True when the current user confirmed their phone in this session, within
    PHONEVERIFY_VERIFIED_TTL and ``max_age`` seconds."""
    st = state()
    identity = current_identity(st)
    return identity is not None and _verified(st, identity.id, identity.user, max_age)


def is_fresh(st: AppState, identity: Identity, max_age: int | None) -> bool:
    """The gate would open for ``identity`` at ``max_age`` (the verify page's "already
    confirmed"): the marker, or a remembered device, which never meets ``max_age``."""
    return _verified(st, identity.id, identity.user, max_age)


def _marker_fresh(st: AppState, identity: Identity, max_age: int | None) -> bool:
    return _fresh(st, identity.id, identity.user, max_age)


def _fresh(st: AppState, user_id: str, user: Any, max_age: int | None) -> bool:
    """The session marker names this user and the number now on file, and is young
    enough; another user's marker is dropped."""
    store = _session()
    marker = store.get(MARKER)
    if not isinstance(marker, dict):
        return False
    if marker.get("u") != user_id:
        store.pop(MARKER, None)  # another user: switching back must verify again
        return False
    raw = getattr(user, st.settings.user_phone_attr, None)
    tag = number_tag(st.marker_key, str(raw) if raw else None, st.settings.default_region)
    if marker.get("h") != tag and not _retagged(st, marker, raw, tag):
        return False  # the number on file is no longer the one confirmed
    at = marker.get("t")
    if not isinstance(at, (int, float)):  # noqa: UP038 - a tuple is faster on every gated request
        return False
    if max_age is not None and marker.get("f"):
        return False  # remembered device or recovery code: step-up views want the phone
    age = st.clock() - at
    ttl = st.settings.verified_ttl
    limit = ttl if max_age is None else min(max_age, ttl)
    return bool(0 <= age < limit)


def _retagged(st: AppState, marker: dict[str, Any], raw: Any, tag: str | None) -> bool:
    """A marker tagged under a SECRET_KEY_FALLBACKS key (before a key rotation) for the
    number on file: it still counts, and is tagged anew under the current key, so a
    rotation does not send everyone back to the phone."""
    region, number = st.settings.default_region, str(raw) if raw else None
    for key in st.marker_fallback_keys:
        if tag is not None and marker.get("h") == number_tag(key, number, region):
            session[MARKER] = {**marker, "h": tag}
            return True
    return False


#: a marker's ``f``: opened by a remembered device, or by a recovery code, not by a call
REMEMBERED = "remembered"
RECOVERY = "recovery"


def _verified(st: AppState, user_id: str, user: Any, max_age: int | None) -> bool:
    return _fresh(st, user_id, user, max_age) or _remembered(st, user_id, user, max_age)


def _remembered(st: AppState, user_id: str, user: Any, max_age: int | None) -> bool:
    """The session holds no marker and this browser is a remembered device of the user:
    a database query once per login, never for a session that holds a marker."""
    devices = st.devices
    if MARKER in session or devices is None or not devices.enabled:
        return False
    if COOKIE not in request.cookies:
        return False
    tag = tag_on_file(st, user)
    if not devices.recall(user_id, tag, request.remote_addr):
        return False
    mark_flagged(st, user_id, tag, REMEMBERED)
    return _fresh(st, user_id, user, max_age)


def tag_on_file(st: AppState, user: Any) -> str | None:
    """The keyed hash of the user's number on file, as the marker keeps it."""
    raw = getattr(user, st.settings.user_phone_attr, None)
    return number_tag(st.marker_key, str(raw) if raw else None, st.settings.default_region)


def mark_flagged(st: AppState, user_id: str, tag: str | None, flag: str) -> None:
    """A marker dated now that opens the gate but never satisfies ``max_age=`` views:
    ``flag`` says what opened it (a remembered device, a recovery code)."""
    session[MARKER] = {
        "u": user_id,
        "t": st.clock(),
        "h": tag,
        "n": secrets.token_urlsafe(8),
        "f": flag,
    }


def marker_flag(user_id: str) -> str | None:
    """What opened the session's marker for ``user_id``: None for a phone call (or no
    marker), else :data:`REMEMBERED` or :data:`RECOVERY`."""
    marker = session.get(MARKER)
    if not isinstance(marker, dict) or marker.get("u") != user_id:
        return None
    flag = marker.get("f")
    return flag if isinstance(flag, str) else None


def mark_verified(st: AppState, user_id: str, at: float, phone: str) -> None:
    """Set (and rotate) the marker after a successful verification of ``phone`` (E.164)."""
    tag = number_tag(st.marker_key, phone, None)
    session[MARKER] = {"u": user_id, "t": at, "h": tag, "n": secrets.token_urlsafe(8)}


@functools.lru_cache(maxsize=8192)
def number_tag(key: bytes, raw: str | None, region: str | None) -> str | None:
    """A keyed hash of a number as E.164 (memoised per key, raw value and region, so a
    gated request pays a dictionary lookup); None for no number or one that does not
    parse."""
    if not raw:
        return None
    try:
        e164 = phones.parse(raw, region)
    except BadInput:
        return None
    return hmac.new(key, e164.encode(), hashlib.sha256).hexdigest()[:24]


def forget_phone_verification() -> None:
    """Drop the verified state and end this login session's verifications: the open ones
    are canceled, and a new session nonce means none started before can be claimed (call
    it where the app logs a user out or switches user; Flask-Login's signals do)."""
    session.pop(MARKER, None)
    session.pop(PENDING, None)
    nonce = session.pop(NONCE, None)
    if isinstance(nonce, str):
        state().flow.end_session(session_ref(nonce))


def forget_remembered_devices(user: Any) -> int:
    """Revoke every device remembered for ``user`` (after a password change, a lost
    device, or from an account's security page); returns how many there were. This
    session's own remembered-device marker goes too, when it is that user's."""
    uid = _user_id(user)
    if uid is None:
        raise ValueError("forget_remembered_devices needs a user with an id")
    st = state()
    devices = st.devices
    gone = devices.forget(uid, "forgotten by the app") if devices is not None else 0
    if has_request_context() and marker_flag(uid) == REMEMBERED:
        session.pop(MARKER, None)
    return gone


def wants_json() -> bool:
    """The request prefers JSON: it sent JSON, or ranks application/json above text/html."""
    if request.is_json:
        return True
    if request.headers.get("Accept") == "application/json":  # a JSON client's usual header
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
        is_async = inspect.iscoroutinefunction(view)

        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            app = _current_app()
            run = app.ensure_sync(view) if is_async else view
            # Every method is gated, OPTIONS included: a view that lists OPTIONS itself is
            # called for it. (Flask answers automatic OPTIONS without calling the view.)
            st = state(app)  # one lookup of the app state and one of the user per request
            user = _user(st, app)
            uid = _user_id(user)
            if uid is None:
                return anonymous()
            if not _fresh(st, uid, user, max_age) and not _remembered(st, uid, user, max_age):
                return never_cache(app.make_response(_unverified(st, max_age)))
            rv = run(*args, **kwargs)
            # a body alone (the common case) needs none of make_response's sorting out
            return never_cache(app.response_class(rv) if type(rv) is str else app.make_response(rv))

        return wrapper  # type: ignore[return-value]

    if func is not None:
        return decorate(func)
    return decorate


NO_STORE = ("Cache-Control", "no-store")


def never_cache(response: Response) -> Response:
    """``Cache-Control: no-store`` on ``response``: gated answers, and every answer of the
    extension's blueprint, are never cached. (``Vary: Cookie`` comes from Flask's session
    interface, which adds it to every answer whose session was read, as the gate's is.)

    A view's own Cache-Control is replaced; otherwise the constant header joins the
    header list directly, skipping the checks ``Headers.set`` runs on any value
    (measurable on a path that should cost no more than ``login_required``)."""
    headers = response.headers
    listed = getattr(headers, "_list", None)
    if type(listed) is list:
        for name, _value in listed:
            if name.lower() == "cache-control":
                break
        else:
            listed.append(NO_STORE)
            return response
    headers["Cache-Control"] = "no-store"
    return response


def anonymous() -> Any:
    manager = getattr(current_app, "login_manager", None)
    if manager is not None:
        return manager.unauthorized()
    abort(401)


def _unverified(st: AppState, max_age: int | None = None) -> Any:
    handler = st.hooks.unverified_handler
    if handler is not None:
        return handler()
    next_path = safe_next(request.full_path.rstrip("?")) if request.method == "GET" else None
    # the freshness this view needs travels along, so the verify page does not call an
    # older confirmation "confirmed" and send a step-up view round in a loop
    args: dict[str, Any] = {"next": next_path} if next_path else {}
    if max_age is not None:
        args["max_age"] = max_age
    verify_url = url_for("phoneverify.verify", **args)
    if wants_json() or request.method not in ("GET", "HEAD"):
        body = jsonify(
            error="phone_verification_required",
            message=gettext("Please confirm your phone to continue."),
            verify_url=verify_url,
        )
        body.status_code = 401
        return body
    return redirect(verify_url)


def connect_login_signals(app: Flask) -> None:
    """Drop the verified state when Flask-Login logs a user out or in."""
    if user_logged_in is None or user_logged_out is None:
        return

    def _drop(sender: Any, **extra: Any) -> None:
        forget_phone_verification()

    user_logged_out.connect(_drop, app, weak=False)
    user_logged_in.connect(_drop, app, weak=False)
