"""Security rules 10-11 (and rule 1 at the provider edge): provider input is hostile (XML, JSON,
callbacks), XML we send cannot be restructured, keypad calls never say the PIN;
credentials and numbers stay out of logs, every decision is logged and audited.

Each test drives the real flow, store and views (the test client, or a real loopback
server with threads), so it fails when the rule breaks. docs/security.md maps every rule
to its source and to the tests proving it; the tests keep their rule-numbered names.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

import httpx
import phonenumbers
import pytest

from flask_phoneverify import (
    ConfigError,
    ProviderError,
)
from flask_phoneverify.errors import ProviderProtocolError
from flask_phoneverify.providers import REGISTRY, load, transport
from flask_phoneverify.providers.base import CallRequest, Provider, Style
from flask_phoneverify.settings import Setting

from .helpers import (
    PHONE_1,
    SECRET,
    Harness,
    begin,
    csrf,
    dev_call_id,
    events,
    get_json,
    log_text,
    post,
    press,
    row,
    state_of,
    verifications,
    verify_keypad,
    wrong,
)

# == Rule 10: provider input is hostile ======================================================

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<RESPONSE><RESULT>&lol9;</RESULT></RESPONSE>"""
XXE_FILE = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<RESPONSE><RESULT>&xxe;</RESULT></RESPONSE>"""
XXE_HTTP = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY xxe SYSTEM "http://127.0.0.1:9/steal">]>
<RESPONSE><RESULT>&xxe;</RESULT></RESPONSE>"""
XXE_PARAMETER = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY % p SYSTEM "http://127.0.0.1:9/evil.dtd"> %p;]>
<RESPONSE/>"""
EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE RESPONSE SYSTEM "http://127.0.0.1:9/r.dtd">
<RESPONSE><RESULT>ok</RESULT></RESPONSE>"""
PLAIN_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE RESPONSE [<!ELEMENT RESPONSE ANY>]>
<RESPONSE><RESULT>ok</RESULT></RESPONSE>"""
QUADRATIC = (
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "'
    + b"x" * 50_000
    + b'">]><r>'
    + b"&a;" * 2_000
    + b"</r>"
)
HOSTILE_XML = {
    "billion_laughs": BILLION_LAUGHS,
    "xxe_file": XXE_FILE,
    "xxe_http": XXE_HTTP,
    "xxe_parameter_entity": XXE_PARAMETER,
    "external_dtd": EXTERNAL_DTD,
    "internal_dtd": PLAIN_DTD,
    "quadratic_blowup": QUADRATIC,
    "oversized": b"<r>" + b"a" * (transport.MAX_RESPONSE_BYTES + 1) + b"</r>",
    "malformed": b"<RESPONSE><RESULT>ok</RESPONSE>",
    "not_xml": b"\x00\xff\xfe garbage",
    "empty": b"",
}


@pytest.mark.parametrize("name", sorted(HOSTILE_XML))
def test_rule_10_hostile_xml_is_refused_with_provider_error(name: str) -> None:
    with pytest.raises(ProviderError) as info:
        transport.parse_xml(HOSTILE_XML[name], vendor="Vendor")
    assert isinstance(info.value, ProviderProtocolError)
    assert "root:" not in str(info.value.detail)  # /etc/passwd was never read


def test_rule_10_plain_xml_still_parses() -> None:
    root = transport.parse_xml(b"<RESPONSE><RESULT>ok</RESULT></RESPONSE>", vendor="Vendor")
    assert root.findtext("RESULT") == "ok"


def test_rule_10_xml_built_by_transport_escapes_values() -> None:
    import xml.etree.ElementTree as ET

    nasty = '</PARAMETER><PARAMETER NAME="X">1</PARAMETER>&amp;&lt;\'"]]><!--'
    root = ET.Element("REQUEST")
    param = ET.SubElement(root, "PARAMETER", NAME=nasty)
    param.text = nasty
    body = transport.to_xml_bytes(root)
    parsed = transport.parse_xml(body, vendor="Vendor")
    assert [child.tag for child in parsed] == ["PARAMETER"]
    assert parsed[0].get("NAME") == nasty and parsed[0].text == nasty


@pytest.mark.parametrize(
    "body", [b"", b"not json", b"{", b"\xff\xfe", b"[1, 2", b'{"a": NaN', b"\x00"]
)
def test_rule_10_json_that_is_not_json_raises_provider_error(body: bytes) -> None:
    response = httpx.Response(200, content=body)
    with pytest.raises(ProviderProtocolError) as info:
        transport.parse_json(response, vendor="Vendor")
    assert "not JSON" in str(info.value.detail)


# == Rule 11: secrets stay secret ============================================================


def _national_forms(e164: str) -> list[str]:
    number = phonenumbers.parse(e164, None)
    national = phonenumbers.national_significant_number(number)
    return [
        e164,
        e164.lstrip("+"),
        national,
        phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL),
        phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL),
    ]


def test_rule_11_logs_hold_no_secrets_and_only_masked_numbers(
    make_app: Any, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    h = make_app(
        PHONEVERIFY_ALLOW_ENROLMENT=True,
        PHONEVERIFY_MAX_ATTEMPTS=2,
        PHONEVERIFY_CALLS_PER_NUMBER_PER_HOUR=3,
        PHONEVERIFY_DEFAULT_REGION="US",
    )
    c = h.client("1")
    # placed and confirmed
    verify_keypad(c)
    # locked
    token, body = begin(c)
    for _ in range(2):
        press(c, token, dev_call_id(h, body["token"]), wrong(body["pin"]))
    # failed: the phone declines the call
    _, body = begin(c)
    post(c, f"/dev/phone/{dev_call_id(h, body['token'])}/hangup", token=token)
    # refused: over the per-number limit
    assert post(c, "/start", token=token).status_code == 429
    # enrolment of a typed number, and a refused premium-rate number
    e = h.client("3")
    begin(e, phone="(201) 555-0177", next="/x")
    post(e, "/start", {"phone": "+19002345678"}, token=csrf(e))
    logged = log_text(caplog)
    out = capsys.readouterr()
    assert "+1******0123" in logged
    for text in (logged, out.err, out.out):
        assert SECRET not in text
        for number in (PHONE_1, "+12015550177", "+19002345678"):
            for form in _national_forms(number):
                assert form not in text, (form, text)


DECISIONS = ["call placed", "confirmed", "failed", "locked", "refused"]


@pytest.mark.parametrize(
    "decision",
    DECISIONS,
)
def test_rule_11_every_decision_is_logged_for_audit(
    make_app: Any, decision: str, caplog: pytest.LogCaptureFixture
) -> None:
    h = make_app(PHONEVERIFY_CALLS_PER_USER_PER_HOUR=1)
    c = h.client()
    token = csrf(c)
    caplog.set_level(logging.DEBUG, logger="flask_phoneverify")
    r = post(c, "/start", token=token)
    assert r.status_code == 200
    body = r.json
    call_id = dev_call_id(h, body["token"])
    if decision != "call placed":
        caplog.clear()
    if decision == "confirmed":
        press(c, token, call_id, body["pin"])
        assert post(c, "/confirm", {"token": body["token"]}, token=token).status_code == 200
    elif decision == "failed":
        post(c, f"/dev/phone/{call_id}/hangup", token=token)
        assert row(h, body["token"]).status == "failed"
    elif decision == "locked":
        for _ in range(5):
            press(c, token, call_id, wrong(body["pin"]))
        assert row(h, body["token"]).status == "locked"
    elif decision == "refused":
        assert post(c, "/start", token=token).status_code == 429
        assert post(c, "/resend", {"token": body["token"]}, token=token).status_code == 429
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("flask_phoneverify")]
    assert any(decision in message for message in ours), ours
    assert not any("2015550123" in message for message in ours)
    audited = {
        "call placed": "call_placed",
        "confirmed": "confirmed",
        "failed": "call_failed",
        "locked": "locked",
        "refused": "refused",
    }[decision]
    assert audited in [e.kind for e in events(h)]


def test_rule_11_config_errors_never_echo_secret_values() -> None:
    sentinel = "s3cr3t-sentinel-value"
    secret = Setting("PHONEVERIFY_X_API_KEY", None, "str", "An API key.", secret=True)
    with pytest.raises(ConfigError) as info:
        secret.parse(sentinel.encode())
    assert sentinel not in str(info.value)
    pinned = Setting(
        "PHONEVERIFY_X_PASSWORD", None, "str", "A password.", secret=True, choices=("a", "b")
    )
    with pytest.raises(ConfigError) as info:
        pinned.parse(sentinel)
    assert sentinel not in str(info.value)


def test_rule_11_audit_trail_records_decisions_without_pins(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_MAX_ATTEMPTS=2)
    c = h.client()
    body = verify_keypad(c)
    token, locked = begin(c)
    for _ in range(2):
        press(c, token, dev_call_id(h, locked["token"]), wrong(locked["pin"]))
    _, failed = begin(c)
    post(c, f"/dev/phone/{dev_call_id(h, failed['token'])}/hangup", token=token)
    kinds = [e.kind for e in events(h)]
    for kind in ("call", "started", "call_placed", "confirmed", "wrong_pin", "locked"):
        assert kind in kinds, kinds
    assert "call_failed" in kinds
    for e in events(h):
        assert e.at and e.kind
        for pin in (body["pin"], locked["pin"], failed["pin"]):
            assert pin not in (e.detail or "")


# -- shared checks -------------------------------------------------------------------------


def test_attacks_never_answer_500(make_app: Any) -> None:
    """Replay, forged tokens and callbacks, hostile bodies: refused, never a server error."""
    h = make_app(PHONEVERIFY_STYLE="spoken")
    c = h.client()
    token, body = begin(c)
    seen: list[Any] = []
    hostile_bodies: list[Any] = [
        {"token": body["token"], "pin": ["1"]},
        {"token": body["token"], "pin": {"a": 1}},
        {"token": body["token"], "pin": 10**40},
        {"token": body["token"], "pin": "9" * 5000},
        {"token": body["token"], "pin": "１２３４５６"},
        {"token": ["x"], "pin": "123456"},
        {"token": {"v": "x"}},
        {"token": 5},
        {"token": None},
        {"token": body["token"], "next": ["//evil"]},
        {"token": body["token"], "next": {"a": "b"}},
        {"phone": ["+1"]},
        {"phone": "+" + "1" * 10000},
    ]
    for data in hostile_bodies:
        for path in ("/confirm", "/resend", "/cancel", "/start"):
            seen.append(post(c, path, data, token=token))
    for raw in (b"[]", b"null", b'"x"', b"1", BILLION_LAUGHS, b"\xff"):
        seen.append(
            c.post(
                "/phoneverify/confirm",
                data=raw,
                content_type="application/json",
                headers={"X-CSRFToken": token, "Accept": "application/json"},
            )
        )
    callback = state_of(h).tokens.make_callback("dev")
    for raw in (BILLION_LAUGHS, XXE_FILE, b"", b"{}", b"\x00" * 70_000):
        seen.append(c.post(f"/phoneverify/callback/dev/{callback}", data=raw))
    seen.append(c.post("/phoneverify/callback/dev/x", data=b"x"))
    seen.append(get_json(c, "/status?token=" + "A" * 5000))
    seen.append(c.post("/phoneverify/dev/phone/nope/keys", data={"csrf_token": token}))
    seen.append(c.post("/phoneverify/dev/phone/nope/explode", data={"csrf_token": token}))
    assert all(r.status_code < 500 for r in seen), [r.status_code for r in seen]


# == Rules 1, 10 and 11 for every voice provider =============================================


SENTINELS = {
    "anveo": "anveo-user-key-sentinel-7f3a",
    "phoneconfirm": "9d1e2c3b4a5f60718293a4b5c6d7e8f9",
    "veratad": "veratad-password-sentinel-7f3a",
    "xverify": "xverify-api-key-sentinel-7f3a",
}


def provider_config(name: str, base: str, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "anveo": {
            "PHONEVERIFY_ANVEO_URL": f"{base}/api/v3.asp",
            "PHONEVERIFY_ANVEO_USER_KEY": SENTINELS["anveo"],
            "PHONEVERIFY_ANVEO_CALLFLOW": "callflow-key-1",
            "PHONEVERIFY_ANVEO_CALLER_ID": "+12155550100",
        },
        "phoneconfirm": {
            "PHONEVERIFY_PHONECONFIRM_URL": f"{base}/soap/Jobs.asmx",
            "PHONEVERIFY_PHONECONFIRM_USER_GUID": SENTINELS["phoneconfirm"],
        },
        "veratad": {
            "PHONEVERIFY_STYLE": "delivery",
            "PHONEVERIFY_VERATAD_URL": base,
            "PHONEVERIFY_VERATAD_USER": "api@example.com",
            "PHONEVERIFY_VERATAD_PASSWORD": SENTINELS["veratad"],
            "PHONEVERIFY_VERATAD_MESSAGE": "audio-1",
        },
        "voiceshot": {
            "PHONEVERIFY_VOICESHOT_URL": f"{base}/ivrapi.asp",
            "PHONEVERIFY_VOICESHOT_FALLBACK_URL": "",
            "PHONEVERIFY_VOICESHOT_MENU_ID": "1-1234",
            "PHONEVERIFY_VOICESHOT_CALLER_ID": "2015550100",
        },
        "xverify": {
            "PHONEVERIFY_STYLE": "spoken",
            "PHONEVERIFY_XVERIFY_URL": base,
            "PHONEVERIFY_XVERIFY_API_KEY": SENTINELS["xverify"],
            "PHONEVERIFY_XVERIFY_DOMAIN": "example.com",
        },
    }[name]
    return {"PHONEVERIFY_PROVIDER": name, **config, **extra}


SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"


def soap(inner: str) -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f'<soap:Envelope xmlns:soap="{SOAP_ENV}"><soap:Body>{inner}</soap:Body></soap:Envelope>'
    )


PLACED_OK = {
    "anveo": (
        '<RESPONSE><RESULT>SUCCESS</RESULT><VALUE NAME="REQUESTID">r1</VALUE></RESPONSE>',
        "application/xml",
    ),
    "phoneconfirm": (
        soap(
            '<AddJobResponse xmlns="http://tempuri.org/"><AddJobResult>'
            "0f0e0d0c-0b0a-0908-0706-050403020100</AddJobResult></AddJobResponse>"
        ),
        "text/xml; charset=utf-8",
    ),
    "veratad": (
        json.dumps(
            {
                "result": {"action": "PENDING", "detail": "", "issues": []},
                "continuations": {"outofband": {"template": {"token": "tok-1"}}},
            }
        ),
        "application/json",
    ),
    "voiceshot": ('<campaign errorid="0" comment="ok"/>', "text/xml"),
    "xverify": (
        json.dumps(
            {"r": {"error": 0, "status": "valid", "message": "", "transaction_number": "t-1"}}
        ),
        "application/json",
    ),
}
PROVIDER_NAMES = [n for n in PLACED_OK if n in REGISTRY]


def start_with(h: Harness) -> Any:
    c = h.client()
    return c, post(c, "/start", token=csrf(c))


KEYPAD_PROVIDERS = [n for n in PROVIDER_NAMES if Style.KEYPAD in load(n).styles]


@pytest.mark.parametrize("name", KEYPAD_PROVIDERS)
def test_rule_01_keypad_calls_never_say_the_pin(make_app: Any, vendor: Any, name: str) -> None:
    import defusedxml.ElementTree as SafeET

    recorder, base = vendor
    recorder.answer(*PLACED_OK[name][:1], content_type=PLACED_OK[name][1])
    recorder.requests.clear()
    h = make_app(**provider_config(name, base, PHONEVERIFY_STYLE="keypad"))
    _, r = start_with(h)
    assert r.status_code == 200, r.json
    pin = r.json["pin"]
    body = recorder.requests[-1]["body"]
    root = SafeET.fromstring(body)
    said = []
    for node in root.iter():
        if node.tag.rpartition("}")[2] in ("PIN",):  # what the keypad must match, never spoken
            continue
        said.append(node.text or "")
        said.extend(node.attrib.values())
    spoken = " ".join(said)
    for form in (pin, " ".join(pin), ", ".join(pin), "-".join(pin), "@PIN", "@pin"):
        assert form not in spoken, (form, spoken)


@pytest.mark.parametrize(
    ("name", "config"),
    [
        (n, c)
        for n, c in [
            ("phoneconfirm", {"PHONEVERIFY_PHONECONFIRM_TEXT": "Your PIN is @PIN."}),
            ("phoneconfirm", {"PHONEVERIFY_PHONECONFIRM_TEXT": "Your code: @pin, again @Pin"}),
            ("xverify", {}),
            ("anveo", {}),
        ]
        if n in PROVIDER_NAMES
    ],
)
def test_rule_01_keypad_call_texts_that_would_say_the_pin_are_refused(
    make_app: Any, vendor: Any, name: str, config: dict[str, Any]
) -> None:
    _, base = vendor
    with pytest.raises(ConfigError) as info:
        make_app(**provider_config(name, base, PHONEVERIFY_STYLE="keypad", **config))
    assert info.value.key in ("PHONEVERIFY_STYLE", f"PHONEVERIFY_{name.upper()}_TEXT")


XML_PROVIDERS = [n for n in ("anveo", "phoneconfirm", "voiceshot") if n in PROVIDER_NAMES]


@pytest.mark.parametrize("name", XML_PROVIDERS)
@pytest.mark.parametrize("attack", ["billion_laughs", "xxe_file", "xxe_http", "external_dtd"])
def test_rule_10_hostile_xml_answers_are_refused_by_every_xml_provider(
    make_app: Any, vendor: Any, name: str, attack: str
) -> None:
    recorder, base = vendor
    recorder.answer(HOSTILE_XML[attack], content_type="text/xml")
    h = make_app(**provider_config(name, base))
    provider = state_of(h).provider
    request = CallRequest("+12015550123", "123456", provider.style, "c" * 32, "Site")
    with pytest.raises(ProviderError) as info:
        provider.place_call(request)
    assert "root:" not in str(info.value.detail)
    # and through the app: refused with a readable page, the verification failed, never a 500
    c, r = start_with(h)
    # an answer we cannot read is a protocol error: retryable, so 503 (docs/api.md)
    assert (r.status_code, r.json["error"], r.json["retryable"]) == (503, "provider_error", True)
    assert {v.status for v in verifications(h)} == {"failed"}


# Providers that take call events posted to our callback address, and how each writes a
# keypress event for our call (VoiceShot: ``<prompt menuid callid promptid keypress/>``).
CALLBACK_PROVIDERS = [
    n for n in PROVIDER_NAMES if load(n).parse_callback is not Provider.parse_callback
]
KEYPRESS_EVENTS = {
    "voiceshot": '<prompt menuid="1-1234" callid="{call}" promptid="1" keypress="{keys}">'
    "{text}</prompt>",
}
# (the document type declaration, the text put in the event) for each attack
HOSTILE_CALLBACK_PARTS = {
    "billion_laughs": (BILLION_LAUGHS.split(b"]>")[0].split(b"\n", 1)[1] + b"]>", "&lol9;"),
    "xxe_file": (b'<!DOCTYPE prompt [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>', "&xxe;"),
    "external_dtd": (b'<!DOCTYPE prompt SYSTEM "http://127.0.0.1:9/p.dtd">', ""),
    "internal_dtd": (b"<!DOCTYPE prompt [<!ELEMENT prompt ANY>]>", ""),
    "quadratic_blowup": (b'<!DOCTYPE prompt [<!ENTITY a "' + b"x" * 20_000 + b'">]>', "&a;" * 500),
}


@pytest.mark.parametrize("attack", sorted(HOSTILE_CALLBACK_PARTS))
@pytest.mark.parametrize("name", CALLBACK_PROVIDERS)
def test_rule_10_hostile_xml_callbacks_are_refused(
    make_app: Any, vendor: Any, name: str, attack: str
) -> None:
    recorder, base = vendor
    recorder.answer(PLACED_OK[name][0], content_type=PLACED_OK[name][1])
    h = make_app(**provider_config(name, base, PHONEVERIFY_STYLE="keypad"))
    _, r = start_with(h)
    assert r.status_code == 200, r.json
    pending, pin = r.json["token"], r.json["pin"]
    call_id = row(h, pending).call_id
    url = f"/phoneverify/callback/{name}/{state_of(h).tokens.make_callback(name)}"
    doctype, text = HOSTILE_CALLBACK_PARTS[attack]
    event = KEYPRESS_EVENTS[name].format(call=call_id, keys=pin, text=text).encode()
    hostile = b'<?xml version="1.0"?>\n' + doctype + b"\n" + event
    r = h.client(None).post(url, data=hostile, content_type="text/xml")
    assert r.status_code == 400
    v = row(h, pending)
    assert (v.status, v.attempts) == ("calling", 0)
    # the same event without the hostile parts is read and confirms: the body is parsed
    clean = KEYPRESS_EVENTS[name].format(call=call_id, keys=pin, text="").encode()
    r = h.client(None).post(url, data=clean, content_type="text/xml")
    assert r.status_code == 200, r.data
    assert row(h, pending).status == "verified"


def test_rule_10_zeep_parses_with_its_protections_on(make_app: Any, vendor: Any) -> None:
    if "phoneconfirm" not in PROVIDER_NAMES:  # pragma: no cover
        pytest.skip("no SOAP provider")
    _, base = vendor
    h = make_app(**provider_config("phoneconfirm", base))
    service = state_of(h).provider.service()
    zeep_settings = service._client.settings
    assert zeep_settings.forbid_dtd and zeep_settings.forbid_entities
    assert zeep_settings.forbid_external and not zeep_settings.xml_huge_tree


NASTY = 'A&B <Ltd> "quoted" \'single\' ]]> </prompt><prompt promptid="2"/> &amp;'


@pytest.mark.parametrize("name", XML_PROVIDERS)
def test_rule_10_xml_we_send_cannot_be_restructured_by_values(
    make_app: Any, vendor: Any, name: str
) -> None:
    import defusedxml.ElementTree as SafeET

    recorder, base = vendor
    recorder.answer(PLACED_OK[name][0], content_type=PLACED_OK[name][1])
    recorder.requests.clear()
    extra = {"PHONEVERIFY_APP_NAME": NASTY}
    if name == "anveo":
        extra["PHONEVERIFY_ANVEO_MEMO"] = NASTY
    h = make_app(**provider_config(name, base, **extra))
    _, r = start_with(h)
    assert r.status_code == 200, r.json
    root = SafeET.fromstring(recorder.requests[-1]["body"])
    values = [n.text or "" for n in root.iter()] + [
        v for n in root.iter() for v in n.attrib.values()
    ]
    expected = NASTY.replace("@", "")
    assert any(expected in value for value in values), values
    tags = Counter(n.tag.rpartition("}")[2] for n in root.iter())
    assert tags["prompt"] <= 1 and tags.get("Fault", 0) == 0


def test_rule_10_deeply_nested_json_is_a_provider_error() -> None:
    with pytest.raises(ProviderProtocolError):
        transport.parse_json(httpx.Response(200, content=b"[" * 100_000), vendor="Vendor")


@pytest.mark.parametrize("name", [n for n in ("veratad", "xverify") if n in PROVIDER_NAMES])
def test_rule_10_deeply_nested_json_answer_is_refused_not_a_crash(
    make_app: Any, vendor: Any, name: str
) -> None:
    recorder, base = vendor
    recorder.answer(b'{"a":' * 50_000, content_type="application/json")
    h = make_app(**provider_config(name, base))
    _, r = start_with(h)
    assert (r.status_code, r.json["error"], r.json["retryable"]) == (503, "provider_error", True)
    assert {v.status for v in verifications(h)} == {"failed"}


ECHOING_ERRORS = {
    "anveo": (
        f"<RESPONSE><RESULT>ERROR</RESULT><ERROR>Invalid USERKEY {SENTINELS['anveo']}</ERROR>"
        "</RESPONSE>",
        200,
        "application/xml",
    ),
    "phoneconfirm": (
        soap(
            "<soap:Fault><faultcode>soap:Server</faultcode><faultstring>"
            "System.Web.Services.Protocols.SoapException: Server was unable to process request. "
            f"---&gt; Unknown UserGuid {{{SENTINELS['phoneconfirm'].upper()}}}\n   at Jobs.AddJob()"
            "</faultstring><detail /></soap:Fault>"
        ),
        500,
        "text/xml; charset=utf-8",
    ),
    "veratad": (
        json.dumps(
            {
                "error": {
                    "code": 401,
                    "message": "Invalid Credentials",
                    "detail": f"user api@example.com pass {SENTINELS['veratad']}",
                }
            }
        ),
        200,
        "application/json",
    ),
    "xverify": (
        json.dumps(
            {
                "r": {
                    "error": 9,
                    "status": "invalid",
                    "message": f"Invalid apikey {SENTINELS['xverify']} for this domain",
                }
            }
        ),
        200,
        "application/json",
    ),
}


@pytest.mark.parametrize("name", [n for n in SENTINELS if n in PROVIDER_NAMES])
@pytest.mark.parametrize("answer", ["echoing_error", "server_error", "garbage"])
def test_rule_11_provider_credentials_never_logged_or_shown(
    make_app: Any,
    vendor: Any,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    name: str,
    answer: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    recorder, base = vendor
    if answer == "echoing_error":
        body, status, content_type = ECHOING_ERRORS[name]
        recorder.answer(body, status=status, content_type=content_type)
    elif answer == "server_error":
        recorder.answer(f"<html>500 {SENTINELS[name]}</html>", status=500, content_type="text/html")
    else:
        recorder.answer(f"\x00{SENTINELS[name]}", status=200, content_type="text/plain")
    h = make_app(**provider_config(name, base))
    c, r = start_with(h)
    assert 400 <= r.status_code < 600 and r.status_code != 500, (r.status_code, r.data)
    page = c.post("/phoneverify/start", data={"csrf_token": csrf(c)})
    secret = SENTINELS[name]
    shown = r.get_data(as_text=True) + page.get_data(as_text=True)
    out = capsys.readouterr()
    for text in (log_text(caplog), shown, out.err, out.out):
        assert secret not in text and secret.upper() not in text
    for e in events(h):
        assert secret not in (e.detail or "") and secret.upper() not in (e.detail or "")


FORGED = "\r\nphoneverify: verification FORGED confirmed for +12015550199"


@pytest.mark.parametrize("name", [n for n in ECHOING_ERRORS if n in PROVIDER_NAMES])
def test_rule_11_vendor_text_cannot_forge_log_lines_or_log_numbers(
    make_app: Any, vendor: Any, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    """A vendor's error text with line breaks and a phone number reaches the log as one
    line, its number masked."""
    caplog.set_level(logging.DEBUG)
    recorder, base = vendor
    body, status, content_type = ECHOING_ERRORS[name]
    text = json.dumps(FORGED)[1:-1] if content_type == "application/json" else FORGED
    for sentinel in (SENTINELS[name], SENTINELS[name].upper()):
        body = body.replace(sentinel, text)
    recorder.answer(body, status=status, content_type=content_type)
    h = make_app(**provider_config(name, base))
    _, r = start_with(h)
    assert 400 <= r.status_code < 600 and r.status_code != 500
    ours = [rec for rec in caplog.records if rec.name.startswith("flask_phoneverify")]
    assert ours
    for rec in ours:
        message = rec.getMessage()
        assert "\n" not in message and "\r" not in message, message
        assert "12015550199" not in message, message
    for e in events(h):
        assert "\n" not in (e.detail or "") and "12015550199" not in (e.detail or "")
