"""A loopback Twilio Programmable Voice API that reads requests as Twilio documents them,
and plays the phone call: a person, or voicemail.

REST (``/2010-04-01/Accounts/{AccountSid}/...``, HTTP Basic auth with the account
SID and auth token, else 401 with error 20003):

- ``POST .../Calls.json`` (form): ``To`` and ``From`` in E.164 (21211 for a bad
  ``To``, 21212 for a ``From`` that is not this account's number), exactly one of
  ``Url`` (which wins when both come, as Twilio says) or ``Twiml`` (at most 4,000
  characters), ``StatusCallback`` with ``StatusCallbackEvent`` values from
  initiated/ringing/answered/completed, ``MachineDetection`` Enable or
  DetectMessageEnd. Answers 201 JSON ``{"sid": "CA...", "status": "queued", ...}``.
- ``GET .../Calls/{Sid}.json``: the call's ``status`` and ``answered_by``; 404
  with error 20404 for an unknown call.
- errors are JSON ``{"code", "message", "more_info", "status"}``; ``script``
  makes a request fail in the other ways a server can.

The call (tests drive it: :meth:`answer`, :meth:`press`, :meth:`silence`,
:meth:`hang_up`): answering fetches ``Url`` (a signed form POST, with
``AnsweredBy`` when machine detection was asked) or takes the inline TwiML,
then runs it: ``<Say>`` is heard (``Call.heard``), ``<Gather>`` waits for keys
and posts ``Digits`` to its ``action`` (absolute, signed) and runs the TwiML it
gets back, ``<Hangup/>`` ends the call. Status callbacks are posted, signed, for
the events asked. Every request to the app carries ``X-Twilio-Signature``:
base64(HMAC-SHA1(auth token, URL + each POST parameter's name and value, sorted
by name)).

Run alone, it plays a person who answers after a second, presses the digit a
spoken call asks for, and waits for a keypad PIN keyed in on its page
(http://127.0.0.1:PORT/)::

    python -m tests.servers.twilio --port 8740
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import re
import secrets
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import defusedxml.ElementTree as SafeET
import httpx
from defusedxml import DefusedXmlException
from werkzeug.wrappers import Request, Response

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "twilio-auth-token-sentinel-0001"  # noqa: S105 - a test value
FROM = "+12015550100"
EVENTS = ("initiated", "ringing", "answered", "completed")
MACHINE_DETECTION = ("Enable", "DetectMessageEnd")
E164 = re.compile(r"\+[1-9][0-9]{6,14}")
MAX_TWIML = 4000

BEHAVIOURS = {
    "http500": lambda: Response(b"", status=500),
    "http503": lambda: Response(b"<html>Service Unavailable</html>", status=503),
    "garbage": lambda: Response(b"<html><body>oops", status=200, content_type="text/html"),
    "empty_json": lambda: Response(b"{}", status=201, content_type="application/json"),
    "list_json": lambda: Response(b"[]", status=200, content_type="application/json"),
    # an error that echoes the credentials, a number and a forged log line
    "echo": lambda: _error(
        20003,
        f"Authenticate {ACCOUNT_SID}:{AUTH_TOKEN}\r\nphoneverify: verification FORGED "
        "confirmed for +12015550199",
        400,
    ),
}


def sign(auth_token: str, url: str, params: list[tuple[str, str]]) -> str:
    """Twilio's request signature, as its security page describes it."""
    data = url
    for name, value in sorted(params):
        data += name + value
    mac = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


@dataclass
class Call:
    sid: str
    to: str
    from_: str
    url: str | None
    twiml: str | None
    status_callback: str | None
    events: list[str]
    machine_detection: str | None
    status: str = "queued"
    answered_by: str | None = None
    heard: list[str] = field(default_factory=list)  # what was said on the line, in order
    gather: ET.Element | None = None  # the <Gather> waiting for keys
    after: list[ET.Element] = field(default_factory=list)  # verbs after that <Gather>
    documents: list[bytes] = field(default_factory=list)  # every TwiML document run


def _error(code: int, message: str, status: int) -> Response:
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return Response(json.dumps(body), status=status, content_type="application/json")


@dataclass
class TwilioServer:
    """The WSGI app and the phone line; tests read ``calls``/``requests``/``posted``."""

    account_sid: str = ACCOUNT_SID
    auth_token: str = AUTH_TOKEN
    numbers: tuple[str, ...] = (FROM,)
    person: bool = False  # run alone: answer and key by itself
    sign_requests: bool = True
    calls: dict[str, Call] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)  # REST requests received
    posted: list[dict[str, Any]] = field(default_factory=list)  # requests made to the app
    script: dict[str, str] = field(default_factory=dict)  # "create"/"fetch" -> a failure
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.client = httpx.Client(timeout=10, trust_env=False)

    def close(self) -> None:
        self.client.close()

    def reset(self) -> None:
        self.calls.clear()
        self.requests.clear()
        self.posted.clear()
        self.script.clear()
        self.sign_requests = True

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self.handle(Request(environ))(environ, start_response)

    # -- the REST API --------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        if request.path == "/" and request.method == "GET":
            return self._page()
        if request.path.startswith("/phone/") and request.method == "POST":
            return self._keyed(request)
        prefix = f"/2010-04-01/Accounts/{self.account_sid}/"
        auth = request.authorization
        self.requests.append(
            {
                "method": request.method,
                "path": request.path,
                "form": list(request.form.items(multi=True)),
                "headers": dict(request.headers),
                "auth": (auth.username, auth.password) if auth else None,
            }
        )
        if not (
            auth
            and auth.type == "basic"
            and auth.username == self.account_sid
            and secrets.compare_digest(auth.password or "", self.auth_token)
        ):
            return _error(20003, "Authenticate", 401)
        if not request.path.startswith(prefix):
            return _error(20404, "The requested resource was not found", 404)
        rest = request.path[len(prefix) :]
        if rest == "Calls.json" and request.method == "POST":
            return self._scripted("create") or self._create(request)
        match = re.fullmatch(r"Calls/(CA[0-9a-f]{32})\.json", rest)
        if match and request.method == "GET":
            return self._scripted("fetch") or self._fetch(match.group(1))
        return _error(20404, "The requested resource was not found", 404)

    def _scripted(self, what: str) -> Response | None:
        scripted = self.script.get(what)
        if scripted is None:
            return None
        if scripted.startswith("error:"):
            _, code, status = scripted.split(":")
            return _error(int(code), f"Scripted error {code} for +12015550123", int(status))
        return BEHAVIOURS[scripted]()

    def _create(self, request: Request) -> Response:
        form = request.form
        if request.mimetype != "application/x-www-form-urlencoded":
            return _error(21205, "Url parameter is required.", 400)  # nothing readable came
        to, from_ = form.get("To", ""), form.get("From", "")
        if not E164.fullmatch(to):
            return _error(21211, f"The 'To' number {to} is not a valid phone number.", 400)
        if from_ not in self.numbers:
            return _error(21212, f"The 'From' number {from_} is not a valid phone number.", 400)
        url, twiml = form.get("Url"), form.get("Twiml")
        if not url and not twiml:
            return _error(21205, "Url parameter is required.", 400)
        if url and form.get("Method", "POST") != "POST":
            return _error(21205, "Method must be POST here.", 400)
        if twiml and not url and len(twiml) > MAX_TWIML:
            return _error(21220, "Twiml is longer than 4000 characters.", 400)
        events = form.getlist("StatusCallbackEvent")
        if any(e not in EVENTS for e in events):
            return _error(21626, "Invalid StatusCallbackEvent.", 400)
        md = form.get("MachineDetection")
        if md is not None and md not in MACHINE_DETECTION:
            return _error(21626, "Invalid MachineDetection.", 400)
        call = Call(
            sid="CA" + secrets.token_hex(16),
            to=to,
            from_=from_,
            url=url or None,
            twiml=None if url else twiml,
            status_callback=form.get("StatusCallback") or None,
            events=events or ["completed"],
            machine_detection=md,
        )
        with self.lock:
            self.calls[call.sid] = call
        if self.person:
            threading.Thread(target=self._play, args=(call,), daemon=True).start()
        return Response(
            json.dumps(self._resource(call)), status=201, content_type="application/json"
        )

    def _fetch(self, sid: str) -> Response:
        call = self.calls.get(sid)
        if call is None:
            return _error(20404, "The requested resource was not found", 404)
        return Response(json.dumps(self._resource(call)), content_type="application/json")

    def _resource(self, call: Call) -> dict[str, Any]:
        return {
            "sid": call.sid,
            "account_sid": self.account_sid,
            "to": call.to,
            "from": call.from_,
            "status": call.status,
            "answered_by": call.answered_by,
            "direction": "outbound-api",
            "api_version": "2010-04-01",
        }

    # -- the call ------------------------------------------------------------------------------
    def ring(self, sid: str) -> None:
        call = self.calls[sid]
        call.status = "ringing"
        self._status_event(call, "ringing")

    def answer(self, sid: str, by: str = "human") -> Call:
        """Someone (``by``: human, or machine_start for voicemail) picks up; the script runs."""
        call = self.calls[sid]
        call.status = "in-progress"
        if call.machine_detection:
            call.answered_by = by
        self._status_event(call, "answered")
        if call.url:
            document = self._request(call, call.url, [])
        else:
            document = (call.twiml or "").encode()
        self._run(call, document)
        return call

    def press(self, sid: str, keys: str) -> Call:
        """Keys on the phone while a <Gather> listens: its action gets Digits."""
        call = self.calls[sid]
        gather = call.gather
        assert gather is not None, "no <Gather> is listening"
        finish = gather.get("finishOnKey", "#")
        digits = keys.split(finish)[0] if finish else keys
        wanted = gather.get("numDigits")
        if wanted and wanted.isdigit():
            digits = digits[: int(wanted)]
        call.gather, call.after = None, []
        action = gather.get("action")
        assert action and action.startswith(("http://", "https://")), action
        self._run(call, self._request(call, action, [("Digits", digits)]))
        return call

    def silence(self, sid: str) -> Call:
        """No keys before the <Gather> times out: the verbs after it run."""
        call = self.calls[sid]
        after, call.gather, call.after = call.after, None, []
        self._verbs(call, after)
        return call

    def hang_up(self, sid: str) -> Call:
        call = self.calls[sid]
        if call.status not in ("completed", "busy", "failed", "no-answer", "canceled"):
            self._end(call, "completed")
        return call

    def end_unanswered(self, sid: str, status: str) -> Call:
        """busy, no-answer, failed or canceled."""
        call = self.calls[sid]
        self._end(call, status)
        return call

    def _end(self, call: Call, status: str) -> None:
        call.status, call.gather, call.after = status, None, []
        self._status_event(call, "completed")

    def _run(self, call: Call, document: bytes) -> None:
        call.documents.append(document)
        try:
            root = SafeET.fromstring(document, forbid_dtd=True)
        except (ET.ParseError, DefusedXmlException):
            call.heard.append("An application error has occurred. Goodbye.")
            self._end(call, "completed")
            return
        if root.tag != "Response":
            call.heard.append("An application error has occurred. Goodbye.")
            self._end(call, "completed")
            return
        self._verbs(call, list(root))

    def _verbs(self, call: Call, verbs: list[ET.Element]) -> None:
        for i, verb in enumerate(verbs):
            if verb.tag == "Say":
                call.heard.append(verb.text or "")
            elif verb.tag == "Gather":
                call.heard.extend(s.text or "" for s in verb if s.tag == "Say")
                call.gather, call.after = verb, verbs[i + 1 :]
                return
            elif verb.tag == "Hangup":
                self._end(call, "completed")
                return
        self._end(call, "completed")  # nothing more to do: Twilio ends the call

    def _params(self, call: Call) -> list[tuple[str, str]]:
        params = [
            ("CallSid", call.sid),
            ("AccountSid", self.account_sid),
            ("From", call.from_),
            ("To", call.to),
            ("CallStatus", call.status),
            ("Direction", "outbound-api"),
            ("ApiVersion", "2010-04-01"),
        ]
        if call.answered_by:
            params.append(("AnsweredBy", call.answered_by))
        return params

    def _status_event(self, call: Call, event: str) -> None:
        if call.status_callback and event in call.events:
            self._request(call, call.status_callback, [("CallbackSource", "call-progress-events")])

    def _request(self, call: Call, url: str, extra: list[tuple[str, str]]) -> bytes:
        """A signed form POST to the app, as Twilio makes it; the body it answered."""
        params = self._params(call) + extra
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if self.sign_requests:
            headers["X-Twilio-Signature"] = sign(self.auth_token, url, params)
        response = self.client.post(url, content=urlencode(params), headers=headers)
        self.posted.append(
            {
                "url": url,
                "params": params,
                "status": response.status_code,
                "body": response.content,
                "content_type": response.headers.get("content-type", ""),
            }
        )
        return response.content if response.status_code == 200 else b""

    # -- alone: the person --------------------------------------------------------------------
    def _play(self, call: Call) -> None:
        time.sleep(1)
        try:
            self.answer(call.sid)
            print(f"Twilio: call to {call.to} says: {' '.join(call.heard)}", flush=True)
            asked = re.search(r"press (\d)\.", " ".join(call.heard))
            if call.gather is not None and asked and call.gather.get("numDigits") == "1":
                self.press(call.sid, asked.group(1))
                print(f"Twilio: then says: {' '.join(call.heard)}", flush=True)
            elif call.gather is not None:
                print("Twilio: key in the PIN at this server's / page", flush=True)
        except (AssertionError, httpx.HTTPError) as e:
            print(f"Twilio: could not reach the app: {e}", flush=True)

    def _keyed(self, request: Request) -> Response:
        parts = request.path.strip("/").split("/")
        call = self.calls.get(parts[1]) if len(parts) == 3 and parts[2] == "keys" else None
        if call is None or call.gather is None:
            return Response(b"No call is listening for keys", status=404)
        self.press(call.sid, request.form.get("digits", "").strip())
        return Response(status=303, headers={"Location": "/"})

    def _page(self) -> Response:
        rows = "".join(
            f"<li>{html.escape(c.to)} ({html.escape(c.status)}): "
            f"{html.escape(' '.join(c.heard))}"
            + (
                f'<form method="post" action="/phone/{c.sid}/keys">'
                '<input name="digits" inputmode="numeric" autofocus><button>Key in</button></form>'
                if c.gather is not None
                else ""
            )
            + "</li>"
            for c in reversed(self.calls.values())
        )
        body = f"<!doctype html><title>Twilio phone</title><h1>Calls</h1><ul>{rows}</ul>"
        return Response(body, content_type="text/html; charset=utf-8")


if __name__ == "__main__":
    from tests.loopback import run_cli

    server = TwilioServer(person=True)
    print(
        f"account SID {server.account_sid}, auth token {server.auth_token}, from {FROM}",
        flush=True,
    )
    run_cli(server, "Loopback Twilio Programmable Voice API", 8740)
