"""Recovery codes and a new number: the pages and JSON API of the way back.

- ``GET/POST <prefix>/recovery-codes``: generate a set (a phone confirmation at most
  ten minutes old required), shown once, with copy and download.
- ``GET/POST <prefix>/recover``: use a code; it opens the gate with a marker flagged
  ``recovery``, which never satisfies ``max_age=`` views.
- ``GET/POST <prefix>/new-number``: verify a new number by phone (enrolment), for a
  session whose phone (or recovery code, or remembered device) was confirmed: a
  recovery code alone never changes the number on file, the new number's call does.
"""

from __future__ import annotations

from typing import Any

from flask import abort, jsonify, redirect, render_template, request, session, url_for

from .. import phone as phones
from .. import signals
from ..csrf import generate_csrf, validate_csrf
from ..errors import BadInput, FlowError
from ..gate import (
    PENDING,
    RECOVERY,
    Identity,
    _fresh,
    mark_flagged,
    marker_flag,
    tag_on_file,
    wants_json,
)
from ..i18n import current_locale, gettext, ngettext
from ..recovery import FRESH, Recovery
from ..state import AppState, state
from .common import body, client_ip, identity, next_path, sender, this_session
from .pages import _callback_url, _remember, _started_json

__all__ = [
    "codes_page",
    "generate",
    "recover_page",
    "recover",
    "new_number_page",
    "new_number",
    "template_context",
]

#: the outcome of the last POST, shown once by the page it redirects to (Post/Redirect/Get)
FLASH = "_phoneverify_trust"
#: codes left at or below which the person is told to make a new set
FEW = 2


def template_context() -> dict[str, Any]:
    """What the recovery and remember-device templates need on every page."""
    st = state()
    return {
        "phoneverify_recovery": st.recovery is not None and st.recovery.enabled,
        "phoneverify_remember_days": st.settings.remember_days,
    }


def _recovery(st: AppState) -> Recovery:
    if st.recovery is None or not st.recovery.enabled:
        abort(404)
    return st.recovery


def _flash(**values: Any) -> None:
    session[FLASH] = values


def _flashed() -> dict[str, Any]:
    found = session.pop(FLASH, None)
    return found if isinstance(found, dict) else {}


def _verify_url(next_to: str) -> str:
    return url_for("phoneverify.verify", next=next_to, max_age=FRESH)


def _phone_required(message: str, verify_url: str) -> Any:
    body = jsonify(error="phone_verification_required", message=message, verify_url=verify_url)
    body.status_code = 401
    return body


# -- generating a set ------------------------------------------------------------------------


def _fresh_phone(st: AppState, who: Identity) -> bool:
    """A phone confirmation (not a recovery code, not a remembered device) in this
    session, at most FRESH seconds old."""
    return _fresh(st, who.id, who.user, FRESH)


def codes_page() -> Any:
    """The recovery codes page; JSON: codes left and whether a new set may be made."""
    st = state()
    who = identity()
    rec = _recovery(st)
    left = rec.left(who.id)
    fresh = _fresh_phone(st, who)
    if wants_json():
        return jsonify(left=left, size=rec.count, can_generate=fresh, csrf_token=generate_csrf())
    return render_template(
        "phoneverify/recovery_codes.html",
        left=left,
        fresh=fresh,
        codes=None,
        verify_url=_verify_url(url_for("phoneverify.recovery_codes")),
        error=_flashed().get("error"),
    )


def generate() -> Any:
    """Make a new set of codes, shown once; needs a fresh phone confirmation."""
    st = state()
    who = identity()
    validate_csrf()
    rec = _recovery(st)
    verify_url = _verify_url(url_for("phoneverify.recovery_codes"))
    if not _fresh_phone(st, who):
        message = gettext(
            "Please confirm your phone first: new recovery codes need a phone confirmation "
            "from the last 10 minutes."
        )
        if wants_json():
            return _phone_required(message, verify_url)
        _flash(error=message)
        return redirect(url_for("phoneverify.recovery_codes"), 303)
    codes = rec.generate(who.id, ip=client_ip())
    if wants_json():
        return jsonify(codes=codes)
    # Shown once, straight from the POST: the codes are never kept anywhere to show again.
    return render_template(
        "phoneverify/recovery_codes.html",
        left=len(codes),
        fresh=True,
        codes=codes,
        text="".join(f"{c}\n" for c in codes),
        verify_url=verify_url,
        done_url=st.settings.default_next,
        error=None,
    )


# -- using one -----------------------------------------------------------------------------


def _left_message(left: int) -> str:
    said = ngettext(
        "You have %(num)d recovery code left.", "You have %(num)d recovery codes left.", left
    )
    if left <= FEW:
        said += " " + gettext("Please generate a new set soon, once you can confirm a phone again.")
    return said


def recover_page() -> Any:
    """The recovery code form, or the outcome of the last code used."""
    st = state()
    who = identity()
    _recovery(st)
    shown = _flashed()
    if wants_json():
        return jsonify(csrf_token=generate_csrf(), recovered=marker_flag(who.id) == RECOVERY)
    done = shown.get("left")
    return render_template(
        "phoneverify/recover.html",
        error=shown.get("error"),
        done=isinstance(done, int),
        left=done if isinstance(done, int) else 0,
        few=isinstance(done, int) and done <= FEW,
        message=_left_message(done) if isinstance(done, int) else None,
        next_path=next_path(shown.get("next") or request.args.get("next")),
        can_change=st.hooks.phone_saver is not None,
    )


def recover() -> Any:
    """Spend a recovery code: the gate opens, flagged so ``max_age=`` views still ask."""
    st = state()
    who = identity()
    validate_csrf()
    data = body()
    rec = _recovery(st)
    next_to = next_path(data.get("next"))
    try:
        got = rec.use(who.id, data.get("code"), ip=client_ip())
    except FlowError as e:
        if wants_json():
            raise
        _flash(error=e.message, next=next_to)
        return redirect(url_for("phoneverify.recover"), 303)
    mark_flagged(st, who.id, tag_on_file(st, who.user), RECOVERY)
    session.pop(PENDING, None)
    signals.recovery_code_used.send(sender(), user=who.user, codes_left=got.left)
    if wants_json():
        return jsonify(
            status="verified",
            recovery=True,
            codes_left=got.left,
            message=_left_message(got.left),
            next=next_to,
        )
    _flash(left=got.left, next=next_to)
    return redirect(url_for("phoneverify.recover"), 303)


# -- a new number ----------------------------------------------------------------------------


def _may_change(st: AppState, who: Identity) -> bool:
    if st.hooks.phone_saver is None:
        abort(404)  # the app could not learn the new number
    return _fresh(st, who.id, who.user, None)


def new_number_page() -> Any:
    """The new-number form, for a session whose phone was confirmed."""
    st = state()
    who = identity()
    if not _may_change(st, who):
        return redirect(url_for("phoneverify.verify", next=url_for("phoneverify.new_number")))
    shown = _flashed()
    return render_template(
        "phoneverify/new_number.html",
        error=shown.get("error"),
        typed=shown.get("typed", ""),
        next_path=next_path(request.args.get("next")),
    )


def new_number() -> Any:
    """Start a call to a new number; the app's ``phone_saver`` learns it once that call
    is confirmed (the wait page and ``/confirm`` as for any verification)."""
    st = state()
    who = identity()
    validate_csrf()
    data = body()
    next_to = next_path(data.get("next"))
    if not _may_change(st, who):
        message = gettext("Please confirm it's you before changing your phone number.")
        if wants_json():
            return _phone_required(message, url_for("phoneverify.verify"))
        return redirect(url_for("phoneverify.verify", next=url_for("phoneverify.new_number")))
    typed = data.get("phone")
    try:
        if not isinstance(typed, str) or not typed.strip():
            raise BadInput(gettext("Please enter a phone number."))
        number = phones.parse(typed, st.settings.default_region)
        started = st.flow.start(
            user_id=who.id,
            phone=number,
            enrol=True,
            session=this_session(),
            ip=client_ip(),
            callback_url=_callback_url(st),
            user=who.user,
            locale=current_locale(),
        )
    except FlowError as e:
        if wants_json():
            raise
        _flash(error=e.message, typed=typed if isinstance(typed, str) else "")
        return redirect(url_for("phoneverify.new_number"), 303)
    v = started.verification  # the flow sent verification_started (and call_failed, if so)
    token = st.tokens.make_pending(v.id, who.id)
    _remember(token, v, started.pin, next_to)
    if wants_json():
        return jsonify(_started_json(token, v, started.pin))
    return redirect(url_for("phoneverify.wait"), 303)
