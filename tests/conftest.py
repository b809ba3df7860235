"""Shared fixtures: an app factory with a movable clock, logged-in clients, helpers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_phoneverify import PhoneVerify
from flask_phoneverify.providers.base import Provider, Style
from flask_phoneverify.settings import Settings, read_settings

P = TypeVar("P", bound=Provider)

SECRET = "test-secret-key-0123456789abcdef"


class FakeClock:
    """UNIX seconds that move only when a test says so."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class DemoUser:
    id: str
    phone: str | None
    is_authenticated: bool = True

    def get_id(self) -> str:
        return self.id


@dataclass
class Harness:
    """An app wired with PhoneVerify and a user_loader driven by a test header."""

    app: Flask
    ext: PhoneVerify
    clock: FakeClock
    users: dict[str, DemoUser] = field(default_factory=dict)
    saved_phones: list[tuple[str, str]] = field(default_factory=list)

    def client(self, user_id: str | None = "1") -> FlaskClient:
        client = self.app.test_client()
        if user_id is not None:
            client.environ_base["HTTP_X_TEST_USER"] = user_id
        return client


def csrf(client: FlaskClient) -> str:
    r = client.get("/phoneverify/", headers={"Accept": "application/json"})
    assert r.status_code == 200, r.data
    token: str = r.json["csrf_token"]  # type: ignore[index]
    return token


def post(
    client: FlaskClient, path: str, body: dict[str, Any] | None = None, *, token: str | None = None
) -> Any:
    headers = {"Accept": "application/json"}
    if token:
        headers["X-CSRFToken"] = token
    return client.post("/phoneverify" + path, json=body or {}, headers=headers)


def get_json(client: FlaskClient, path: str) -> Any:
    return client.get("/phoneverify" + path, headers={"Accept": "application/json"})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_app(tmp_path: Any, clock: FakeClock) -> Iterator[Callable[..., Harness]]:
    """Build an app with the extension; keyword arguments become config."""
    made: list[Harness] = []

    def factory(**config: Any) -> Harness:
        app = Flask(f"app{len(made)}", instance_path=str(tmp_path / f"instance{len(made)}"))
        app.config.update(
            TESTING=True,
            SECRET_KEY=SECRET,
            PHONEVERIFY_DATABASE_URI=f"sqlite:///{tmp_path}/pv{len(made)}.sqlite3",
            PHONEVERIFY_NUMBER_COOLDOWN=0,
        )
        app.config.update(config)
        ext = PhoneVerify(clock=clock)
        harness = Harness(app=app, ext=ext, clock=clock)
        harness.users.update(
            {
                "1": DemoUser("1", "+12015550123"),
                "2": DemoUser("2", "+12015550124"),
                "3": DemoUser("3", None),
            }
        )

        @ext.user_loader
        def load() -> DemoUser | None:
            from flask import request

            return harness.users.get(request.headers.get("X-Test-User", ""))

        @ext.phone_saver
        def save(user: DemoUser, phone: str) -> None:
            harness.saved_phones.append((user.id, phone))
            user.phone = phone

        ext.init_app(app)

        from flask_phoneverify import phone_verified_required

        @app.get("/secret")
        @phone_verified_required
        def secret() -> str:
            return "the secret"

        @app.get("/fresh")
        @phone_verified_required(max_age=60)
        def fresh() -> str:
            return "fresh secret"

        made.append(harness)
        return harness

    yield factory
    for h in made:
        st = h.ext.state(h.app)
        st.provider.close()
        st.store.close()


@pytest.fixture
def harness(make_app: Callable[..., Harness]) -> Harness:
    return make_app()


@pytest.fixture
def build_provider() -> Iterator[Callable[..., Any]]:
    """Build a provider from ``PHONEVERIFY_*`` config the way init_app does (settings
    read and checked from its table); every provider built is closed afterwards."""
    made: list[Provider] = []

    def factory(
        cls: type[P],
        config: dict[str, Any],
        *,
        style: Style,
        pin_length: int = 6,
        app_name: str = "Example Bank",
    ) -> P:
        values = read_settings(config, cls.settings)
        options = Settings(values).prefixed(f"PHONEVERIFY_{cls.name.upper()}_")
        provider = cls(options, style=style, pin_length=pin_length, app_name=app_name)
        made.append(provider)
        return provider

    yield factory
    for provider in made:
        provider.close()
