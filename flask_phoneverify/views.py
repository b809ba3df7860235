"""The blueprint: the pages and the JSON API, from the same views.

A view answers JSON when the request prefers it (it sent JSON, or ranks
application/json above text/html) and HTML otherwise. Views translate between
HTTP and the flow: they find the user and the pending verification, check CSRF,
call the flow and render its answer or its error. Nothing here answers 500 for
bad input, a provider failure or a database failure.
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from sqlalchemy.exc import SQLAlchemyError

from . import phone as phones
from . import signals
from .csrf import generate_csrf, validate_csrf
from .errors import BadInput, FlowError, ProviderError
from .extension import AppState, state
from .flow import session_ref
from .gate import Identity, _anonymous, current_identity, mark_verified, wants_json
from .models import Verification
from .providers.base import Style
from .redirects import safe_next

__all__ = ["make_blueprint"]

log = logging.getLogger("flask_phoneverify")

WAIT_TITLES = {
    "verified": "Confirmed",
    "failed": "The call did not go through",
    "expired": "This verification has expired",
    "locked": "Too many wrong PINs",
    "canceled": "Verification canceled",
}

PENDING = "_phoneverify_pending"
NONCE = "_phoneverify_sid"


def make_blueprint() -> Blueprint:
    bp = Blueprint(
        "phoneverify",
        __name__,
        template_folder="templates",
        static_folder="static/phoneverify",
        static_url_path="/static",
    )
    bp.add_url_rule("/", "verify", verify, methods=["GET"])
    bp.add_url_rule("/start", "start", start, methods=["POST"])
    bp.add_url_rule("/wait", "wait", wait, methods=["GET"])
    bp.add_url_rule("/status", "status", status, methods=["GET"])
    bp.add_url_rule("/confirm", "confirm", confirm, methods=["POST"])
    bp.add_url_rule("/resend", "resend", resend, methods=["POST"])
    bp.add_url_rule("/cancel", "cancel", cancel, methods=["POST"])
    bp.add_url_rule("/talk", "talk", talk, methods=["POST"])
    bp.add_url_rule("/dev/phone", "dev_phone", dev_phone, methods=["GET"])
    bp.add_url_rule(
        "/dev/phone/<call_id>/<action>", "dev_phone_action", dev_phone_action, methods=["POST"]
    )
    bp.add_url_rule("/callback/<provider>/<token>", "callback", provider_callback, methods=["POST"])
    bp.context_processor(_template_context)
    bp.after_request(_no_store)
    bp.register_error_handler(FlowError, _flow_error)
    bp.register_error_handler(ProviderError, _provider_error)
    bp.register_error_handler(SQLAlchemyError, _store_error)
    return bp


# -- helpers ---------------------------------------------------------------------------


def _template_context() -> dict[str, Any]:
    st = state()
    return {
        "phoneverify_base": st.settings.base_template or "phoneverify/_layout.html",
        "phoneverify_csrf": generate_csrf,
        "phoneverify_app_name": st.provider.app_name,
        "phoneverify_dev": st.provider.simulated,
    }


def _app() -> Any:
    """The real app object, the sender of signals."""
    return current_app._get_current_object()  # type: ignore[attr-defined]


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _input() -> dict[str, Any]:
    if request.is_json:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise BadInput("The request body is not a JSON object.")
        return data
    return request.form.to_dict()


def _identity() -> Identity:
    identity = current_identity()
    if identity is None:
        # Flask-Login's unauthorized() answers (redirect or 401); else a plain 401.
        response = _anonymous()
        abort(response if response is not None else 401)
    return identity


def _session_ref() -> str:
    nonce = session.get(NONCE)
    if not isinstance(nonce, str):
        nonce = secrets.token_urlsafe(16)
        session[NONCE] = nonce
    return session_ref(nonce)


def _pending() -> dict[str, Any]:
    data = session.get(PENDING)
    return data if isinstance(data, dict) else {}


def _token(data: dict[str, Any] | None = None) -> str:
    token = (data or {}).get("token") or request.args.get("token") or _pending().get("t")
    if not token:
        raise BadInput("No verification is in progress. Please start again.")
    return str(token)


def _load(st: AppState, identity: Identity, token: str) -> str:
    vid, uid = st.tokens.read_pending(token, max_age=st.settings.ttl)
    if uid != identity.id:
        from .errors import Forbidden

        raise Forbidden("This verification belongs to someone else.")
    return vid


def _next(value: Any = None) -> str:
    default: str = state().settings.default_next
    return safe_next(value) or safe_next(_pending().get("n")) or default


def _client_ip() -> str | None:
    return request.remote_addr


def _callback_url(st: AppState) -> str:
    return callback_address(st, st.provider.name)


def callback_address(st: AppState, provider: str) -> str:
    """The signed address ``provider`` posts its call events to (needs a request context)."""
    token = st.tokens.make_callback(provider)
    base: str | None = st.settings.external_url
    if base:
        return base.rstrip("/") + url_for("phoneverify.callback", provider=provider, token=token)
    return url_for("phoneverify.callback", provider=provider, token=token, _external=True)


def _started_json(st: AppState, token: str, v: Verification, pin: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "token": token,
        "status": v.status,
        "call": v.call,
        "style": v.style,
        "expires_at": _iso(v.expires_at),
    }
    if v.style == Style.KEYPAD.value:
        body["pin"] = pin
    return body


def _remember(token: str, v: Verification, pin: str, next_path: str | None) -> None:
    data: dict[str, Any] = {"t": token, "n": next_path}
    if v.style == Style.KEYPAD.value:
        data["p"] = pin  # shown again after a reload; keypad PINs are meant to be seen here
    session[PENDING] = data


# -- error pages -------------------------------------------------------------------------


def _flow_error(e: FlowError) -> Any:
    body: dict[str, Any] = {"error": e.code, "message": e.message}
    body.update({k: v for k, v in e.extra.items() if k != "pending"})
    headers = {"Retry-After": str(e.retry_after)} if e.retry_after else {}
    if wants_json():
        return jsonify(body), e.status, headers
    return (
        render_template(
            "phoneverify/message.html",
            title="Phone confirmation",
            error=e.message,
            retry=e.status in (409, 429) or e.code == "bad_request",
        ),
        e.status,
        headers,
    )


def _provider_error(e: ProviderError) -> Any:
    status = 503 if e.retryable else 502
    if wants_json():
        return jsonify(error="provider_error", message=e.message, retryable=e.retryable), status
    return (
        render_template(
            "phoneverify/message.html",
            title="The call did not go through",
            error=e.message,
            retry=True,
        ),
        status,
    )


def _store_error(e: SQLAlchemyError) -> Any:
    log.error("phoneverify: database error: %s", type(e).__name__, exc_info=current_app.debug)
    message = "Phone confirmation is unavailable for a moment. Please try again shortly."
    if wants_json():
        return jsonify(error="unavailable", message=message), 503
    return render_template(
        "phoneverify/message.html", title="Unavailable", error=message, retry=True
    ), 503


# -- views --------------------------------------------------------------------------------


def verify() -> Any:
    st = state()
    identity = _identity()
    next_path = _next(request.args.get("next"))
    masked = phones.mask(identity.phone) if identity.phone else None
    if wants_json():
        return jsonify(
            csrf_token=generate_csrf(),
            phone=masked,
            style=st.style.value,
            enrolment=st.settings.allow_enrolment and not identity.phone,
        )
    if not identity.phone and not st.settings.allow_enrolment:
        return render_template(
            "phoneverify/message.html",
            title="No phone number on file",
            error="Your account has no phone number on file, so it cannot be confirmed by phone. "
            "Please contact the site's support to add one.",
            retry=False,
        ), 409
    return render_template(
        "phoneverify/verify.html",
        masked=masked,
        enrol=not identity.phone,
        style=st.style.value,
        next_path=next_path,
        error=None,
    )


def _phone_for(st: AppState, identity: Identity, data: dict[str, Any]) -> tuple[str, bool]:
    """The number to call: the one on file, or (enrolment) the one typed."""
    region = st.settings.default_region
    if identity.phone:
        try:
            return phones.parse(identity.phone, region), False
        except BadInput:
            raise BadInput(
                "The phone number on your account is not valid. Please contact the site's support."
            ) from None
    if not st.settings.allow_enrolment:
        raise BadInput("Your account has no phone number on file.")
    typed = data.get("phone")
    if not isinstance(typed, str):
        raise BadInput("Please enter a phone number.")
    return phones.parse(typed, region), True


def start() -> Any:
    st = state()
    identity = _identity()
    validate_csrf()
    data = _input()
    next_path = safe_next(data.get("next")) or safe_next(_pending().get("n"))
    try:
        number, enrol = _phone_for(st, identity, data)
        started = st.flow.start(
            user_id=identity.id,
            phone=number,
            enrol=enrol,
            session=_session_ref(),
            ip=_client_ip(),
            callback_url=_callback_url(st),
        )
    except FlowError as e:
        if wants_json() or e.status not in (400, 429):
            raise
        return _verify_again(st, identity, next_path, e)
    except ProviderError as e:
        signals.verification_failed.send(_app(), reason=e.message)
        raise
    v = started.verification
    token = st.tokens.make_pending(v.id, identity.id)
    _remember(token, v, started.pin, next_path)
    signals.verification_started.send(_app(), verification=v)
    if wants_json():
        return jsonify(_started_json(st, token, v, started.pin))
    return redirect(url_for("phoneverify.wait"))


def _verify_again(st: AppState, identity: Identity, next_path: str | None, e: FlowError) -> Any:
    headers = {"Retry-After": str(e.retry_after)} if e.retry_after else {}
    return (
        render_template(
            "phoneverify/verify.html",
            masked=phones.mask(identity.phone) if identity.phone else None,
            enrol=not identity.phone,
            style=st.style.value,
            next_path=next_path or st.settings.default_next,
            error=e.message,
            typed=request.form.get("phone", ""),
        ),
        e.status,
        headers,
    )


def wait() -> Any:
    st = state()
    identity = _identity()
    pending = _pending()
    if not pending.get("t"):
        return redirect(url_for("phoneverify.verify"))
    try:
        vid = _load(st, identity, pending["t"])
        v = st.flow.refresh(st.flow.owned(vid, user_id=identity.id))
    except FlowError:
        session.pop(PENDING, None)
        return redirect(url_for("phoneverify.verify", next=pending.get("n")))
    return _render_wait(st, v, pending["t"])


def _render_wait(st: AppState, v: Verification, token: str, error: FlowError | None = None) -> Any:
    """The wait page for ``v``, with ``error`` (wrong PIN, locked...) when there is one."""
    pending = _pending()
    page = render_template(
        "phoneverify/wait.html",
        v=v,
        masked=phones.mask(v.phone),
        pin=pending.get("p") if v.style == Style.KEYPAD.value else None,
        message=st.flow.message(v),
        attempts_left=st.flow.attempts_left(v),
        token=token,
        next_path=pending.get("n") or "",
        can_bridge=st.provider.can_bridge,
        error=error.message if error else None,
        title=WAIT_TITLES.get(v.status, "Answer your phone"),
    )
    if error is None:
        return page
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else {}
    return page, error.status, headers


def status() -> Any:
    st = state()
    identity = _identity()
    if not wants_json() and not request.args.get("token"):
        return redirect(url_for("phoneverify.wait"))
    vid = _load(st, identity, _token())
    v = st.flow.refresh(st.flow.owned(vid, user_id=identity.id))
    return jsonify(
        status=v.status,
        call=v.call,
        attempts_left=st.flow.attempts_left(v),
        expires_at=_iso(v.expires_at),
        message=st.flow.message(v),
        can_bridge=st.provider.can_bridge and v.status in ("failed", "locked"),
    )


def confirm() -> Any:
    st = state()
    identity = _identity()
    validate_csrf()
    data = _input()
    token = _token(data)
    pin = data.get("pin")
    if pin is not None and not isinstance(pin, str | int):
        raise BadInput("The PIN must be digits.")
    try:
        vid = _load(st, identity, token)
        v = st.flow.confirm(
            vid, None if pin is None else str(pin), user_id=identity.id, session=_session_ref()
        )
    except FlowError as e:
        if wants_json() or e.status not in (400, 409, 429) or e.code == "csrf":
            raise
        identity = _identity()
        v = st.flow.owned(_load(st, identity, token), user_id=identity.id)
        return _render_wait(st, v, token, e)
    next_path = _next(data.get("next"))
    mark_verified(identity.id, st.extension.clock())
    session.pop(PENDING, None)
    app = _app()
    if v.enrol:
        saver = st.extension._phone_saver
        if saver is not None:
            saver(identity.user, v.phone)
        signals.phone_enrolled.send(app, user=identity.user, phone=v.phone)
    signals.phone_verified.send(app, user=identity.user, phone=v.phone)
    if wants_json():
        return jsonify(status="verified", next=next_path)
    return redirect(next_path)


def _action() -> tuple[AppState, Identity, dict[str, Any], str, str]:
    """What every POST on a pending verification starts with: the user, a CSRF check,
    the body, the token and the verification id it names."""
    st = state()
    identity = _identity()
    validate_csrf()
    data = _input()
    token = _token(data)
    return st, identity, data, token, _load(st, identity, token)


def resend() -> Any:
    st, identity, _, token, vid = _action()
    started = st.flow.resend(
        vid,
        user_id=identity.id,
        session=_session_ref(),
        ip=_client_ip(),
        callback_url=_callback_url(st),
    )
    v = started.verification
    if _pending().get("t") == token:
        _remember(token, v, started.pin, _pending().get("n"))
    if wants_json():
        return jsonify(_started_json(st, token, v, started.pin))
    return redirect(url_for("phoneverify.wait"))


def cancel() -> Any:
    st, identity, _, token, vid = _action()
    next_path = _pending().get("n")
    st.flow.cancel(vid, user_id=identity.id, session=_session_ref())
    if _pending().get("t") == token:
        session.pop(PENDING, None)
    if wants_json():
        return jsonify(status="canceled")
    return redirect(
        url_for("phoneverify.verify", next=next_path)
        if next_path
        else url_for("phoneverify.verify")
    )


def talk() -> Any:
    """Bridge the user's phone to the support line (providers that can); verifies nothing."""
    st, identity, _, _, vid = _action()
    if not st.provider.can_bridge:
        abort(404)
    st.flow.bridge(vid, user_id=identity.id, session=_session_ref(), ip=_client_ip())
    message = "We are calling your phone to connect you with our support team."
    if wants_json():
        return jsonify(status="bridging", message=message)
    return render_template(
        "phoneverify/message.html", title="Calling you", error=None, info=message, retry=False
    )


# -- the simulated phone ------------------------------------------------------------------------


def _dev() -> Any:
    from .providers.dev import DevPhone

    provider = state().provider
    if not isinstance(provider, DevPhone):
        abort(404)
    return provider


DEV_NOTICE = "_phoneverify_dev_notice"


def dev_phone() -> Any:
    phone = _dev()
    calls = phone.listing()
    if wants_json():
        return jsonify(calls=calls)
    notice = session.pop(DEV_NOTICE, None)
    return render_template("phoneverify/dev_phone.html", calls=list(reversed(calls)), notice=notice)


def dev_phone_action(call_id: str, action: str) -> Any:
    """Answer, hang up or press keys on the simulated phone; reported to the flow as
    call events, the way a provider that relays keypresses would."""
    st = state()
    phone = _dev()
    validate_csrf()
    data = _input()
    if action == "keys":
        event = phone.press(call_id, str(data.get("digits", "")))
    elif action == "answer":
        event = phone.answer(call_id)
    elif action == "hangup":
        event = phone.hang_up(call_id)
    else:
        abort(404)
    current = st.flow.apply_event(event)
    v = st.store.by_call_id(phone.name, event.call_id)
    body: dict[str, Any] = {"state": phone.state_of(call_id)}
    if action == "keys":
        accepted = current and v is not None and v.status == "verified"
        if accepted:
            phone.ended(call_id)
            body["state"] = "ended"
            message = "Thank you. You are confirmed."
        elif v is None or not current:
            message = "This call is no longer current: answer the newest call."
        elif v.is_open:
            left = st.flow.attempts_left(v)
            message = f"That PIN is not right. {left} {'try' if left == 1 else 'tries'} left."
        else:
            message = "That PIN is not right. " + st.flow.message(v)
        body.update(accepted=accepted, message=message)
        if v is not None:
            body["attempts_left"] = st.flow.attempts_left(v)
    if wants_json():
        return jsonify(body)
    if body.get("message"):
        session[DEV_NOTICE] = body["message"]
    return redirect(url_for("phoneverify.dev_phone"))


# -- provider callbacks -------------------------------------------------------------------------


def provider_callback(provider: str, token: str) -> Any:
    """Call events a provider posts. The signed address is the proof (no CSRF)."""
    st = state()
    if provider != st.provider.name:
        abort(404)
    st.tokens.check_callback(token, provider)
    limit = st.settings.callback_max_bytes
    if request.content_length is not None and request.content_length > limit:
        abort(413)
    body = request.stream.read(limit + 1)
    if len(body) > limit:
        abort(413)
    try:
        events = st.provider.parse_callback(body, request.content_type or "")
    except ProviderError as e:
        log.warning("phoneverify: callback refused: %s", e.detail or e.message)
        return Response("bad event", status=400, mimetype="text/plain")
    for event in events:
        st.flow.apply_event(event)
    reply, mimetype = st.provider.callback_reply()
    return Response(reply, mimetype=mimetype)
