"""A third-party provider package, found through its entry point alone: it passes the
contract suite and carries whole verifications through the extension, with no change
to flask-phoneverify (tests/thirdparty/ is laid out as pip installs a package)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flask_phoneverify.providers import installed, load
from flask_phoneverify.testing import ProviderContract

from .conftest import Harness
from .helpers import begin, get_json, post
from .loopback import serve

SITE = str(Path(__file__).resolve().parent / "thirdparty")

sys.path.insert(0, SITE)  # to import the package's classes here; its entry point is
try:  # found only while a test puts the folder on sys.path (the fixture below)
    from acme_voice import AcmeVoice
    from acme_voice.server import TOKEN, AcmeServer
finally:
    sys.path.remove(SITE)


@pytest.fixture(autouse=True)
def installed_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """The package is "installed" for each test of this module, and only for them."""
    monkeypatch.syspath_prepend(SITE)


@pytest.fixture(scope="module")
def acme_served() -> Iterator[AcmeServer]:
    server = AcmeServer()
    with serve(server) as url:
        server.url = url
        yield server


@pytest.fixture
def acme(acme_served: AcmeServer) -> AcmeServer:
    acme_served.reset()
    return acme_served


def acme_settings(url: str) -> dict[str, Any]:
    return {
        "PHONEVERIFY_PROVIDER": "acmevoice",
        "PHONEVERIFY_ACMEVOICE_URL": url,
        "PHONEVERIFY_ACMEVOICE_TOKEN": TOKEN,
    }


class TestAcmeVoiceContract(ProviderContract):
    provider = AcmeVoice

    def settings(self, url: str) -> dict[str, Any]:
        return acme_settings(url)

    @pytest.fixture
    def phoneverify_vendor(self, acme: AcmeServer) -> AcmeServer:
        return acme


def test_the_entry_point_alone_registers_it() -> None:
    assert installed()["acmevoice"] == ["acme_voice:AcmeVoice"]
    assert load("acmevoice") is AcmeVoice


def test_it_is_unknown_once_uninstalled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != SITE])
    assert "acmevoice" not in installed()


def test_keypad_verification_end_to_end(make_app: Callable[..., Harness], acme: AcmeServer) -> None:
    h = make_app(**acme_settings(acme.url), PHONEVERIFY_POLL_INTERVAL=0)
    c = h.client()
    token, body = begin(c)
    assert h.ext.state(h.app).provider.name == "acmevoice"
    acme.answer(body["pin"])
    assert get_json(c, f"/status?token={body['token']}").json["status"] == "verified"
    assert post(c, "/confirm", {"token": body["token"]}, token=token).status_code == 200
    assert c.get("/secret").data == b"the secret"


def test_its_settings_are_checked_by_init_app(
    make_app: Callable[..., Harness], acme: AcmeServer
) -> None:
    from flask_phoneverify import ConfigError

    with pytest.raises(ConfigError, match="PHONEVERIFY_ACMEVOICE_TOKEN is required"):
        make_app(PHONEVERIFY_PROVIDER="acmevoice", PHONEVERIFY_ACMEVOICE_URL=acme.url)
