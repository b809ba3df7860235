"""A PhoneConfirm-compatible ``Jobs.asmx`` on loopback, answering as an ASP.NET .asmx does.

It routes on the quoted ``SOAPAction`` header (``"http://tempuri.org/AddJob"``), parses
the SOAP 1.1 envelope with defusedxml and reads each operation's parameters strictly
in the order, names and namespace of the contract (seeds/phoneconfirm-soap-jobs.txt,
PROVIDERS.md): anything else gets the .asmx ``soap:Client`` fault, malformed XML an
HTTP 400 with an empty body. It keeps jobs in memory and answers ``GetJobStatus`` from
them. ``GET Jobs.asmx?wsdl`` serves the packaged WSDL with this server's address.

Tests drive it through :attr:`PhoneConfirmServer.script` (operation -> behaviour, see
:data:`BEHAVIOURS`) and :meth:`PhoneConfirmServer.settle`. Alone, it plays the person
who answers: ``python -m tests.servers.phoneconfirm --port 8031``.

Assumed where the vendor says nothing: a wrong UserGuid, an unknown job or a number
that is not digits is an exception in the method (``soap:Server``); SOAP 1.2 and
other content types get HTTP 415.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from xml.etree.ElementTree import Element  # noqa: S405 - type only; parsing is defusedxml's
from xml.sax.saxutils import escape

import defusedxml.ElementTree as SafeET
from werkzeug.wrappers import Request, Response

from flask_phoneverify.providers.phoneconfirm import DEFAULT_URL, PACKAGED_WSDL

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
NS = "http://tempuri.org/"
PATH = "/soap/Jobs.asmx"
USER_GUID = "5a1543bb3fcc40a7b96e32eh0c8434c7"  # the vendor sample's UserGuid

Fields = list[tuple[str, str]]
_JOB: Fields = [
    ("UserGuid", "string"),
    ("Number", "string"),
    ("Text", "string"),
    ("PIN", "string"),
    ("TransactionID", "string"),
    ("JobType", "JobType"),
]
_JOB_EX: Fields = [
    ("UserGuid", "string"),
    ("Number", "string"),
    ("Text", "string"),
    ("PIN", "string"),
    ("JobType", "JobType"),
    ("JobDetails", "JobDetails"),
]
OPERATIONS: dict[str, Fields] = {
    "AddJob": _JOB,
    "SendConfirmation": _JOB,
    "AddJobEx": _JOB_EX,
    "SendConfirmationEx": _JOB_EX,
    "GetJobStatus": [("JobGuid", "string")],
}
JOB_DETAILS: Fields = [
    ("TransactionID", "string"),
    ("ReplyEmail", "string"),
    ("ThankYouFile", "string"),
    ("Extension", "string"),
    ("ExtensionDelay", "int"),
    ("MaxCallDuration", "int"),
    ("SingleDigitMode", "boolean"),
    ("NotificationType", "NotificationType"),
]
ENUMS = {
    "JobType": ("Notification", "Confirmation"),
    "NotificationType": ("Phone", "SMS"),
}
#: what a test can make the next answers to an operation do (script[operation] = name)
BEHAVIOURS = (
    "client_fault",  # 500 soap:Client, "Server was unable to read request..."
    "server_fault",  # 500 soap:Server with a stack trace that echoes the UserGuid
    "http_400",  # 400, empty body
    "http_404",  # 404, an IIS HTML page
    "http_500_empty",  # 500, empty body
    "http_503",  # 503, an HTML page
    "redirect",  # 302 elsewhere
    "slow",  # hold the answer until released (timeouts)
    "not_xml",  # 200 with an HTML page
    "bad_shape",  # 200 envelope whose answer has an element the WSDL does not know
    "empty_body",  # 200 envelope with an empty Body
    "no_result",  # 200 envelope with the response wrapper but no result element
    "billion_laughs",  # 200 with nested entity definitions
    "external_entity",  # 200 with an external entity reference
    "wrong_transaction",  # GetJobStatus names another TransactionID
    "unknown_stage",  # GetJobStatus with a ProcessingStage outside the enum
)

_STACK = (
    "\n   at System.Web.Services.Protocols.SoapServerProtocol.ReadParameters()"
    "\n   at System.Web.Services.Protocols.WebServiceHandler.CoreProcessRequest()"
)


class Fault(Exception):
    """A .asmx SOAP fault to answer with (HTTP 500)."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


def client_fault(reason: str) -> Fault:
    return Fault(
        "soap:Client",
        "System.Web.Services.Protocols.SoapException: Server was unable to read request. ---> "
        "System.InvalidOperationException: There is an error in XML document (1, 1). ---> "
        f"System.InvalidOperationException: {reason}" + _STACK,
    )


def server_fault(reason: str) -> Fault:
    return Fault(
        "soap:Server",
        "System.Web.Services.Protocols.SoapException: Server was unable to process request. "
        f"---> System.Exception: {reason}\n   at PhoneConfirm.Jobs.Process(String userGuid)"
        + _STACK,
    )


@dataclass
class Job:
    guid: str
    operation: str
    number: str
    text: str
    pin: str
    transaction_id: str | None
    job_type: str
    details: dict[str, Any] | None
    stage: str = "Waiting"
    result: bool = False
    pin_out: str | None = None
    error_code: str = "0"
    error_desc: str | None = None


@dataclass
class Received:
    method: str
    path: str
    query: str
    content_type: str
    soap_action: str | None
    body: bytes
    operation: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


class PhoneConfirmServer:
    """The WSGI app. ``answer``: play the person who answers each call (the command-line
    form); otherwise jobs wait until a test calls :meth:`settle`."""

    def __init__(
        self,
        user_guid: str = USER_GUID,
        *,
        answer: bool = False,
        answer_after: float = 3.0,
        out: Callable[[str], None] = print,
    ) -> None:
        self.user_guid = user_guid
        self.answer_calls = answer
        self.answer_after = answer_after
        self.out = out
        self.jobs: dict[str, Job] = {}
        self.received: list[Received] = []
        self.script: dict[str, str] = {}
        self.release = threading.Event()  # ends "slow" waits
        self.sync_wait = 30.0  # SendConfirmation holds the request at most this long
        self._lock = threading.Lock()

    # -- test controls ---------------------------------------------------------------------
    def operations(self) -> list[str]:
        return [r.operation for r in self.received if r.operation]

    def last(self, operation: str) -> Received:
        return next(r for r in reversed(self.received) if r.operation == operation)

    def last_job(self) -> Job:
        return list(self.jobs.values())[-1]

    def settle(
        self,
        guid: str,
        stage: str,
        *,
        result: bool = False,
        pin_out: str | None = None,
        error_code: str = "0",
        error_desc: str | None = None,
    ) -> None:
        job = self.jobs[guid]
        job.stage, job.result, job.pin_out = stage, result, pin_out
        job.error_code, job.error_desc = error_code, error_desc

    def answer(self, job: Job) -> None:
        """The person picks up and hears the call (the job is Processing)."""
        job.stage = "Processing"
        self.out(f"[phoneconfirm] calling {_mask(job.number)} ({job.job_type}) ... answered.")
        self.out(f"[phoneconfirm] the call says: {_spoken(job.text, job.pin)!r}")
        if job.job_type == "Confirmation":
            self.out(f"[phoneconfirm] the person keys in {job.pin} (the PIN on their screen).")
        else:
            self.out(f"[phoneconfirm] PIN spoken: {job.pin} (type it on the page).")

    def hang_up(self, job: Job) -> None:
        """The call is over: keypad, the right PIN was keyed; spoken, the PIN was heard."""
        if job.job_type == "Confirmation":
            job.pin_out = job.pin
        job.stage, job.result = "Processed", True
        self.out(f"[phoneconfirm] job {job.guid}: Processed, ConfirmationResult true.")

    # -- WSGI ---------------------------------------------------------------------------------
    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        request = Request(environ)
        response = self.dispatch(request)
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        body = request.get_data(cache=False)
        got = Received(
            request.method,
            request.path,
            request.query_string.decode("latin-1"),
            request.headers.get("Content-Type", ""),
            request.headers.get("SOAPAction"),
            body,
        )
        with self._lock:
            self.received.append(got)
        if request.path.lower() != PATH.lower():
            return _html(404, "The resource cannot be found.")
        if request.method == "GET":
            if request.query_string.decode().lower() == "wsdl":
                return self._wsdl(request)
            return _html(200, "Jobs Web Service")
        if request.method != "POST":
            return Response(status=405, headers={"Allow": "GET, POST"})
        mime, _, params = got.content_type.partition(";")
        if mime.strip().lower() != "text/xml" or params.strip() not in ("", "charset=utf-8"):
            return Response(status=415)
        try:
            root = SafeET.fromstring(
                body, forbid_dtd=True, forbid_entities=True, forbid_external=True
            )
        except Exception:
            return Response(status=400)  # .asmx: malformed XML, empty body
        try:
            operation = self._route(got.soap_action)
            got.operation = operation
            got.params = _read_envelope(root, operation)
            behaviour = self.script.get(operation)
            if behaviour:
                return self._scripted(behaviour, operation, got.params)
            return _envelope(self._perform(operation, got.params))
        except Fault as f:
            return _fault(f)

    def _route(self, header: str | None) -> str:
        value = header or ""
        if len(value) >= 2 and value[0] == value[-1] == '"':
            action = value[1:-1]
            if action.startswith(NS) and action[len(NS) :] in OPERATIONS:
                return action[len(NS) :]
        raise Fault(
            "soap:Client",
            "System.Web.Services.Protocols.SoapException: Server did not recognize the value of "
            f"HTTP Header SOAPAction: {value.strip(chr(34))}."
            "\n   at System.Web.Services.Protocols.Soap11ServerProtocolHelper.RouteRequest()",
        )

    def _wsdl(self, request: Request) -> Response:
        text = PACKAGED_WSDL.read_text(encoding="utf-8")
        here = request.host_url.rstrip("/") + PATH
        return Response(text.replace(DEFAULT_URL, here), content_type="text/xml; charset=utf-8")

    # -- the service -------------------------------------------------------------------------
    def _perform(self, operation: str, params: dict[str, Any]) -> str:
        if operation == "GetJobStatus":
            job = self.jobs.get(params.get("JobGuid") or "")
            if job is None:
                raise server_fault("Job not found.")
            return _wrap(operation, _status_xml(job, "GetJobStatusResult"))
        if params.get("UserGuid") != self.user_guid:
            raise server_fault(f"Invalid UserGuid {params.get('UserGuid')}.")
        number = params.get("Number") or ""
        if not re.fullmatch(r"[0-9]{7,15}", number):
            raise server_fault("Invalid phone number.")
        details = params.get("JobDetails")
        transaction_id = (
            params.get("TransactionID") if details is None else details.get("TransactionID")
        )
        job = Job(
            guid=str(uuid.uuid4()),
            operation=operation,
            number=number,
            text=params.get("Text") or "",
            pin=params.get("PIN") or uuid.uuid4().hex[:5].upper(),  # null PIN: 5 characters
            transaction_id=transaction_id,
            job_type=params["JobType"],
            details=details,
        )
        with self._lock:
            self.jobs[job.guid] = job
        if self.answer_calls:
            for delay, step in (
                (self.answer_after, self.answer),
                (2 * self.answer_after, self.hang_up),
            ):
                timer = threading.Timer(delay, step, args=(job,))
                timer.daemon = True
                timer.start()
        if operation.startswith("SendConfirmation"):  # synchronous: held until the call ends
            for _ in range(int(self.sync_wait * 10)):
                if job.stage in ("Processed", "Failed"):
                    break
                self.release.wait(0.1)
            return _wrap(operation, _status_xml(job, f"{operation}Result"))
        return _wrap(operation, f"<{operation}Result>{escape(job.guid)}</{operation}Result>")

    def _scripted(self, behaviour: str, operation: str, params: dict[str, Any]) -> Response:
        if behaviour == "client_fault":
            return _fault(
                client_fault(
                    f"Instance validation error: 'X' is not a valid value for {operation}."
                )
            )
        if behaviour == "server_fault":
            return _fault(
                server_fault(f"Account {self.user_guid} is suspended; call +12015550123.")
            )
        if behaviour == "http_400":
            return Response(status=400)
        if behaviour == "http_404":
            return _html(404, "The resource cannot be found.")
        if behaviour == "http_500_empty":
            return Response(status=500)
        if behaviour == "http_503":
            return _html(503, "Service Unavailable")
        if behaviour == "redirect":
            return Response(status=302, headers={"Location": "http://127.0.0.1:9/elsewhere"})
        if behaviour == "slow":
            self.release.wait(10)
            return _envelope(_wrap(operation, ""))
        if behaviour == "not_xml":
            return _html(200, "Welcome")
        if behaviour == "bad_shape":
            return _envelope(_wrap(operation, "<Surprise>1</Surprise>"))
        if behaviour == "empty_body":
            return _envelope("")
        if behaviour == "no_result":
            return _envelope(_wrap(operation, ""))
        if behaviour == "billion_laughs":
            return _raw(
                '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
                '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
                '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
                f'<soap:Envelope xmlns:soap="{SOAP}"><soap:Body>'
                f'<{operation}Response xmlns="{NS}"><{operation}Result>&lol3;</{operation}Result>'
                f"</{operation}Response></soap:Body></soap:Envelope>"
            )
        if behaviour == "external_entity":
            return _raw(
                '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
                f'<soap:Envelope xmlns:soap="{SOAP}"><soap:Body>'
                f'<{operation}Response xmlns="{NS}"><{operation}Result>&xxe;</{operation}Result>'
                f"</{operation}Response></soap:Body></soap:Envelope>"
            )
        if behaviour in ("wrong_transaction", "unknown_stage"):
            job = self.jobs[params["JobGuid"]]
            if behaviour == "wrong_transaction":
                shown = dataclasses.replace(job, transaction_id="another-call")
            else:
                shown = dataclasses.replace(job, stage="Ringing")
            return _envelope(_wrap(operation, _status_xml(shown, "GetJobStatusResult")))
        raise ValueError(f"unknown behaviour {behaviour!r}; one of {BEHAVIOURS}")


# -- reading requests ----------------------------------------------------------------------


def _split(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return "", tag


def _unexpected(elem: Element) -> Fault:
    ns, local = _split(elem.tag)
    return client_fault(f"<{local} xmlns='{ns}'> was not expected.")


def _read_envelope(root: Element, operation: str) -> dict[str, Any]:
    ns, local = _split(root.tag)
    if local == "Envelope" and ns == SOAP12:
        raise Fault(
            "soap:VersionMismatch",
            "System.Web.Services.Protocols.SoapException: Possible SOAP version mismatch: "
            f"Envelope namespace {ns} was unexpected. Expecting {SOAP}.",
        )
    if root.tag != f"{{{SOAP}}}Envelope":
        raise _unexpected(root)
    parts = list(root)
    if parts and parts[0].tag == f"{{{SOAP}}}Header":
        parts = parts[1:]
    if len(parts) != 1 or parts[0].tag != f"{{{SOAP}}}Body":
        raise (
            client_fault("The SOAP envelope has no single Body.")
            if not parts
            else _unexpected(parts[-1])
        )
    calls = list(parts[0])
    if len(calls) != 1:
        raise client_fault("The SOAP Body must hold exactly one element.")
    if calls[0].tag != f"{{{NS}}}{operation}":
        raise _unexpected(calls[0])
    return _read_sequence(calls[0], OPERATIONS[operation])


def _read_sequence(parent: Element, fields: Fields) -> dict[str, Any]:
    if parent.attrib:
        raise client_fault(f"Unexpected attributes on {_split(parent.tag)[1]}.")
    if (parent.text or "").strip():
        raise client_fault(f"Unexpected text in {_split(parent.tag)[1]}.")
    out: dict[str, Any] = {}
    position = 0
    for child in parent:
        ns, local = _split(child.tag)
        names = [name for name, _ in fields[position:]]
        if ns != NS or local not in names:
            raise _unexpected(child)
        index = position + names.index(local)
        _require(fields[position:index], out)
        kind = fields[index][1]
        out[local] = _read_value(child, kind)
        position = index + 1
        if (child.tail or "").strip():
            raise client_fault(f"Unexpected text after {local}.")
    _require(fields[position:], out)
    return out


def _require(skipped: Fields, out: dict[str, Any]) -> None:
    """Value types and enums are minOccurs=1 in the contract."""
    for name, kind in skipped:
        if kind != "string" and kind != "JobDetails":
            raise client_fault(f"The element '{name}' of type {kind} is missing.")


def _read_value(elem: Element, kind: str) -> Any:
    if kind == "JobDetails":
        return _read_sequence(elem, JOB_DETAILS)
    if elem.attrib or len(elem):
        raise client_fault(f"{_split(elem.tag)[1]} must be a simple value.")
    text = elem.text or ""
    if kind == "string":
        return text
    if kind == "int":
        if not re.fullmatch(r"-?[0-9]+", text.strip()):
            raise client_fault("Input string was not in a correct format.")
        return int(text)
    if kind == "boolean":
        if text.strip() not in ("true", "false", "1", "0"):
            raise client_fault(f"The string '{text}' is not a valid Boolean value.")
        return text.strip() in ("true", "1")
    if text not in ENUMS[kind]:
        raise client_fault(f"Instance validation error: '{text}' is not a valid value for {kind}.")
    return text


# -- answers ------------------------------------------------------------------------------------


def _wrap(operation: str, inner: str) -> str:
    return f'<{operation}Response xmlns="{NS}">{inner}</{operation}Response>'


def _status_xml(job: Job, tag: str) -> str:
    parts = [
        f"<ProcessingStage>{escape(job.stage)}</ProcessingStage>",
        f"<ConfirmationResult>{'true' if job.result else 'false'}</ConfirmationResult>",
    ]
    for name, value in (
        ("TransactionID", job.transaction_id),
        ("VoiceLink", None),
        ("PIN", job.pin),
        ("PinOut", job.pin_out),
    ):
        if value is not None:
            parts.append(f"<{name}>{escape(value)}</{name}>")
    parts.append(f"<ErrorCode>{escape(job.error_code)}</ErrorCode>")
    if job.error_desc is not None:
        parts.append(f"<ErrorDesc>{escape(job.error_desc)}</ErrorDesc>")
    return f"<{tag}>{''.join(parts)}</{tag}>"


def _envelope(inner: str, status: int = 200) -> Response:
    return _raw(
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<soap:Envelope xmlns:soap="{SOAP}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        f'xmlns:xsd="http://www.w3.org/2001/XMLSchema"><soap:Body>{inner}</soap:Body></soap:Envelope>',
        status,
    )


def _fault(f: Fault) -> Response:
    return _envelope(
        f"<soap:Fault><faultcode>{f.code}</faultcode><faultstring>{escape(f.text)}</faultstring>"
        "<detail /></soap:Fault>",
        500,
    )


def _raw(text: str, status: int = 200) -> Response:
    return Response(text.encode(), status=status, content_type="text/xml; charset=utf-8")


def _html(status: int, title: str) -> Response:
    return Response(
        f"<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>",
        status=status,
        content_type="text/html; charset=utf-8",
    )


def _mask(digits: str) -> str:
    return digits[:1] + "*" * max(len(digits) - 5, 0) + digits[-4:]


def _spoken(text: str, pin: str) -> str:
    """The call's text as heard: @PIN read digit by digit, files named."""
    heard = text.replace("@PIN", " ".join(pin))
    return re.sub(r"@File=(\S+)", r"[plays \1]", heard, flags=re.IGNORECASE)


def main() -> None:
    from tests.loopback import run_cli

    print(f"Accepting UserGuid {USER_GUID}; the service address is http://127.0.0.1:PORT{PATH}")
    run_cli(
        PhoneConfirmServer(answer=True),
        "PhoneConfirm Jobs.asmx on loopback (answers each call after 3 s)",
        8031,
    )


if __name__ == "__main__":
    main()
