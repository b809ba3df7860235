"""Shared fixtures: an app factory with a movable clock, logged-in clients, providers
built from config, and a loopback vendor. The plain helpers they use live in
``tests/helpers.py`` (re-exported here for modules that still import them from conftest)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from flask import Flask

from flask_phoneverify import PhoneVerify
from flask_phoneverify.providers.base import Provider, Style
from flask_phoneverify.settings import Settings, read_settings

from .helpers import (
    SECRET,
    DemoUser,
    FakeClock,
    Harness,
    Recorder,
    csrf,
    get_json,
    post,
    scratch_postgres,
)
from .loopback import serve

P = TypeVar("P", bound=Provider)

__all__ = ["SECRET", "DemoUser", "FakeClock", "Harness", "csrf", "get_json", "post"]


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


POSTGRES = os.environ.get("PHONEVERIFY_TEST_POSTGRES")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_uri(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or (when PHONEVERIFY_TEST_POSTGRES names a
    server, as in CI) a PostgreSQL database dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/fresh.sqlite3"
        return
    if not POSTGRES:
        if os.environ.get("CI"):
            raise RuntimeError("CI must set PHONEVERIFY_TEST_POSTGRES (see .ci/run)")
        pytest.skip("PHONEVERIFY_TEST_POSTGRES is not set")
    with scratch_postgres(POSTGRES) as uri:
        yield uri


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


@pytest.fixture(scope="session")
def vendor_server() -> Iterator[tuple[Recorder, str]]:
    recorder = Recorder()
    with serve(recorder) as base:
        yield recorder, base


@pytest.fixture
def vendor(vendor_server: tuple[Recorder, str]) -> tuple[Recorder, str]:
    """(a loopback vendor that answers what the test sets, its base URL), reset for each test."""
    vendor_server[0].reset()
    return vendor_server
