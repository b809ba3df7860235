"""Provider callbacks: call events a vendor posts to a signed address of ours."""

from __future__ import annotations

import logging
from typing import Any

from flask import Response, abort, request, url_for

from ..errors import ProviderError
from ..state import AppState, state

__all__ = ["provider_callback", "callback_address"]

log = logging.getLogger("flask_phoneverify")


def callback_address(st: AppState, provider: str) -> str:
    """The signed address ``provider`` posts its call events to (needs a request context)."""
    token = st.tokens.make_callback(provider)
    base: str | None = st.settings.external_url
    if base:
        return base.rstrip("/") + url_for("phoneverify.callback", provider=provider, token=token)
    return url_for("phoneverify.callback", provider=provider, token=token, _external=True)


def provider_callback(provider: str, token: str) -> Any:
    """Call events a provider posts. The signed address is the proof (no CSRF)."""
    st = state()
    found = st.provider_named(provider)  # any provider PHONEVERIFY_PROVIDER lists
    if found is None:
        abort(404)
    st.tokens.check_callback(token, provider)
    limit = st.settings.callback_max_bytes
    if request.content_length is not None and request.content_length > limit:
        abort(413)
    body = request.stream.read(limit + 1)
    if len(body) > limit:
        abort(413)
    try:
        events = found.parse_callback(body, request.content_type or "")
    except ProviderError as e:
        log.warning("phoneverify: callback refused: %s", e.detail or e.message)
        return Response("bad event", status=400, mimetype="text/plain")
    for event in events:
        st.flow.apply_event(event, provider=found.name)
    reply, mimetype = found.callback_reply()
    return Response(reply, mimetype=mimetype)
