"""The OpenAPI 3.1 document of the JSON API, built from this module's dict.

It is served at ``<prefix>/openapi.json`` when ``PHONEVERIFY_OPENAPI`` is on (off by
default) and published with the docs. The tests validate real answers of every
endpoint, errors included, against it, and fail when a blueprint route is missing
from it, so the document cannot drift from the views.

Paths are relative to the blueprint's prefix (the document's one ``servers`` entry).
Enumerations of statuses, call states and styles come from the code's own enums.
"""

from __future__ import annotations

import copy
from typing import Any

from .models import Status
from .providers.base import CallState, Style

__all__ = ["document", "ERROR_CODES", "VERSION"]

VERSION = "3.1.0"

#: every ``error`` code a JSON answer of the extension can carry
ERROR_CODES = (
    "bad_request",
    "csrf",
    "wrong_pin",
    "wrong_code",
    "login_required",
    "phone_verification_required",
    "forbidden",
    "not_found",
    "not_open",
    "payload_too_large",
    "locked",
    "rate_limited",
    "provider_error",
    "unavailable",
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _resp(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _obj(required: list[str], **props: Any) -> dict[str, Any]:
    """A closed object: an answer with a field the document does not name fails the tests."""
    return {
        "type": "object",
        "required": required,
        "properties": props,
        "additionalProperties": False,
    }


_STR = {"type": "string"}
_TIME = {"type": "string", "format": "date-time", "description": "ISO 8601, UTC (`...Z`)."}
_STATUS = {
    "type": "string",
    "enum": [s.value for s in Status],
    "description": "The verification's status; it only moves forward from `calling`.",
}
_CALL = {
    "type": "string",
    "enum": [c.value for c in CallState],
    "description": "The call's own progress, never a status.",
}
_STYLE = {"type": "string", "enum": [s.value for s in Style]}

_SCHEMAS: dict[str, Any] = {
    "Error": _obj(
        ["error", "message"],
        error={"type": "string", "enum": list(ERROR_CODES), "description": "Machine-readable."},
        message={"type": "string", "description": "For people; safe to show."},
        attempts_left={"type": "integer", "minimum": 0, "description": "After a wrong PIN."},
        retryable={"type": "boolean", "description": "Whether trying again may help."},
        verify_url={"type": "string", "description": "The gate's 401: where to verify."},
    ),
    "Verify": _obj(
        ["csrf_token", "phone", "style", "enrolment"],
        csrf_token={"type": "string", "description": "Send it as `X-CSRFToken` on POSTs."},
        phone={
            "type": ["string", "null"],
            "description": "The number on file, masked (`+1******0123`); null when none.",
        },
        style=_STYLE,
        enrolment={"type": "boolean", "description": "The user may type a number to enrol."},
        verified={
            "type": "boolean",
            "description": "The phone is confirmed for this session (fresh for `max_age` when "
            "given): no new call is needed.",
        },
    ),
    "Started": _obj(
        ["token", "status", "call", "style", "expires_at"],
        token={"type": "string", "description": "The pending token: send it to every step."},
        status=_STATUS,
        call=_CALL,
        style=_STYLE,
        pin={
            "type": "string",
            "pattern": "^[0-9]+$",
            "description": "Keypad style only: the PIN to key in on the phone.",
        },
        expires_at=_TIME,
    ),
    "Status": _obj(
        ["status", "call", "attempts_left", "expires_at", "message", "can_bridge"],
        status=_STATUS,
        call=_CALL,
        attempts_left={"type": "integer", "minimum": 0},
        expires_at=_TIME,
        message={"type": "string", "description": "What the page says now."},
        can_bridge={"type": "boolean", "description": "`POST /talk` is offered."},
    ),
    "Confirmed": _obj(
        ["status", "next"],
        status={"const": Status.VERIFIED.value},
        next={"type": "string", "description": "A same-site path to go to."},
    ),
    "Canceled": _obj(["status"], status={"const": Status.CANCELED.value}),
    "Bridging": _obj(["status", "message"], status={"const": "bridging"}, message=_STR),
    "DevCall": _obj(
        ["id", "number", "style", "text", "state", "pin"],
        id=_STR,
        number={"type": "string", "description": "Masked."},
        style=_STYLE,
        text={"type": "string", "description": "What the call says."},
        state={"type": "string", "enum": ["ringing", "answered", "ended"]},
        pin={"type": ["string", "null"], "description": "Spoken calls only."},
        digit={
            "type": ["string", "null"],
            "description": "Spoken calls: the key that plays the code.",
        },
        heard={"type": "boolean", "description": "Spoken calls: the code was played."},
    ),
    "DevCalls": _obj(["calls"], calls={"type": "array", "items": _ref("DevCall")}),
    "DevKeys": _obj(
        ["accepted", "message", "state"],
        accepted={"type": "boolean", "description": "The keys were the PIN."},
        message=_STR,
        attempts_left={"type": "integer", "minimum": 0},
        state={"type": "string", "enum": ["ringing", "answered", "ended"]},
    ),
    "DevState": _obj(["state"], state={"type": "string", "enum": ["ringing", "answered", "ended"]}),
    "StartRequest": {
        "type": "object",
        "properties": {
            "phone": {"type": "string", "description": "Enrolment only: the number to call."},
            "next": {"type": "string", "description": "Where to go once verified."},
        },
    },
    "TokenRequest": {
        "type": "object",
        "properties": {
            "token": {
                "type": "string",
                "description": "The pending token; the session's when omitted.",
            },
        },
    },
    "ConfirmRequest": {
        "type": "object",
        "properties": {
            "token": {"type": "string"},
            "pin": {
                "type": ["string", "integer"],
                "description": "Spoken style: the PIN the call spoke. Keypad: omitted.",
            },
            "next": {"type": "string"},
            "remember": {
                "type": ["boolean", "string"],
                "description": "Remember this device (`PHONEVERIFY_REMEMBER_DAYS`); the form "
                "sends `1`.",
            },
        },
    },
    "RecoveryCodesInfo": _obj(
        ["left", "size", "can_generate", "csrf_token"],
        left={"type": "integer", "minimum": 0, "description": "Unused codes of the user."},
        size={"type": "integer", "minimum": 1, "description": "Codes in a new set."},
        can_generate={
            "type": "boolean",
            "description": "This session's phone confirmation is at most 10 minutes old.",
        },
        csrf_token=_STR,
    ),
    "RecoveryCodes": _obj(
        ["codes"],
        codes={
            "type": "array",
            "items": {"type": "string"},
            "description": "The new set, shown once; the old set stops working.",
        },
    ),
    "RecoverInfo": _obj(
        ["csrf_token", "recovered"],
        csrf_token=_STR,
        recovered={"type": "boolean", "description": "A recovery code opened this session."},
    ),
    "Recovered": _obj(
        ["status", "recovery", "codes_left", "message", "next"],
        status={"const": Status.VERIFIED.value},
        recovery={"const": True},
        codes_left={"type": "integer", "minimum": 0},
        message=_STR,
        next={"type": "string", "description": "A same-site path to go to."},
    ),
    "RecoverRequest": {
        "type": "object",
        "properties": {"code": {"type": "string"}, "next": {"type": "string"}},
    },
    "NewNumberRequest": {
        "type": "object",
        "properties": {"phone": {"type": "string"}, "next": {"type": "string"}},
    },
    "KeysRequest": {
        "type": "object",
        "required": ["digits"],
        "properties": {"digits": {"type": "string", "pattern": "^[0-9]*#?$"}},
    },
}

_RETRY_AFTER = {
    "description": "Seconds until a new call may be placed (`rate_limited` only).",
    "schema": {"type": "integer", "minimum": 1},
}


def _error(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    answer = _json(_ref("Error"), description)
    if retry_after:
        answer["headers"] = {"Retry-After": {"$ref": "#/components/headers/Retry-After"}}
    return answer


_RESPONSES: dict[str, Any] = {
    "BadRequest": _error(
        "`bad_request` (a malformed, tampered or expired token, a bad number or body), "
        "`csrf` (a missing or stale CSRF token), `wrong_pin` (with `attempts_left`) or "
        "`wrong_code` (a recovery code)."
    ),
    "Unauthorized": _error(
        "`login_required`: nobody is logged in. With Flask-Login, its `unauthorized()` "
        "answers instead (a redirect to the login view, when one is set). "
        "`phone_verification_required` (with `verify_url`): a fresh phone confirmation "
        "is needed first."
    ),
    "Forbidden": _error("`forbidden`: another user's verification, or another session's."),
    "NotFound": _error("`not_found`: nothing of this user's by that name, or not offered."),
    "Conflict": _error("`not_open`: the verification is closed, or already used."),
    "TooMany": _error(
        "`locked` (too many wrong PINs) or `rate_limited` (too many calls; `Retry-After`).",
        retry_after=True,
    ),
    "BadGateway": _error("`provider_error`: the provider refused the call (`retryable` false)."),
    "Unavailable": _error(
        "`provider_error` (the provider is not answering, `retryable` true) or "
        "`unavailable` (the database)."
    ),
}

_POST_SECURITY: list[dict[str, list[str]]] = [{"session": [], "csrf": []}]
_GET_SECURITY: list[dict[str, list[str]]] = [{"session": []}]


def _body(name: str, required: bool = False) -> dict[str, Any]:
    schema = _ref(name)
    return {
        "required": required,
        "content": {
            "application/json": {"schema": schema},
            "application/x-www-form-urlencoded": {"schema": schema},
        },
    }


def _op(
    summary: str,
    answer: dict[str, Any],
    *errors: str,
    post: bool = False,
    body: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": answer}
    codes = {
        "BadRequest": "400",
        "Unauthorized": "401",
        "Forbidden": "403",
        "NotFound": "404",
        "Conflict": "409",
        "TooMany": "429",
        "BadGateway": "502",
        "Unavailable": "503",
    }
    for name in errors:
        responses[codes[name]] = _resp(name)
    op: dict[str, Any] = {
        "summary": summary,
        "security": _POST_SECURITY if post else _GET_SECURITY,
        "responses": responses,
    }
    if body is not None:
        op["requestBody"] = _body(body)
    op.update(extra)
    return op


_STEP = ("BadRequest", "Unauthorized", "Forbidden", "Conflict", "TooMany", "Unavailable")

_PATHS: dict[str, Any] = {
    "/": {
        "get": _op(
            "The verify page; JSON: a CSRF token and what the page would offer.",
            _json(_ref("Verify"), "What the verify page offers."),
            "Unauthorized",
            operationId="verify",
        )
    },
    "/start": {
        "post": _op(
            "Place a call to the number on file (or, enrolling, the one typed).",
            _json(_ref("Started"), "The call is placed."),
            "BadRequest",
            "Unauthorized",
            "TooMany",
            "BadGateway",
            "Unavailable",
            post=True,
            body="StartRequest",
            operationId="start",
        )
    },
    "/wait": {
        "get": {
            "summary": "The wait page (HTML only): follows the call, shows or asks the PIN.",
            "operationId": "wait",
            "security": _GET_SECURITY,
            "responses": {
                "200": {"description": "The page.", "content": {"text/html": {}}},
                "302": {"description": "No verification in progress: to the verify page."},
            },
        }
    },
    "/status": {
        "get": _op(
            "The verification now (polled by the wait page).",
            _json(_ref("Status"), "The verification's state."),
            "BadRequest",
            "Unauthorized",
            "Forbidden",
            "Unavailable",
            parameters=[
                {
                    "name": "token",
                    "in": "query",
                    "required": False,
                    "description": "The pending token; the session's when omitted.",
                    "schema": {"type": "string"},
                }
            ],
            operationId="status",
        )
    },
    "/confirm": {
        "post": _op(
            "Spoken: check the typed PIN. Keypad and delivery: take the phone's word. "
            "Succeeds once; the session is then verified.",
            _json(_ref("Confirmed"), "Verified."),
            *_STEP[:5],
            "BadGateway",
            "Unavailable",
            post=True,
            body="ConfirmRequest",
            operationId="confirm",
        )
    },
    "/resend": {
        "post": _op(
            "A new call and a new PIN for the same verification.",
            _json(_ref("Started"), "The new call is placed."),
            *_STEP[:5],
            "BadGateway",
            "Unavailable",
            post=True,
            body="TokenRequest",
            operationId="resend",
        )
    },
    "/cancel": {
        "post": _op(
            "Cancel an open verification.",
            _json(_ref("Canceled"), "Canceled."),
            *_STEP,
            post=True,
            body="TokenRequest",
            operationId="cancel",
        )
    },
    "/talk": {
        "post": _op(
            "After a failed or locked verification, bridge the phone to the support line "
            "(providers that can); it verifies nothing.",
            _json(_ref("Bridging"), "The bridging call is placed."),
            "BadRequest",
            "Unauthorized",
            "Forbidden",
            "NotFound",
            "TooMany",
            "BadGateway",
            "Unavailable",
            post=True,
            body="TokenRequest",
            operationId="talk",
        )
    },
    "/dev/phone": {
        "get": _op(
            "The simulated phone (the `dev` provider only): the user's newest calls.",
            _json(_ref("DevCalls"), "The calls, oldest first."),
            "NotFound",
            parameters=[
                {
                    "name": "number",
                    "in": "query",
                    "required": False,
                    "description": "Only the calls to this E.164 number.",
                    "schema": {"type": "string"},
                }
            ],
            operationId="devPhone",
        )
    },
}

_PATHS["/recovery-codes"] = {
    "get": _op(
        "How many recovery codes are left, and whether a new set may be generated.",
        _json(_ref("RecoveryCodesInfo"), "The user's recovery codes."),
        "Unauthorized",
        "NotFound",
        "Unavailable",
        operationId="recoveryCodes",
    ),
    "post": _op(
        "Generate a new set (needs a phone confirmation at most 10 minutes old).",
        _json(_ref("RecoveryCodes"), "The new codes."),
        "BadRequest",
        "Unauthorized",
        "NotFound",
        "Unavailable",
        post=True,
        operationId="generateRecoveryCodes",
    ),
}
_PATHS["/recover"] = {
    "get": _op(
        "The recovery code page; JSON: a CSRF token and whether a code opened this session.",
        _json(_ref("RecoverInfo"), "The recovery state."),
        "Unauthorized",
        "NotFound",
        operationId="recoverPage",
    ),
    "post": _op(
        "Use a recovery code: the gate opens (never for `max_age=` views).",
        _json(_ref("Recovered"), "The code was taken."),
        "BadRequest",
        "Unauthorized",
        "NotFound",
        "TooMany",
        "Unavailable",
        post=True,
        body="RecoverRequest",
        operationId="recover",
    ),
}
_PATHS["/new-number"] = {
    "get": {
        "summary": "The new-number form (HTML only), for a session whose phone was confirmed.",
        "operationId": "newNumberPage",
        "security": _GET_SECURITY,
        "responses": {
            "200": {"description": "The page.", "content": {"text/html": {}}},
            "302": {"description": "Not confirmed: to the verify page."},
            "404": _resp("NotFound"),
        },
    },
    "post": _op(
        "Call a new number; the app's `phone_saver` learns it once the call is confirmed.",
        _json(_ref("Started"), "The call is placed."),
        "BadRequest",
        "Unauthorized",
        "NotFound",
        "TooMany",
        "BadGateway",
        "Unavailable",
        post=True,
        body="NewNumberRequest",
        operationId="newNumber",
    ),
}

_CALL_ID = {"name": "call_id", "in": "path", "required": True, "schema": {"type": "string"}}
for _action, _schema, _summary in (
    ("keys", "DevKeys", "Key digits in on the simulated phone's call."),
    ("answer", "DevState", "Answer the simulated call."),
    ("hangup", "DevState", "Hang up (or decline) the simulated call."),
):
    _PATHS[f"/dev/phone/{{call_id}}/{_action}"] = {
        "post": _op(
            _summary,
            _json(_ref(_schema), "What the phone shows now."),
            "BadRequest",
            "NotFound",
            "Unavailable",
            post=True,
            body="KeysRequest" if _action == "keys" else None,
            parameters=[_CALL_ID],
            operationId=f"devPhone{_action.capitalize()}",
        )
    }

_PATHS["/callback/{provider}/{token}"] = {
    "post": {
        "summary": "Call events a provider posts, in its own format, to a signed address "
        "(`flask phoneverify callback-url <provider>`); no session, no CSRF.",
        "operationId": "callback",
        "security": [],
        "parameters": [
            {"name": "provider", "in": "path", "required": True, "schema": _STR},
            {"name": "token", "in": "path", "required": True, "schema": _STR},
        ],
        "requestBody": {
            "required": True,
            "content": {"text/xml": {}, "application/x-www-form-urlencoded": {}},
        },
        "responses": {
            "200": {
                "description": "Taken; the body is what the provider expects back.",
                "content": {"text/plain": {}, "text/xml": {}},
            },
            "400": {"description": "An event the provider's format does not allow."},
            "403": {"description": "The address is not signed for this provider."},
            "404": {"description": "Not the configured provider."},
            "413": {"description": "Larger than PHONEVERIFY_CALLBACK_MAX_BYTES."},
        },
    }
}
_PATHS["/openapi.json"] = {
    "get": {
        "summary": "This document (when PHONEVERIFY_OPENAPI is on).",
        "operationId": "openapi",
        "security": [],
        "responses": {
            "200": {"description": "The document.", "content": {"application/json": {}}},
            "404": _resp("NotFound"),
        },
    }
}

_DOCUMENT: dict[str, Any] = {
    "openapi": VERSION,
    "info": {
        "title": "flask-phoneverify JSON API",
        "version": "",
        "description": (
            "Phone-call confirmation as a second factor. Every view answers JSON when the "
            "request sends JSON or ranks `application/json` above `text/html` in `Accept`; "
            "otherwise it answers HTML (pages and redirects). The user is the app's "
            "logged-in user (its session cookie). POSTs need the CSRF token from `GET /` "
            "in the `X-CSRFToken` header (or the form field `csrf_token`). Errors are "
            "`{error, message}`, plus `attempts_left`, `retryable` or `verify_url` where "
            "they apply; 429 answers carry `Retry-After`."
        ),
        "license": {"name": "BSD-3-Clause", "identifier": "BSD-3-Clause"},
    },
    "servers": [{"url": "/phoneverify", "description": "PHONEVERIFY_URL_PREFIX"}],
    "paths": _PATHS,
    "components": {
        "schemas": _SCHEMAS,
        "responses": _RESPONSES,
        "headers": {"Retry-After": _RETRY_AFTER},
        "securitySchemes": {
            "session": {
                "type": "apiKey",
                "in": "cookie",
                "name": "session",
                "description": "The app's session cookie (Flask's SESSION_COOKIE_NAME).",
            },
            "csrf": {
                "type": "apiKey",
                "in": "header",
                "name": "X-CSRFToken",
                "description": "The `csrf_token` of `GET /`, on every POST.",
            },
        },
    },
}


def document(prefix: str = "/phoneverify", *, cookie: str = "session") -> dict[str, Any]:
    """A fresh copy of the document for a blueprint mounted at ``prefix`` (the server URL)
    and a session cookie named ``cookie``, so callers may change it freely."""
    from . import __version__

    doc = copy.deepcopy(_DOCUMENT)
    doc["info"]["version"] = __version__
    doc["servers"][0]["url"] = prefix.rstrip("/") or "/"
    doc["components"]["securitySchemes"]["session"]["name"] = cookie
    return doc
