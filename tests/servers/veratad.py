"""A loopback Veratad PhoneMatch5.0.Dialer (``seeds/veratad-phonematch-dialer.txt``).

It reads requests as the documents describe them: ``POST
/process/comprehensive/gateway`` with a JSON body of exactly ``user``, ``pass``,
``service`` ("PhoneMatch5.0.Dialer"), ``reference``, ``options.outofband``
(``message``, ``do_not_send_to_types``) and ``target.phone``; ``POST
/process/continue`` with exactly ``{"dialer": {"return": "status"}, "token"}``.
It answers with Veratad's envelope (``meta``, ``result`` with ``action``,
``detail`` and ``issues``, ``continuations.outofband.template.token`` while
PENDING) or the error envelope ``{"error": {"code", "message", "detail"}}``.

The line: a number listed in ``line_types`` has that type (others are
mobile); a type in ``do_not_send_to_types`` gets FAIL SUPPRESSED SENDING CODE;
a number that is not 10 digits (or 8-15 with a country code) gets FAIL DATA
CHECK FAILED. A sent call is PENDING for ``pending_polls`` status requests and
``pending_seconds``, then PASS. ``fail`` scripts the rest per endpoint
(``fail["gateway"] = "send_failed"``); see :data:`FAILURES`.

Run alone it plays the person who answers: each call is PENDING for a few
seconds, then delivered (``python -m tests.servers.veratad --port 8302``).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from typing import Any

from werkzeug.wrappers import Request, Response

GATEWAY = "/process/comprehensive/gateway"
CONTINUE = "/process/continue"
SERVICE = "PhoneMatch5.0.Dialer"
LINE_TYPES = {"voip", "mobile", "landline"}

FAILURES = {
    "gateway": {
        "suppressed",
        "send_failed",
        "invalid",
        "auth",
        "echo_password",
        "refused",
        "bad_phone_error",
        "server",
        "http401",
        "not_json",
        "wrong_shape",
        "no_result",
        "no_token",
        "slow",
    },
    "continue": {"undelivered", "auth", "server", "not_json", "no_result", "slow"},
}

ERRORS = {
    "auth": ("1001", "Invalid Credentials", "The user or password is not valid"),
    "refused": ("2002", "Transaction could not be processed", "Please try again later"),
    "bad_phone_error": ("3003", "Invalid target", "target.phone is not a phone"),
    "token": ("4004", "Invalid token", "The token has expired or does not exist"),
    "request": ("1000", "Invalid request", "{}"),
}


class VeratadServer:
    """The WSGI app; ``user``/``password`` None accept any (the command-line form)."""

    def __init__(
        self,
        *,
        user: str | None = "api@example.com",
        password: str | None = "s3cret-pass",
        announce: bool = False,
        pending_polls: int = 1,
        pending_seconds: float = 0.0,
    ) -> None:
        self.user = user
        self.password = password
        self.announce = announce
        self._lock = threading.Lock()
        self.reset(pending_polls=pending_polls, pending_seconds=pending_seconds)

    def reset(self, *, pending_polls: int = 1, pending_seconds: float = 0.0) -> None:
        """Forget calls, requests and scripted behaviours (one server serves many tests)."""
        self.pending_polls = pending_polls
        self.pending_seconds = pending_seconds
        self.slow_seconds = 2.0
        self.rotate_tokens = False  # PENDING answers carry a new token; the old one dies
        self.line_types: dict[str, str] = {}
        self.fail: dict[str, str] = {}
        self.requests: list[dict[str, Any]] = []
        self.calls: dict[str, dict[str, Any]] = {}

    def last(self, path: str) -> dict[str, Any]:
        return [r for r in self.requests if r["path"] == path][-1]

    # -- WSGI -------------------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self.handle(Request(environ))(environ, start_response)

    def handle(self, request: Request) -> Response:
        raw = request.get_data()
        with self._lock:
            self.requests.append(
                {
                    "method": request.method,
                    "path": request.path,
                    "query": request.query_string,
                    "content_type": request.headers.get("Content-Type", ""),
                    "raw": raw,
                }
            )
        if request.path not in (GATEWAY, CONTINUE):
            return Response("<html><body>Not Found</body></html>", 404, content_type="text/html")
        if request.method != "POST":
            return Response("Method Not Allowed", 405, headers={"Allow": "POST"})
        endpoint = "gateway" if request.path == GATEWAY else "continue"
        behaviour = self.fail.get(endpoint)
        if behaviour is not None and behaviour not in FAILURES[endpoint]:
            raise ValueError(f"unknown scripted failure {behaviour!r}")
        if behaviour == "slow":  # answers too late, and changes nothing meanwhile
            time.sleep(self.slow_seconds)
            return self._json({"error": {"code": "0", "message": "Too late", "detail": ""}})
        if behaviour == "server":
            return Response("<h1>502 Bad Gateway</h1>", 502, content_type="text/html")
        if behaviour == "http401":
            return Response("Unauthorized", 401, content_type="text/plain")
        if behaviour == "not_json":
            return Response("<html><body>Maintenance</body></html>", content_type="text/html")
        if behaviour == "wrong_shape":
            return self._json(["PENDING"])
        if not request.headers.get("Content-Type", "").startswith("application/json"):
            return self._error("request", detail="Content-Type must be application/json")
        try:
            body = json.loads(raw)
        except ValueError:
            return self._error("request", detail="The body is not JSON")
        if endpoint == "gateway":
            return self._gateway(body, behaviour)
        return self._continue(body, behaviour)

    # -- the two requests -------------------------------------------------------------------------
    def _gateway(self, body: Any, behaviour: str | None) -> Response:
        problem = _check_gateway(body)
        if problem:
            return self._error("request", detail=problem)
        if (self.user is not None and body["user"] != self.user) or (
            self.password is not None and body["pass"] != self.password
        ):
            return self._error("auth")
        if behaviour in ERRORS:
            return self._error(behaviour)
        if behaviour == "echo_password":  # a careless service quoting the request back
            said = "Login refused for this account; the request said " + "." * 139
            return self._error("auth", detail=said + " pass=" + body["pass"])
        reference = body["reference"]
        phone = body["target"]["phone"]
        excluded = body["options"]["outofband"]["do_not_send_to_types"]
        line = self.line_types.get(phone, "mobile")
        if behaviour == "invalid" or not _valid_phone(phone):
            return self._result(reference, "FAIL", "DATA CHECK FAILED")
        if behaviour == "suppressed" or line in excluded:
            return self._result(reference, "FAIL", "SUPPRESSED SENDING CODE")
        if behaviour == "send_failed":
            return self._result(reference, "FAIL", "FAILED TO SEND TO NUMBER")
        if behaviour == "no_result":
            return self._json({"meta": self._meta(reference)})
        token = secrets.token_hex(16)
        self.calls[token] = {
            "reference": reference,
            "phone": phone,
            "polls": 0,
            "started": time.monotonic(),
            "message": body["options"]["outofband"]["message"],
        }
        if self.announce:
            print(
                f"Veratad: calling ***{phone[-4:]}, playing {self.calls[token]['message']!r}; "
                f"it will be delivered in {self.pending_seconds:g} s",
                flush=True,
            )
        pending = "TRANSACTION REQUIRES FURTHER ATTENTION"
        if behaviour == "no_token":
            return self._result(reference, "PENDING", pending)
        return self._result(reference, "PENDING", pending, token=token)

    def _continue(self, body: Any, behaviour: str | None) -> Response:
        if not (
            isinstance(body, dict)
            and set(body) == {"dialer", "token"}
            and body["dialer"] == {"return": "status"}
            and isinstance(body["token"], str)
        ):
            return self._error(
                "request", detail='expected {"dialer": {"return": "status"}, "token"}'
            )
        if behaviour == "auth":
            return self._error("auth")
        call = self.calls.get(body["token"])
        if call is None:
            return self._error("token")
        if behaviour == "no_result":
            return self._json({"meta": self._meta(call["reference"])})
        call["polls"] += 1
        waited = time.monotonic() - call["started"]
        if call["polls"] <= self.pending_polls or waited < self.pending_seconds:
            token = body["token"]
            if self.rotate_tokens:
                del self.calls[token]
                token = secrets.token_hex(16)
                self.calls[token] = call
            return self._result(
                call["reference"], "PENDING", "MORE INFORMATION IS REQUIRED", token=token
            )
        if behaviour == "undelivered":
            return self._result(call["reference"], "FAIL", "MESSAGE COULD NOT BE DELIVERED")
        if self.announce:
            print(f"Veratad: the message to ***{call['phone'][-4:]} was delivered", flush=True)
        return self._result(call["reference"], "PASS", "ALL CHECKS PASSED")

    # -- answers ----------------------------------------------------------------------------------
    def _meta(self, reference: str) -> dict[str, Any]:
        return {
            "confirmation": secrets.randbelow(10**8),
            "reference": reference,
            "service": SERVICE,
            "timestamp": time.strftime("%Y-%m-%d %H:%M:%S"),
            "company": "Example Co",
            "user": self.user or "api@example.com",
        }

    def _result(
        self, reference: str, action: str, detail: str, *, token: str | None = None
    ) -> Response:
        body: dict[str, Any] = {
            "output": {"outofband": {}},
            "meta": self._meta(reference),
            "result": {"action": action, "detail": detail, "issues": []},
        }
        if token is not None:
            body["continuations"] = {
                "outofband": {
                    "url": CONTINUE,
                    "template": {"token": token},
                    "instructions": "Submit the template to the url to get the status.",
                }
            }
        return self._json(body)

    def _error(self, kind: str, *, detail: str | None = None) -> Response:
        code, message, default = ERRORS[kind]
        return self._json(
            {"error": {"code": code, "message": message, "detail": detail or default}}
        )

    @staticmethod
    def _json(body: Any, status: int = 200) -> Response:
        return Response(json.dumps(body), status, content_type="application/json")


def _check_gateway(body: Any) -> str | None:
    """What is wrong with a gateway body, against the documented shape."""
    if not isinstance(body, dict):
        return "The body is not a JSON object"
    expected = {"user", "pass", "service", "reference", "options", "target"}
    if set(body) != expected:
        return f"Expected exactly the keys {sorted(expected)}, got {sorted(body)}"
    if body["service"] != SERVICE:
        return f"Unknown service {body['service']!r}"
    for key in ("user", "pass", "reference"):
        if not isinstance(body[key], str) or not body[key]:
            return f"{key} must be a non-empty string"
    options = body["options"]
    if not isinstance(options, dict) or set(options) != {"outofband"}:
        return "options must hold exactly outofband"
    outofband = options["outofband"]
    if not isinstance(outofband, dict) or set(outofband) != {"message", "do_not_send_to_types"}:
        return "options.outofband must hold exactly message and do_not_send_to_types"
    if not isinstance(outofband["message"], str) or not outofband["message"]:
        return "options.outofband.message must name an audio file"
    types = outofband["do_not_send_to_types"]
    if not isinstance(types, list) or not all(t in LINE_TYPES for t in types):
        return "do_not_send_to_types must be a list of voip, mobile, landline"
    target = body["target"]
    if (
        not isinstance(target, dict)
        or set(target) != {"phone"}
        or not isinstance(target["phone"], str)
    ):
        return "target must hold exactly phone, a string"
    return None


def _valid_phone(phone: str) -> bool:
    """10 digits (North America, no country code), or 8-15 digits with a country code."""
    if not phone.isdigit():
        return False
    if len(phone) == 10:
        return phone[0] in "23456789"
    return 8 <= len(phone) <= 15 and not phone.startswith("1")


def main() -> None:
    from tests.loopback import run_cli

    run_cli(
        VeratadServer(
            user=None, password=None, announce=True, pending_polls=0, pending_seconds=5.0
        ),
        "Veratad PhoneMatch5.0.Dialer on loopback (PENDING for 5 s, then delivered)",
        8302,
    )


if __name__ == "__main__":
    main()
