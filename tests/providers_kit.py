"""What the provider test modules share: a loopback VoiceShot and apps served on
loopback that it posts its call events to.

Test modules import from here (never from one another). The fixtures are
re-exported by each module that uses them (``live = providers_kit.live``), so
pytest finds them there; the VoiceShot server is module-scoped, one per module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask.testing import FlaskClient

from flask_phoneverify.models import Verification

from .conftest import Harness, csrf, post
from .loopback import serve
from .servers.voiceshot import MENU_ID, PATH, VoiceShotServer

__all__ = ["config", "voiceshot_server", "vs", "callback_url", "Live", "live"]


def config(url: str, **extra: Any) -> dict[str, Any]:
    """An app's settings for VoiceShot at ``url`` (the loopback server), plus ``extra``."""
    return {
        "PHONEVERIFY_PROVIDER": "voiceshot",
        "PHONEVERIFY_VOICESHOT_URL": url,
        "PHONEVERIFY_VOICESHOT_MENU_ID": MENU_ID,
        "PHONEVERIFY_VOICESHOT_CALLER_ID": "2015550100",
        **extra,
    }


@pytest.fixture(scope="module")
def voiceshot_server() -> Iterator[tuple[VoiceShotServer, str]]:
    """A loopback VoiceShot for the module, and its API address."""
    server = VoiceShotServer()
    with serve(server) as base:
        yield server, base + PATH
        server.release.set()
    server.close()


@pytest.fixture
def vs(voiceshot_server: tuple[VoiceShotServer, str]) -> Iterator[tuple[VoiceShotServer, str]]:
    """The module's server, forgetting the last test's calls and switches."""
    voiceshot_server[0].reset()
    yield voiceshot_server
    voiceshot_server[0].release.set()


def callback_url(h: Harness, base: str) -> str:
    """The address `flask phoneverify callback-url voiceshot` prints, on the served app."""
    result = h.app.test_cli_runner().invoke(args=["phoneverify", "callback-url", "voiceshot"])
    assert result.exit_code == 0, result.output
    return base + urlsplit(result.output.strip().splitlines()[-1]).path


@dataclass
class Live:
    """An app served on loopback, its VoiceShot server posting events to it."""

    h: Harness
    server: VoiceShotServer
    base: str

    def start(self, client: FlaskClient, **body: Any) -> tuple[str, Any]:
        token = csrf(client)
        return token, post(client, "/start", body, token=token)

    def callid(self) -> str:
        return list(self.server.calls)[-1]

    def verification(self) -> Verification:
        v = self.h.ext.state(self.h.app).store.by_call_id("voiceshot", self.callid())
        assert v is not None
        return v


@pytest.fixture
def live(
    make_app: Callable[..., Harness], vs: tuple[VoiceShotServer, str]
) -> Iterator[Callable[..., Live]]:
    """Makes apps on VoiceShot (settings as keywords), each served on loopback with the
    server posting its events to the app's signed callback address."""
    with ExitStack() as stack:

        def factory(**extra: Any) -> Live:
            server, url = vs
            h = make_app(**config(url, **extra))
            base = stack.enter_context(serve(h.app))
            server.events_url = callback_url(h, base)
            return Live(h, server, base)

        yield factory
