"""The test kit as app authors and provider packages meet it: the pytest plugin, its
fixtures, mark_phone_verified and DevPhoneDriver."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from _pytest.fixtures import FixtureFunctionDefinition

import flask_phoneverify.testing as kit
from flask_phoneverify.testing import DevPhoneDriver, ProviderContract, mark_phone_verified

from .conftest import Harness
from .helpers import DemoUser, begin, get_json, post


def test_the_plugin_is_registered_through_pytest11(request: pytest.FixtureRequest) -> None:
    assert request.config.pluginmanager.get_plugin("phoneverify") is kit


def test_importing_the_plugin_builds_no_app_and_loads_no_vendor_client() -> None:
    code = (
        "import gc, sys, flask, flask_phoneverify.testing\n"
        "apps = [o for o in gc.get_objects() if isinstance(o, flask.Flask)]\n"
        "print(len(apps), 'zeep' in sys.modules, 'httpx' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == ["0", "False", "False"]


def test_every_fixture_it_adds_is_named_phoneverify() -> None:
    found = [
        name
        for scope in (vars(kit), vars(ProviderContract))
        for name, obj in scope.items()
        if isinstance(obj, FixtureFunctionDefinition)
    ]
    assert found and all(name.startswith("phoneverify_") for name in found), found


def test_the_loopback_fixture_serves_a_wsgi_app(
    phoneverify_loopback: Callable[[Any], str],
) -> None:
    def hello(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello"]

    base = phoneverify_loopback(hello)
    assert base.startswith("http://127.0.0.1:")
    assert httpx.get(base + "/").text == "hello"


# -- mark_phone_verified -------------------------------------------------------------------------


def test_mark_phone_verified_opens_the_gate_for_that_user(harness: Harness) -> None:
    c = harness.client()
    assert c.get("/secret").status_code != 200
    mark_phone_verified(c, harness.users["1"])
    assert c.get("/secret").data == b"the secret"
    other = harness.client("2")
    assert other.get("/secret").status_code != 200


def test_mark_phone_verified_binds_the_number_on_file(harness: Harness) -> None:
    c = harness.client()
    mark_phone_verified(c, harness.users["1"])
    harness.users["1"].phone = "+12015550199"  # the number changed: confirm it again
    assert c.get("/secret").status_code != 200


def test_mark_phone_verified_dates_the_confirmation(harness: Harness) -> None:
    c = harness.client()
    mark_phone_verified(c, harness.users["1"], at=harness.clock() - 120)
    assert c.get("/secret").status_code == 200
    assert c.get("/fresh").status_code != 200  # max_age=60
    mark_phone_verified(c, harness.users["1"])
    assert c.get("/fresh").status_code == 200


def test_mark_phone_verified_refuses_a_user_without_a_number(harness: Harness) -> None:
    with pytest.raises(ValueError, match="not a phone number"):
        mark_phone_verified(harness.client("3"), DemoUser("3", None))


# -- DevPhoneDriver --------------------------------------------------------------------------------


def test_the_driver_keys_the_pin_in(harness: Harness) -> None:
    c = harness.client()
    token, body = begin(c)
    phone = DevPhoneDriver(c)
    assert phone.newest()["state"] == "ringing"
    phone.answer()
    assert phone.key(body["pin"])["accepted"] is True
    assert post(c, "/confirm", {"token": body["token"]}, token=token).status_code == 200


def test_the_driver_declines_a_call(harness: Harness) -> None:
    c = harness.client()
    _, body = begin(c)
    DevPhoneDriver(c).decline()
    status = get_json(c, f"/status?token={body['token']}").json
    assert status["status"] == "failed" and status["message"] == "The call was declined."


def test_the_driver_hears_a_spoken_code(make_app: Callable[..., Harness]) -> None:
    h = make_app(PHONEVERIFY_STYLE="spoken")
    c = h.client()
    token, body = begin(c)
    phone = DevPhoneDriver(c)
    phone.answer()
    code = phone.spoken_code()
    assert code and code.isdigit()
    r = post(c, "/confirm", {"token": body["token"], "pin": code}, token=token)
    assert r.status_code == 200, r.json
