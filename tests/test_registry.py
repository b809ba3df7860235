"""The provider registry: entry points of the group ``flask_phoneverify.providers``,
the built-in providers among them, and the names it refuses."""

from __future__ import annotations

import itertools
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flask_phoneverify import ConfigError
from flask_phoneverify import providers as registry
from flask_phoneverify.providers import ENTRY_POINT_GROUP, REGISTRY, installed, load

from .conftest import Harness

BUILT_IN = {
    "dev": "flask_phoneverify.providers.dev:DevPhone",
    "phoneconfirm": "flask_phoneverify.providers.phoneconfirm:PhoneConfirm",
    "xverify": "flask_phoneverify.providers.xverify:Xverify",
    "veratad": "flask_phoneverify.providers.veratad:Veratad",
    "anveo": "flask_phoneverify.providers.anveo:Anveo",
    "voiceshot": "flask_phoneverify.providers.voiceshot:VoiceShot",
}

_SEQ = itertools.count(1)

MODULE = """
from flask_phoneverify.providers import CallTicket, Provider, Setting, Style

class {cls}(Provider):
    name = {name!r}
    styles = frozenset({{Style.KEYPAD}})
    preferred_style = Style.KEYPAD
    settings = {settings}

    def place_call(self, request):
        return CallTicket(reference="x")

class NotAProvider:
    name = {name!r}
"""


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Install a one-module package on sys.path, with entry points in our group."""

    def install(entry_points: dict[str, str], *, name: str = "extra", settings: str = "()") -> None:
        count = next(_SEQ)  # a module name no earlier test imported
        module = f"pv_extra_{count}"
        site = tmp_path / f"site{count}"
        (site / f"{module}-1.0.dist-info").mkdir(parents=True)
        (site / f"{module}-1.0.dist-info" / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n"
        )
        lines = [f"{k} = {v.format(module=module)}" for k, v in entry_points.items()]
        (site / f"{module}-1.0.dist-info" / "entry_points.txt").write_text(
            f"[{ENTRY_POINT_GROUP}]\n" + "\n".join(lines) + "\n"
        )
        (site / f"{module}.py").write_text(
            textwrap.dedent(MODULE.format(cls="Extra", name=name, settings=settings))
        )
        monkeypatch.syspath_prepend(str(site))

    return install


def test_the_built_in_providers_are_registered_through_the_entry_point_group() -> None:
    found = installed()
    for name, target in BUILT_IN.items():
        assert found[name] == [target]
        assert load(name).name == name
    assert set(BUILT_IN) <= set(REGISTRY) and REGISTRY["dev"] == BUILT_IN["dev"]


def test_an_unknown_name_is_refused_naming_the_installed_providers(
    make_app: Callable[..., Harness],
) -> None:
    with pytest.raises(ConfigError) as caught:
        make_app(PHONEVERIFY_PROVIDER="twillio")
    message = str(caught.value)
    assert caught.value.key == "PHONEVERIFY_PROVIDER"
    assert "'twillio', which is not an installed provider" in message
    for name in BUILT_IN:
        assert repr(name) in message


def test_a_list_naming_an_unknown_provider_is_refused(make_app: Callable[..., Harness]) -> None:
    with pytest.raises(ConfigError, match="'nope', which is not an installed provider"):
        make_app(PHONEVERIFY_PROVIDER=["dev", "nope"])


def test_without_any_entry_point_the_error_says_to_reinstall(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry, "_entry_points", lambda: iter(()))
    with pytest.raises(ConfigError, match="reinstall flask-phoneverify"):
        load("dev")


def test_a_third_party_provider_is_found_by_its_entry_point(
    package: Callable[..., None], make_app: Callable[..., Harness]
) -> None:
    package({"extra": "{module}:Extra"})
    h = make_app(PHONEVERIFY_PROVIDER="extra")
    assert h.ext.state(h.app).provider.name == "extra"
    result = h.app.test_cli_runner().invoke(args=["phoneverify", "settings"])
    assert result.exit_code == 0


def test_two_packages_under_one_name_are_refused(package: Callable[..., None]) -> None:
    package({"extra": "{module}:Extra"})
    package({"extra": "{module}:Extra"})
    with pytest.raises(ConfigError, match="'extra', which 2 packages register differently"):
        load("extra")


def test_a_built_in_name_taken_by_another_package_is_refused(
    package: Callable[..., None], make_app: Callable[..., Harness]
) -> None:
    package({"dev": "{module}:Extra"}, name="dev")
    with pytest.raises(ConfigError, match="'dev', which 2 packages register differently"):
        make_app()


def test_the_same_package_seen_twice_is_not_a_clash(
    package: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    package({"extra": "{module}:Extra"})
    twice = list(registry._entry_points())
    monkeypatch.setattr(registry, "_entry_points", lambda: iter(twice + twice))
    assert load("extra").name == "extra"


@pytest.mark.parametrize(
    ("name", "core"),
    [
        ("calls", "PHONEVERIFY_CALLS_PER_NUMBER_PER_HOUR"),
        ("max", "PHONEVERIFY_MAX_ATTEMPTS"),
        ("breaker", "PHONEVERIFY_BREAKER_FAILURES"),
    ],
)
def test_a_name_whose_settings_prefix_captures_a_core_setting_is_refused(
    package: Callable[..., None], name: str, core: str
) -> None:
    package({name: "{module}:Extra"}, name=name)
    with pytest.raises(ConfigError, match=f"collides with the core setting {core}"):
        load(name)


def test_a_provider_setting_named_like_a_core_setting_is_refused(
    package: Callable[..., None],
) -> None:
    package(
        {"extra": "{module}:Extra"},
        settings='(Setting("PHONEVERIFY_TTL", 1, "int", "no"),)',
    )
    with pytest.raises(ConfigError, match="core setting PHONEVERIFY_TTL"):
        load("extra")


@pytest.mark.parametrize(
    ("entry", "target", "message"),
    [
        ("Extra", "{module}:Extra", "lower-case letters"),
        ("extra", "{module}:NotAProvider", "not a Provider subclass"),
        ("other", "{module}:Extra", "whose name is 'extra'"),
        ("extra", "{module}:Missing", "cannot be loaded \\(AttributeError"),
        ("extra", "pv_not_a_module:Extra", "cannot be loaded \\(ModuleNotFoundError"),
    ],
)
def test_what_is_registered_must_be_a_provider_of_that_name(
    package: Callable[..., None], entry: str, target: str, message: str
) -> None:
    package({entry: target})
    with pytest.raises(ConfigError, match=message):
        load(entry)


def test_the_settings_reference_lists_an_installed_providers_settings(
    package: Callable[..., None], make_app: Callable[..., Harness]
) -> None:
    package(
        {"extra": "{module}:Extra"},
        settings='(Setting("PHONEVERIFY_EXTRA_REGION", "eu", "str", "Where it calls from."),)',
    )
    h: Any = make_app()
    result = h.app.test_cli_runner().invoke(args=["phoneverify", "settings"])
    assert "`PHONEVERIFY_EXTRA_REGION`" in result.output


def test_a_broken_package_does_not_break_the_settings_reference(
    package: Callable[..., None], make_app: Callable[..., Harness]
) -> None:
    package({"broken": "pv_not_a_module:Extra"})
    h: Any = make_app()
    result = h.app.test_cli_runner().invoke(args=["phoneverify", "settings"])
    assert result.exit_code == 0 and "`PHONEVERIFY_PROVIDER`" in result.output
