"""A loopback Xverify Phone Confirm service (``seeds/phone-confirm-rest.txt``).

It reads requests the way the documents describe them: GET only, the paths
``/phoneconfirm/placecall/`` and ``/phoneconfirm/verifycode/`` with their
trailing slash, lowercase query parameters (``phone``, ``type``,
``country_code``, ``code``, ``redial_count``, ``redial_interval``,
``call_place_time``, ``apikey``, ``domain``; ``transaction_number`` for
verifycode), ``type`` json or xml. It answers as Xverify does: one wrapper
object (``{"phoneconfirm": {...}}`` or ``<phoneconfirm>...</phoneconfirm>``)
with ``error``, ``status``, ``message``, ``duration``, ``responsecode`` and
``transaction_number``; HTTP 503 for a domain that is not trusted.

``fail`` scripts a failure per endpoint (``fail["placecall"] = "credit"``);
see :data:`FAILURES`. Run alone it plays the person who answers: it prints the
code each call speaks (``python -m tests.servers.xverify --port 8301``).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import xml.etree.ElementTree as ET
from typing import Any

from werkzeug.wrappers import Request, Response

PLACECALL = "/phoneconfirm/placecall/"
VERIFYCODE = "/phoneconfirm/verifycode/"

PLACECALL_PARAMS = {
    "phone",
    "type",
    "country_code",
    "code",
    "redial_count",
    "redial_interval",
    "call_place_time",
    "apikey",
    "domain",
}
PLACECALL_REQUIRED = {"phone", "type", "country_code", "code", "apikey", "domain"}
VERIFYCODE_PARAMS = {"transaction_number", "code", "apikey", "domain", "type"}
VERIFYCODE_REQUIRED = VERIFYCODE_PARAMS

#: scripted failures: name -> (error, status, message) in the vendor's answer
ANSWERS: dict[str, tuple[int | str, str, str]] = {
    "number": (0, "invalid", "Invalid phone number"),
    "key": (1, "invalid", "Invalid API Key"),
    "credit": ("5", "invalid", "Your account has insufficient credits"),
    "refused": ("7", "invalid", "Request could not be processed"),
    "invalid": (0, "invalid", "Code does not match"),
}
#: failures that are not vendor answers but broken transports or bodies
FAILURES = set(ANSWERS) | {
    "domain",
    "echo_key",
    "server",
    "not_json",
    "wrong_shape",
    "no_wrapper",
    "no_transaction",
    "slow",
    "hostile_xml",
    "bad_status",
}


class XverifyServer:
    """The WSGI app; ``api_key``/``domain`` None accept any (the command-line form)."""

    def __init__(
        self,
        *,
        api_key: str | None = "test-api-key",
        domain: str | None = "example.com",
        wrapper: str = "phoneconfirm",
        announce: bool = False,
    ) -> None:
        self.api_key = api_key
        self.domain = domain
        self.announce = announce
        self._lock = threading.Lock()
        self.reset(wrapper)

    def reset(self, wrapper: str = "phoneconfirm") -> None:
        """Forget calls, requests and scripted behaviours (one server serves many tests)."""
        self.wrapper = wrapper
        self.error_as_string = False
        self.slow_seconds = 2.0
        self.fail: dict[str, str] = {}
        self.requests: list[dict[str, Any]] = []
        self.calls: dict[str, dict[str, str]] = {}

    # -- what tests read ------------------------------------------------------------------
    def last(self, path: str) -> dict[str, Any]:
        return [r for r in self.requests if r["path"] == path][-1]

    def spoken_code(self) -> str:
        """The code the last call spoke (what the person heard)."""
        return list(self.calls.values())[-1]["code"]

    # -- WSGI -----------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        response = self.handle(request)
        return response(environ, start_response)

    def handle(self, request: Request) -> Response:
        pairs = list(request.args.items(multi=True))
        with self._lock:
            self.requests.append(
                {
                    "method": request.method,
                    "path": request.path,
                    "query": pairs,
                    "raw_query": request.query_string.decode("latin-1"),
                    "body": request.get_data(),
                }
            )
        if request.path not in (PLACECALL, VERIFYCODE):
            return Response(
                "<html><body>404 Not Found</body></html>", 404, content_type="text/html"
            )
        if request.method != "GET":
            return Response("Method Not Allowed", 405, headers={"Allow": "GET"})
        endpoint = "placecall" if request.path == PLACECALL else "verifycode"
        kind = "xml" if request.args.get("type") == "xml" else "json"
        behaviour = self.fail.get(endpoint)
        if behaviour is not None and behaviour not in FAILURES:
            raise ValueError(f"unknown scripted failure {behaviour!r}")
        if behaviour == "slow":  # answers too late, and changes nothing meanwhile
            time.sleep(self.slow_seconds)
            return self._answer(kind, 0, "valid", "Call placed", transaction="1")
        if behaviour == "server":
            return Response("Internal Server Error", 500, content_type="text/plain")
        # an untrusted domain is answered before anything else is read
        domain = request.args.get("domain")
        if behaviour == "domain" or (self.domain is not None and domain != self.domain):
            return Response("<h1>Service Unavailable</h1>", 503, content_type="text/html")
        problem = self._check(pairs, endpoint)
        if problem:
            return self._answer(kind, 1, "invalid", problem)
        if self.api_key is not None and request.args["apikey"] != self.api_key:
            return self._answer(kind, *ANSWERS["key"])
        if behaviour in ANSWERS:
            return self._answer(kind, *ANSWERS[behaviour])
        if behaviour == "echo_key":
            return self._answer(kind, "KEY", "invalid", f"API key {request.args['apikey']} expired")
        if behaviour in ("not_json", "wrong_shape", "no_wrapper", "hostile_xml", "bad_status"):
            return self._broken(behaviour)
        args = dict(pairs)
        if endpoint == "placecall":
            return self._placecall(kind, args, behaviour)
        return self._verifycode(kind, args)

    def _check(self, pairs: list[tuple[str, str]], endpoint: str) -> str | None:
        allowed = PLACECALL_PARAMS if endpoint == "placecall" else VERIFYCODE_PARAMS
        required = PLACECALL_REQUIRED if endpoint == "placecall" else VERIFYCODE_REQUIRED
        names = [name for name, _ in pairs]
        for name in names:
            if name not in allowed:
                return f"Unknown parameter {name}"
        if len(set(names)) != len(names):
            return "Repeated parameter"
        missing = sorted(required - set(names))
        if missing:
            return f"Missing required parameter {missing[0]}"
        args = dict(pairs)
        if args["type"] not in ("json", "xml"):
            return "type must be json or xml"
        digits = ["code", "phone", "country_code", "redial_count", "redial_interval"]
        for name in digits:
            if name in args and not args[name].isdigit():
                return f"{name} must be digits"
        if endpoint == "placecall" and not 1 <= len(args["country_code"]) <= 3:
            return "country_code is not a calling code"
        return None

    def _placecall(self, kind: str, args: dict[str, str], behaviour: str | None) -> Response:
        if len(args["phone"]) < 4 or len(args["phone"]) > 14:
            return self._answer(kind, *ANSWERS["number"])
        number = secrets.randbelow(10**9) + 10**9
        transaction = str(number)
        self.calls[transaction] = {
            "code": args["code"],
            "phone": args["phone"],
            "country_code": args["country_code"],
        }
        if self.announce:
            spoken = " ".join(args["code"])
            print(
                f"Xverify: calling +{args['country_code']} ***{args['phone'][-4:]} "
                f"(transaction {transaction}); the call says: your code is {spoken}",
                flush=True,
            )
        if behaviour == "no_transaction":
            return self._answer(kind, 0, "valid", "Call placed", transaction=None)
        return self._answer(kind, 0, "valid", "Call placed", transaction=transaction)

    def _verifycode(self, kind: str, args: dict[str, str]) -> Response:
        call = self.calls.get(args["transaction_number"])
        if call is None:
            return self._answer(kind, 0, "invalid", "Invalid transaction number")
        if call["code"] != args["code"]:
            return self._answer(kind, *ANSWERS["invalid"])
        return self._answer(
            kind, 0, "valid", "Code verified", transaction=args["transaction_number"]
        )

    def _answer(
        self,
        kind: str,
        error: int | str,
        status: str,
        message: str,
        *,
        transaction: str | None = None,
    ) -> Response:
        fields: dict[str, Any] = {
            "error": str(error) if self.error_as_string else error,
            "status": status,
            "message": message,
            "duration": "0.0123",
            "responsecode": 1 if status == "valid" else 0,
        }
        if transaction is not None:
            fields["transaction_number"] = transaction
        if kind == "xml":
            root = ET.Element(self.wrapper)
            for key, value in fields.items():
                ET.SubElement(root, key).text = str(value)
            return Response(
                ET.tostring(root, encoding="utf-8", xml_declaration=True),
                content_type="text/xml; charset=utf-8",
            )
        return Response(json.dumps({self.wrapper: fields}), content_type="application/json")

    def _broken(self, behaviour: str) -> Response:
        if behaviour == "not_json":
            return Response(
                "<html><body>Welcome to Xverify</body></html>", content_type="text/html"
            )
        if behaviour == "wrong_shape":
            return Response(json.dumps(["valid"]), content_type="application/json")
        if behaviour == "no_wrapper":
            return Response(json.dumps({self.wrapper: "valid"}), content_type="application/json")
        if behaviour == "bad_status":
            body = {self.wrapper: {"error": 0, "status": "maybe", "message": ""}}
            return Response(json.dumps(body), content_type="application/json")
        hostile = (
            '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY e "boom">]>'
            f"<{self.wrapper}><error>0</error><status>valid</status><message>&e;</message>"
            f"<transaction_number>1</transaction_number></{self.wrapper}>"
        )
        return Response(hostile, content_type="text/xml")


def main() -> None:
    from tests.loopback import run_cli

    run_cli(
        XverifyServer(api_key=None, domain=None, announce=True),
        "Xverify Phone Confirm on loopback (prints the code each call speaks)",
        8301,
    )


if __name__ == "__main__":
    main()
