"""VoiceShot: a call through a VoiceShot IVR menu, in keypad or spoken style.

Wire format (VoiceShot IVR API v4.5 documentation: "Outbound Posts", the call
query, call events and call summary pages, and the errorid table):

- We ``POST`` raw XML (``Content-Type: text/xml``) to
  ``https://api.voiceshot.com/ivrapi.asp``. Sending a call (action 0)::

      <campaign menuid="1-1234" action="0" callerid="2015550100">
        <prompts><prompt promptid="1" tts="This is Example. Your PIN is 1, 2, ..."/></prompts>
        <phonenumbers><phonenumber number="2015550123" callid="<our call id>"/></phonenumbers>
      </campaign>

  VoiceShot answers ``<campaign errorid="0" comment="ok"/>``; any other errorid
  (1-21, each documented) is a failure with a readable reason. Errorid 1 means
  this server's IP address is not registered with VoiceShot (its only
  authentication), a configuration error. On a connection failure (nothing
  sent) we retry once at ``https://apiproxy.voiceshot.com/ivrapi.asp``, as
  VoiceShot's own SDKs do; never after a timeout, which could place the call twice.
- Keypad style: prompt 1's text asks the person to key in the PIN shown on the
  page and never says it. Spoken style: prompt 1 speaks the PIN digit by digit,
  twice. Either way the menu's prompt 1 is ours (pinned: ``promptid="1"``); in
  keypad style it must collect the digits.
- VoiceShot posts to the address pasted in its console (``flask phoneverify
  callback-url voiceshot``), which carries our own signed token because VoiceShot
  signs nothing: keypress events ``<prompt menuid callid promptid keypress/>``
  during the call, and the call summary ``<campaign menuid callid phonenumber
  status comment ...><prompts><prompt promptid keypress/>..</prompts></campaign>``
  at hang-up (or after the last attempt). Keys pressed at prompt 1 are relayed
  to the flow, which checks them against the PIN's hash (wrong ones count as an
  attempt). A summary that is not "Successful" fails the verification with a
  readable reason; in spoken style a successful one means the PIN was delivered.
- When no event has come within the poll interval, the flow asks here, and we
  send a call query (action 3) for our call id; its ``<phonenumber>`` result is
  read like a summary.

Pinned (our choices where the documents leave it open): North American numbers
only, sent as 10 digits (others are refused before any request); ``callid`` is
the flow's random call id (32 characters, under VoiceShot's 50); ``promptid="1"``
for our prompt.

Assumptions: a call query answers no ``<phonenumber>`` (or one without a status,
or a status that says it is under way: pending, in progress, queued, calling...)
for a call not finished yet; other statuses than "Successful" (matched without
regard to case) mean the call did not reach anyone; answer and hang-up events
(action 4/5, documented for inbound calls) carry nothing we need and are
ignored.

VoiceShot repeats keys: the summary (and the call query) carries again what a
keypress event already relayed, and a post may be replayed. This module keeps
no memory of what it relayed, so any worker may take any post: every report that
carries digits is marked ``once=True``, and the flow counts those digits once per
call and number, in the database (after checking that the event's number is the
verification's, so a forged number cannot use up the real one's entry).
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET  # noqa: S405 - building only; answers go through parse_xml
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from ..errors import (
    ConfigError,
    ProviderConfigError,
    ProviderError,
    ProviderProtocolError,
    ProviderRejected,
    ProviderUnavailable,
)
from ..i18n import N_, for_locale, gettext
from ..phone import split
from ..settings import Setting
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
from .transport import make_client, parse_xml, send, to_xml_bytes
from .vendor import Redactor

__all__ = ["VoiceShot", "DEFAULT_URL", "PROXY_URL", "ERRORS"]

log = logging.getLogger("flask_phoneverify")

VENDOR = "VoiceShot"
DEFAULT_URL = "https://api.voiceshot.com/ivrapi.asp"
PROXY_URL = "https://apiproxy.voiceshot.com/ivrapi.asp"
PROMPT_ID = "1"
MAX_KEYS = 64

_MENU_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,49}")
_CALLER_ID = re.compile(r"(?:\+?1)?(\d{10})")

#: VoiceShot has no credentials (it knows us by IP address): only numbers to mask
_REDACT = Redactor()

_REFUSED = N_("The phone service refused the call request. Please tell the site's operators.")

#: every documented errorid: (exception class, user message or None for the class's, reason)
ERRORS: dict[int, tuple[type[ProviderError], str | None, str]] = {
    1: (
        ProviderConfigError,
        N_(
            "The phone service does not accept calls from this site's server yet (its IP "
            "address is not registered with VoiceShot). Please tell the site's operators."
        ),
        "IP address is not registered with VoiceShot: register this server's address in the "
        "VoiceShot account",
    ),
    2: (ProviderConfigError, None, "the VoiceShot free trial has ended"),
    3: (ProviderRejected, _REFUSED, "XML file malformed or missing"),
    4: (ProviderRejected, _REFUSED, "no action defined"),
    5: (ProviderConfigError, None, "menuid missing or misplaced (PHONEVERIFY_VOICESHOT_MENU_ID)"),
    6: (ProviderRejected, _REFUSED, "callid missing or misplaced"),
    7: (ProviderRejected, _REFUSED, "general parse error"),
    8: (ProviderRejected, None, "phonenumber missing, misplaced or not callable"),
    9: (
        ProviderConfigError,
        None,
        "callerid missing, misplaced or not 10 digits (PHONEVERIFY_VOICESHOT_CALLER_ID)",
    ),
    10: (ProviderRejected, _REFUSED, "date/time given is invalid"),
    11: (ProviderRejected, _REFUSED, "promptid missing or misplaced"),
    12: (ProviderRejected, _REFUSED, "TTS text missing or misplaced"),
    13: (ProviderRejected, _REFUSED, "filename missing or misplaced"),
    14: (ProviderRejected, _REFUSED, "PROMPT tag missing or misplaced"),
    15: (ProviderRejected, _REFUSED, "PROMPTS tag missing or misplaced"),
    16: (ProviderRejected, _REFUSED, "PHONENUMBER tag missing or misplaced"),
    17: (ProviderRejected, _REFUSED, "PHONENUMBERS tag missing or misplaced"),
    18: (ProviderRejected, _REFUSED, "campaign tag missing or misplaced"),
    19: (
        ProviderConfigError,
        None,
        "invalid menuid, no campaign for it (PHONEVERIFY_VOICESHOT_MENU_ID)",
    ),
    20: (ProviderRejected, _REFUSED, "file attributes missing or incorrect"),
    21: (ProviderRejected, _REFUSED, "wav format invalid"),
}

#: words of a status that says the call is still under way (the documents show only the
#: final "Successful"; a call query made mid-call must not end the verification)
_UNDER_WAY = ("pend", "progress", "queue", "calling", "ringing", "dialing", "schedul", "active")

#: words of a call's status or comment that say a machine answered (VoiceShot's comments
#: are free text; its SDK samples show "Human Answer")
_MACHINE = ("machine", "voicemail")

#: words of a call's status or comment, and what they tell the user (kept in English:
#: callbacks report them, translated where shown)
_FAILURES = (
    ("busy", N_("The line was busy. Please try again in a moment.")),
    ("no answer", N_("The call was not answered.")),
    ("noanswer", N_("The call was not answered.")),
    ("not answered", N_("The call was not answered.")),
    ("fax", N_("The number answered as a fax line.")),
    ("invalid", N_("The number could not be reached.")),
    ("disconnected", N_("The number could not be reached.")),
)


def _prefix(option: str) -> str:
    return f"PHONEVERIFY_VOICESHOT_{option}"


class VoiceShot(Provider):
    """The VoiceShot IVR API: places calls into an IVR menu; keypresses and summaries
    come back as call events."""

    name = "voiceshot"
    styles = frozenset({Style.KEYPAD, Style.SPOKEN})
    preferred_style = Style.KEYPAD
    calling_codes = frozenset({1})  # North American numbers only (PROVIDERS.md)
    settings = (
        Setting(
            _prefix("MENU_ID"),
            None,
            "str",
            "VoiceShot IVR menu (campaign) id, e.g. '1-1234'; its prompt 1 is ours.",
            required=True,
        ),
        Setting(
            _prefix("CALLER_ID"),
            None,
            "str",
            "10-digit North American number the calls come from.",
            required=True,
        ),
        Setting(_prefix("URL"), DEFAULT_URL, "str", "VoiceShot API address (outbound posts)."),
        Setting(
            _prefix("FALLBACK_URL"),
            None,
            "str",
            "Address tried once when the first cannot be reached; unset: VoiceShot's proxy "
            "when PHONEVERIFY_VOICESHOT_URL is left at its default; empty: no retry.",
        ),
        timeout_setting("voiceshot", "VoiceShot"),
    )

    def __init__(
        self, options: Mapping[str, Any], *, style: Style, pin_length: int, app_name: str
    ) -> None:
        super().__init__(options, style=style, pin_length=pin_length, app_name=app_name)
        menu_id = str(self.options["menu_id"]).strip()
        if not _MENU_ID.fullmatch(menu_id):
            raise ConfigError(
                _prefix("MENU_ID"),
                f"is {menu_id!r}",
                "use the menu id VoiceShot shows, e.g. '1-1234'",
            )
        self.menu_id = menu_id
        caller = _CALLER_ID.fullmatch(str(self.options["caller_id"]).strip())
        if caller is None:
            raise ConfigError(
                _prefix("CALLER_ID"),
                f"is {self.options['caller_id']!r}",
                "use a 10-digit North American number, e.g. '2015550100'",
            )
        self.caller_id = caller.group(1)
        self.url = check_url(_prefix("URL"), self.options["url"], DEFAULT_URL)
        fallback = self.options.get("fallback_url")
        if fallback is None:
            fallback = PROXY_URL if self.url == DEFAULT_URL else ""
        self.fallback_url = (
            check_url(_prefix("FALLBACK_URL"), fallback, PROXY_URL) if fallback else None
        )
        self.client: httpx.Client = make_client(self.options["timeout"])

    # -- calls ----------------------------------------------------------------------
    def place_call(self, request: CallRequest) -> CallTicket:
        """Post the call (action 0) with our prompt; VoiceShot answers errorid 0 when queued."""
        number = _national(request.number)
        campaign = ET.Element("campaign", menuid=self.menu_id, action="0", callerid=self.caller_id)
        prompts = ET.SubElement(campaign, "prompts")
        ET.SubElement(prompts, "prompt", promptid=PROMPT_ID, tts=self.call_text(request))
        numbers = ET.SubElement(campaign, "phonenumbers")
        ET.SubElement(numbers, "phonenumber", number=number, callid=request.call_id)
        self._post(campaign, action="send call", answer_required=True)
        return CallTicket(reference=request.call_id, call=CallState.RINGING)

    def call_text(self, request: CallRequest) -> str:
        """What prompt 1 says: the PIN in spoken style, never in keypad style; in the
        verification's language when this provider speaks it (see ``speaks``)."""
        speech = for_locale(self.call_language(request))
        if request.style is Style.SPOKEN:
            text = speech.gettext(
                "This is %(app)s. Your PIN is %(pin)s. Again, your PIN is %(pin)s. Goodbye."
            )
            return text % {"app": request.app_name, "pin": ", ".join(request.pin)}
        text = speech.gettext(
            "This is %(app)s. To confirm it is you, key in the PIN shown on your screen, "
            "then press the pound key."
        )
        return text % {"app": request.app_name}

    def call_status(self, call: PlacedCall) -> CallReport:
        campaign = ET.Element("campaign", action="3", menuid=self.menu_id)
        numbers = ET.SubElement(campaign, "phonenumbers")
        ET.SubElement(numbers, "phonenumber", callid=call.call_id)
        answer = self._post(campaign, action="call query", answer_required=False)
        for result in answer.iter("phonenumber"):
            if result.get("callid") != call.call_id:
                continue
            number = result.get("number")
            if number and _e164(number) != call.number:
                raise ProviderProtocolError(detail=f"{VENDOR} call query named another number")
            return self._report(result)
        return CallReport()  # not called yet, or still on the line

    # -- callbacks ------------------------------------------------------------------
    def parse_callback(self, request: CallbackRequest) -> list[CallEvent]:
        root = parse_xml(request.body, vendor=VENDOR)
        if root.tag not in ("prompt", "campaign"):
            raise ProviderProtocolError(detail=f"{VENDOR} posted <{root.tag[:40]}>")
        if root.get("menuid") != self.menu_id:
            log.warning("phoneverify: VoiceShot event for another menu ignored")
            return []
        call_id = root.get("callid") or ""
        if not call_id:
            raise ProviderProtocolError(detail=f"{VENDOR} posted an event without a callid")
        if root.tag == "prompt":
            return self._keypress(call_id, root)
        if root.get("action") is not None or not root.get("status"):
            return []  # answer/hang-up events: the summary tells what matters
        said = root.get("phonenumber")
        number = _e164(said) if said else None
        return [CallEvent(call_id, self._report(root), number=number)]

    def callback_reply(
        self, request: CallbackRequest, results: Sequence[tuple[CallEvent, EventResult]]
    ) -> CallbackReply:
        return CallbackReply("", "text/plain")  # no call command: the menu goes on as designed

    def close(self) -> None:
        self.client.close()

    # -- reading reports ---------------------------------------------------------------
    def _keypress(self, call_id: str, prompt: ET.Element) -> list[CallEvent]:
        if self.style is not Style.KEYPAD or prompt.get("promptid") != PROMPT_ID:
            return []
        keys = _keys(prompt.get("keypress"))
        if keys is None:
            return []
        return [CallEvent(call_id, CallReport(call=CallState.ANSWERED, digits=keys, once=True))]

    def _report(self, result: ET.Element) -> CallReport:
        """A summary or call query result: how the call ended, and the keys at prompt 1."""
        status = (result.get("status") or "").strip()
        comment = (result.get("comment") or "").strip()
        said, why = _REDACT.clean(status, limit=40), _REDACT.clean(comment, limit=80)
        detail = f"{VENDOR} status {said!r}, comment {why!r}"
        if not status or any(word in status.lower() for word in _UNDER_WAY):
            return CallReport()  # not finished: only a final status decides
        if any(word in f"{status} {comment}".lower() for word in _MACHINE):
            # "Successful" too: a machine took the call, and in spoken style the code with
            # it; the verification fails, so the recorded code is worth nothing
            return CallReport(call=CallState.ENDED, outcome=Outcome.VOICEMAIL, detail=detail)
        if status.lower() != "successful":
            return CallReport(
                call=CallState.ENDED,
                outcome=Outcome.FAILED,
                reason=_failure_reason(f"{status} {comment}"),
                detail=detail,
            )
        if self.style is Style.SPOKEN:
            return CallReport(outcome=Outcome.CONFIRMED, detail=detail)
        keys = next(
            (
                _keys(p.get("keypress"))
                for p in result.iter("prompt")
                if p.get("promptid") == PROMPT_ID
            ),
            None,
        )
        if keys is None:
            reason = _failure_reason(comment, N_("The call ended before the PIN was keyed in."))
            return CallReport(
                call=CallState.ENDED, outcome=Outcome.FAILED, reason=reason, detail=detail
            )
        # the keypress event may have relayed these keys already: the flow counts them once
        return CallReport(call=CallState.ENDED, digits=keys, detail=detail, once=True)

    # -- wire -----------------------------------------------------------------------
    def _post(self, campaign: ET.Element, *, action: str, answer_required: bool) -> ET.Element:
        """Post one request; the answer's root, or a ProviderError."""
        response = self._send(to_xml_bytes(campaign, declaration=False))
        where = f"HTTP {response.status_code} to {action}"
        answer = parse_xml(response.content, vendor=VENDOR, where=where)
        if answer.tag != "campaign":
            raise ProviderProtocolError(
                detail=f"{where}: <{answer.tag[:40]}> instead of <campaign>"
            )
        errorid = answer.get("errorid")
        if errorid is None:
            if answer_required or response.status_code >= 400:
                raise ProviderProtocolError(detail=f"{where} without an errorid")
            return answer
        if not errorid.strip().isdigit():
            raise ProviderProtocolError(detail=f"{where}: errorid {errorid[:20]!r}")
        code = int(errorid)
        if code != 0:
            raise _error(code, answer.get("comment"))
        return answer

    def _send(self, body: bytes) -> httpx.Response:
        kwargs: dict[str, Any] = {"content": body, "headers": {"Content-Type": "text/xml"}}
        try:
            return send(self.client, "POST", self.url, vendor=VENDOR, **kwargs)
        except ProviderUnavailable as e:
            nothing_sent = isinstance(e.__cause__, httpx.ConnectError | httpx.ConnectTimeout)
            if self.fallback_url is None or not nothing_sent:
                raise
            log.warning(
                "phoneverify: VoiceShot unreachable (%s); trying its fallback address", e.detail
            )
        return send(self.client, "POST", self.fallback_url, vendor=VENDOR, **kwargs)


def _error(code: int, comment: str | None) -> ProviderError:
    known = ERRORS.get(code)
    said = _REDACT.clean(comment or "", limit=200)
    if known is None:
        return ProviderError(detail=f"{VENDOR} errorid {code} (undocumented): {said!r}")
    cls, message, reason = known
    return cls(
        gettext(message) if message else None,
        detail=f"{VENDOR} errorid {code}: {reason} ({said!r})",
    )


def _failure_reason(words: str, default: str = N_("The call did not go through.")) -> str:
    lowered = words.lower()
    return next((reason for word, reason in _FAILURES if word in lowered), default)


def _keys(keypress: str | None) -> str | None:
    """Keys pressed, without the closing '#'; None when nothing was pressed."""
    keys = (keypress or "").strip().rstrip("#")
    return keys[:MAX_KEYS] or None


def _national(e164: str) -> str:
    """The 10 digits VoiceShot dials, or ProviderRejected for numbers outside North America."""
    country, national = split(e164)
    if country != "1" or len(national) != 10:
        raise ProviderRejected(
            gettext(
                "Calls through this site's phone service reach North American numbers (+1) only."
            ),
            detail=f"{VENDOR} calls +1 numbers only; asked for a +{country} number",
        )
    return national


def _e164(number: str) -> str:
    """A number VoiceShot reports (10 digits, or 11 with the leading 1) as E.164."""
    digits = number.strip()
    if not (digits.isdigit() and (len(digits) == 10 or (len(digits) == 11 and digits[0] == "1"))):
        raise ProviderProtocolError(detail=f"{VENDOR} reported a number that is not 10 digits")
    return "+1" + digits[-10:]
