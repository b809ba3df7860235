"""A loopback Anveo API (``POST /api/v3.asp``) that reads requests as Anveo documents them.

It checks the method, path and content type, the upper-case, case-sensitive
tags and attributes (REQUEST, USERTOKEN/USERKEY, ACTION NAME, PARAMETER NAME,
VARIABLENAME), the parameters each action documents (required ones present,
no others) and their values (numbers: country code and digits only). It answers
``<RESPONSE><RESULT>SUCCESS</RESULT><VALUE NAME="REQUESTID">..</VALUE></RESPONSE>``,
or ``<RESULT>ERROR</RESULT><ERROR>message</ERROR>`` (HTTP 200) for what it
refuses. ``script`` makes an action fail in the other ways a server can.

Run alone, it plays the person who answers: each call's status moves from NONE
to INIT, START and END over a few seconds, and the code the call flow would
speak is printed here::

    python -m tests.servers.anveo --port 8710
"""

from __future__ import annotations

import re
import secrets
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException
from werkzeug.wrappers import Request, Response

PATH = "/api/v3.asp"
USER_KEY = "df141891e2e883904b0b294dc5bq79c1c1c13f6d"

#: documented parameters per action: (required, optional)
ACTIONS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "DIAL.CALLFLOW": (
        frozenset({"PHONENUMBER", "CALLERID", "CALLFLOW"}),
        frozenset({"TEST", "VARIABLE", "DELAY", "MEMO", "BILLINGCODE", "SIGNATURE"}),
    ),
    "DIAL.CONNECT": (
        frozenset({"PHONENUMBER", "DESTPHONENUMBER"}),
        frozenset(
            {"TEST", "MAXCALLDURATION", "CALLERID", "DELAY", "MEMO", "BILLINGCODE", "SIGNATURE"}
        ),
    ),
    "DIAL.GETSTATUS": (frozenset({"REQUESTID"}), frozenset({"SIGNATURE"})),
}
NUMBERS = ("PHONENUMBER", "DESTPHONENUMBER", "CALLERID")
STATUSES = ("NONE", "INIT", "START", "END")

BOMB = (
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">'
    b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><RESPONSE><RESULT>&b;</RESULT></RESPONSE>'
)
#: ways to fail an action, for ``script[action]``
BEHAVIOURS = {
    "http500": lambda: Response(b"", status=500),
    "http403": lambda: Response(b"Forbidden", status=403),
    "not_xml": lambda: Response(b"<html><body>Service Unavailable", content_type="text/html"),
    "dtd": lambda: Response(BOMB, content_type="text/xml"),
    "wrong_root": lambda: Response(b"<response><result>SUCCESS</result></response>"),
    "no_requestid": lambda: _answer("SUCCESS"),
    "bad_status": lambda: _answer("RINGING"),
}


class Refused(Exception):
    """A request Anveo would answer with an ERROR."""


@dataclass
class Dial:
    request_id: str
    action: str
    params: dict[str, str]
    variables: dict[str, str]
    created: float = field(default_factory=time.monotonic)
    status: str = "NONE"


@dataclass
class AnveoServer:
    """The WSGI app; tests read ``requests`` and ``dials`` and set ``script``."""

    user_key: str = USER_KEY
    signature: str | None = None  # when set, every request must carry it
    person: bool = False  # run alone: statuses follow the clock, the spoken code is printed
    requests: list[dict[str, Any]] = field(default_factory=list)
    dials: dict[str, Dial] = field(default_factory=dict)
    #: action name -> a key of BEHAVIOURS, "error:<text>" or "slow"
    script: dict[str, str] = field(default_factory=dict)
    release: threading.Event = field(default_factory=threading.Event)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self.handle(Request(environ))(environ, start_response)

    def reset(self) -> None:
        """Forget calls and scripts (one server serves a whole test module)."""
        self.release.set()
        self.requests.clear()
        self.dials.clear()
        self.script.clear()
        self.signature = None
        self.release = threading.Event()

    def handle(self, request: Request) -> Response:
        if request.path != PATH:
            return Response(b"Not Found", status=404)
        if request.method != "POST":
            return Response(b"Method Not Allowed", status=405)
        try:
            action, params, variables = self._read(request)
        except Refused as e:
            return _answer("ERROR", error=str(e))
        self.requests.append(
            {
                "action": action,
                "params": params,
                "variables": variables,
                "headers": dict(request.headers),
            }
        )
        scripted = self.script.get(action)
        if scripted == "slow":
            self.release.wait(5)
        elif scripted and scripted.startswith("error:"):
            return _answer("ERROR", error=scripted[len("error:") :])
        elif scripted:
            return BEHAVIOURS[scripted]()
        if action == "DIAL.GETSTATUS":
            dial = self.dials.get(params["REQUESTID"])
            if dial is None:
                return _answer("ERROR", error="Invalid REQUESTID")
            return _answer(self.status_of(dial))
        dial = Dial(secrets.token_hex(20), action, params, variables)
        self.dials[dial.request_id] = dial
        if self.person:
            self._announce(dial)
        return _answer("SUCCESS", request_id=dial.request_id)

    def status_of(self, dial: Dial) -> str:
        if not self.person:
            return dial.status
        elapsed = time.monotonic() - dial.created
        return (
            "NONE" if elapsed < 1 else "INIT" if elapsed < 3 else "START" if elapsed < 10 else "END"
        )

    def last(self, action: str) -> dict[str, Any]:
        return next(r for r in reversed(self.requests) if r["action"] == action)

    # -- reading a request as Anveo documents it ------------------------------------------
    def _read(self, request: Request) -> tuple[str, dict[str, str], dict[str, str]]:
        if request.mimetype != "application/xml":
            raise Refused(f"Content-Type must be application/xml, not {request.mimetype!r}")
        charset = request.mimetype_params.get("charset")
        if charset is not None and charset.upper() != "UTF-8":
            raise Refused(f"charset must be UTF-8, not {charset!r}")
        try:
            root = SafeET.fromstring(request.get_data(), forbid_dtd=True)
        except (ET.ParseError, DefusedXmlException) as e:
            raise Refused(f"Invalid XML: {type(e).__name__}") from None
        if root.tag != "REQUEST":
            raise Refused(f"Invalid request: root element <{root.tag}>, expected <REQUEST>")
        if [child.tag for child in root] != ["USERTOKEN", "ACTION"]:
            raise Refused("Invalid request: <REQUEST> holds <USERTOKEN> then <ACTION>")
        token, action_element = root
        if [child.tag for child in token] != ["USERKEY"] or token[0].text != self.user_key:
            raise Refused("Invalid USERKEY")
        action = action_element.get("NAME", "")
        if action not in ACTIONS or set(action_element.attrib) != {"NAME"}:
            raise Refused(f"Unknown API action {action!r}")
        required, optional = ACTIONS[action]
        params: dict[str, str] = {}
        variables: dict[str, str] = {}
        for element in action_element:
            name = element.get("NAME", "")
            if element.tag != "PARAMETER" or not name:
                raise Refused(f"Invalid request: <{element.tag}> in <ACTION>")
            if name not in required | optional:
                raise Refused(f"Unknown PARAMETER {name!r} for {action}")
            value = element.text or ""
            if name == "VARIABLE":
                variable = element.get("VARIABLENAME")
                if not variable or set(element.attrib) != {"NAME", "VARIABLENAME"}:
                    raise Refused("VARIABLE needs a VARIABLENAME attribute")
                variables[variable] = value
                continue
            if set(element.attrib) != {"NAME"} or name in params:
                raise Refused(f"Invalid PARAMETER {name!r}")
            params[name] = value
        missing = sorted(required - set(params))
        if missing:
            raise Refused(f"PARAMETER {missing[0]} is required")
        for name in NUMBERS:
            if name in params and not re.fullmatch(r"\d{8,15}", params[name]):
                raise Refused(f"Invalid {name}: country code and digits only")
        if "TEST" in params and params["TEST"] != "TRUE":
            raise Refused("TEST must be TRUE")
        if "MAXCALLDURATION" in params and not params["MAXCALLDURATION"].isdigit():
            raise Refused("MAXCALLDURATION must be a number of minutes")
        if self.signature is not None and params.get("SIGNATURE") != self.signature:
            raise Refused("Invalid SIGNATURE")
        return action, params, variables

    def _announce(self, dial: Dial) -> None:
        number = dial.params["PHONENUMBER"]
        masked = number[:-4].replace(number[1:-4], "*" * len(number[1:-4])) + number[-4:]
        if dial.action == "DIAL.CONNECT":
            print(f"Anveo: connecting {masked} with {dial.params['DESTPHONENUMBER']}", flush=True)
            return
        for name, value in dial.variables.items():
            print(f"Anveo: the call flow tells {masked}: {name} is {' '.join(value)}", flush=True)


def _answer(result: str, *, request_id: str | None = None, error: str | None = None) -> Response:
    root = ET.Element("RESPONSE")
    ET.SubElement(root, "RESULT").text = result
    if request_id is not None:
        ET.SubElement(root, "VALUE", NAME="REQUESTID").text = request_id
    if error is not None:
        ET.SubElement(root, "ERROR").text = error
    body = b'<?xml version="1.0" standalone="no" ?>\n' + ET.tostring(root)
    return Response(body, content_type="text/xml; charset=utf-8")


if __name__ == "__main__":
    from tests.loopback import run_cli

    print(f"USERKEY: {USER_KEY}", flush=True)
    run_cli(AnveoServer(person=True), "Loopback Anveo API (path /api/v3.asp)", 8710)
