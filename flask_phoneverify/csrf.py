"""CSRF for the extension's POSTs, with Flask-WTF's conventions.

The token travels as the form field ``csrf_token`` or the ``X-CSRFToken``
header; pages carry it in ``<meta name="csrf-token">`` and JSON clients get it
from ``GET <prefix>/``. When the app runs Flask-WTF's CSRFProtect, its tokens
are used and checked, so one token serves the app and the extension; the
provider callback route is exempted from it (its signed address is its proof).
"""

from __future__ import annotations

import hmac
import secrets

from flask import Flask, current_app, request, session
from itsdangerous import BadData

from .errors import BadInput
from .i18n import gettext
from .state import state

__all__ = ["generate_csrf", "validate_csrf", "exempt_from_flask_wtf", "CALLBACK_VIEW"]

SESSION_KEY = "_phoneverify_csrf"
MAX_AGE = 12 * 3600
HEADERS = ("X-CSRFToken", "X-CSRF-Token")
CALLBACK_VIEW = "flask_phoneverify.views.callbacks.provider_callback"


class CSRFFailed(BadInput):
    code = "csrf"


def _flask_wtf_in_charge() -> bool:
    return "csrf" in current_app.extensions


def generate_csrf() -> str:
    """This session's CSRF token (Flask-WTF's when its CSRFProtect runs), for forms and JSON."""
    if _flask_wtf_in_charge():
        from flask_wtf.csrf import generate_csrf as wtf_generate

        token: str = wtf_generate()
        return token
    raw = session.get(SESSION_KEY)
    if not isinstance(raw, str):
        raw = secrets.token_hex(20)
        session[SESSION_KEY] = raw
    return state().tokens.csrf.dumps(raw)


#: bodies that can carry the form field; any other body (JSON) is never parsed as a form
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _failed() -> CSRFFailed:
    return CSRFFailed(
        gettext(
            "This page has expired (missing or stale security token). "
            "Please reload it and try again."
        )
    )


def validate_csrf() -> None:
    """Raise CSRFFailed unless the request carries this session's token."""
    token = request.form.get("csrf_token") if request.mimetype in FORM_TYPES else None
    if not token:
        token = next((request.headers[h] for h in HEADERS if request.headers.get(h)), None)
    if not token:
        raise _failed()
    if _flask_wtf_in_charge():
        from flask_wtf.csrf import ValidationError
        from flask_wtf.csrf import validate_csrf as wtf_validate

        try:
            wtf_validate(token)
        except ValidationError:
            raise _failed() from None
        return
    raw = session.get(SESSION_KEY)
    try:
        signed = state().tokens.csrf.loads(token, max_age=MAX_AGE)
    except BadData:
        raise _failed() from None
    if not (isinstance(raw, str) and isinstance(signed, str) and hmac.compare_digest(raw, signed)):
        raise _failed()


def exempt_from_flask_wtf(app: Flask) -> None:
    """Exempt the callback route from CSRFProtect, whether it was set up before or after us."""

    def exempt() -> bool:
        csrf = app.extensions.get("csrf")
        if csrf is not None and hasattr(csrf, "exempt"):
            csrf.exempt(CALLBACK_VIEW)
            return True
        return False

    if exempt():
        return
    done = {"flag": False}

    @app.before_request
    def _exempt_once() -> None:
        if not done["flag"]:
            done["flag"] = True
            exempt()  # CSRFProtect set up after us runs its hook after this one
