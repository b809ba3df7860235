"""The OpenAPI document against the real views: every route of the blueprint is in it,
and real answers of every endpoint, errors included, validate against it.

``Api`` sends each request through Flask's test client after checking its body against
the document's request schema, then checks the answer: its status must be documented
for that operation, a JSON body must match the documented schema (answers are closed
objects, so an undocumented field fails), and documented headers must be present.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_spec
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from flask_phoneverify.openapi import document

from .conftest import Harness
from .helpers import dev_calls, spoken_pin, wrong
from .loopback import free_port, serve
from .servers.anveo import PATH, USER_KEY, AnveoServer

SPEC = document()
BASE = "urn:phoneverify-openapi"
REGISTRY: Registry = Registry().with_resource(  # type: ignore[call-arg]
    BASE, Resource.from_contents(SPEC, default_specification=DRAFT202012)
)


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _schema_check(instance: Any, pointer: str) -> None:
    validator = Draft202012Validator({"$ref": f"{BASE}#/{pointer}"}, registry=REGISTRY)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
    assert not errors, f"{instance!r} does not match {pointer}: {errors[0].message}"


def _response(path: str, method: str, status: int) -> tuple[dict[str, Any], str]:
    """The documented response (a ref followed) and its JSON pointer."""
    op = SPEC["paths"][path][method]
    documented = op["responses"]
    assert str(status) in documented, (
        f"{method.upper()} {path} answered {status}, which the OpenAPI document does not list "
        f"(documented: {sorted(documented)}); document it in flask_phoneverify/openapi.py"
    )
    found = documented[str(status)]
    pointer = _pointer("paths", path, method, "responses", str(status))
    if "$ref" in found:
        pointer = found["$ref"].removeprefix("#/")
        name = pointer.rsplit("/", 1)[1]
        found = SPEC["components"]["responses"][name]
    return found, pointer


class Api:
    """A client that checks each request and answer against the document."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client
        self.csrf: str | None = None

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        csrf: bool = True,
        query: str = "",
        **values: str,
    ) -> Any:
        op = SPEC["paths"][path][method]
        url = path.format(**values) + (f"?{query}" if query else "")
        headers = {"Accept": "application/json"}
        if method == "post":
            if body is not None:
                _schema_check(
                    body,
                    _pointer("paths", path, "post", "requestBody", "content", "application/json")
                    + "/schema",
                )
            if csrf:
                assert op["security"] == [{"session": [], "csrf": []}]
                headers["X-CSRFToken"] = self.csrf or ""
            r = self.client.post("/phoneverify" + url, json=body or {}, headers=headers)
        else:
            r = self.client.get("/phoneverify" + url, headers=headers)
        found, pointer = _response(path, method, r.status_code)
        content = found.get("content", {})
        if r.mimetype == "application/json":
            assert "application/json" in content, f"{method} {path} {r.status_code}: not JSON"
            if "schema" in content["application/json"]:
                _schema_check(r.json, pointer + "/content/application~1json/schema")
        elif content:
            assert r.mimetype in content, f"{method} {path} {r.status_code}: {r.mimetype}"
        for header, spec in found.get("headers", {}).items():
            spec = SPEC["components"]["headers"][spec["$ref"].rsplit("/", 1)[1]]
            if spec.get("required"):
                assert header in r.headers, f"{method} {path} {r.status_code}: no {header}"
        if "Retry-After" in r.headers:
            assert "Retry-After" in found.get("headers", {}), "Retry-After is not documented"
        return r

    def begin(self) -> dict[str, Any]:
        verify = self.call("get", "/")
        assert verify.status_code == 200
        self.csrf = verify.json["csrf_token"]
        r = self.call("post", "/start", {})
        assert r.status_code == 200, r.json
        answer: dict[str, Any] = r.json
        return answer


@pytest.fixture
def api(make_app: Callable[..., Harness]) -> Callable[..., tuple[Harness, Api]]:
    def build(user: str | None = "1", **config: Any) -> tuple[Harness, Api]:
        h = make_app(**config)
        return h, Api(h.client(user))

    return build


# -- the document --------------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1() -> None:
    assert SPEC["openapi"].startswith("3.1")
    validate_spec(SPEC)


def _rule_pattern(rule: str, prefix: str) -> re.Pattern[str]:
    path = rule.removeprefix(prefix) or "/"
    return re.compile("^" + re.sub(r"<(?:[^:>]+:)?[^>]+>", "[^/]+", path) + "$")


def test_every_route_of_the_blueprint_is_in_the_document_and_back(
    make_app: Callable[..., Harness],
) -> None:
    h = make_app()
    rules = [r for r in h.app.url_map.iter_rules() if r.endpoint.startswith("phoneverify.")]
    rules = [r for r in rules if r.endpoint != "phoneverify.static"]
    documented = {
        (re.sub(r"\{[^}]+\}", "x", path), method)
        for path, ops in SPEC["paths"].items()
        for method in ops
    }
    for rule in rules:
        pattern = _rule_pattern(rule.rule, "/phoneverify")
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            assert any(pattern.match(path) and m == method.lower() for path, m in documented), (
                f"{method} {rule.rule} ({rule.endpoint}) is not in the OpenAPI document: "
                "add it to flask_phoneverify/openapi.py and a test of its answers here"
            )
    for path, method in documented:
        assert any(
            _rule_pattern(r.rule, "/phoneverify").match(path) and method.upper() in r.methods
            for r in rules
        ), f"{method.upper()} {path} is documented but no route answers it"


def test_served_only_when_turned_on(api: Callable[..., tuple[Harness, Api]]) -> None:
    _, off = api()
    assert off.call("get", "/openapi.json").json["error"] == "not_found"
    page = off.client.get("/phoneverify/openapi.json")  # a browser keeps werkzeug's page
    assert page.status_code == 404 and page.mimetype == "text/html"
    h, on = api(PHONEVERIFY_OPENAPI=True, PHONEVERIFY_URL_PREFIX="/phoneverify/")
    r = on.call("get", "/openapi.json")
    assert r.status_code == 200
    assert r.json == document("/phoneverify", cookie=h.app.config["SESSION_COOKIE_NAME"])
    validate_spec(r.json)


def test_served_for_its_own_mount_point_and_cookie(make_app: Callable[..., Harness]) -> None:
    h = make_app(PHONEVERIFY_OPENAPI=True, PHONEVERIFY_URL_PREFIX="/2fa", SESSION_COOKIE_NAME="s")
    doc = h.client().get("/2fa/openapi.json").json
    assert doc["servers"][0]["url"] == "/2fa"
    assert doc["components"]["securitySchemes"]["session"]["name"] == "s"


# -- the answers of every endpoint ---------------------------------------------------------


def test_keypad_verification_answers_match(api: Callable[..., tuple[Harness, Api]]) -> None:
    h, a = api()
    started = a.begin()
    assert started["style"] == "keypad" and "pin" in started
    assert a.call("get", "/status", query="token=" + started["token"]).status_code == 200
    early = a.call("post", "/confirm", {"token": started["token"]})
    assert early.status_code == 409 and early.json["error"] == "not_open"
    calls = a.call("get", "/dev/phone").json["calls"]
    call_id = calls[-1]["id"]
    r = a.call("post", "/dev/phone/{call_id}/answer", call_id=call_id)
    assert r.status_code == 200 and r.json == {"state": "answered"}
    bad = a.call(
        "post", "/dev/phone/{call_id}/keys", {"digits": wrong(started["pin"])}, call_id=call_id
    )
    assert bad.json["accepted"] is False and bad.json["attempts_left"] == 4
    good = a.call("post", "/dev/phone/{call_id}/keys", {"digits": started["pin"]}, call_id=call_id)
    assert good.json["accepted"] is True
    done = a.call("post", "/confirm", {"token": started["token"]})
    assert done.status_code == 200 and done.json["status"] == "verified"
    again = a.call("post", "/confirm", {"token": started["token"]})
    assert again.status_code == 409
    gone = a.call("post", "/dev/phone/{call_id}/hangup", call_id="nosuchcall")
    assert gone.status_code == 404 and gone.json["error"] == "not_found"


def test_spoken_verification_answers_match(api: Callable[..., tuple[Harness, Api]]) -> None:
    h, a = api(PHONEVERIFY_STYLE="spoken", PHONEVERIFY_MAX_ATTEMPTS=2)
    started = a.begin()
    assert "pin" not in started
    call_id = dev_calls(a.client)[-1]["id"]
    keys = a.call("post", "/dev/phone/{call_id}/keys", {"digits": "1"}, call_id=call_id)
    assert keys.status_code == 400 and keys.json["error"] == "bad_request"
    pin = spoken_pin(h, started["token"])
    r = a.call("post", "/confirm", {"token": started["token"], "pin": wrong(pin)})
    assert r.status_code == 400 and r.json["error"] == "wrong_pin" and r.json["attempts_left"] == 1
    r = a.call("post", "/confirm", {"token": started["token"], "pin": wrong(pin)})
    assert r.status_code == 429 and r.json["error"] == "locked"
    assert a.call("post", "/resend", {"token": started["token"]}).status_code == 429
    assert a.call("post", "/cancel", {"token": started["token"]}).status_code == 429
    talk = a.call("post", "/talk", {"token": started["token"]})
    assert talk.status_code == 404 and talk.json["error"] == "not_found"


def test_resend_cancel_and_hang_up_answers_match(api: Callable[..., tuple[Harness, Api]]) -> None:
    h, a = api(PHONEVERIFY_STYLE="spoken")
    started = a.begin()
    resent = a.call("post", "/resend", {"token": started["token"]})
    assert resent.status_code == 200 and resent.json["token"] == started["token"]
    call_id = dev_calls(a.client)[-1]["id"]
    assert a.call("post", "/dev/phone/{call_id}/hangup", call_id=call_id).status_code == 200
    assert a.call("get", "/status", query="token=" + started["token"]).json["status"] == "failed"
    again = a.call("post", "/cancel", {"token": started["token"]})
    assert again.status_code == 409 and again.json["error"] == "not_open"
    second = a.begin()
    assert a.call("post", "/cancel", {"token": second["token"]}).json == {"status": "canceled"}
    assert a.call("post", "/resend", {"token": second["token"]}).status_code == 409


def test_bad_input_and_other_users_answers_match(api: Callable[..., tuple[Harness, Api]]) -> None:
    h, a = api()
    started = a.begin()
    assert a.call("post", "/start", {}, csrf=False).json["error"] == "csrf"
    tampered = a.call("get", "/status", query="token=" + started["token"] + "x")
    assert tampered.status_code == 400 and tampered.json["error"] == "bad_request"
    assert a.call("post", "/confirm", {"token": "nonsense", "pin": 12}).status_code == 400
    other = Api(h.client("2"))
    other.csrf = other.call("get", "/").json["csrf_token"]
    for method, path in (("get", "/status"), ("post", "/cancel")):
        body = None if method == "get" else {"token": started["token"]}
        r = other.call(method, path, body, query="token=" + started["token"])
        assert r.status_code == 403 and r.json["error"] == "forbidden"


def test_enrolment_and_nobody_logged_in_answers_match(
    api: Callable[..., tuple[Harness, Api]],
) -> None:
    h, a = api(user="3", PHONEVERIFY_ALLOW_ENROLMENT=True)
    verify = a.call("get", "/").json
    assert verify["phone"] is None and verify["enrolment"] is True
    a.csrf = verify["csrf_token"]
    bad = a.call("post", "/start", {"phone": "not a number"})
    assert bad.status_code == 400
    good = a.call("post", "/start", {"phone": "+12015550177", "next": "/secret"})
    assert good.status_code == 200
    nobody = Api(h.client(None))
    for path in ("/", "/status"):
        r = nobody.call("get", path, query="token=x")
        assert r.status_code == 401 and r.json["error"] == "login_required"
    assert nobody.call("get", "/dev/phone").json == {"calls": []}


def test_rate_limited_answers_carry_retry_after(api: Callable[..., tuple[Harness, Api]]) -> None:
    h, a = api(PHONEVERIFY_CALLS_PER_NUMBER_PER_HOUR=1)
    a.begin()
    r = a.call("post", "/start", {})
    assert r.status_code == 429 and r.json["error"] == "rate_limited"
    assert int(r.headers["Retry-After"]) > 0


def test_database_trouble_answers_match(
    api: Callable[..., tuple[Harness, Api]],
) -> None:
    nowhere = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none?connect_timeout=2"
    h, a = api(PHONEVERIFY_DATABASE_URI=nowhere)
    a.csrf = a.call("get", "/").json["csrf_token"]
    r = a.call("post", "/start", {})
    assert r.status_code == 503 and r.json["error"] == "unavailable" and r.json["retryable"]


def test_gate_answer_matches_the_error_schema(make_app: Callable[..., Harness]) -> None:
    h = make_app()
    r = h.client().get("/secret", headers={"Accept": "application/json"})
    assert r.status_code == 401
    _schema_check(r.json, "components/schemas/Error")
    assert r.json["error"] == "phone_verification_required"


def test_callback_and_dev_phone_refusals_match(
    api: Callable[..., tuple[Harness, Api]],
) -> None:
    h, a = api()
    r = a.client.post("/phoneverify/callback/voiceshot/x", data=b"<x/>")
    _response("/callback/{provider}/{token}", "post", r.status_code)
    assert r.status_code == 404


# -- a provider on the wire: the support bridge and provider errors ------------------------


@pytest.fixture(scope="module")
def anveo() -> Iterator[tuple[AnveoServer, str]]:
    server = AnveoServer()
    with serve(server) as base:
        yield server, base + PATH
        server.release.set()


def _anveo(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "PHONEVERIFY_PROVIDER": "anveo",
        "PHONEVERIFY_ANVEO_URL": url,
        "PHONEVERIFY_ANVEO_USER_KEY": USER_KEY,
        "PHONEVERIFY_ANVEO_CALLFLOW": "a3348f81491bfb538cd2dbbda9e3c43c1e88ab22",
        "PHONEVERIFY_ANVEO_CALLER_ID": "+12155550100",
        **extra,
    }


def test_support_bridge_answers_match(
    api: Callable[..., tuple[Harness, Api]], anveo: tuple[AnveoServer, str]
) -> None:
    server, url = anveo
    server.reset()
    h, a = api(
        **_anveo(url, PHONEVERIFY_ANVEO_CONNECT_TO="12155550199"), PHONEVERIFY_MAX_ATTEMPTS=1
    )
    started = a.begin()
    early = a.call("post", "/talk", {"token": started["token"]})
    assert early.status_code == 400
    a.call("post", "/confirm", {"token": started["token"], "pin": "000000x"})
    assert a.call("get", "/status", query="token=" + started["token"]).json["can_bridge"] is True
    r = a.call("post", "/talk", {"token": started["token"]})
    assert r.status_code == 200 and r.json["status"] == "bridging"
    assert a.call("get", "/dev/phone").status_code == 404
    server.reset()


def test_provider_error_answers_match(
    api: Callable[..., tuple[Harness, Api]], anveo: tuple[AnveoServer, str]
) -> None:
    server, url = anveo
    server.reset()
    server.script["DIAL.CALLFLOW"] = "error:Invalid USERKEY"
    _, refused = api(**_anveo(url))
    refused.csrf = refused.call("get", "/").json["csrf_token"]
    r = refused.call("post", "/start", {})
    assert r.status_code == 502 and r.json["retryable"] is False
    server.reset()
    dead = f"http://127.0.0.1:{free_port()}{PATH}"
    _, down = api(**_anveo(dead, PHONEVERIFY_ANVEO_TIMEOUT=1))
    down.csrf = down.call("get", "/").json["csrf_token"]
    r = down.call("post", "/start", {})
    assert r.status_code == 503 and r.json["error"] == "provider_error" and r.json["retryable"]


# -- recovery codes and a new number -------------------------------------------------------


def _confirm_keypad(a: Api) -> dict[str, Any]:
    started = a.begin()
    call_id = dev_calls(a.client)[-1]["id"]
    a.call("post", "/dev/phone/{call_id}/keys", {"digits": started["pin"]}, call_id=call_id)
    r = a.call("post", "/confirm", {"token": started["token"], "remember": True})
    assert r.status_code == 200
    return started


def test_recovery_code_answers_match(api: Callable[..., tuple[Harness, Api]]) -> None:
    h, a = api()
    a.csrf = a.call("get", "/").json["csrf_token"]
    info = a.call("get", "/recovery-codes").json
    assert info["left"] == 0 and info["can_generate"] is False
    early = a.call("post", "/recovery-codes")
    assert early.status_code == 401 and early.json["error"] == "phone_verification_required"
    _confirm_keypad(a)
    codes = a.call("post", "/recovery-codes").json["codes"]
    assert a.call("get", "/recover").json["recovered"] is False
    bad = a.call("post", "/recover", {"code": "AAAA-AAAA-AA"})
    assert bad.status_code == 400 and bad.json["error"] == "wrong_code"
    used = a.call("post", "/recover", {"code": codes[0], "next": "/secret"})
    assert used.status_code == 200 and used.json["codes_left"] == len(codes) - 1
    off, b = api(PHONEVERIFY_RECOVERY_CODES=0)
    assert b.call("get", "/recover").status_code == 404


def test_new_number_answers_match(api: Callable[..., tuple[Harness, Api]]) -> None:
    h, a = api(PHONEVERIFY_STYLE="spoken")
    a.csrf = a.call("get", "/").json["csrf_token"]
    early = a.call("post", "/new-number", {"phone": "+12015550188"})
    assert early.status_code == 401 and early.json["error"] == "phone_verification_required"
    started = a.begin()
    pin = spoken_pin(h, started["token"])
    assert a.call("post", "/confirm", {"token": started["token"], "pin": pin}).status_code == 200
    assert a.call("get", "/new-number").status_code == 200
    bad = a.call("post", "/new-number", {"phone": "no"})
    assert bad.status_code == 400
    r = a.call("post", "/new-number", {"phone": "+12015550188", "next": "/secret"})
    assert r.status_code == 200 and r.json["status"] == "calling"
