"""The simulated phone's page: list calls, answer, hang up, key in digits, let
voicemail answer.

Its actions reach the flow as call events, the way a keypad-relaying provider's
callbacks do; the calls live in the database, so any worker serves any call.
"""

from __future__ import annotations

from typing import Any

from flask import abort, jsonify, render_template, request, url_for

from ..csrf import validate_csrf
from ..flow import wrong_pin_message
from ..gate import current_identity, wants_json
from ..i18n import gettext
from ..models import Status, Verification
from ..providers.base import CallEvent, CallState, Outcome
from ..providers.dev import DevPhone, call_state
from ..state import state
from ..store import Tx
from .common import body, see_other, set_notice, take_notice

__all__ = ["dev_phone", "dev_phone_action"]


def _phone() -> DevPhone:
    st = state()
    provider = next((p for p in st.providers if isinstance(p, DevPhone)), st.provider)
    if not isinstance(provider, DevPhone):
        abort(404)
    return provider


def _state_after(reported: CallState | None, v: Verification | None, current: bool) -> str:
    """The call's state once the flow took its event, as the phone's listing shows it."""
    if not current or v is None:
        return CallState.ENDED.value
    progress = CallState.ENDED.value if reported is CallState.ENDED else v.call
    return call_state(v.status, progress).value


def dev_phone() -> Any:
    """The simulated phone's page, or its calls as JSON: the user's own only."""
    phone = _phone()
    who = current_identity()  # a visitor sees the calls of their own verifications only
    number = request.args.get("number") or None
    calls = phone.listing(who.id, number) if who is not None else []
    if wants_json():
        return jsonify(calls=calls)
    notice = take_notice().get("m")
    return render_template("phoneverify/dev_phone.html", calls=list(reversed(calls)), notice=notice)


def dev_phone_action(call_id: str, action: str) -> Any:
    """Answer, hang up or press keys on the simulated phone; reported to the flow as
    call events, the way a provider that relays keypresses would."""
    st = state()
    phone = _phone()
    validate_csrf()
    data = body()
    who = current_identity()
    if who is None or action not in ("keys", "answer", "hangup", "voicemail"):
        abort(404)
    digits = str(data.get("digits", ""))

    def event(tx: Tx) -> CallEvent:  # read in the transaction that applies it
        if action == "keys":
            return phone.press(call_id, who.id, digits, tx)
        if action == "answer":
            return phone.answer(call_id, who.id, tx)
        if action == "voicemail":
            return phone.voicemail(call_id, who.id, tx)
        return phone.hang_up(call_id, who.id, tx)

    applied = st.flow.apply_event(event, provider=phone.name)
    assert applied.event is not None
    v = applied.verification
    answer: dict[str, Any] = {}
    report = applied.event.report
    if action == "keys" and report.digits is None:  # a spoken call's prompt digit
        heard = applied.current and report.outcome is Outcome.CONFIRMED
        message = (
            gettext("The call reads your code.")
            if heard
            else gettext("That was not the key the call asked for: it hung up without the code.")
        )
        answer.update(heard=heard, message=message)
    elif action == "voicemail":
        answer["message"] = st.flow.message(v) if v is not None else gettext("The call has ended.")
    elif action == "keys":
        accepted = applied.current and v is not None and v.status == Status.VERIFIED
        if accepted:
            message = gettext("Thank you. You are confirmed.")
        elif v is None or not applied.current:
            message = gettext("This call is no longer current: answer the newest call.")
        elif v.is_open:
            message = wrong_pin_message(st.flow.attempts_left(v))
        else:
            message = gettext("That PIN is not right. %(outcome)s", outcome=st.flow.message(v))
        answer.update(accepted=accepted, message=message)
        if v is not None:
            answer["attempts_left"] = st.flow.attempts_left(v)
    answer["state"] = _state_after(applied.event.report.call, applied.verification, applied.current)
    if wants_json():
        return jsonify(answer)
    if answer.get("message"):
        set_notice(answer["message"], "info")
    return see_other(url_for("phoneverify.dev_phone"))
