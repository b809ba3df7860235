"""Anveo: a call that speaks the PIN through an Anveo call flow (spoken style only).

Wire format (Anveo's API help pages: "API Request", "API Response", "DIAL.IVR",
"DIAL.GETSTATUS" and "DIAL.CONNECT - API REQUEST"):

- ``POST`` raw XML to ``https://www.anveo.com/api/v3.asp`` with
  ``Content-Type: application/xml; charset=UTF-8``::

      <REQUEST><USERTOKEN><USERKEY>..</USERKEY></USERTOKEN>
        <ACTION NAME="DIAL.CALLFLOW">
          <PARAMETER NAME="PHONENUMBER">12015550123</PARAMETER>
          <PARAMETER NAME="CALLERID">12155550100</PARAMETER>
          <PARAMETER NAME="CALLFLOW">call flow key</PARAMETER>
          <PARAMETER NAME="VARIABLE" VARIABLENAME="VERIFICATIONCODE">123456</PARAMETER>
        </ACTION></REQUEST>

  Tags and attributes are upper case and case-sensitive; the request is built
  with ElementTree so no value can change its structure.
- Answer: ``<RESPONSE><RESULT>..</RESULT><VALUE NAME="REQUESTID">..</VALUE>
  <ERROR>..</ERROR></RESPONSE>``. An ``ERROR`` element with text is a failure
  (Anveo: "when ERROR is not empty there was an error"); its text goes to the
  log (with our credentials scrubbed), never to a page.
- ``DIAL.GETSTATUS`` with ``REQUESTID`` answers ``<RESULT>`` NONE (not dialled
  yet), INIT (dialling), START (answered) or END (ended). None of them decides
  anything: the person types the spoken PIN on the page, where the flow checks
  it. The flow polls at most once per PHONEVERIFY_POLL_INTERVAL.
- ``DIAL.CONNECT`` dials the user, then ``DESTPHONENUMBER``, and
  connects them. It cannot carry a PIN, so it is only the "talk to us" bridge to
  PHONEVERIFY_ANVEO_CONNECT_TO; it verifies nobody. It is sent without CALLERID,
  so the support line sees the user's own number (Anveo's documented default).

Pinned (our choice where the pages leave it open): PHONENUMBER, CALLERID and
DESTPHONENUMBER are digits with the country code, no "+"; the code variable's
value is the PIN's digits, as in Anveo's own VERIFICATIONCODE example.

Assumptions: errors come as HTTP 200 with ``<RESULT>ERROR</RESULT><ERROR>..``;
their text is free-form, so a few words in it (USERKEY, CALLERID, BALANCE...)
sort them into account problems and refused numbers (``vendor.ErrorWords``). MAXCALLDURATION is
documented for DIAL.CONNECT only, so only the bridge sends it. Newer Anveo pages
also document a SIGNATURE parameter; it is sent when PHONEVERIFY_ANVEO_SIGNATURE
is set.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET  # noqa: S405 - building only; answers go through parse_xml
from collections.abc import Mapping
from typing import Any

import httpx

from ..errors import (
    ConfigError,
    ProviderConfigError,
    ProviderError,
    ProviderProtocolError,
)
from ..i18n import gettext
from ..settings import Setting
from .base import (
    CallReport,
    CallRequest,
    CallState,
    CallTicket,
    PlacedCall,
    Provider,
    Style,
    check_url,
    timeout_setting,
)
from .transport import make_client, parse_xml, send, to_xml_bytes
from .vendor import ErrorWords, Redactor

__all__ = ["Anveo", "DEFAULT_URL"]

VENDOR = "Anveo"
DEFAULT_URL = "https://www.anveo.com/api/v3.asp"

#: DIAL.GETSTATUS results and the call progress they mean
STATUS = {
    "NONE": CallState.RINGING,
    "INIT": CallState.RINGING,
    "START": CallState.ANSWERED,
    "END": CallState.ENDED,
}
#: words of an ERROR text that point at the account or settings, then at the number
ERROR_WORDS = ErrorWords(
    account=(
        "USERKEY",
        "SIGNATURE",
        "CALLFLOW",
        "CALLERID",
        "ACCOUNT",
        "BALANCE",
        "FUNDS",
        "CREDIT",
        "AUTH",
        "PERMISSION",
        "DISABLED",
        "SUSPENDED",
    ),
    number=("NUMBER",),
)
_NUMBER = re.compile(r"\+?\d{7,15}")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def _prefix(option: str) -> str:
    return f"PHONEVERIFY_ANVEO_{option}"


class Anveo(Provider):
    """The Anveo API: DIAL.CALLFLOW speaks the PIN, polled with DIAL.GETSTATUS;
    DIAL.CONNECT bridges to the support line."""

    name = "anveo"
    styles = frozenset({Style.SPOKEN})
    preferred_style = Style.SPOKEN
    settings = (
        Setting(
            _prefix("USER_KEY"),
            None,
            "str",
            "Anveo API USERKEY (API Configuration screen).",
            required=True,
            secret=True,
        ),
        Setting(_prefix("URL"), DEFAULT_URL, "str", "Anveo API address (XML requests)."),
        timeout_setting("anveo", "Anveo"),
        Setting(
            _prefix("CALLFLOW"),
            None,
            "str",
            "API key of the Anveo call flow that speaks the code (Call Flow Builder, Call "
            "Flow Details).",
            required=True,
            secret=True,
        ),
        Setting(
            _prefix("CALLER_ID"),
            None,
            "str",
            "Verified Anveo caller ID, with its country code (digits or E.164).",
            required=True,
        ),
        Setting(
            _prefix("CODE_VARIABLE"),
            "VERIFICATIONCODE",
            "str",
            "Call flow variable that receives the PIN's digits.",
        ),
        Setting(
            _prefix("TEST"), False, "bool", "Send TEST=TRUE: Anveo takes the request as a test."
        ),
        Setting(
            _prefix("MEMO"), None, "str", "MEMO sent with each request (notes in Anveo's logs)."
        ),
        Setting(_prefix("BILLING_CODE"), None, "str", "BILLINGCODE sent with each request."),
        Setting(
            _prefix("SIGNATURE"),
            None,
            "str",
            "SIGNATURE parameter, for accounts whose API configuration asks for one.",
            secret=True,
        ),
        Setting(
            _prefix("CONNECT_TO"),
            None,
            "str",
            'Support number (digits or E.164): offers a "talk to us" call on a failed or '
            "locked verification (DIAL.CONNECT).",
        ),
        Setting(
            _prefix("MAX_CALL_DURATION"),
            None,
            "int",
            'Minutes after which Anveo ends a "talk to us" call (MAXCALLDURATION).',
            minimum=1,
            maximum=1440,
        ),
    )

    def __init__(
        self, options: Mapping[str, Any], *, style: Style, pin_length: int, app_name: str
    ) -> None:
        super().__init__(options, style=style, pin_length=pin_length, app_name=app_name)
        self.url: str = check_url(_prefix("URL"), self.options["url"], DEFAULT_URL)
        self._user_key: str = self.options["user_key"]
        self._signature: str | None = self.options.get("signature") or None
        self.callflow: str = self.options["callflow"]
        self.caller_id = _digits(_prefix("CALLER_ID"), self.options["caller_id"])
        variable = self.options.get("code_variable") or ""
        if not _VARIABLE.fullmatch(variable):
            raise ConfigError(
                _prefix("CODE_VARIABLE"),
                f"is {variable!r}",
                "use the call flow variable's name, e.g. 'VERIFICATIONCODE'",
            )
        self.code_variable = variable
        connect_to = self.options.get("connect_to")
        self.connect_to = _digits(_prefix("CONNECT_TO"), connect_to) if connect_to else None
        self.client: httpx.Client = make_client(self.options["timeout"])
        self._redact = Redactor(self._user_key, self._signature, self.callflow)

    # -- calls ----------------------------------------------------------------------
    def place_call(self, request: CallRequest) -> CallTicket:
        """Dial the number into the configured call flow, passing the PIN as a variable."""
        params: list[ET.Element] = [
            _param("PHONENUMBER", request.number.lstrip("+")),
            _param("CALLERID", self.caller_id),
            _param("CALLFLOW", self.callflow),
            _param("VARIABLE", request.pin, VARIABLENAME=self.code_variable),
        ]
        answer = self._action("DIAL.CALLFLOW", params + self._common())
        return CallTicket(reference=_request_id(answer), call=CallState.RINGING)

    def call_status(self, call: PlacedCall) -> CallReport:
        if not call.reference:
            return CallReport()
        try:
            answer = self._action("DIAL.GETSTATUS", [_param("REQUESTID", call.reference)])
        except ProviderError as e:
            if e.retryable:
                raise
            # The PIN may already have been spoken: a status error must not end the verification.
            raise ProviderProtocolError(detail=e.detail) from e
        result = (answer.findtext("RESULT") or "").strip().upper()
        if result not in STATUS:
            raise ProviderProtocolError(
                detail=f"{VENDOR} DIAL.GETSTATUS answered RESULT {result[:40]!r}"
            )
        return CallReport(call=STATUS[result], detail=f"{VENDOR} call status {result}")

    # -- bridge ---------------------------------------------------------------------
    @property
    def can_bridge(self) -> bool:
        return self.connect_to is not None

    def bridge(self, number: str) -> str:
        if self.connect_to is None:
            raise ProviderConfigError(detail=f"{_prefix('CONNECT_TO')} is not set")
        params = [
            _param("PHONENUMBER", number.lstrip("+")),
            _param("DESTPHONENUMBER", self.connect_to),
        ]
        if self.options.get("max_call_duration"):
            params.append(_param("MAXCALLDURATION", str(self.options["max_call_duration"])))
        return _request_id(self._action("DIAL.CONNECT", params + self._common()))

    def close(self) -> None:
        self.client.close()

    # -- wire -----------------------------------------------------------------------
    def _common(self) -> list[ET.Element]:
        params = []
        if self.options.get("test"):
            params.append(_param("TEST", "TRUE"))
        if self.options.get("memo"):
            params.append(_param("MEMO", self.options["memo"]))
        if self.options.get("billing_code"):
            params.append(_param("BILLINGCODE", self.options["billing_code"]))
        return params

    def _action(self, action: str, params: list[ET.Element]) -> ET.Element:
        """Send one ACTION; the RESPONSE element, or a ProviderError."""
        root = ET.Element("REQUEST")
        ET.SubElement(ET.SubElement(root, "USERTOKEN"), "USERKEY").text = self._user_key
        element = ET.SubElement(root, "ACTION", NAME=action)
        if self._signature:
            element.append(_param("SIGNATURE", self._signature))
        element.extend(params)
        response = send(
            self.client,
            "POST",
            self.url,
            vendor=VENDOR,
            content=to_xml_bytes(root),
            headers={"Content-Type": "application/xml; charset=UTF-8", "Accept": "application/xml"},
        )
        where = f"HTTP {response.status_code} to {action}"
        answer = parse_xml(response.content, vendor=VENDOR, where=where)
        if answer.tag != "RESPONSE":
            raise ProviderProtocolError(
                detail=f"{where}: <{answer.tag[:40]}> instead of <RESPONSE>"
            )
        error = (answer.findtext("ERROR") or "").strip()
        if error:
            raise self._error(action, error)
        if response.status_code >= 400:
            raise ProviderProtocolError(detail=f"{where} without an ERROR")
        return answer

    def _error(self, action: str, text: str) -> ProviderError:
        detail = f"{VENDOR} ERROR on {action}: {self._redact.clean(text)}"
        refused = ProviderError(
            gettext("The phone service refused the call. Please try again later."), detail=detail
        )
        return ERROR_WORDS.classify(self._redact(text, numbers=False), detail, refused)


def _param(name: str, value: str, **attributes: str) -> ET.Element:
    element = ET.Element("PARAMETER", {"NAME": name, **attributes})
    element.text = value
    return element


def _request_id(answer: ET.Element) -> str:
    for value in answer.findall("VALUE"):
        if value.get("NAME") == "REQUESTID":
            request_id = (value.text or "").strip()
            if request_id and len(request_id) <= 255:
                return request_id
    raise ProviderProtocolError(detail=f"{VENDOR} answered without a usable REQUESTID")


def _digits(key: str, value: Any) -> str:
    """A number as Anveo takes it: country code and digits, no '+'."""
    text = str(value).strip()
    if not _NUMBER.fullmatch(text):
        raise ConfigError(
            key,
            f"is {value!r}",
            "use the number with its country code, as digits or E.164, e.g. '+12155550100'",
        )
    return text.lstrip("+")
