"""Twilio Programmable Voice (REST over httpx, TwiML built with ElementTree): keypad and
spoken, the spoken code voicemail-safe.

Wire format (Twilio's public API reference; where it is silent, the choice is
marked as an assumption):

- place a call: ``POST {url}/2010-04-01/Accounts/{AccountSid}/Calls.json``, HTTP
  Basic auth (account SID : auth token), form-encoded ``To``, ``From`` (E.164),
  ``Url`` + ``Method=POST`` or inline ``Twiml``, ``StatusCallback`` +
  ``StatusCallbackMethod=POST`` + ``StatusCallbackEvent`` (repeated: initiated,
  ringing, answered, completed), ``MachineDetection=Enable`` unless
  PHONEVERIFY_TWILIO_MACHINE_DETECTION is off, ``Timeout``. The answer is 201 JSON
  whose ``sid`` (``CA`` + 32 hex) is the call's reference.
- status fallback (polled between callbacks): ``GET .../Calls/{Sid}.json``;
  ``status`` is queued, ringing, in-progress, completed, busy, failed, no-answer or
  canceled; ``answered_by`` (human, machine_start, machine_end_*, fax, unknown)
  when machine detection ran.
- errors: JSON ``{code, message, more_info, status}`` with the HTTP status.
  20003 (401) authentication, 20404 (404) an unknown account or call, 21210/21212
  (and 21213, 21606) an unusable ``From``: our settings (ProviderConfigError);
  21211, 21214, 21215, 21216, 21217, 21401, 21407, 13223, 13224 a number Twilio will
  not call (ProviderRejected); 20429 or HTTP 429 too many requests
  (ProviderUnavailable, retryable); any other code: our request
  (ProviderConfigError). The message is kept for the log, redacted.
- Twilio's requests to us (fetching ``Url``, Gather actions, status callbacks)
  are form-encoded POSTs to our signed callback address (``CallSid``,
  ``AccountSid``, ``To``, ``CallStatus``, ``Digits``, ``AnsweredBy``). Each
  carries ``X-Twilio-Signature`` = base64(HMAC-SHA1(auth token, the full URL
  Twilio requested, query included, followed by each POST parameter's name and
  value, sorted by name)); a request without it, or with a wrong one, is refused
  (403). The URL is the one seen through PHONEVERIFY_EXTERNAL_URL, which is
  therefore required. Repeated parameters are taken sorted by value, as Twilio's
  own RequestValidator does (**assumption**: Twilio never sends repeats here).
- replies are TwiML (``text/xml``): ``<Say>``, ``<Gather input="dtmf">`` with
  ``numDigits``, ``finishOnKey="#"``, ``timeout`` and an absolute ``action``,
  ``<Hangup/>``.

Our call script, one step per request, each named in the callback address's
query (``step`` and our call id ``c``, so an event is tied to its verification
like any provider's):

- ``answer``: the call is answered. With machine detection, Twilio fetches
  ``Url`` only once it knows who answered; a machine (``AnsweredBy`` machine_* or
  fax) gets ``<Hangup/>`` and the verification fails ("The call reached
  voicemail, not you."). Without it, the same script travels inline (``Twiml``).
- keypad: ``<Gather numDigits={PIN length} finishOnKey="#">`` whose action
  (``step=keys``) relays ``Digits`` to the flow, which checks them like any
  provider's keys (a wrong entry counts as an attempt); the reply thanks, asks
  again while attempts are left, or says goodbye.
- spoken: ``<Gather numDigits="1">`` asking for one random digit ("To hear your
  code, press 7"); its action (``step=digit``) speaks the code only when that
  digit came and the verification is still open, and hangs up otherwise. Between
  placing the call and the digit, the code and the digit travel only sealed
  (:class:`~flask_phoneverify.sealing.Sealer`, a key derived from SECRET_KEY) in
  the address's ``s`` field, which Twilio's signature also covers: never in
  clear in the database, a log or the create-call request.
- ``status``: StatusCallback events move the call's progress; busy, no-answer,
  failed and canceled fail the verification with a reason, and so does a keypad
  call that completed without the PIN.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import logging
import re
import secrets
import xml.etree.ElementTree as ET  # noqa: S405 - building TwiML only; nothing is parsed here
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from ..errors import (
    ConfigError,
    Forbidden,
    ProviderConfigError,
    ProviderError,
    ProviderProtocolError,
    ProviderRejected,
    ProviderUnavailable,
)
from ..i18n import N_, SOURCE, for_locale, gettext, spoken_language
from ..models import Status
from ..settings import Setting
from . import transport
from .base import (
    CallbackReply,
    CallbackRequest,
    CallEvent,
    CallReport,
    CallRequest,
    CallState,
    CallTicket,
    EventResult,
    Outcome,
    PlacedCall,
    Provider,
    Style,
    check_url,
    timeout_setting,
)
from .vendor import Redactor

if TYPE_CHECKING:
    from ..sealing import Sealer

__all__ = ["Twilio", "DEFAULT_URL", "signature", "ERRORS"]

log = logging.getLogger("flask_phoneverify")

VENDOR = "Twilio"
DEFAULT_URL = "https://api.twilio.com"
API = "/2010-04-01"
SIGNATURE_HEADER = "X-Twilio-Signature"
STATUS_EVENTS = ("initiated", "ringing", "answered", "completed")
#: seconds Twilio lets the phone ring, and waits for keys
RING_SECONDS = 30
KEYS_SECONDS = 10
DIGIT_SECONDS = 8
MAX_KEYS = 32
#: inline TwiML is limited to this many characters (Twilio's API reference)
MAX_TWIML = 4000

_ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}")
_CALL_SID = re.compile(r"CA[0-9a-fA-F]{32}")
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")

CHECK_ACCOUNT = "check PHONEVERIFY_TWILIO_ACCOUNT_SID and PHONEVERIFY_TWILIO_AUTH_TOKEN"
CHECK_FROM = "check PHONEVERIFY_TWILIO_FROM (a Twilio number or a verified caller ID)"
NUMBER_REFUSED = N_(
    "The phone service could not call this number. Please check it, or use another number."
)

#: Twilio error code -> (error class, what the detail adds)
ERRORS: dict[int, tuple[type[ProviderError], str]] = {
    20003: (ProviderConfigError, CHECK_ACCOUNT),
    20404: (ProviderConfigError, "check PHONEVERIFY_TWILIO_ACCOUNT_SID and _URL"),
    20429: (ProviderUnavailable, "too many requests"),
    21210: (ProviderConfigError, CHECK_FROM),
    21212: (ProviderConfigError, CHECK_FROM),
    21213: (ProviderConfigError, CHECK_FROM),
    21606: (ProviderConfigError, CHECK_FROM),
    21211: (ProviderRejected, "invalid 'To' number"),
    21214: (ProviderRejected, "'To' number cannot be reached"),
    21215: (ProviderRejected, "the account's geographic permissions do not allow this number"),
    21216: (ProviderRejected, "number blocked by Twilio"),
    21217: (ProviderRejected, "'To' number is not valid"),
    21401: (ProviderRejected, "invalid phone number"),
    21407: (ProviderRejected, "this number is not supported"),
    13223: (ProviderRejected, "invalid phone number format"),
    13224: (ProviderRejected, "invalid phone number"),
}

#: a call's final status -> what the user reads (kept in English: Twilio's callbacks
#: report them, translated where shown)
FAILURES = {
    "busy": N_("The line was busy. Please try again."),
    "no-answer": N_("Nobody answered the call. Please try again."),
    "failed": N_("The call did not go through."),
    "canceled": N_("The call was canceled."),
}
PROGRESS = {
    "queued": CallState.QUEUED,
    "initiated": CallState.QUEUED,
    "ringing": CallState.RINGING,
    "in-progress": CallState.ANSWERED,
    "answered": CallState.ANSWERED,
    "completed": CallState.ENDED,
}
#: AnsweredBy values that mean a machine: it never hears a code
MACHINES = frozenset(
    {"machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax"}
)
NO_PIN = N_("The call ended before the PIN was entered.")
#: ``<Say language>`` for each language the calls speak besides English (Twilio's
#: default voice speaks en-US when no language is given)
SAY_LANGUAGES = {"es": "es-ES", "fr": "fr-FR"}


def signature(auth_token: str, url: str, params: Sequence[tuple[str, str]]) -> str:
    """X-Twilio-Signature for a request to ``url`` with form ``params``: base64 of the
    HMAC-SHA1, keyed with the auth token, of the URL followed by each parameter's name
    and value, sorted by name (then value)."""
    data = url + "".join(name + value for name, value in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


class Twilio(Provider):
    """Twilio Programmable Voice as a provider, keypad and spoken (the wire format and
    its assumptions are in the module docstring)."""

    name = "twilio"
    styles = frozenset({Style.KEYPAD, Style.SPOKEN})
    preferred_style = Style.KEYPAD
    polled = True
    callback_per_call = True
    needs_external_url = True
    voicemail_safe = True
    #: ``<Say language="es-ES">``/``"fr-FR"``; the language travels in the signed addresses
    speaks = frozenset({"en", *SAY_LANGUAGES})
    settings = (
        Setting(
            "PHONEVERIFY_TWILIO_ACCOUNT_SID",
            None,
            "str",
            "Twilio account SID (AC followed by 32 hex digits).",
            required=True,
        ),
        Setting(
            "PHONEVERIFY_TWILIO_AUTH_TOKEN",
            None,
            "str",
            "Twilio auth token: authenticates our requests and checks X-Twilio-Signature.",
            required=True,
            secret=True,
        ),
        Setting(
            "PHONEVERIFY_TWILIO_FROM",
            None,
            "str",
            "The number calls come from, E.164 (a Twilio number or a verified caller ID).",
            required=True,
        ),
        Setting("PHONEVERIFY_TWILIO_URL", DEFAULT_URL, "str", "Base URL of Twilio's REST API."),
        timeout_setting("twilio", VENDOR),
        Setting(
            "PHONEVERIFY_TWILIO_MACHINE_DETECTION",
            True,
            "bool",
            "Ask Twilio to detect answering machines (MachineDetection=Enable): a machine "
            "is hung up on and never hears a code.",
        ),
    )

    def __init__(
        self, options: Mapping[str, Any], *, style: Style, pin_length: int, app_name: str
    ) -> None:
        super().__init__(options, style=style, pin_length=pin_length, app_name=app_name)
        self.base_url = check_url(self.option_key("url"), options.get("url"), DEFAULT_URL)
        self.account_sid = str(options.get("account_sid") or "").strip()
        if not _ACCOUNT_SID.fullmatch(self.account_sid):
            raise ConfigError(
                self.option_key("account_sid"),
                f"is {self.account_sid[:40]!r}",
                "use the account SID from the Twilio console (AC and 32 hex digits)",
            )
        self.auth_token = str(options.get("auth_token") or "")
        if not self.auth_token:
            raise ConfigError(
                self.option_key("auth_token"), "is empty", "set it from the Twilio console"
            )
        self.from_number = str(options.get("from") or "").strip()
        if not _E164.fullmatch(self.from_number):
            raise ConfigError(
                self.option_key("from"),
                f"is {self.from_number[:40]!r}",
                "use an E.164 number such as '+12015550100'",
            )
        self.machine_detection = bool(options.get("machine_detection", True))
        self._redact = Redactor(self.auth_token, self.account_sid)
        self.client = transport.make_client(float(options.get("timeout") or 10.0))

    # -- calls ----------------------------------------------------------------------------
    def place_call(self, request: CallRequest) -> CallTicket:
        if not request.callback_url:
            raise ProviderConfigError(detail="Twilio: no callback address for the call")
        callback = request.callback_url
        sealed = None
        if request.style is Style.SPOKEN:
            digit = secrets.choice("123456789")
            sealed = self._sealer().seal(f"{request.call_id}:{digit}:{request.pin}").decode()
        language = self.call_language(request)
        answer = _address(callback, "answer", request.call_id, sealed, language)
        form: dict[str, str | list[str]] = {
            "To": request.number,
            "From": self.from_number,
            "StatusCallback": _address(callback, "status", request.call_id),
            "StatusCallbackMethod": "POST",
            "StatusCallbackEvent": list(STATUS_EVENTS),
            "Timeout": str(RING_SECONDS),
        }
        if self.machine_detection:  # Twilio fetches the script once it knows who answered
            form.update(Url=answer, Method="POST", MachineDetection="Enable")
        else:
            twiml = _text(self._script(answer, request.style, request.app_name))
            if len(twiml) > MAX_TWIML:
                raise ProviderConfigError(detail=f"Twilio: the call's TwiML is {len(twiml)} long")
            form["Twiml"] = twiml
        data = self._request("POST", "/Calls.json", request.number, data=form)
        sid = data.get("sid")
        if not isinstance(sid, str) or not _CALL_SID.fullmatch(sid):
            raise ProviderProtocolError(detail="Twilio answered a created call without its sid")
        return CallTicket(
            reference=sid, call=PROGRESS.get(str(data.get("status")), CallState.QUEUED)
        )

    def call_status(self, call: PlacedCall) -> CallReport:
        if not call.reference or not _CALL_SID.fullmatch(call.reference):
            raise ProviderProtocolError(detail="Twilio: the call has no usable sid")
        data = self._request("GET", f"/Calls/{call.reference}.json", call.number)
        if data.get("sid") != call.reference:
            raise ProviderProtocolError(detail="Twilio answered about another call")
        status, answered_by = data.get("status"), data.get("answered_by")
        return self._report(
            str(status) if status is not None else "",
            str(answered_by) if isinstance(answered_by, str) else "",
            call.style,
        )

    def close(self) -> None:
        self.client.close()

    # -- callbacks --------------------------------------------------------------------------
    def parse_callback(self, request: CallbackRequest) -> list[CallEvent]:
        """A signed request of Twilio's, as call events (403 for anything unsigned)."""
        params = request.form
        given = request.header(SIGNATURE_HEADER) or ""
        expected = signature(self.auth_token, request.url, params)
        if request.method != "POST" or not hmac.compare_digest(given.encode(), expected.encode()):
            raise Forbidden(gettext("This request is not signed by Twilio."))
        fields = dict(params)
        if fields.get("AccountSid") != self.account_sid:
            raise ProviderProtocolError(detail="Twilio posted for another account")
        sid = fields.get("CallSid", "")
        if not _CALL_SID.fullmatch(sid):
            raise ProviderProtocolError(detail="Twilio posted without a CallSid")
        query = request.query
        step, call_id = query.get("step", ""), query.get("c", "")
        if not call_id or len(call_id) > 64:
            raise ProviderProtocolError(detail="Twilio posted to an address without our call id")
        to = fields.get("To", "")
        number = to if _E164.fullmatch(to) else None
        answered_by = fields.get("AnsweredBy", "")
        style = Style.SPOKEN if "s" in query else Style.KEYPAD
        if style is Style.SPOKEN:
            self._opened(query, call_id)  # sealed for this call by us, or refused here

        def event(report: CallReport) -> list[CallEvent]:
            return [CallEvent(call_id, report, number=number)]

        if step == "status":
            report = self._report(fields.get("CallStatus", ""), answered_by, self.style)
            # with the call's sid, so a callback that beats the placed call keeps it
            return event(dataclasses.replace(report, reference=sid))
        if answered_by in MACHINES:
            return event(_voicemail(sid, answered_by))
        if step == "answer":
            return event(CallReport(call=CallState.ANSWERED, reference=sid))
        if step == "keys":
            keys = fields.get("Digits", "").strip().rstrip("#")
            if not keys or not keys.isdigit() or len(keys) > MAX_KEYS:
                return []  # nothing usable was keyed: asked again
            return event(CallReport(call=CallState.ANSWERED, digits=keys, reference=sid))
        if step == "digit" and style is Style.SPOKEN:
            _, digit, _ = self._opened(query, call_id)
            if secrets.compare_digest(fields.get("Digits", "").strip(), digit):
                return event(CallReport(call=CallState.ANSWERED, outcome=Outcome.CONFIRMED))
            return event(CallReport(call=CallState.ENDED, detail="Twilio: another key than asked"))
        raise ProviderProtocolError(detail=f"Twilio posted to step {step[:20]!r}")

    def callback_reply(
        self, request: CallbackRequest, results: Sequence[tuple[CallEvent, EventResult]]
    ) -> CallbackReply:
        """TwiML for the call's next step, given what its event did."""
        query = request.query
        step = query.get("step")
        language = spoken_language(query.get("l"), self.speaks)  # signed with the address
        speech = for_locale(language)
        root = ET.Element("Response")
        event, result = results[0] if results else (None, EventResult(current=False))
        open_now = result.current and result.status == Status.CALLING
        voicemail = event is not None and event.report.outcome is Outcome.VOICEMAIL
        address = _without_query(request.url)
        if step == "answer" and open_now and not voicemail:
            style = Style.SPOKEN if "s" in query else Style.KEYPAD
            again = _address(address, "answer", query.get("c", ""), query.get("s"), language)
            root = self._script(again, style, self.app_name)
        elif step == "keys" and event is None and "c" in query:
            again = _address(address, "keys", query["c"], language=language)
            root = self._keypad(again, speech.gettext("I did not get that."), language)
        elif step == "keys" and event is not None:
            if result.status == Status.VERIFIED and result.current:
                _say(root, speech.gettext("Thank you. You are confirmed. Goodbye."), language)
            elif open_now:
                again = _address(address, "keys", event.call_id, language=language)
                root = self._keypad(again, speech.gettext("That PIN is not right."), language)
            elif result.status == Status.LOCKED:
                _say(root, speech.gettext("That PIN is not right. Goodbye."), language)
            else:
                _say(root, speech.gettext("Goodbye."), language)
        elif step == "digit" and event is not None and open_now:
            if event.report.outcome is Outcome.CONFIRMED:
                _, _, pin = self._opened(query, event.call_id)
                code = speech.gettext(
                    "Your code is %(code)s. Again, your code is %(code)s. Goodbye."
                )
                _say(root, code % {"code": ", ".join(pin)}, language)
        if step != "status" and not any(c.tag in ("Gather", "Hangup") for c in root):
            ET.SubElement(root, "Hangup")  # nothing more to say: the call ends here
        return CallbackReply(transport.to_xml_bytes(root), "text/xml")

    # -- the call script ----------------------------------------------------------------------
    def _script(self, answer_url: str, style: Style, app_name: str) -> ET.Element:
        """What the call says once a person answered (the ``answer`` step), in the
        language its address names."""
        query = dict(_query_of(answer_url))
        call_id, sealed = query.get("c", ""), query.get("s")
        language = spoken_language(query.get("l"), self.speaks)
        speech = for_locale(language)
        base = _without_query(answer_url)
        if style is Style.KEYPAD:
            intro = speech.gettext(
                "This is %(app)s. To confirm it is you, key in the PIN shown on your screen, "
                "then press the pound key."
            )
            return self._keypad(
                _address(base, "keys", call_id, language=language),
                intro % {"app": app_name},
                language,
                first=True,
            )
        _, digit, _ = self._opened({"s": sealed or ""}, call_id)
        root = ET.Element("Response")
        gather = ET.SubElement(
            root,
            "Gather",
            input="dtmf",
            numDigits="1",
            timeout=str(DIGIT_SECONDS),
            action=_address(base, "digit", call_id, sealed, language),
            method="POST",
        )
        press = speech.gettext("This is %(app)s. To hear your code, press %(digit)s.")
        _say(gather, press % {"app": app_name, "digit": digit}, language)
        _say(root, speech.gettext("Goodbye."), language)
        ET.SubElement(root, "Hangup")
        return root

    def _keypad(
        self, action: str, said: str, language: str = SOURCE, *, first: bool = False
    ) -> ET.Element:
        """Ask for the PIN's keys: ``said`` first, then (unless it is the call's first
        words) an invitation to key the PIN in again."""
        speech = for_locale(language)
        root = ET.Element("Response")
        gather = ET.SubElement(
            root,
            "Gather",
            input="dtmf",
            numDigits=str(self.pin_length),
            finishOnKey="#",
            timeout=str(KEYS_SECONDS),
            action=action,
            method="POST",
        )
        again = speech.gettext("Key in the PIN again.")
        _say(gather, said if first else f"{said} {again}", language)
        _say(root, speech.gettext("We did not get any keys. Goodbye."), language)
        ET.SubElement(root, "Hangup")
        return root

    def _sealer(self) -> Sealer:
        if self.sealer is None:
            raise ProviderConfigError(detail="Twilio: used before init_app gave it a sealer")
        return self.sealer

    def _opened(self, query: Mapping[str, str], call_id: str) -> tuple[str, str, str]:
        """(call id, digit, code) sealed in the address, for this call only."""
        opened = self._sealer().open(query.get("s", "").encode())
        parts = (opened or "").split(":")
        if len(parts) != 3 or parts[0] != call_id or not parts[1].isdigit():
            raise ProviderProtocolError(detail="Twilio: the sealed code does not open for the call")
        return parts[0], parts[1], parts[2]

    # -- reading reports ------------------------------------------------------------------------
    def _report(self, status: str, answered_by: str, style: Style) -> CallReport:
        """A call's status (polled or posted) as a report for the flow."""
        status = status.strip().lower()
        detail = f"Twilio status {status[:20]!r}" + (
            f", answered by {answered_by[:20]!r}" if answered_by else ""
        )
        if answered_by in MACHINES and status in ("in-progress", "completed"):
            return _voicemail(None, answered_by)
        if status in FAILURES:
            return CallReport(
                call=CallState.ENDED, outcome=Outcome.FAILED, reason=FAILURES[status], detail=detail
            )
        if status == "completed" and style is Style.KEYPAD:
            return CallReport(
                call=CallState.ENDED, outcome=Outcome.FAILED, reason=NO_PIN, detail=detail
            )
        if status not in PROGRESS:
            raise ProviderProtocolError(detail=f"Twilio reported call status {status[:20]!r}")
        return CallReport(call=PROGRESS[status], detail=detail)

    # -- the wire ------------------------------------------------------------------------------
    def _request(self, method: str, path: str, number: str, **kwargs: Any) -> dict[str, Any]:
        """One REST request; the answer's JSON object, or the ProviderError it means."""
        url = f"{self.base_url}{API}/Accounts/{self.account_sid}{path}"
        auth = httpx.BasicAuth(self.account_sid, self.auth_token)
        try:
            response = transport.send(self.client, method, url, vendor=VENDOR, auth=auth, **kwargs)
        except ProviderError as e:
            e.detail = self._redact(e.detail or "", numbers=False)  # the address names the SID
            if isinstance(e, ProviderConfigError):
                e.detail = f"{e.detail}; {CHECK_ACCOUNT}"
            raise
        try:
            data = json.loads(response.content)
        except (ValueError, UnicodeDecodeError, RecursionError):
            data = None
        if not isinstance(data, dict):
            raise ProviderProtocolError(
                detail=f"Twilio answered HTTP {response.status_code} to {method} "
                f"{path.split('/')[1]} without a JSON object"
            )
        if response.status_code < 300:
            return data
        raise self._error(response.status_code, data, number)

    def _error(self, status: int, data: dict[str, Any], number: str) -> ProviderError:
        code = data.get("code")
        said = data.get("message")
        message = self._redact.clean(said if isinstance(said, str) else "", number, limit=200)
        detail = f"Twilio error {code if isinstance(code, int) else '?'} (HTTP {status}): {message}"
        known = ERRORS.get(code) if isinstance(code, int) and not isinstance(code, bool) else None
        if known is not None:
            cls, why = known
            detail = f"{detail}; {why}"
            if cls is ProviderRejected:
                return ProviderRejected(gettext(NUMBER_REFUSED), detail=detail)
            if cls is ProviderUnavailable:
                return ProviderUnavailable(
                    gettext("The phone service is busy right now. Please try again in a moment."),
                    detail=detail,
                )
            return cls(detail=detail)
        if status == 429:
            return ProviderUnavailable(detail=detail)
        return ProviderConfigError(
            gettext(
                "The phone service refused the request this site sent. Please tell the site's "
                "operators."
            ),
            detail=detail,
        )


def _voicemail(sid: str | None, answered_by: str) -> CallReport:
    return CallReport(
        call=CallState.ENDED,
        outcome=Outcome.VOICEMAIL,
        detail=f"Twilio: answered by {answered_by[:20]}",
        reference=sid,
    )


def _address(
    callback: str,
    step: str,
    call_id: str,
    sealed: str | None = None,
    language: str = SOURCE,
) -> str:
    """Our callback address for one step of one call (the sealed code only where needed,
    the call's language when it is not English: Twilio's signature covers both)."""
    fields = {"step": step, "c": call_id}
    if sealed is not None:
        fields["s"] = sealed
    if language != SOURCE:
        fields["l"] = language
    return f"{callback}?{urlencode(fields)}"


def _without_query(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _query_of(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


def _say(parent: ET.Element, text: str, language: str = SOURCE) -> None:
    say = ET.SubElement(parent, "Say")
    if language in SAY_LANGUAGES:
        say.set("language", SAY_LANGUAGES[language])
    say.text = text


def _text(root: ET.Element) -> str:
    return transport.to_xml_bytes(root, declaration=False).decode("utf-8")
