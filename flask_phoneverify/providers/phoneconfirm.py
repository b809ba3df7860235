"""PhoneConfirm: verification calls through the vendor's SOAP Jobs service, with zeep.

Wire format (PhoneConfirm's reference of its SOAP Jobs service, ``Jobs.asmx``;
where it is silent, the choice is marked as assumed): SOAP 1.1
document/literal to ``Jobs.asmx`` (``Content-Type: text/xml; charset=utf-8``, quoted
``SOAPAction: "http://tempuri.org/<Operation>"``).

- Placing a call: ``AddJob(UserGuid, Number, Text, PIN, TransactionID, JobType)``,
  or ``AddJobEx(UserGuid, Number, Text, PIN, JobType, JobDetails)`` when a JobDetails
  option (thank-you file, extension, extension delay, longest call) is set. Both
  return at once with a job GUID. AddJob is the default because it carries
  TransactionID itself and sends nothing we would have to make up: JobDetails'
  value-typed fields (ExtensionDelay, MaxCallDuration, SingleDigitMode,
  NotificationType) are required in an ASP.NET contract, so AddJobEx must send them
  all; unset ones go as the values .NET gives an omitted element (0, false, Phone).
  SingleDigitMode (the call waits for one key) is always false: our PINs have at
  least six digits. Its old setting, PHONEVERIFY_PHONECONFIRM_SINGLE_DIGIT_MODE,
  was removed; init_app refuses it when set.
- Keypad style is JobType ``Confirmation`` with our PIN: the call plays the text and
  the service waits for the PIN on the keypad. Its text never contains ``@PIN``
  (a call that reads the PIN out would confirm whoever answers, not whoever holds
  the screen); the vendor's own sample does say it, we refuse that at init.
  Spoken style is JobType ``Notification`` with ``@PIN`` where the PIN is spoken.
- ``Number``: the E.164 digits with the country code, no ``+`` (``12015550123``).
- ``TransactionID``: the flow's random per-call reference (``CallRequest.call_id``); it
  must come back unchanged in every JobStatus, or the answer is refused.
- Following a call: ``GetJobStatus(JobGuid)`` when the flow polls. ProcessingStage
  Waiting -> queued, Processing -> ringing (the service does not tell ringing from
  answered), Processed + ConfirmationResult true -> confirmed (keypad: verified;
  spoken: PIN heard, the person still types it), Processed + false -> failed,
  Failed -> failed with ErrorCode/ErrorDesc in ``detail`` only.
- ``SendConfirmation``/``SendConfirmationEx`` are never called: they hold the request
  until the call ends.

Assumed (no public copy of the vendor's WSDL exists): the contract is
what ASP.NET generates for an .asmx service, target namespace ``http://tempuri.org/``,
elementFormDefault qualified, ``AddJob``/``AddJobResponse``/``AddJobResult`` wrappers,
binding ``JobsSoap``, service ``Jobs``; strings minOccurs 0, value types and enums
minOccurs 1; ExtensionDelay/MaxCallDuration ints, MaxCallDuration in seconds;
ErrorCode an optional string (its type is undocumented: text reads a number or a
code). That WSDL ships in the package (``wsdl/phoneconfirm.wsdl``) and loads from
disk; PHONEVERIFY_PHONECONFIRM_WSDL may point at the vendor's live one instead (its
``JobsSoap`` binding is found whatever its namespace). Faults are .asmx's: HTTP 500
with ``soap:Client`` (the service could not read our request: not retryable) or
``soap:Server`` (an exception in the method: retryable), faultstrings carrying .NET
stack traces, which stay out of user messages (``detail`` keeps a scrubbed first line).
Transport failures, HTTP statuses and faults are mapped by the same functions as
the HTTP providers' (``vendor.unreachable``, ``vendor.http_status_error``,
``vendor.soap_fault``), so users read the same messages whichever client failed.

zeep runs strict (an answer that does not match the WSDL is refused) with DTDs,
entities and external references forbidden, through a requests session that ignores
proxy environment variables, follows no redirects and never logs the envelope (it
carries the UserGuid). Every answer also passes defusedxml before zeep parses it.
The client is built on first use, never at import or in init_app, and reused.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import zeep
import zeep.exceptions
from zeep.transports import Transport

from ..errors import (
    ConfigError,
    ProviderConfigError,
    ProviderError,
    ProviderProtocolError,
    ProviderRejected,
)
from ..i18n import N_, SOURCE, for_locale
from ..settings import Setting
from .base import (
    CallReport,
    CallRequest,
    CallState,
    CallTicket,
    Outcome,
    PlacedCall,
    Provider,
    Style,
    check_url,
    timeout_setting,
)
from .transport import MAX_RESPONSE_BYTES, USER_AGENT, parse_xml
from .vendor import (
    Redactor,
    http_status_error,
    soap_fault,
    too_large,
    unreachable,
    without_query,
)

__all__ = ["PhoneConfirm", "TransactionMismatch", "PACKAGED_WSDL", "NAMESPACE", "DEFAULT_URL"]

VENDOR = "PhoneConfirm"
NAMESPACE = "http://tempuri.org/"
BINDING = "JobsSoap"
DEFAULT_URL = "http://www.phoneconfirm.com/soap/Jobs.asmx"
PACKAGED_WSDL = Path(__file__).with_name("wsdl") / "phoneconfirm.wsdl"

#: a failed call's reason, kept in English and translated where shown
KEYPAD_REASON = N_("The call ended before the PIN was entered.")
WRONG_KEYS_REASON = N_("The keys pressed on the phone did not match the PIN on the screen.")
SPOKEN_REASON = N_("The call ended before the PIN could be heard.")
FAILED_REASON = N_("The phone service could not complete the call. Please try again.")

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_EXTENSION = re.compile(r"[0-9*#]{1,20}")
_FILE_VARIABLE = re.compile(r"@File=(\S*)", re.IGNORECASE)
_NET_EXCEPTION = re.compile(r"\b(?:[A-Za-z_]\w*\.)+\w*Exception: ")


class TransactionMismatch(ProviderProtocolError):
    """A JobStatus named another TransactionID than the call we asked about.

    Not retryable: the job GUID no longer leads to our call, so the verification
    fails rather than waiting on an answer that cannot be trusted."""

    retryable = False
    default_message = N_("The phone service reported on a different call. Please start again.")


def _setting(option: str, default: Any, kind: str, doc: str, **kw: Any) -> Setting:
    return Setting(f"PHONEVERIFY_PHONECONFIRM_{option}", default, kind, doc, **kw)


class PhoneConfirm(Provider):
    """PhoneConfirm's asynchronous jobs: AddJob(Ex) to call, GetJobStatus to follow."""

    name = "phoneconfirm"
    styles = frozenset({Style.KEYPAD, Style.SPOKEN})
    preferred_style = Style.KEYPAD
    polled = True
    settings = (
        _setting(
            "USER_GUID",
            None,
            "str",
            "Your PhoneConfirm UserGuid (the account's private ID). Keep it secret.",
            required=True,
            secret=True,
        ),
        _setting("URL", DEFAULT_URL, "str", "Address of the Jobs service (SOAP 1.1)."),
        _setting(
            "WSDL",
            None,
            "str",
            "WSDL to use, a path or URL (read on first use); unset: the copy shipped in the "
            "package, loaded without network.",
        ),
        timeout_setting("phoneconfirm", "PhoneConfirm"),
        _setting(
            "TEXT",
            None,
            "str",
            "What the call says; may start with @File=<name> to play an uploaded file. Spoken "
            "style: must contain @PIN where the PIN is spoken; keypad style: must not. Unset: a "
            "default naming the app.",
        ),
        _setting(
            "THANK_YOU_FILE",
            None,
            "str",
            "Uploaded file played at the end of the call; unset: the service's default.",
        ),
        _setting(
            "EXTENSION",
            None,
            "str",
            "Extension to dial once the call connects (digits, * and #).",
        ),
        _setting(
            "EXTENSION_DELAY",
            None,
            "int",
            "Seconds to wait before dialling the extension (needs the extension set).",
            minimum=0,
            maximum=60,
        ),
        _setting(
            "MAX_CALL_DURATION",
            None,
            "int",
            "Longest call in seconds; unset: the service's own limit.",
            minimum=10,
            maximum=3600,
        ),
        _setting(
            "SINGLE_DIGIT_MODE",
            None,
            "bool",
            "Removed (it could never apply: PINs have at least 6 digits); init_app refuses "
            "it when set.",
        ),
    )

    def __init__(
        self, options: Mapping[str, Any], *, style: Style, pin_length: int, app_name: str
    ) -> None:
        super().__init__(options, style=style, pin_length=pin_length, app_name=app_name)
        guid = (options.get("user_guid") or "").strip()
        if not guid or any(ch.isspace() for ch in guid):
            raise ConfigError(
                self.option_key("user_guid"),
                "is empty or has spaces",
                "set it to the UserGuid from your PhoneConfirm account",
            )
        self._user_guid = guid
        self._redact = Redactor(_guid_pattern(guid), mask="[UserGuid]")
        self.url = check_url(self.option_key("url"), options.get("url") or DEFAULT_URL, DEFAULT_URL)
        self.wsdl = _wsdl_location(self.option_key("wsdl"), options.get("wsdl"))
        self.timeout = float(options.get("timeout") or 10.0)
        self._texts = {
            Style.KEYPAD: _default_text(Style.KEYPAD, app_name),
            Style.SPOKEN: _default_text(Style.SPOKEN, app_name),
        }
        #: a text the site wrote (PHONEVERIFY_PHONECONFIRM_TEXT) is said as written
        self._own_text = options.get("text") is not None
        if self._own_text:
            self._texts[style] = _check_text(self.option_key("text"), options["text"], style)
        self._details = self._job_details(options)
        #: the requests session zeep sends through (close() closes it)
        self.session = requests.Session()
        self.session.trust_env = False  # no proxy from the environment sees the UserGuid
        self._transport = _JobsTransport(  # type: ignore[no-untyped-call]
            timeout=self.timeout, operation_timeout=self.timeout, session=self.session
        )
        self._transport.session.headers["User-Agent"] = USER_AGENT
        self._service: Any = None
        self._lock = threading.Lock()

    def _job_details(self, options: Mapping[str, Any]) -> dict[str, Any] | None:
        """JobDetails values without TransactionID, or None when AddJob will do."""
        if options.get("single_digit_mode") is not None:
            raise ConfigError(
                self.option_key("single_digit_mode"),
                "was removed: a call that waits for one key could never take a PIN, which "
                "has at least 6 digits",
                "delete it from the app's configuration",
            )
        extension = (options.get("extension") or "").strip() or None
        if extension is not None:
            if not _EXTENSION.fullmatch(extension):
                raise ConfigError(
                    self.option_key("extension"),
                    f"is {extension!r}",
                    "use digits, * and # only (at most 20), or leave it unset",
                )
        if options.get("extension_delay") is not None and not extension:
            raise ConfigError(
                self.option_key("extension_delay"),
                "is set without an extension",
                f"set {self.option_key('extension')} too, or leave the delay unset",
            )
        thank_you = (options.get("thank_you_file") or "").strip() or None
        chosen = {
            "ThankYouFile": thank_you,
            "Extension": extension,
            "ExtensionDelay": options.get("extension_delay"),
            "MaxCallDuration": options.get("max_call_duration"),
        }
        if all(v is None for v in chosen.values()):
            return None
        # Value types are required by the contract: unset ones go as .NET's defaults.
        return {
            "ReplyEmail": None,  # results by email would carry the PIN: never asked for
            **chosen,
            "ExtensionDelay": chosen["ExtensionDelay"] or 0,
            "MaxCallDuration": chosen["MaxCallDuration"] or 0,
            "SingleDigitMode": False,
            "NotificationType": "Phone",
        }

    # -- calls ---------------------------------------------------------------------
    def place_call(self, request: CallRequest) -> CallTicket:
        """AddJob (AddJobEx with job details): the service queues the call and answers its job
        GUID at once."""
        if not _E164.fullmatch(request.number):
            raise ProviderRejected(detail="number is not in E.164 form")
        common = {
            "UserGuid": self._user_guid,
            "Number": request.number[1:],
            "Text": self._text(request),
            "PIN": request.pin,
            "JobType": "Confirmation" if request.style is Style.KEYPAD else "Notification",
        }
        if self._details is None:
            operation = "AddJob"
            result = self._call(operation, **common, TransactionID=request.call_id)
        else:
            operation = "AddJobEx"
            details = {"TransactionID": request.call_id, **self._details}
            result = self._call(operation, **common, JobDetails=details)
        if not isinstance(result, str) or not result.strip() or len(result.strip()) > 255:
            raise ProviderProtocolError(detail=f"{operation} answered without a usable job GUID")
        job = result.strip()
        if not job.isprintable():
            raise ProviderProtocolError(
                detail=f"{operation} answered a job GUID with control codes"
            )
        return CallTicket(reference=job, call=CallState.QUEUED)

    def _text(self, request: CallRequest) -> str:
        """The call's Text: the site's own, else ours in the call's language."""
        language = self.call_language(request)
        if (self._own_text and request.style is self.style) or language == SOURCE:
            return self._texts[request.style]
        return _default_text(request.style, self.app_name, language)

    def call_status(self, call: PlacedCall) -> CallReport:
        if not call.reference:
            raise ProviderProtocolError(detail="no job GUID to ask about")
        status = self._call("GetJobStatus", JobGuid=call.reference)
        if status is None:
            raise ProviderProtocolError(detail="GetJobStatus answered without a JobStatus")
        stage = getattr(status, "ProcessingStage", None)
        returned = getattr(status, "TransactionID", None)
        if not isinstance(returned, str) or not secrets.compare_digest(
            returned.encode(), call.call_id.encode()
        ):
            raise TransactionMismatch(
                detail=f"GetJobStatus named TransactionID {self._said(str(returned))!r}, "
                "not this call's"
            )
        if stage == "Waiting":
            return CallReport(call=CallState.QUEUED)
        if stage == "Processing":
            return CallReport(call=CallState.RINGING)
        if stage == "Processed":
            if getattr(status, "ConfirmationResult", None) is True:
                heard = CallState.ENDED if call.style is Style.KEYPAD else CallState.DELIVERED
                return CallReport(call=heard, outcome=Outcome.CONFIRMED)
            keyed = getattr(status, "PinOut", None)
            return CallReport(
                call=CallState.ENDED,
                outcome=Outcome.FAILED,
                reason=(
                    SPOKEN_REASON
                    if call.style is not Style.KEYPAD
                    else WRONG_KEYS_REASON
                    if keyed
                    else KEYPAD_REASON
                ),
                detail="Processed with ConfirmationResult false; "
                + (f"{len(keyed)} keys pressed" if keyed else "no keys pressed"),
            )
        if stage == "Failed":
            code = getattr(status, "ErrorCode", None)
            desc = self._said(getattr(status, "ErrorDesc", None) or "")
            return CallReport(
                call=CallState.ENDED,
                outcome=Outcome.FAILED,
                reason=FAILED_REASON,
                detail=f"Failed: ErrorCode {code}: {desc or 'no description'}",
            )
        raise ProviderProtocolError(
            detail=f"GetJobStatus answered ProcessingStage {self._said(str(stage))!r}"
        )

    def close(self) -> None:
        self.session.close()  # zeep's transport sends through this session only

    # -- the SOAP client -----------------------------------------------------------------
    def service(self) -> Any:
        """The zeep service proxy, built on first use and kept: the WSDL is read once."""
        with self._lock:
            if self._service is None:
                self._service = self._build_service()
            return self._service

    def _build_service(self) -> Any:
        settings = zeep.Settings(
            strict=True,
            xml_huge_tree=False,
            forbid_dtd=True,
            forbid_entities=True,
            forbid_external=True,
        )
        try:
            client = zeep.Client(  # type: ignore[no-untyped-call]
                self.wsdl, transport=self._transport, settings=settings
            )
            binding = _find_binding(client)
            return client.create_service(binding, self.url)  # type: ignore[no-untyped-call]
        except requests.RequestException as e:
            raise unreachable(
                VENDOR,
                f"loading the WSDL ({_wsdl_name(self.wsdl)})",
                timed_out=isinstance(e, requests.Timeout),
                cause=type(e).__name__,
            ) from None
        except (zeep.exceptions.Error, ValueError, KeyError, LookupError, OSError) as e:
            raise ProviderConfigError(
                detail=f"the WSDL ({_wsdl_name(self.wsdl)}) could not be used: {type(e).__name__}: "
                + self._said(str(e))
            ) from None

    def _call(self, operation: str, **params: Any) -> Any:
        """Call one operation; every failure comes out as a ProviderError."""
        service = self.service()
        try:
            return getattr(service, operation)(**params)
        except ProviderError:
            raise
        except zeep.exceptions.Fault as e:
            raise self._fault(operation, e) from None
        except (
            zeep.exceptions.DTDForbidden,
            zeep.exceptions.EntitiesForbidden,
            zeep.exceptions.ExternalReferenceForbidden,
        ) as e:
            raise ProviderProtocolError(
                detail=f"{operation}: the answer declared a DTD or entities ({type(e).__name__})"
            ) from None
        except zeep.exceptions.Error as e:
            raise ProviderProtocolError(
                detail=f"{operation}: the answer does not match the WSDL: {type(e).__name__}: "
                + self._said(str(e))
            ) from None
        except (IndexError, KeyError, AttributeError, TypeError, ValueError) as e:
            # zeep's reply processing on an empty or odd Body fails with plain exceptions
            raise ProviderProtocolError(
                detail=f"{operation}: the answer could not be read: {type(e).__name__}"
            ) from None

    def _fault(self, operation: str, fault: zeep.exceptions.Fault) -> ProviderError:
        """.asmx faults: soap:Client (our request was refused: retrying will not help),
        soap:Server (the method failed: it may work later)."""
        return soap_fault(VENDOR, operation, fault.code, self._said(fault.message or ""))

    def _said(self, text: str) -> str:
        """What the service said, for a detail: its first line (.asmx appends stack
        traces) without .NET exception names, the UserGuid or phone numbers."""
        return self._redact.clean(_NET_EXCEPTION.sub("", text), first_line=True)


class _JobsTransport(Transport):
    """zeep's transport with our rules: no redirects, no envelope in the logs (it
    carries the UserGuid), HTTP errors and transport failures as ProviderErrors, and
    every answer through defusedxml before zeep's parser sees it."""

    def post(
        self, address: str, message: bytes | str, headers: dict[str, str]
    ) -> requests.Response:
        action = headers.get("SOAPAction", "").strip('"').rpartition("/")[2] or "request"
        where = f"{action} to {without_query(address)}"
        try:
            response = self.session.post(
                address,
                data=message,
                headers=headers,
                timeout=self.operation_timeout,
                allow_redirects=False,
            )
        except requests.RequestException as e:
            timed_out = isinstance(e, requests.Timeout)
            raise unreachable(VENDOR, where, timed_out=timed_out, cause=type(e).__name__) from None
        body = response.content
        if len(body) > MAX_RESPONSE_BYTES:
            raise too_large(VENDOR, len(body), where)
        status = response.status_code
        content_type = response.headers.get("Content-Type", "")
        if status == 200 or (status == 500 and "xml" in content_type.lower() and body.strip()):
            parse_xml(body, vendor=VENDOR, where=where)  # refuses DTDs, entities, malformed XML
            return response
        note = f"{content_type or 'no content type'}, {len(body)} bytes"
        error = http_status_error(
            status, vendor=VENDOR, where=where, errors_in_body=False, note=note
        )
        raise error or ProviderProtocolError(detail=f"HTTP {status} on {where}")


def _find_binding(client: Any) -> str:
    """The SOAP 1.1 ``JobsSoap`` binding: ours, or the one in the vendor's live WSDL."""
    preferred = f"{{{NAMESPACE}}}{BINDING}"
    names = list(client.wsdl.bindings)
    if preferred in names:
        return preferred
    for name in names:
        if name.rpartition("}")[2] == BINDING:
            return str(name)
    raise LookupError(f"no {BINDING} binding in the WSDL")


def _default_text(style: Style, app_name: str, language: str = SOURCE) -> str:
    speech = for_locale(language)
    name = app_name.replace("@", "").strip() or "this site"  # no variable smuggled in a name
    if style is Style.SPOKEN:
        text = speech.gettext(
            "This is %(app)s. Your PIN is @PIN. Type it on the page that asked for this call."
        )
    else:
        text = speech.gettext(
            "This is %(app)s. To confirm it is you, key in the PIN shown on your screen."
        )
    text %= {"app": name}
    if language != SOURCE:  # a translation obeys the rules a site's own text does
        try:
            return _check_text("the PhoneConfirm call text", text, style)
        except ConfigError:
            return _default_text(style, app_name)
    return text


def _check_text(key: str, raw: str, style: Style) -> str:
    text = " ".join(raw.split())
    if not text:
        raise ConfigError(key, "is empty", "set what the call says, or leave it unset")
    if "@voiceconfirmation" in text.lower():
        raise ConfigError(
            key,
            "contains @VoiceConfirmation, which records the person's voice",
            "remove it: a verification call needs no recording",
        )
    for match in _FILE_VARIABLE.finditer(text):
        if not match.group(1):
            raise ConfigError(key, "has @File= without a file name", "write @File=<name>")
    if style is Style.KEYPAD and "@pin" in text.lower():
        raise ConfigError(
            key,
            "contains @PIN, which would read the PIN out in a keypad call (whoever answers "
            "would learn it)",
            "remove @PIN: the person keys in the PIN their screen shows; or set "
            "PHONEVERIFY_STYLE = 'spoken'",
        )
    if style is Style.SPOKEN and "@PIN" not in text:
        raise ConfigError(
            key,
            "has no @PIN, so the call would not say the PIN",
            "put @PIN where the PIN should be spoken",
        )
    return text


def _wsdl_location(key: str, raw: str | None) -> str:
    """Where the WSDL is; checked without network (a local file must exist)."""
    if raw is None or not raw.strip():
        return str(PACKAGED_WSDL)
    location = raw.strip()
    parts = urlsplit(location)
    if parts.scheme in ("http", "https"):
        if not parts.hostname:
            raise ConfigError(key, f"is {raw!r}", "use a full URL or a file path")
        return location
    path = Path(parts.path if parts.scheme == "file" else location).expanduser()
    if not path.is_file():
        raise ConfigError(
            key,
            f"is {raw!r}, which is not a file",
            "give the path or URL of the WSDL, or leave it unset for the packaged copy",
        )
    return str(path)


def _wsdl_name(location: str) -> str:
    return "packaged" if location == str(PACKAGED_WSDL) else without_query(location)


def _guid_pattern(guid: str) -> re.Pattern[str]:
    """Matches the UserGuid as services echo it: any case, with or without dashes/braces."""
    chars = [re.escape(ch) for ch in guid if ch.isalnum()] or [re.escape(guid)]
    return re.compile("[-{}]?".join(chars), re.IGNORECASE)
