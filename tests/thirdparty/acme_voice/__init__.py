"""Acme Voice: a provider written only against flask-phoneverify's public provider API.

The (fictional) vendor's REST API, JSON both ways, bearer-token auth:

- ``POST {url}/v1/calls`` ``{"to": "+1...", "style": "keypad"|"spoken", "code": "..."}``
  answers 201 ``{"id": "..."}``; 400 ``{"error": "invalid_number"}`` for a number it
  cannot call; 401 for a wrong token.
- ``GET {url}/v1/calls/{id}`` answers ``{"state": "ringing"|"answered"|"completed"|
  "declined"|"busy", "keys": "..."|null}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

from flask_phoneverify.providers import (
    CallReport,
    CallRequest,
    CallState,
    CallTicket,
    Outcome,
    PlacedCall,
    Provider,
    ProviderConfigError,
    ProviderProtocolError,
    ProviderRejected,
    ProviderUnavailable,
    Setting,
    Style,
    check_url,
    timeout_setting,
)

STATES = {
    "ringing": CallState.RINGING,
    "answered": CallState.ANSWERED,
    "completed": CallState.ENDED,
    "declined": CallState.ENDED,
    "busy": CallState.ENDED,
}
REASONS = {"declined": "The call was declined.", "busy": "The line was busy."}


class AcmeVoice(Provider):
    name = "acmevoice"
    styles = frozenset({Style.KEYPAD, Style.SPOKEN})
    preferred_style = Style.KEYPAD
    settings = (
        Setting(
            "PHONEVERIFY_ACMEVOICE_URL", "https://api.acme.example", "str", "Acme Voice API base."
        ),
        Setting(
            "PHONEVERIFY_ACMEVOICE_TOKEN", None, "str", "API token.", required=True, secret=True
        ),
        timeout_setting("acmevoice", "Acme Voice"),
    )

    def __init__(
        self, options: Mapping[str, Any], *, style: Style, pin_length: int, app_name: str
    ) -> None:
        super().__init__(options, style=style, pin_length=pin_length, app_name=app_name)
        self.url = check_url(self.option_key("url"), options["url"], "https://api.acme.example")
        self._token = str(options["token"])
        self.client = httpx.Client(
            timeout=float(options["timeout"]),
            headers={"Authorization": f"Bearer {self._token}"},
            trust_env=False,
        )

    def place_call(self, request: CallRequest) -> CallTicket:
        body = {"to": request.number, "style": request.style.value, "code": request.pin}
        answer = self._send("POST", "/v1/calls", json=body)
        call_id = answer.get("id")
        if not isinstance(call_id, str) or not call_id:
            raise ProviderProtocolError(detail="Acme Voice: a call without an id")
        return CallTicket(reference=call_id)

    def call_status(self, call: PlacedCall) -> CallReport:
        answer = self._send("GET", f"/v1/calls/{call.reference}")
        state = answer.get("state")
        if state not in STATES:
            raise ProviderProtocolError(detail=f"Acme Voice: unknown state {str(state)[:20]!r}")
        keys = answer.get("keys")
        if state in REASONS:
            return CallReport(call=STATES[state], outcome=Outcome.FAILED, reason=REASONS[state])
        if call.style is Style.KEYPAD and isinstance(keys, str) and keys:
            return CallReport(call=STATES[state], digits=keys)
        if call.style is Style.SPOKEN and state in ("answered", "completed"):
            return CallReport(call=STATES[state], outcome=Outcome.CONFIRMED)
        return CallReport(call=STATES[state])

    def _send(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        where = f"{method} {path.split('/')[2]}"
        try:
            r = self.client.request(method, self.url + path, **kw)
        except httpx.TimeoutException as e:
            raise ProviderUnavailable(detail=f"Acme Voice: timeout on {where}") from e
        except httpx.HTTPError as e:
            raise ProviderUnavailable(detail=f"Acme Voice: {type(e).__name__}") from e
        if r.status_code >= 500:
            raise ProviderUnavailable(detail=f"Acme Voice: HTTP {r.status_code} on {where}")
        if r.status_code in (401, 403):
            raise ProviderConfigError(detail=f"Acme Voice: HTTP {r.status_code} on {where}")
        try:
            answer = json.loads(r.content)
        except (ValueError, RecursionError) as e:  # RecursionError: absurdly nested JSON
            raise ProviderProtocolError(detail=f"Acme Voice: not JSON on {where}") from e
        if not isinstance(answer, dict):
            raise ProviderProtocolError(detail=f"Acme Voice: not an object on {where}")
        if r.status_code == 400 and answer.get("error") == "invalid_number":
            raise ProviderRejected(detail="Acme Voice: invalid_number")
        if r.status_code not in (200, 201):
            raise ProviderProtocolError(detail=f"Acme Voice: HTTP {r.status_code} on {where}")
        return answer

    def close(self) -> None:
        self.client.close()
