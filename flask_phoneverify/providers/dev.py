"""The built-in simulated phone: the default provider, for development, tests and
the example app. It works offline.

Calls it "places" ring on a page at ``<prefix>/dev/phone`` (and its JSON form),
where a developer answers, hears the spoken PIN or keys digits in. Key presses
come back to the flow as call events, the way a keypad-relaying provider
reports them, so the flow never needs to poll it.

Its calls live in the extension's database (``phoneverify_dev_calls``), so every
worker process lists, answers and keys the same calls. A keypad call's PIN is not
kept at all; a spoken call's PIN is kept only sealed under a key derived from
SECRET_KEY (see :mod:`flask_phoneverify.sealing`), to show it on the phone's page.
Unlike the vendor providers it therefore knows the store: the database is the
simulated phone network.

It is refused outside debug or testing mode unless PHONEVERIFY_DEV_PHONE is set,
so it cannot end up in production by accident.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from ..errors import BadInput, NotFound, ProviderUnavailable
from ..i18n import N_, for_locale, gettext
from ..phone import mask
from ..sealing import Sealer
from ..store import Store, Tx
from .base import (
    CallEvent,
    CallReport,
    CallRequest,
    CallState,
    CallTicket,
    Outcome,
    Provider,
    Style,
)

__all__ = ["DevPhone", "DevCall", "call_text", "call_state"]

#: calls the simulated phone keeps, and the newest it lists
MAX_CALLS = 500
LISTED = 50


@dataclass(frozen=True)
class DevCall:
    """One call as the simulated phone shows it."""

    id: str
    call_id: str
    number: str
    style: Style
    text: str
    state: CallState
    pin: str | None  # spoken calls only; a keypad call never says it
    owner: str | None = None  # the user whose verification placed it

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "number": mask(self.number),
            "style": self.style.value,
            "text": self.text,
            "state": self.state.value,
            "pin": self.pin,
        }


def call_text(style: Style, app_name: str, pin: str | None, locale: str | None = None) -> str:
    """What the call says, in ``locale`` (a shipped language; English by default)."""
    speech = for_locale(locale)
    if style is Style.SPOKEN:
        spoken = " ".join(pin or "?")
        return speech.gettext("This is %(app)s. Your PIN is %(pin)s. Again: %(pin)s. Goodbye.") % {
            "app": app_name,
            "pin": spoken,
        }
    return speech.gettext(
        "This is %(app)s. To confirm it is you, key in the PIN shown on your screen."
    ) % {"app": app_name}


def call_state(status: str | None, progress: str | None, *, superseded: bool = False) -> CallState:
    """How the simulated phone shows a call, from its verification's status and progress."""
    if superseded or status != "calling" or progress in (None, CallState.ENDED):
        return CallState.ENDED
    if progress in (CallState.QUEUED, CallState.RINGING):
        return CallState.RINGING
    return CallState.ANSWERED


class DevPhone(Provider):
    name = "dev"
    styles = frozenset({Style.KEYPAD, Style.SPOKEN})
    preferred_style = Style.KEYPAD
    simulated = True
    polled = False  # every change reaches the flow as an event from the phone's page
    speaks = None  # its calls are read on a page: any shipped language

    def __init__(
        self, options: Mapping[str, Any], *, style: Style, pin_length: int, app_name: str
    ) -> None:
        super().__init__(options, style=style, pin_length=pin_length, app_name=app_name)
        self._store: Store | None = None
        self._sealer: Sealer | None = None
        #: where a developer answers; the extension sets it once the blueprint is known
        self.phone_url = "/phoneverify/dev/phone"

    def attach(self, store: Store, sealer: Sealer, clock: Any) -> None:
        """Give the phone its network: the extension's database, a sealer and a clock."""
        self._store, self._sealer, self._clock = store, sealer, clock

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the simulated phone is used before init_app attached it")
        return self._store

    @property
    def sealer(self) -> Sealer:
        assert self._sealer is not None
        return self._sealer

    in_store = True  # its network is the extension's database

    def ring(self, tx: Tx, request: CallRequest, *, owner: str | None) -> CallTicket:
        """The call's row on the simulated phone, in the flow's transaction."""
        ref = secrets.token_hex(6)
        tx.dev_ring(
            {
                "id": ref,
                "call_id": request.call_id,
                "owner": owner,
                "number": request.number,
                "style": request.style.value,
                "app_name": request.app_name,
                "sealed_pin": (
                    self.sealer.seal(request.pin) if request.style is Style.SPOKEN else None
                ),
                "created_at": float(self._clock()),
                "locale": self.call_language(request),
            },
            MAX_CALLS,
        )
        return CallTicket(reference=ref, call=CallState.RINGING)

    def announce(self, request: CallRequest) -> None:
        print(
            f" * flask-phoneverify: simulated call to {mask(request.number)}; "
            f"answer it at {self.phone_url}",
            file=sys.stderr,
            flush=True,
        )

    def place_call(self, request: CallRequest) -> CallTicket:
        """A call outside the flow's steps: its owner is the verification whose call it is."""
        try:
            ticket = self.store.write(
                lambda tx: self.ring(tx, request, owner=tx.owner_of_call(request.call_id))
            )
        except SQLAlchemyError as e:  # the simulated network is down: the call never rang
            raise ProviderUnavailable(detail=f"simulated phone: {type(e).__name__}") from e
        self.announce(request)
        return ticket

    @property
    def calls(self) -> list[DevCall]:
        """Every call the phone keeps, oldest first."""
        return self.newest(MAX_CALLS)

    def newest(
        self, count: int = LISTED, number: str | None = None, owner: str | None = None
    ) -> list[DevCall]:
        """The newest ``count`` calls (to ``number``, of ``owner``, when given), oldest first."""
        rows = self.store.read(lambda tx: tx.dev_calls(count, number, owner))
        return [self._call(row) for row in rows]

    def listing(self, owner: str, number: str | None = None) -> list[dict[str, Any]]:
        """The calls placed for ``owner``'s verifications: nobody else's."""
        return [c.public() for c in self.newest(LISTED, number, owner)]

    def answer(self, call_id: str, owner: str, tx: Tx | None = None) -> CallEvent:
        call = self._live(call_id, owner, tx)
        outcome = Outcome.CONFIRMED if call.style is Style.SPOKEN else Outcome.PENDING
        return CallEvent(call.call_id, CallReport(call=CallState.ANSWERED, outcome=outcome))

    def hang_up(self, call_id: str, owner: str, tx: Tx | None = None) -> CallEvent:
        call = self._live(call_id, owner, tx)
        if call.state is CallState.RINGING or call.style is not Style.SPOKEN:
            reason = (
                N_("The call was declined.")
                if call.state is CallState.RINGING
                else N_("The call ended before the PIN was entered.")
            )
            return CallEvent(
                call.call_id,
                CallReport(call=CallState.ENDED, outcome=Outcome.FAILED, reason=reason),
            )
        return CallEvent(call.call_id, CallReport(call=CallState.ENDED))

    def press(self, call_id: str, owner: str, digits: str, tx: Tx | None = None) -> CallEvent:
        """Keys pressed on the simulated keypad, relayed for the flow to check."""
        call = self._live(call_id, owner, tx)
        if call.style is not Style.KEYPAD:
            raise BadInput(gettext("This call does not ask for keys: it speaks the PIN."))
        digits = (digits or "").strip().rstrip("#")
        if not digits or not digits.isdigit() or len(digits) > 32:
            raise BadInput(gettext("Key in digits only."))
        return CallEvent(call.call_id, CallReport(call=CallState.ANSWERED, digits=digits))

    def _live(self, call_id: str, owner: str, tx: Tx | None = None) -> DevCall:
        """A call of ``owner``'s that has not ended (another user's call is not found);
        read in ``tx`` when given, so an action and its effect share one transaction."""
        call = self._find(call_id, tx)
        if call is None or call.owner != owner:
            raise NotFound(gettext("There is no such call on the simulated phone."))
        if call.state is CallState.ENDED:
            raise BadInput(gettext("This call has ended."))
        return call

    def _call(self, row: dict[str, Any]) -> DevCall:
        style = Style(row["style"])
        pin = self.sealer.open(row["sealed_pin"]) if row["sealed_pin"] is not None else None
        return DevCall(
            id=row["id"],
            call_id=row["call_id"],
            number=row["number"],
            style=style,
            text=call_text(style, row["app_name"], pin, row["locale"]),
            state=self._state(row),
            owner=row["owner"],
            pin=pin if style is Style.SPOKEN else None,
        )

    def _state(self, row: dict[str, Any]) -> CallState:
        """A call's state, read from the verification whose call it is: ended once a newer
        call replaced it, the phone hung up or the verification closed (confirmed, locked,
        canceled, or found expired); otherwise how far the call got, as the flow recorded
        it from the phone's events."""
        return call_state(row["v_status"], row["v_call"], superseded=bool(row["superseded"]))

    def _find(self, call_id: str, tx: Tx | None = None) -> DevCall | None:
        row = (
            tx.dev_call(call_id)
            if tx is not None
            else self.store.read(lambda t: t.dev_call(call_id))
        )
        return None if row is None else self._call(row)
