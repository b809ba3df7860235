"""The package's own loopback Acme Voice, acting the contract's scenarios."""

from __future__ import annotations

import json
import secrets
import threading
import time
from typing import Any

from werkzeug.wrappers import Request, Response

from flask_phoneverify.testing import Scenario

TOKEN = "acme-token-5f3e1c0b9a"


class AcmeServer:
    scenarios = frozenset(Scenario)

    def __init__(self) -> None:
        self.url = ""
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.place: Scenario = Scenario.ANSWER
        self.status: Scenario = Scenario.ANSWER
        self.calls: dict[str, dict[str, Any]] = {}

    # -- the ContractVendor protocol -------------------------------------------------------
    def act(self, scenario: Scenario, *, on: str = "place") -> None:
        with self.lock:
            if on == "status":
                self.status = scenario
            else:
                self.place, self.status = scenario, Scenario.ANSWER

    def answer(self, keys: str | None) -> str | None:
        with self.lock:
            call = list(self.calls.values())[-1]
            if call["outcome"] in ("declined", "busy"):
                call["state"] = call["outcome"]
                return None
            call["state"] = "answered"
            if call["style"] == "keypad":
                call["keys"] = keys
                return None
            return str(call["code"])

    def events_to(self, url: str) -> None:
        """Acme Voice is polled; it posts nothing."""

    # -- WSGI ---------------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self.handle(Request(environ))(environ, start_response)

    def handle(self, request: Request) -> Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return Response("", 401)
        placing = request.method == "POST" and request.path == "/v1/calls"
        scenario = self.place if placing else self.status
        broken = self._broken(scenario)
        if broken is not None:
            return broken
        if placing:
            body = json.loads(request.get_data())
            if scenario is Scenario.BAD_NUMBER or not str(body.get("to", "")).startswith("+"):
                return _json({"error": "invalid_number"}, 400)
            call_id = secrets.token_hex(8)
            outcome = {Scenario.DECLINE: "declined", Scenario.BUSY: "busy"}.get(scenario, "")
            with self.lock:
                self.calls[call_id] = {
                    "style": body["style"],
                    "code": body["code"],
                    "state": "ringing",
                    "keys": None,
                    "outcome": outcome,
                }
            return _json({"id": call_id}, 201)
        if request.method == "GET" and request.path.startswith("/v1/calls/"):
            call = self.calls.get(request.path.rsplit("/", 1)[1])
            if call is None:
                return _json({"error": "not_found"}, 404)
            return _json({"state": call["state"], "keys": call["keys"]})
        return Response("", 404)

    @staticmethod
    def _broken(scenario: Scenario) -> Response | None:
        if scenario is Scenario.SERVER_ERROR:
            return Response("oops", 503)
        if scenario is Scenario.GARBAGE:
            return Response("<html>maintenance</html>", 200, content_type="text/html")
        if scenario is Scenario.HOSTILE:
            return Response("[" * 100_000 + "]" * 100_000, 200, content_type="application/json")
        if scenario is Scenario.HANG:
            time.sleep(1.5)
            return _json({"id": "late"}, 201)
        return None


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status, content_type="application/json")
