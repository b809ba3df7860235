"""The built-in simulated phone: the default provider, for development, tests and
the example app. It works offline.

Calls it "places" ring on a page at ``<prefix>/dev/phone`` (and its JSON form),
where a developer answers, hears the spoken PIN or keys digits in. Key presses
come back to the flow as call events, the way a keypad-relaying provider
reports them. It keeps its calls in memory, per app and process.

It is refused outside debug or testing mode unless PHONEVERIFY_DEV_PHONE is set,
so it cannot end up in production by accident.
"""

from __future__ import annotations

import secrets
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import BadInput
from ..phone import mask
from .base import (
    CallEvent,
    CallReport,
    CallRequest,
    CallState,
    CallTicket,
    Outcome,
    PlacedCall,
    Provider,
    Style,
)

__all__ = ["DevPhone", "DevCall"]

MAX_CALLS = 50


@dataclass
class DevCall:
    id: str
    call_id: str
    number: str
    style: Style
    text: str
    pin: str  # spoken style only shows it; keypad-style calls never say it
    state: CallState = CallState.RINGING

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "number": mask(self.number),
            "style": self.style.value,
            "text": self.text,
            "state": self.state.value,
            "pin": self.pin if self.style is Style.SPOKEN else None,
        }


def call_text(style: Style, app_name: str, pin: str) -> str:
    if style is Style.SPOKEN:
        spoken = " ".join(pin)
        return f"This is {app_name}. Your PIN is {spoken}. Again: {spoken}. Goodbye."
    return f"This is {app_name}. To confirm it is you, key in the PIN shown on your screen."


class DevPhone(Provider):
    name = "dev"
    styles = frozenset({Style.KEYPAD, Style.SPOKEN})
    preferred_style = Style.KEYPAD
    simulated = True

    def __init__(
        self, options: Mapping[str, Any], *, style: Style, pin_length: int, app_name: str
    ) -> None:
        super().__init__(options, style=style, pin_length=pin_length, app_name=app_name)
        self.calls: list[DevCall] = []
        self._lock = threading.Lock()
        #: where a developer answers; the extension sets it once the blueprint is known
        self.phone_url = "/phoneverify/dev/phone"

    def place_call(self, request: CallRequest) -> CallTicket:
        call = DevCall(
            id=secrets.token_hex(6),
            call_id=request.call_id,
            number=request.number,
            style=request.style,
            text=call_text(request.style, request.app_name, request.pin),
            pin=request.pin,
        )
        with self._lock:
            for earlier in self.calls:  # a new call to a number replaces the one ringing there
                if earlier.number == call.number and earlier.state is not CallState.ENDED:
                    earlier.state = CallState.ENDED
            self.calls.append(call)
            del self.calls[:-MAX_CALLS]
        print(
            f" * flask-phoneverify: simulated call to {mask(request.number)}; "
            f"answer it at {self.phone_url}",
            file=sys.stderr,
            flush=True,
        )
        return CallTicket(reference=call.id, call=CallState.RINGING)

    def call_status(self, call: PlacedCall) -> CallReport:
        found = self._find(call.reference or "")
        if found is None:
            return CallReport(outcome=Outcome.FAILED, reason="The call was lost. Please try again.")
        return CallReport(call=found.state)

    def listing(self) -> list[dict[str, Any]]:
        with self._lock:
            return [c.public() for c in self.calls]

    def answer(self, call_id: str) -> CallEvent:
        call = self._ringing(call_id)
        call.state = CallState.ANSWERED
        outcome = Outcome.CONFIRMED if call.style is Style.SPOKEN else Outcome.PENDING
        return CallEvent(call.call_id, CallReport(call=call.state, outcome=outcome))

    def hang_up(self, call_id: str) -> CallEvent:
        call = self._ringing(call_id)
        was = call.state
        call.state = CallState.ENDED
        if was is CallState.RINGING or call.style is not Style.SPOKEN:
            reason = (
                "The call was declined."
                if was is CallState.RINGING
                else "The call ended before the PIN was entered."
            )
            return CallEvent(
                call.call_id, CallReport(call=call.state, outcome=Outcome.FAILED, reason=reason)
            )
        return CallEvent(call.call_id, CallReport(call=call.state))

    def press(self, call_id: str, digits: str) -> CallEvent:
        """Keys pressed on the simulated keypad, relayed for the flow to check."""
        call = self._ringing(call_id)
        if call.style is not Style.KEYPAD:
            raise BadInput("This call does not ask for keys: it speaks the PIN.")
        digits = (digits or "").strip().rstrip("#")
        if not digits or not digits.isdigit() or len(digits) > 32:
            raise BadInput("Key in digits only.")
        call.state = CallState.ANSWERED
        return CallEvent(call.call_id, CallReport(call=call.state, digits=digits))

    def state_of(self, call_id: str) -> str | None:
        call = self._find(call_id)
        return call.state.value if call else None

    def ended(self, call_id: str) -> None:
        call = self._find(call_id)
        if call is not None:
            call.state = CallState.ENDED

    def _find(self, call_id: str) -> DevCall | None:
        with self._lock:
            return next((c for c in self.calls if c.id == call_id), None)

    def _ringing(self, call_id: str) -> DevCall:
        call = self._find(call_id)
        if call is None:
            raise BadInput("There is no such call on the simulated phone.")
        if call.state is CallState.ENDED:
            raise BadInput("This call has ended.")
        return call
