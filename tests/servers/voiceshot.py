"""A loopback VoiceShot IVR API (``POST /ivrapi.asp``) that reads posts as VoiceShot documents them.

It checks the method, path and ``text/xml`` content type, the lower-case
elements and attributes of a send-call post (action 0) and a call query
(action 3), and answers ``<campaign errorid="0" comment="ok"/>`` or the
documented errorid for what is wrong (1 when the caller's IP is not
registered, 9 for a caller ID that is not 10 digits, 19 for an unknown menu...).
``script`` makes an action fail in the other ways a server can.

Like VoiceShot, it posts to the address pasted in its console (``events_url``):
a keypress event ``<prompt menuid callid promptid keypress/>`` when the person
keys in digits, and the call summary ``<campaign ... status comment><prompts>..``
at hang-up. Tests drive the person with :meth:`press` and :meth:`hang_up`.

Run alone, it plays the person who answers: spoken calls are answered after two
seconds and their text is printed here; keypad calls wait for the PIN shown on
the app's page, keyed in on this server's page (http://127.0.0.1:PORT/)::

    VOICESHOT_EVENTS_URL=$(flask --app example_app phoneverify callback-url voiceshot) \\
        python -m tests.servers.voiceshot --port 8720
"""

from __future__ import annotations

import html
import os
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

import defusedxml.ElementTree as SafeET
import httpx
from defusedxml import DefusedXmlException
from werkzeug.wrappers import Request, Response

PATH = "/ivrapi.asp"
MENU_ID = "1-1234"

#: the documented errorid comments
COMMENTS = {
    0: "ok",
    1: "IP address is not registered with VoiceShot.",
    2: "Your free trial has ended.",
    3: "XML file malformed or missing.",
    4: "No action defined.",
    5: "Data Validation Error: Menuid missing or misplaced",
    6: "Data Validation Error: Callid missing or misplaced",
    7: "General parse error.",
    8: "Data Validation Error: Phonenumber missing or misplace",
    9: "Data Validation Error: CallerID missing, misplaced, or less than or greater than 10 "
    "numeric digits",
    10: "Data Validation Error: Date/Time given is invalid.",
    11: "Data Validation Error: Promptid missing or misplaced",
    12: "Data Validation Error: TTS Text missing or misplace",
    13: "Data Validation Error: Filename missing or misplaced",
    14: "XML parse error: PROMPT tag missing or misplaced",
    15: "XML parse error: PROMPTS tag missing or misplaced",
    16: "XML parse error: PHONENUMBER tag missing or misplaced",
    17: "XML parse error: PHONENUMBERS tag missing or misplaced",
    18: "XML parse error: campaign tag missing or misplaced",
    19: "Data Validation Error: Invalid menuid, no campaign available for listed menuid.",
    20: "Data Validation Error: File attributes missing or incorrect",
    21: "Wav format invalid.",
}
BOMB = (
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">'
    b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><campaign errorid="0" comment="&b;"/>'
)
#: ways to fail, for ``script[action]`` (action "0" send calls, "3" call query)
BEHAVIOURS = {
    "http500": lambda: Response(b"", status=500),
    "http404": lambda: Response(b"<html>Not Found</html>", status=404, content_type="text/html"),
    "not_xml": lambda: Response(b"<html><body>Server Error", content_type="text/html"),
    "dtd": lambda: Response(BOMB, content_type="text/xml"),
    "wrong_root": lambda: Response(b'<response errorid="0"/>', content_type="text/xml"),
    "no_errorid": lambda: Response(b'<campaign comment="ok"/>', content_type="text/xml"),
    "bad_errorid": lambda: Response(
        b'<campaign errorid="x" comment="?"/>', content_type="text/xml"
    ),
}


class Refused(Exception):
    def __init__(self, errorid: int) -> None:
        self.errorid = errorid
        super().__init__(COMMENTS.get(errorid, "Unknown error."))


@dataclass
class Call:
    callid: str
    number: str
    callerid: str
    prompts: dict[str, str]  # promptid -> tts
    keys: str = ""
    status: str = ""  # set at hang-up
    comment: str = ""
    started: float = field(default_factory=time.time)

    @property
    def tts(self) -> str:
        return self.prompts.get("1", "")


@dataclass
class VoiceShotServer:
    """The WSGI app and the person on the phone; tests read ``posts``/``calls``, set ``script``."""

    menu_id: str = MENU_ID
    events_url: str | None = None  # the address pasted in VoiceShot's console
    keypress_events: bool = True
    summaries: bool = True
    registered: bool = True  # False: this client's IP is not registered (errorid 1)
    summary_digits: int = (
        11  # the summary's phonenumber: 11 digits in the SDK's sample, 10 in the docs
    )
    person: bool = False  # run alone: answer calls by itself
    posts: list[dict[str, Any]] = field(default_factory=list)  # what we received
    calls: dict[str, Call] = field(default_factory=dict)
    sent: list[tuple[bytes, int]] = field(default_factory=list)  # events posted, with our answer
    script: dict[str, str] = field(
        default_factory=dict
    )  # action -> BEHAVIOURS key, "errorid:N", "slow"
    release: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.client = httpx.Client(timeout=10, trust_env=False)

    def close(self) -> None:
        self.client.close()

    def reset(self) -> None:
        """Back to a fresh server's state (one server serves a whole test module)."""
        self.release.set()
        fresh = VoiceShotServer()
        fresh.close()
        for name in ("events_url", "keypress_events", "summaries", "registered", "summary_digits"):
            setattr(self, name, getattr(fresh, name))
        self.posts, self.calls, self.sent, self.script = [], {}, [], {}
        self.release = threading.Event()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self.handle(Request(environ))(environ, start_response)

    # -- the API ----------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        if request.path == "/" and request.method == "GET":
            return self._page()
        if request.path.startswith("/calls/") and request.method == "POST":
            return self._keyed(request)
        if request.path != PATH:
            return Response(b"Not Found", status=404)
        if request.method != "POST":
            return Response(b"Method Not Allowed", status=405)
        try:
            if not self.registered:
                raise Refused(1)
            if request.mimetype != "text/xml":
                raise Refused(3)
            try:
                root = SafeET.fromstring(request.get_data(), forbid_dtd=True)
            except (ET.ParseError, DefusedXmlException):
                raise Refused(3) from None
            if root.tag != "campaign":
                raise Refused(18)
            action = root.get("action")
            if action is None:
                raise Refused(4)
            self.posts.append({"action": action, "root": root, "headers": dict(request.headers)})
            scripted = self.script.get(action)
            if scripted == "slow":
                self.release.wait(5)
            elif scripted and scripted.startswith("errorid:"):
                raise Refused(int(scripted.split(":", 1)[1]))
            elif scripted:
                return BEHAVIOURS[scripted]()
            self._check_menu(root)
            if action == "0":
                return self._send_calls(root)
            if action == "3":
                return self._query(root)
            raise Refused(7)
        except Refused as e:
            return _xml(ET.Element("campaign", errorid=str(e.errorid), comment=str(e)))

    def _check_menu(self, root: ET.Element) -> None:
        menu = root.get("menuid")
        if not menu:
            raise Refused(5)
        if menu != self.menu_id:
            raise Refused(19)

    def _send_calls(self, root: ET.Element) -> Response:
        callerid = root.get("callerid", "")
        if not (callerid.isdigit() and len(callerid) == 10):
            raise Refused(9)
        campaign_prompts = _prompts(root)
        numbers = [child for child in root if child.tag == "phonenumbers"]
        if len(numbers) != 1 or any(c.tag not in ("prompts", "phonenumbers") for c in root):
            raise Refused(17)
        entries = list(numbers[0])
        if not entries or any(entry.tag != "phonenumber" for entry in entries):
            raise Refused(16)
        calls = []
        for entry in entries:
            number, callid = entry.get("number", ""), entry.get("callid", "")
            if not (number.isdigit() and len(number) == 10):
                raise Refused(8)
            if not callid or len(callid) > 50:
                raise Refused(6)
            calls.append(Call(callid, number, callerid, {**campaign_prompts, **_prompts(entry)}))
        for call in calls:
            self.calls[call.callid] = call
            if self.person:
                threading.Thread(target=self._play, args=(call,), daemon=True).start()
        return _xml(ET.Element("campaign", errorid="0", comment="ok"))

    def _query(self, root: ET.Element) -> Response:
        entries = [e for n in root if n.tag == "phonenumbers" for e in n]
        if not entries or any(e.tag != "phonenumber" or "callid" not in e.attrib for e in entries):
            raise Refused(6)
        wanted = {e.get("callid") for e in entries}
        answer = ET.Element("campaign", menuid=self.menu_id)
        numbers = ET.SubElement(answer, "phonenumbers")
        for call in self.calls.values():
            if call.status and ("" in wanted or call.callid in wanted):
                attributes = {"number": call.number, **self._result(call)}
                result = ET.SubElement(numbers, "phonenumber", attributes)
                self._prompt_keys(result, call)
        return _xml(answer)

    # -- the person on the phone -----------------------------------------------------------
    def press(self, callid: str, keys: str, promptid: str = "1") -> int | None:
        """Key in digits; VoiceShot posts a keypress event. Our answer's status, if posted."""
        call = self.calls[callid]
        call.keys = keys
        event = ET.Element(
            "prompt", menuid=self.menu_id, callid=callid, promptid=promptid, keypress=keys
        )
        return self.post(ET.tostring(event)) if self.keypress_events else None

    def hang_up(
        self, callid: str, status: str = "Successful", comment: str = "Human Answer"
    ) -> int | None:
        """The call ends; VoiceShot posts its summary. Our answer's status, if posted."""
        call = self.calls[callid]
        call.status, call.comment = status, comment
        return self.post(self.summary(call)) if self.summaries else None

    def summary(self, call: Call, **override: str) -> bytes:
        number = ("1" + call.number) if self.summary_digits == 11 else call.number
        attributes = {"menuid": self.menu_id, "duration": "14", "phonenumber": number}
        attributes.update(self._result(call))
        attributes.update(override)
        root = ET.Element("campaign", attributes)
        self._prompt_keys(ET.SubElement(root, "prompts"), call)
        return ET.tostring(root)

    def post(self, body: bytes) -> int:
        """POST raw XML to the console's address, as VoiceShot does."""
        assert self.events_url, "paste the callback address into events_url first"
        response = self.client.post(
            self.events_url, content=body, headers={"Content-Type": "text/xml"}
        )
        self.sent.append((body, response.status_code))
        return response.status_code

    def _result(self, call: Call) -> dict[str, str]:
        return {
            "status": call.status,
            "comment": call.comment,
            "callid": call.callid,
            "dateandtime": time.strftime("%m/%d/%Y %I:%M:%S %p", time.localtime(call.started)),
        }

    @staticmethod
    def _prompt_keys(parent: ET.Element, call: Call) -> None:
        if parent.tag != "prompts":
            parent = ET.SubElement(parent, "prompts")
        for promptid in sorted(call.prompts) or ["1"]:
            keys = call.keys if promptid == "1" else ""
            ET.SubElement(parent, "prompt", promptid=promptid, keypress=keys)

    def _play(self, call: Call) -> None:
        """Run alone: answer, say the text; spoken calls end by themselves, keypad calls
        wait up to a minute for the PIN keyed in on this server's page."""
        time.sleep(2)
        print(f"VoiceShot: call {call.callid[:8]} to {call.number} says: {call.tts}", flush=True)
        if "key in" not in call.tts.lower():
            time.sleep(3)
        else:
            print(
                "VoiceShot: key in the PIN shown on the app's page at this server's / page",
                flush=True,
            )
            deadline = time.time() + 60
            while not call.keys and time.time() < deadline:
                time.sleep(0.5)
        self._quietly(self.hang_up, call.callid)

    def _keyed(self, request: Request) -> Response:
        parts = request.path.strip("/").split("/")
        call = self.calls.get(parts[1]) if len(parts) == 3 and parts[2] == "keys" else None
        if call is None or call.status:
            return Response(b"No such call on the line", status=404)
        self._quietly(self.press, call.callid, request.form.get("digits", "").strip())
        return Response(status=303, headers={"Location": "/"})

    def _quietly(self, action: Any, *args: Any) -> None:
        try:
            action(*args)
        except (AssertionError, httpx.HTTPError) as e:
            print(f"VoiceShot: could not post to the events address: {e}", flush=True)

    def _page(self) -> Response:
        rows = "".join(
            f"<li>{html.escape(c.number)}: {html.escape(c.tts)} "
            + (
                f"({html.escape(c.status)})"
                if c.status
                else f'<form method="post" action="/calls/{html.escape(c.callid)}/keys">'
                '<input name="digits" inputmode="numeric" autofocus>'
                "<button>Key in</button></form>"
            )
            + "</li>"
            for c in reversed(self.calls.values())
        )
        body = f"<!doctype html><title>VoiceShot phone</title><h1>Calls</h1><ul>{rows}</ul>"
        return Response(body, content_type="text/html; charset=utf-8")


def _prompts(parent: ET.Element) -> dict[str, str]:
    out: dict[str, str] = {}
    for block in (child for child in parent if child.tag == "prompts"):
        for prompt in block:
            if prompt.tag != "prompt":
                raise Refused(14)
            promptid = prompt.get("promptid", "")
            if not promptid.isdigit():
                raise Refused(11)
            if not (prompt.get("tts") or prompt.get("filename")):
                raise Refused(12)
            out[promptid] = prompt.get("tts", "")
    return out


def _xml(root: ET.Element) -> Response:
    return Response(ET.tostring(root), content_type="text/xml")


if __name__ == "__main__":
    from tests.loopback import run_cli

    server = VoiceShotServer(person=True, events_url=os.environ.get("VOICESHOT_EVENTS_URL"))
    print(f"menuid: {server.menu_id}; events go to: {server.events_url or '(not set)'}", flush=True)
    run_cli(server, "Loopback VoiceShot IVR API (path /ivrapi.asp)", 8720)
