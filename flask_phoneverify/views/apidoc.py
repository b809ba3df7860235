"""The OpenAPI document's route, and JSON for the HTTP errors views raise with ``abort``.

The document is served only when PHONEVERIFY_OPENAPI is on. A JSON client that meets
an ``abort`` (nobody logged in, a call that is not theirs, a body too large) gets the
same ``{error, message}`` shape as every other error, instead of werkzeug's HTML page.
"""

from __future__ import annotations

from typing import Any

from flask import abort, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from ..gate import wants_json
from ..i18n import N_, translate
from ..openapi import document
from ..state import state

__all__ = ["openapi_json", "http_error"]

#: the ``error`` code and message of each HTTP status views raise with ``abort``
HTTP_ERRORS = {
    401: ("login_required", N_("Please log in to continue.")),
    404: ("not_found", N_("There is nothing here.")),
    413: ("payload_too_large", N_("The request body is too large.")),
}


def openapi_json() -> Any:
    """The JSON API's OpenAPI document, for this mount point; 404 unless turned on."""
    settings = state().settings
    if not settings.openapi:
        abort(404)
    prefix = request.script_root + settings.url_prefix.rstrip("/")
    return jsonify(document(prefix, cookie=current_app.config["SESSION_COOKIE_NAME"]))


def http_error(e: HTTPException) -> Any:
    """``{error, message}`` for a JSON client; werkzeug's own answer for a browser (and for
    an ``abort`` that carries a whole response, such as Flask-Login's redirect)."""
    if e.code is None or e.response is not None or not wants_json():
        return e
    code, message = HTTP_ERRORS.get(e.code, ("bad_request", e.description or N_("Bad request.")))
    message = translate(message)
    response = jsonify(error=code, message=message)
    response.status_code = e.code
    return response
