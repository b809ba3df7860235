"""The pages and the JSON API, from the same views: verify, start, wait, status,
confirm, resend, cancel and talk. Each translates between HTTP and the flow."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import jsonify, render_template, request, session, url_for

from .. import phone as phones
from ..csrf import generate_csrf, validate_csrf
from ..errors import BadInput, FlowError, NotFound
from ..flow import reason_code
from ..gate import PENDING, Identity, is_fresh, mark_verified, number_tag, wants_json
from ..i18n import N_, current_locale, gettext, translate
from ..models import Status, Verification
from ..providers.base import Provider, Style
from ..redirects import safe_next
from ..state import AppState, state
from .callbacks import callback_address
from .common import (
    body,
    client_ip,
    identity,
    iso,
    next_path,
    pending,
    see_other,
    set_notice,
    take_notice,
    this_session,
    token_of,
    verification_id,
)

__all__ = ["verify", "start", "wait", "status", "confirm", "resend", "cancel", "talk"]

WAIT_TITLES = {
    Status.VERIFIED: N_("Confirmed"),
    Status.FAILED: N_("The call did not go through"),
    Status.EXPIRED: N_("This verification has expired"),
    Status.LOCKED: N_("Too many wrong PINs"),
    Status.CANCELED: N_("Verification canceled"),
}


def _started_json(token: str, v: Verification, pin: str) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "token": token,
        "status": v.status,
        "call": v.call,
        "style": v.style,
        "expires_at": iso(v.expires_at),
    }
    if v.style == Style.KEYPAD:
        answer["pin"] = pin
    return answer


def _callback_url(st: AppState) -> Callable[[Provider], str | None]:
    """The signed events address of the provider placing the call, for providers that
    send one with each call (with failover, the flow picks the provider)."""
    return lambda p: callback_address(st, p.name) if p.callback_per_call else None


def _remember(token: str, v: Verification, pin: str, next_to: str | None) -> None:
    data: dict[str, Any] = {"t": token, "n": next_to}
    if v.style == Style.KEYPAD:
        data["p"] = pin  # shown again after a reload; keypad PINs are meant to be seen here
    session[PENDING] = data


#: the largest ``max_age`` the verify page reads from its query (a day)
MAX_AGE_LIMIT = 86400


def _max_age() -> int | None:
    """The freshness the gate asked for (``?max_age=``, set by a step-up view's redirect);
    anything that is not a small whole number is ignored."""
    raw = request.args.get("max_age", "")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 6:
        return None
    return min(int(raw), MAX_AGE_LIMIT)


def verify() -> Any:
    """The verify page; JSON: a CSRF token and what the page offers."""
    st = state()
    who = identity()
    next_to = next_path(request.args.get("next"))
    masked = phones.mask(who.phone) if who.phone else None
    confirmed = is_fresh(st, who, _max_age())
    if wants_json():
        return jsonify(
            csrf_token=generate_csrf(),
            phone=masked,
            style=st.style.value,
            enrolment=st.settings.allow_enrolment and not who.phone,
            verified=confirmed,
        )
    notice = take_notice()
    if confirmed:
        return render_template(
            "phoneverify/verify.html",
            confirmed=True,
            masked=masked,
            enrol=False,
            style=st.style.value,
            next_path=next_to,
            notice=notice,
        )
    if not who.phone and not st.settings.allow_enrolment:
        return render_template(
            "phoneverify/message.html",
            title=gettext("No phone number on file"),
            error=gettext(
                "Your account has no phone number on file, so it cannot be confirmed by phone. "
                "Please contact the site's support to add one."
            ),
            retry=False,
        ), 409
    return render_template(
        "phoneverify/verify.html",
        confirmed=False,
        masked=masked,
        enrol=not who.phone,
        style=st.style.value,
        next_path=next_to,
        notice=notice,
        typed=notice.get("p", ""),
    )


def _phone_for(st: AppState, who: Identity, data: dict[str, Any]) -> tuple[str, bool]:
    """The number to call: the one on file, or (enrolment) the one typed."""
    region = st.settings.default_region
    if who.phone:
        try:
            return phones.parse(who.phone, region), False
        except BadInput:
            raise BadInput(
                gettext(
                    "The phone number on your account is not valid. Please contact the site's "
                    "support."
                )
            ) from None
    if not st.settings.allow_enrolment:
        raise BadInput(gettext("Your account has no phone number on file."))
    typed = data.get("phone")
    if not isinstance(typed, str):
        raise BadInput(gettext("Please enter a phone number."))
    return phones.parse(typed, region), True


def start() -> Any:
    """Place a call (the number on file, or one typed to enrol)."""
    st = state()
    who = identity()
    validate_csrf()
    data = body()
    next_to = safe_next(data.get("next")) or safe_next(pending().get("n"))
    number, enrol = _phone_for(st, who, data)
    started = st.flow.start(
        user_id=who.id,
        phone=number,
        enrol=enrol,
        session=this_session(),
        ip=client_ip(),
        callback_url=_callback_url(st),
        user=who.user,
        locale=current_locale(),
    )
    v = started.verification
    token = st.tokens.make_pending(v.id, who.id)
    _remember(token, v, started.pin, next_to)
    if wants_json():
        return jsonify(_started_json(token, v, started.pin))
    return see_other(url_for("phoneverify.wait"))


def wait() -> Any:
    """The wait page of the session's pending verification."""
    st = state()
    who = identity()
    held = pending()
    if not held.get("t"):
        return see_other(url_for("phoneverify.verify"))
    try:
        vid = verification_id(st, who, held["t"], reading=True)
        v = st.flow.current(vid, user_id=who.id)
    except FlowError as e:
        session.pop(PENDING, None)
        set_notice(translate(e.message))
        next_to = safe_next(held.get("n"))
        return see_other(
            url_for("phoneverify.verify", next=next_to)
            if next_to
            else url_for("phoneverify.verify")
        )
    return _render_wait(st, v, held["t"])


def resend_wait(st: AppState, v: Verification, notice: dict[str, Any]) -> int:
    """Seconds before "Call me again" may be pressed: what a refusal said, else what is
    left of the number's cool-down since this verification's last call."""
    refused = notice.get("r")
    if isinstance(refused, int) and notice.get("c") == "rate_limited":
        return max(refused, 0)
    left = v.sent_at + st.settings.number_cooldown - st.clock()
    return max(0, int(left + 0.999))


def _render_wait(st: AppState, v: Verification, token: str) -> Any:
    """The wait page for ``v``, with the notice a redirect left for it (wrong PIN,
    locked, refused resend, a new call...)."""
    held = pending()
    notice = take_notice()
    return render_template(
        "phoneverify/wait.html",
        v=v,
        masked=phones.mask(v.phone),
        pin=held.get("p") if v.style == Style.KEYPAD.value else None,
        message=st.flow.message(v),
        attempts_left=st.flow.attempts_left(v),
        token=token,
        next_path=held.get("n") or "",
        can_bridge=st.provider.can_bridge,
        notice=notice,
        error=notice.get("m") if notice.get("k") == "error" else None,
        info=notice.get("m") if notice.get("k") == "info" else None,
        new_pin=bool(notice.get("n")),
        resend_wait=resend_wait(st, v, notice) if v.is_open else 0,
        title=translate(WAIT_TITLES.get(Status(v.status), N_("Answer your phone"))),
    )


def status() -> Any:
    """The verification now, for the wait page's polling (JSON)."""
    st = state()
    who = identity()
    if not wants_json() and not request.args.get("token"):
        return see_other(url_for("phoneverify.wait"))
    vid = verification_id(st, who, token_of(), reading=True)
    v = st.flow.current(vid, user_id=who.id)
    reason = reason_code(v)
    return jsonify(
        **({"reason": reason} if reason else {}),
        status=v.status,
        call=v.call,
        attempts_left=st.flow.attempts_left(v),
        expires_at=iso(v.expires_at),
        message=st.flow.message(v),
        can_bridge=st.provider.can_bridge and v.status in (Status.FAILED, Status.LOCKED),
    )


def confirm() -> Any:
    """Take the confirmation into the session: the typed PIN, or the phone's word."""
    st = state()
    who = identity()
    validate_csrf()
    data = body()
    token = token_of(data)
    pin = data.get("pin")
    if pin is not None and not isinstance(pin, str | int):
        raise BadInput(gettext("The PIN must be digits."))
    vid = verification_id(st, who, token)
    v = st.flow.confirm(
        vid, None if pin is None else str(pin), user_id=who.id, session=this_session()
    )
    next_to = next_path(data.get("next"))
    mark_verified(st, who.id, v.verified_at or st.clock(), v.phone)  # dated at the phone's word
    if st.devices is not None:  # "Remember this device"; a new number forgets the old ones
        tag = number_tag(st.marker_key, v.phone, None)
        st.devices.after_confirm(
            who.id, tag, enrolled=v.enrol, remember=data.get("remember"), ip=client_ip()
        )
    session.pop(PENDING, None)
    if v.enrol:
        saver = st.hooks.phone_saver
        if saver is not None:
            saver(who.user, v.phone)
    st.flow.notify.claimed(v, who.user)  # phone_enrolled (enrolment), phone_verified
    if wants_json():
        return jsonify(status=Status.VERIFIED, next=next_to)
    return see_other(next_to)


def _action() -> tuple[AppState, Identity, dict[str, Any], str, str]:
    """What every POST on a pending verification starts with: the user, a CSRF check,
    the body, the token and the verification id it names."""
    st = state()
    who = identity()
    validate_csrf()
    data = body()
    token = token_of(data)
    return st, who, data, token, verification_id(st, who, token)


def resend() -> Any:
    """A new call and PIN for the same verification."""
    st, who, _, token, vid = _action()
    started = st.flow.resend(
        vid,
        user_id=who.id,
        session=this_session(),
        ip=client_ip(),
        callback_url=_callback_url(st),
        user=who.user,
    )
    v = started.verification
    if pending().get("t") == token:
        _remember(token, v, started.pin, pending().get("n"))
    if wants_json():
        return jsonify(_started_json(token, v, started.pin))
    set_notice(
        gettext("We are calling you again with a new PIN. The earlier PIN no longer works."),
        "info",
        n=1,
    )
    return see_other(url_for("phoneverify.wait"))


def cancel() -> Any:
    """Cancel the pending verification."""
    st, who, _, token, vid = _action()
    next_to = pending().get("n")
    st.flow.cancel(vid, user_id=who.id, session=this_session())
    if pending().get("t") == token:
        session.pop(PENDING, None)
    if wants_json():
        return jsonify(status=Status.CANCELED)
    return see_other(
        url_for("phoneverify.verify", next=next_to) if next_to else url_for("phoneverify.verify")
    )


BRIDGE_MESSAGE = N_("We are calling your phone to connect you with our support team.")


def talk() -> Any:
    """Bridge the user's phone to the support line (providers that can); verifies nothing.
    The person stays on the wait page, where the offer is."""
    st, who, _, _, vid = _action()
    if not st.provider.can_bridge:
        raise NotFound(
            gettext("Talking to our support team by phone is not available on this site.")
        )
    st.flow.bridge(vid, user_id=who.id, session=this_session(), ip=client_ip(), user=who.user)
    if wants_json():
        return jsonify(status="bridging", message=gettext(BRIDGE_MESSAGE))
    set_notice(gettext(BRIDGE_MESSAGE), "info")
    return see_other(url_for("phoneverify.wait"))
