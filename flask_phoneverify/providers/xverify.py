"""Xverify Phone Confirm over REST (httpx): the call speaks our PIN (spoken style only).

Wire format (Xverify's "Phone Confirm Requests & Response Codes"; where it is
silent, the choice is marked as an assumption):

- place the call: ``GET {url}/phoneconfirm/placecall/`` with the lowercase query
  parameters ``phone`` (the national number, ``2015106000``), ``type``
  (``json`` or ``xml``), ``country_code`` (the calling code digits, ``1``),
  ``code`` (our PIN), ``redial_count`` and ``redial_interval`` (only when set),
  ``apikey`` and ``domain``. ``call_place_time`` schedules a call for later and
  is never sent: a verification call is placed now.
- check a typed code: ``GET {url}/phoneconfirm/verifycode/`` with
  ``transaction_number`` (from the placed call), ``code``, ``apikey``,
  ``domain`` and ``type``.
- answers: one object with a single wrapper key around ``{error, status,
  message, transaction_number, ...}``; the wrapper's name is not documented, so
  the first object is read whatever its key (as the public clients do). In XML,
  the root element is that wrapper and the fields are its children
  (**assumption**). ``error`` is 0 on success and comes as an int or a string;
  ``status`` is ``valid`` or ``invalid``; ``message`` goes to the log only.
- HTTP 503 means the ``domain`` is not trusted for the API key (the document
  says so): a configuration error naming PHONEVERIFY_XVERIFY_DOMAIN, not an outage.

What is assumed, and why:

- A failed placecall does not say whose fault it is (no error codes are
  documented). A message about the key, domain, account or credit blames our
  account (ProviderConfigError); one about the phone, number or country, or an
  ``invalid`` status without an error code ("the call has failed"), blames the
  number (ProviderRejected); any other error code is a problem with our request,
  so our settings (ProviderConfigError). The words are in ``ERROR_WORDS``
  (``vendor.ErrorWords``).
- verifycode answers with the same fields and ``status`` ``valid`` when the
  code matched; ``invalid`` with ``error`` 0 is a wrong code (an attempt). A
  non-zero ``error`` is "a problem with the request" (the document): Xverify could
  not check the code, so it is a ProviderError, never a wrong attempt.
- Xverify has no status endpoint (``polled = False``). A placed call is
  reported as ringing: Xverify dials (and redials) and nobody tells us more; the
  page keeps asking for the PIN that the call speaks.

The query string carries the API key, the number and the PIN, so it is added
below httpx's client (``transport.send(secret_query=...)``): httpx's own
request log, its exceptions and our error details only ever see the path.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET  # noqa: S405 - types only; parsing goes through defusedxml
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from ..errors import (
    ConfigError,
    ProviderConfigError,
    ProviderProtocolError,
    ProviderUnavailable,
)
from ..i18n import N_, gettext
from ..phone import split
from ..settings import Setting
from . import transport
from .base import (
    CallRequest,
    CallState,
    CallTicket,
    PlacedCall,
    Provider,
    Style,
    check_url,
    timeout_setting,
)
from .vendor import Blame, ErrorWords, Redactor

__all__ = ["Xverify", "DEFAULT_URL", "PLACECALL", "VERIFYCODE"]

VENDOR = "Xverify"
DEFAULT_URL = "https://www.xverify.com/services"
PLACECALL = "/phoneconfirm/placecall/"
VERIFYCODE = "/phoneconfirm/verifycode/"

NUMBER_REFUSED = N_(
    "The phone service could not call this number. Please check it, or use another number."
)
CHECK_ACCOUNT = "check PHONEVERIFY_XVERIFY_API_KEY and PHONEVERIFY_XVERIFY_DOMAIN"

#: words of an answer's message that blame our account, then the number
ERROR_WORDS = ErrorWords(
    account=("key", "domain", "account", "auth", "credit", "balance", "subscri", "permission"),
    number=("phone", "number", "country"),
    fix=CHECK_ACCOUNT,
    number_message=NUMBER_REFUSED,
)


@dataclass(frozen=True)
class _Answer:
    error: str  # "0": no error
    status: str  # "valid" | "invalid"
    message: str
    transaction_number: str | None


class Xverify(Provider):
    """Xverify Phone Confirm (REST): the call speaks the code; verifycode checks it too."""

    name = "xverify"
    styles = frozenset({Style.SPOKEN})
    preferred_style = Style.SPOKEN
    polled = False
    settings = (
        Setting(
            "PHONEVERIFY_XVERIFY_API_KEY",
            None,
            "str",
            "Xverify API key (sent in the query string; never logged).",
            required=True,
            secret=True,
        ),
        Setting(
            "PHONEVERIFY_XVERIFY_DOMAIN",
            None,
            "str",
            "A trusted domain of the API key (Xverify answers HTTP 503 to any other).",
            required=True,
        ),
        Setting("PHONEVERIFY_XVERIFY_URL", DEFAULT_URL, "str", "Base URL of Xverify's services."),
        timeout_setting("xverify", VENDOR),
        Setting(
            "PHONEVERIFY_XVERIFY_REDIAL_COUNT",
            None,
            "int",
            "Redials when nobody picks up (redial_count); unset: not sent, Xverify's default.",
            minimum=0,
        ),
        Setting(
            "PHONEVERIFY_XVERIFY_REDIAL_INTERVAL",
            None,
            "int",
            "Seconds between redials (redial_interval); unset: not sent, Xverify's default.",
            minimum=1,
        ),
        Setting(
            "PHONEVERIFY_XVERIFY_RESPONSE_TYPE",
            "json",
            "str",
            "Answer format asked of Xverify (type): json or xml.",
            choices=("json", "xml"),
        ),
        Setting(
            "PHONEVERIFY_XVERIFY_VERIFY_REMOTE",
            True,
            "bool",
            "Also check a typed PIN with Xverify's verifycode; both checks must agree.",
        ),
    )

    def __init__(
        self, options: Mapping[str, Any], *, style: Style, pin_length: int, app_name: str
    ) -> None:
        super().__init__(options, style=style, pin_length=pin_length, app_name=app_name)
        if style is not Style.SPOKEN:
            raise ConfigError(
                "PHONEVERIFY_STYLE",
                f"is {style.value!r}, but Xverify only speaks a PIN",
                "use 'spoken'",
            )
        self.base_url = check_url(self.option_key("url"), options.get("url"), DEFAULT_URL)
        self.api_key = str(options.get("api_key") or "")
        self.domain = str(options.get("domain") or "")
        for option, value in (("api_key", self.api_key), ("domain", self.domain)):
            if not value:
                raise ConfigError(
                    self.option_key(option), "is empty", "set it from your Xverify account"
                )
        self.redial_count: int | None = options.get("redial_count")
        self.redial_interval: int | None = options.get("redial_interval")
        if self.redial_interval is not None and self.redial_count is None:
            raise ConfigError(
                self.option_key("redial_interval"),
                "is set but PHONEVERIFY_XVERIFY_REDIAL_COUNT is not, so it does nothing",
                "set PHONEVERIFY_XVERIFY_REDIAL_COUNT too, or unset the interval",
            )
        self.response_type = "xml" if options.get("response_type") == "xml" else "json"
        self.verify_remote = bool(options.get("verify_remote", True))
        self._redact = Redactor(self.api_key, mask="***")
        timeout = float(options.get("timeout") or 10.0)
        self.client = transport.make_client(
            timeout, event_hooks={"response": [self._refused_domain]}
        )

    # -- calls --------------------------------------------------------------------------
    def place_call(self, request: CallRequest) -> CallTicket:
        """placecall: Xverify speaks the code and answers a transaction number."""
        country_code, national = split(request.number)
        query: dict[str, str] = {
            "phone": national,
            "type": self.response_type,
            "country_code": country_code,
            "code": request.pin,
        }
        if self.redial_count is not None:
            query["redial_count"] = str(self.redial_count)
        if self.redial_interval is not None:
            query["redial_interval"] = str(self.redial_interval)
        query.update(apikey=self.api_key, domain=self.domain)
        answer = self._get(PLACECALL, query)
        if answer.error == "0" and answer.status == "valid":
            if not answer.transaction_number:
                raise ProviderProtocolError(detail="Xverify placecall: no transaction_number")
            return CallTicket(reference=answer.transaction_number, call=CallState.RINGING)
        detail = f"Xverify placecall: {self._describe(answer, national, request.pin)}"
        # "invalid" without an error code: the call has failed, so the number is to blame
        otherwise = (
            ERROR_WORDS.number_error(detail)
            if answer.error == "0"
            else ProviderConfigError(detail=f"{detail}; Xverify refused our request")
        )
        words = self._redact(answer.message, national, request.pin, numbers=False)
        raise ERROR_WORDS.classify(words, detail, otherwise)

    def check_code(self, call: PlacedCall, pin: str) -> bool | None:
        """Xverify's word on the typed PIN (the flow has already checked our hash)."""
        if not self.verify_remote:
            return None
        if not call.reference:
            raise ProviderProtocolError(detail="Xverify verifycode: no transaction number")
        _, national = split(call.number)
        query = {
            "transaction_number": call.reference,
            "code": pin,
            "apikey": self.api_key,
            "domain": self.domain,
            "type": self.response_type,
        }
        answer = self._get(VERIFYCODE, query)
        if answer.error == "0" and answer.status == "valid":
            return True
        if answer.error == "0":
            return False  # invalid: the code did not match, an attempt like any wrong PIN
        # "Anything else in this tag will indicate there is a problem with the request":
        # Xverify could not check the code, which says nothing about the PIN typed.
        detail = f"Xverify verifycode: {self._describe(answer, national, pin)}"
        words = self._redact(answer.message, national, pin, numbers=False)
        if ERROR_WORDS.blame(words) is Blame.ACCOUNT:
            raise ERROR_WORDS.account_error(detail)
        raise ProviderUnavailable(
            gettext("The phone service could not check the PIN just now. Please try again."),
            detail=detail,
        )

    def close(self) -> None:
        self.client.close()

    # -- the wire -------------------------------------------------------------------------
    def _get(self, path: str, query: dict[str, str]) -> _Answer:
        """One documented GET; its query (key, number, PIN) stays out of every log."""
        response = transport.send(
            self.client, "GET", self.base_url + path, vendor=VENDOR, secret_query=query
        )
        try:
            return self._read(response)
        except ProviderProtocolError:
            if response.status_code in (404, 405):
                raise ProviderConfigError(
                    detail=f"HTTP {response.status_code} from Xverify on GET {path}; "
                    "check PHONEVERIFY_XVERIFY_URL"
                ) from None
            raise

    def _refused_domain(self, response: httpx.Response) -> None:
        """Xverify answers 503 to a domain that is not trusted for the key: a setting
        to fix, not an outage to retry (transport.send would call it one)."""
        if response.status_code == 503:
            raise ProviderConfigError(
                detail=f"HTTP 503 from Xverify on GET {response.request.url.path}: the domain "
                f"{self.domain!r} in PHONEVERIFY_XVERIFY_DOMAIN is not a trusted domain of "
                "the API key; add it in the Xverify account or fix the setting"
            )

    def _read(self, response: httpx.Response) -> _Answer:
        if self.response_type == "xml":
            fields = _xml_fields(transport.parse_xml(response.content, vendor=VENDOR))
        else:
            fields = _json_fields(transport.parse_json(response, vendor=VENDOR))
        error = _error_code(fields.get("error"))
        status = str(fields.get("status") or "").strip().lower()
        if status not in ("valid", "invalid"):
            if error == "0":
                raise ProviderProtocolError(detail=f"Xverify answered status {status[:20]!r}")
            status = "invalid"
        message = fields.get("message")
        number = fields.get("transaction_number")
        return _Answer(
            error=error,
            status=status,
            message=message if isinstance(message, str) else "",
            transaction_number=str(number).strip() if isinstance(number, str | int) else None,
        )

    def _describe(self, answer: _Answer, *secrets: str) -> str:
        """The answer for the log, with the key, the number and the PIN blotted out."""
        error = self._redact.clean(answer.error, *secrets, limit=20)
        message = self._redact.clean(answer.message, *secrets, limit=200)
        return f"error={error} status={answer.status} message={message!r}"


def _json_fields(body: Any) -> dict[str, Any]:
    """The wrapper object's fields, whatever the wrapper's key."""
    if isinstance(body, dict):
        if "status" in body or "error" in body:
            return body
        for value in body.values():
            if isinstance(value, dict):
                return value
    raise ProviderProtocolError(detail="Xverify answered JSON without a wrapper object")


def _xml_fields(root: ET.Element) -> dict[str, Any]:
    """The wrapper element's children as fields (one more level when the root only wraps)."""
    children = list(root)
    names = {child.tag.lower() for child in children}
    if not names & {"status", "error"} and len(children) == 1:
        children = list(children[0])
    fields = {child.tag.lower(): (child.text or "").strip() for child in children if not len(child)}
    if not fields:
        raise ProviderProtocolError(detail="Xverify answered XML without fields")
    return fields


def _error_code(value: Any) -> str:
    """``error`` as a string, "0" for none: Xverify sends it as an int or a string."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return "0"
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        text = value.strip()
        return str(int(text)) if text.isdigit() else text[:40]
    raise ProviderProtocolError(detail=f"Xverify answered error of type {type(value).__name__}")
