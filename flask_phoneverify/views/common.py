"""What every view shares: the user, the request body, the pending verification in
the session, and turning the flow's errors into pages or JSON.

Views translate between HTTP and the flow; none of them touches the store or a
provider's internals. Nothing here answers 500 for bad input, a provider failure
or a database failure.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import secrets
from datetime import UTC, datetime
from typing import Any

from flask import (
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
from werkzeug.wrappers import Response as WerkzeugResponse

from ..csrf import generate_csrf
from ..errors import BadInput, FlowError, Forbidden, ProviderError
from ..flow import session_ref
from ..gate import (
    NONCE,
    PENDING,
    Identity,
    anonymous,
    current_identity,
    never_cache,
    wants_json,
)
from ..i18n import gettext, translate
from ..i18n import template_context as i18n_context
from ..redirects import safe_next
from ..state import AppState, state
from ..tokens import READ_GRACE

log = logging.getLogger("flask_phoneverify")


def template_context() -> dict[str, Any]:
    """What every template of the blueprint receives (see docs/templates.md)."""
    st = state()
    return {
        "phoneverify_base": st.settings.base_template or "phoneverify/_layout.html",
        "phoneverify_csrf": generate_csrf,
        "phoneverify_app_name": st.provider.app_name,
        "phoneverify_dev": any(p.simulated for p in st.providers or (st.provider,)),
        **i18n_context(),
    }


def sender() -> Any:
    """The real app object, the sender of signals."""
    return current_app._get_current_object()  # type: ignore[attr-defined]


#: headers every page and answer of the extension carries, unless the app set its own:
#: pages hold tokens in their forms, so they are never framed and never leak a referrer
PAGE_HEADERS = {
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
}


def no_store(response: Response) -> Response:
    """Never cache an answer of the extension; never frame its pages."""
    never_cache(response)
    headers = response.headers
    present = {name.lower() for name, _ in headers.items()}  # one pass, not one per header
    for name, value in PAGE_HEADERS.items():
        if name.lower() not in present:
            headers.add(name, value)
    return response


def iso(ts: float) -> str:
    """UNIX seconds as ISO 8601 UTC, as the JSON API writes times."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def body() -> dict[str, Any]:
    """The request's fields: a JSON object, or the form."""
    if request.is_json:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise BadInput(gettext("The request body is not a JSON object."))
        return data
    return request.form.to_dict()


def identity() -> Identity:
    """The logged-in user, or the login system's answer for an anonymous one."""
    found = current_identity()
    if found is None:
        # Flask-Login's unauthorized() answers (redirect or 401); else a plain 401.
        response = anonymous()
        abort(response if response is not None else 401)
    return found


def this_session() -> str:
    """The reference of this browser session that a verification is bound to."""
    nonce = session.get(NONCE)
    if not isinstance(nonce, str):
        nonce = secrets.token_urlsafe(16)
        session[NONCE] = nonce
    return session_ref(nonce)


def pending() -> dict[str, Any]:
    """The session's pending verification: token, next page and (keypad) PIN."""
    data = session.get(PENDING)
    return data if isinstance(data, dict) else {}


def token_of(data: dict[str, Any] | None = None) -> str:
    """The pending token: in the body, the query, or the session."""
    token = (data or {}).get("token") or request.args.get("token") or pending().get("t")
    if not token:
        raise BadInput(gettext("No verification is in progress. Please start again."))
    return str(token)


def verification_id(st: AppState, who: Identity, token: str, *, reading: bool = False) -> str:
    """The verification a pending token names, when it is this user's. ``reading`` (GET
    status and wait only): the token still works READ_GRACE seconds past the lifetime, so
    an open page can show "expired"; every POST keeps the lifetime."""
    max_age = st.settings.ttl + (READ_GRACE if reading else 0)
    vid, uid = st.tokens.read_pending(token, max_age=max_age)
    if uid != who.id:
        raise Forbidden(gettext("This verification belongs to someone else."))
    return vid


def next_path(value: Any = None) -> str:
    """A safe same-site path to go to: ``value``, the session's, or the default."""
    default: str = state().settings.default_next
    return safe_next(value) or safe_next(pending().get("n")) or default


def client_ip() -> str | None:
    """The client address the per-IP limit counts: IPv6 clients by their network of
    PHONEVERIFY_IPV6_PREFIX bits, since one host can rotate through a whole /64."""
    return client_network(request.remote_addr, state().settings.ipv6_prefix)


@functools.lru_cache(maxsize=4096)
def client_network(address: str | None, ipv6_prefix: int) -> str | None:
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d is an IPv4 client
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/{ipv6_prefix}", strict=False))
    return str(ip)


# -- one-shot notices (Post/Redirect/Get) --------------------------------------------------

NOTICE = "_phoneverify_notice"
#: the longest typed number a notice carries back to the form
TYPED_MAX = 40


def set_notice(message: str, kind: str = "error", **extra: Any) -> None:
    """Keep a message for the page the browser is redirected to, shown there once (a form
    POST never renders a page itself, so a reload never sends it again)."""
    session[NOTICE] = {"m": message, "k": kind, **extra}


def take_notice() -> dict[str, Any]:
    """The notice left for this page ({} for none), removed as it is shown."""
    data = session.pop(NOTICE, None)
    if not isinstance(data, dict) or not isinstance(data.get("m"), str):
        return {}
    return data


def see_other(location: str) -> WerkzeugResponse:
    """303: the browser follows with a GET, whatever the POST was."""
    return redirect(location, code=303)


def form_post() -> bool:
    """A browser's form POST, answered with a redirect (errors included), never a page."""
    return (
        request.method == "POST" and not wants_json() and request.endpoint != "phoneverify.callback"
    )


def back_url() -> str:
    """Where a form POST goes back to: the simulated phone for its actions, the wait page
    while a verification is pending, else the verify page (keeping ``next``)."""
    endpoint = request.endpoint or ""
    if endpoint == "phoneverify.dev_phone_action":
        return url_for("phoneverify.dev_phone")
    held = pending()
    if endpoint != "phoneverify.start" and held.get("t"):
        return url_for("phoneverify.wait")
    next_to = safe_next(request.form.get("next")) or safe_next(held.get("n"))
    return url_for("phoneverify.verify", next=next_to) if next_to else url_for("phoneverify.verify")


def back_with_error(message: str, *, code: str, retry_after: int | None = None) -> WerkzeugResponse:
    """A refused form POST: 303 back to where the person was, the error kept for one
    showing there (with its code, the wait before a retry and, for *Call me*, the number
    typed), so a reload never repeats the POST."""
    extra: dict[str, Any] = {"c": code}
    if retry_after:
        extra["r"] = int(retry_after)
    typed = request.form.get("phone")
    if request.endpoint == "phoneverify.start" and typed:
        extra["p"] = typed[:TYPED_MAX]  # the person's own typing, shown back in their field
    set_notice(message, "error", **extra)
    response = see_other(back_url())
    if retry_after:
        response.headers["Retry-After"] = str(retry_after)
    return response


# -- errors --------------------------------------------------------------------------------


def flow_error(e: FlowError) -> Any:
    """A refused request as ``{error, message}`` JSON, or the message page."""
    message = translate(e.message)  # made in the request's language, or marked with N_
    payload: dict[str, Any] = {"error": e.code, "message": message}
    payload.update({k: v for k, v in e.extra.items() if k != "pending"})
    headers = {"Retry-After": str(e.retry_after)} if e.retry_after else {}
    if wants_json():
        return jsonify(payload), e.status, headers
    if form_post() and e.code != "csrf":  # a CSRF failure is answered here: no session trust
        return back_with_error(message, code=e.code, retry_after=e.retry_after)
    return (
        render_template(
            "phoneverify/message.html",
            title=gettext("Phone confirmation"),
            error=message,
            retry=e.status in (409, 429) or e.code in ("bad_request", "csrf"),
        ),
        e.status,
        headers,
    )


def provider_error(e: ProviderError) -> Any:
    """A provider failure: 503 when trying again may help, 502 otherwise."""
    status = 503 if e.retryable else 502
    message = translate(e.message)  # made in the request's language, or marked with N_
    if wants_json():
        return jsonify(error="provider_error", message=message, retryable=e.retryable), status
    if form_post():
        return back_with_error(message, code="provider_error")
    return (
        render_template(
            "phoneverify/message.html",
            title=gettext("The call did not go through"),
            error=message,
            retry=True,
        ),
        status,
    )


def store_error(e: SQLAlchemyError) -> Any:
    """A database failure: 503, logged without its details."""
    log.error("phoneverify: database error: %s", type(e).__name__, exc_info=current_app.debug)
    message = gettext("Phone confirmation is unavailable for a moment. Please try again shortly.")
    if wants_json():
        return jsonify(error="unavailable", message=message, retryable=True), 503
    if form_post():
        return back_with_error(message, code="unavailable")
    return render_template(
        "phoneverify/message.html", title=gettext("Unavailable"), error=message, retry=True
    ), 503
