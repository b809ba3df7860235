"""Provider callbacks: requests a vendor makes to a signed address of ours.

The provider gets the whole request (:class:`~flask_phoneverify.providers.base.CallbackRequest`:
the address as the vendor requested it, seen through PHONEVERIFY_EXTERNAL_URL, the
headers and the body), so it can check a vendor's own signature; the flow applies
the events it reads, one flow step each; the provider then builds the answer from
what each event did (a vendor that expects call instructions back gets them).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from flask import Response, abort, request, url_for

from ..errors import Forbidden, ProviderError
from ..providers.base import CallbackRequest, EventResult
from ..state import AppState, state

__all__ = ["provider_callback", "callback_address", "seen_url"]

log = logging.getLogger("flask_phoneverify")


def callback_address(st: AppState, provider: str) -> str:
    """The signed address ``provider`` posts its call events to (needs a request context)."""
    token = st.tokens.make_callback(provider)
    base: str | None = st.settings.external_url
    if base:
        return base.rstrip("/") + url_for("phoneverify.callback", provider=provider, token=token)
    return url_for("phoneverify.callback", provider=provider, token=token, _external=True)


def seen_url(st: AppState) -> str:
    """This request's address as the vendor requested it: on PHONEVERIFY_EXTERNAL_URL when
    set (as :func:`callback_address` built it), query included, byte for byte."""
    base: str | None = st.settings.external_url
    if not base:
        return request.url
    path = quote(request.script_root + request.path, safe="/:@!$&'()*+,;=-._~")
    query = request.query_string.decode("latin-1")
    return base.rstrip("/") + path + (f"?{query}" if query else "")


def provider_callback(provider: str, token: str) -> Any:
    """Call events a provider posts. The signed address is the proof (no CSRF), and the
    vendor's own signature too for providers whose vendor signs."""
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
    seen = CallbackRequest(
        url=seen_url(st),
        method=request.method,
        headers=dict(request.headers),
        body=body,
        content_type=request.content_type or "",
    )
    try:
        events = st.provider.parse_callback(seen)
    except Forbidden as e:
        log.warning("phoneverify: callback refused: %s", e.message)
        raise
    except ProviderError as e:
        log.warning("phoneverify: callback refused: %s", e.detail or e.message)
        return Response("bad event", status=400, mimetype="text/plain")
    results = []
    for event in events:
        applied = st.flow.apply_event(event)
        v = applied.verification
        result = EventResult(
            current=applied.current,
            status=None if v is None else v.status,
            attempts_left=None if v is None else st.flow.attempts_left(v),
        )
        results.append((event, result))
    reply = st.provider.callback_reply(seen, results)
    return Response(reply.body, status=reply.status, mimetype=reply.content_type)
