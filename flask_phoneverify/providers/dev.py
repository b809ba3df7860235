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

A spoken call is voicemail-safe, as a real provider's call should be: it first
asks for one random digit ("To hear your code, press 7") and speaks the code
only once that digit is keyed; any other key hangs up without it. The phone can
also let voicemail answer a ringing call: like a provider with answering-machine
detection, it reports a machine, and the verification fails without the code.

It is refused outside debug or testing mode unless PHONEVERIFY_DEV_PHONE is set,
so it cannot end up in production by accident.
"""

from __future__ import annotations

import logging
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from ..errors import BadInput, NotFound, ProviderUnavailable
from ..i18n import N_, for_locale, gettext
from ..phone import ascii_digits, mask
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

log = logging.getLogger("flask_phoneverify")

#: calls the simulated phone keeps, and the newest it lists
MAX_CALLS = 500
#: the phone trims its oldest calls about once in this many new ones
TRIM_EVERY = 50
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
    digit: str | None = None  # spoken calls: the key that plays the code
    heard: bool = False  # spoken calls: the code was played (the right digit was keyed)

    def public(self) -> dict[str, Any]:
        """The listing's entry, the number masked. ``pin`` stays in it for spoken calls,
        heard or not: a test affordance (the page shows the code only once it played)."""
        return {
            "id": self.id,
            "number": mask(self.number),
            "style": self.style.value,
            "text": self.text,
            "state": self.state.value,
            "pin": self.pin,
            "digit": self.digit,
            "heard": self.heard,
        }


def call_text(
    style: Style,
    app_name: str,
    pin: str | None,
    digit: str | None = None,
    heard: bool = True,
    locale: str | None = None,
) -> str:
    """What the simulated call says, in ``locale`` (a shipped language; English by
    default): the PIN in spoken style once its digit was keyed, never in keypad style."""
    speech = for_locale(locale)
    if style is Style.SPOKEN:
        if digit is not None and not heard:
            return speech.gettext("This is %(app)s. To hear your code, press %(digit)s.") % {
                "app": app_name,
                "digit": digit,
            }
        spoken = " ".join(pin or "?")
        return speech.gettext("This is %(app)s. Your PIN is %(pin)s. Again: %(pin)s. Goodbye.") % {
            "app": app_name,
            "pin": spoken,
        }
    return speech.gettext(
        "This is %(app)s. To confirm it is you, key in the PIN shown on your screen."
    ) % {"app": app_name}


def prompt_digit() -> str:
    """The key a spoken call asks for before the code: random, so a greeting's tone or a
    machine pressing "any key" does not hear it."""
    return secrets.choice("123456789")


def call_state(status: str | None, progress: str | None, *, superseded: bool = False) -> CallState:
    """How the simulated phone shows a call, from its verification's status and progress."""
    if superseded or status != "calling" or progress in (None, CallState.ENDED):
        return CallState.ENDED
    if progress in (CallState.QUEUED, CallState.RINGING):
        return CallState.RINGING
    return CallState.ANSWERED


class DevPhone(Provider):
    """The simulated phone: calls ring on a page of the app, for development and tests."""

    name = "dev"
    styles = frozenset({Style.KEYPAD, Style.SPOKEN})
    preferred_style = Style.KEYPAD
    simulated = True
    polled = False  # every change reaches the flow as an event from the phone's page
    speaks = None  # its calls are read on a page: any shipped language
    voicemail_safe = True
    core_settings = frozenset({"PHONEVERIFY_DEV_PHONE"})  # its switch for demos
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
        """The extension's store, where the phone keeps its calls (set by init_app)."""
        if self._store is None:
            raise RuntimeError("the simulated phone is used before init_app attached it")
        return self._store

    @property
    def pin_sealer(self) -> Sealer:
        """Seals a spoken call's prompt digit and PIN (its own key, as before the prompt)."""
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
                    self.pin_sealer.seal(f"{prompt_digit()}:{request.pin}")
                    if request.style is Style.SPOKEN
                    else None
                ),
                "created_at": float(self._clock()),
                "locale": self.call_language(request),
            }
        )
        if secrets.randbelow(TRIM_EVERY) == 0:
            tx.after_commit(self._trim)
        return CallTicket(reference=ref, call=CallState.RINGING)

    def _trim(self) -> None:
        """Keep only the newest calls: a step of its own, once the ringing step committed
        (a verification's step stays one statement)."""
        try:
            self.store.write_one(lambda tx: tx.dev_trim(MAX_CALLS))
        except SQLAlchemyError as e:  # the next trim catches up
            log.warning("phoneverify: simulated phone's calls not trimmed: %s", type(e).__name__)

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
        """Answered by a person. A spoken call asks for its digit first (a call sealed
        before the prompt existed speaks its code at once)."""
        call = self._live(call_id, owner, tx)
        at_once = call.style is Style.SPOKEN and call.digit is None
        outcome = Outcome.CONFIRMED if at_once else Outcome.PENDING
        return CallEvent(call.call_id, CallReport(call=CallState.ANSWERED, outcome=outcome))

    def voicemail(self, call_id: str, owner: str, tx: Tx | None = None) -> CallEvent:
        """Voicemail answers a ringing call: detected as a machine, it hears no code."""
        call = self._live(call_id, owner, tx)
        if call.state is not CallState.RINGING:
            raise BadInput(gettext("Only a ringing call can go to voicemail."))
        report = CallReport(
            call=CallState.ENDED, outcome=Outcome.VOICEMAIL, detail="simulated answering machine"
        )
        return CallEvent(call.call_id, report)

    def hang_up(self, call_id: str, owner: str, tx: Tx | None = None) -> CallEvent:
        """Decline or end a call; before the PIN was entered it fails the verification."""
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
        """Keys pressed on the simulated keypad: a keypad call's are relayed for the flow
        to check; a spoken call's must be its one digit, which plays the code, and any
        other key hangs up without it."""
        call = self._live(call_id, owner, tx)
        if call.style is not Style.KEYPAD and (call.digit is None or call.heard):
            raise BadInput(gettext("This call does not ask for keys: it speaks the PIN."))
        digits = ascii_digits((digits or "").strip()).rstrip("#")
        if not digits or not (digits.isascii() and digits.isdigit()) or len(digits) > 32:
            raise BadInput(gettext("Key in digits only."))
        if call.style is Style.KEYPAD:
            return CallEvent(call.call_id, CallReport(call=CallState.ANSWERED, digits=digits))
        if call.state is CallState.RINGING:
            raise BadInput(gettext("Answer the call first."))
        if call.digit is not None and secrets.compare_digest(digits, call.digit):
            return CallEvent(
                call.call_id, CallReport(call=CallState.ANSWERED, outcome=Outcome.CONFIRMED)
            )
        return CallEvent(call.call_id, CallReport(call=CallState.ENDED))

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
        sealed = self.pin_sealer.open(row["sealed_pin"]) if row["sealed_pin"] is not None else None
        digit, _, pin = (sealed or "").rpartition(":")
        # played once the flow recorded the code as delivered
        heard = style is Style.SPOKEN and (not digit or row["v_call"] == CallState.DELIVERED)
        return DevCall(
            id=row["id"],
            call_id=row["call_id"],
            number=row["number"],
            style=style,
            text=call_text(
                style, row["app_name"], pin or None, digit or None, heard, row["locale"]
            ),
            state=self._state(row),
            owner=row["owner"],
            pin=(pin or None) if style is Style.SPOKEN else None,
            digit=digit or None,
            heard=heard,
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
