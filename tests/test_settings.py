"""init_app: one registration per app, and a clear error for every wrong setting."""

from __future__ import annotations

import dataclasses
import logging
import typing
from typing import Any

import pytest
from flask import Flask

from flask_phoneverify import ConfigError, PhoneVerify
from flask_phoneverify.settings import CORE_SETTINGS, Settings, field_name

from .helpers import SECRET


def build(tmp_path: Any, **config: Any) -> Flask:
    app = Flask("settings_app", instance_path=str(tmp_path))
    app.config.update(TESTING=True, SECRET_KEY=SECRET)
    app.config.update(config)
    PhoneVerify(app)
    return app


def test_registers_in_app_extensions(tmp_path: Any) -> None:
    app = build(tmp_path)
    assert isinstance(app.extensions["phoneverify"], PhoneVerify)
    assert "phoneverify.verify" in app.view_functions


def test_second_registration_is_refused(tmp_path: Any) -> None:
    app = build(tmp_path)
    with pytest.raises(RuntimeError, match="already been registered"):
        PhoneVerify(app)


def test_app_factory_one_extension_many_apps(tmp_path: Any) -> None:
    ext = PhoneVerify()
    apps = []
    for i in range(2):
        app = Flask(f"factory{i}", instance_path=str(tmp_path / str(i)))
        app.config.update(TESTING=True, SECRET_KEY=SECRET, PHONEVERIFY_PIN_LENGTH=6 + i)
        ext.init_app(app)
        apps.append(app)
    assert [ext.state(a).settings.pin_length for a in apps] == [6, 7]


def test_state_without_init_app_says_so(tmp_path: Any) -> None:
    ext = PhoneVerify()
    app = Flask("lonely")
    with app.app_context(), pytest.raises(RuntimeError, match="forget to call 'init_app'"):
        ext.state()


@pytest.mark.parametrize(
    ("config", "key", "fix"),
    [
        ({"PHONEVERIFY_PROVIDER": "nope"}, "PHONEVERIFY_PROVIDER", "use one of"),
        ({"PHONEVERIFY_PIN_LENGTH": 2}, "PHONEVERIFY_PIN_LENGTH", "at least 6"),
        ({"PHONEVERIFY_PIN_LENGTH": "six"}, "PHONEVERIFY_PIN_LENGTH", "whole number"),
        ({"PHONEVERIFY_TTL": 0}, "PHONEVERIFY_TTL", "at least"),
        ({"PHONEVERIFY_TTL": 3600}, "PHONEVERIFY_TTL", "PHONEVERIFY_ALLOW_LONG_TTL"),
        ({"PHONEVERIFY_STYLE": "delivery"}, "PHONEVERIFY_STYLE", "keypad, spoken"),
        ({"PHONEVERIFY_STYLE": "loud"}, "PHONEVERIFY_STYLE", "use one of"),
        ({"PHONEVERIFY_MAX_ATTEMPTS": 0}, "PHONEVERIFY_MAX_ATTEMPTS", "at least 1"),
        ({"PHONEVERIFY_URL_PREFIX": "phone"}, "PHONEVERIFY_URL_PREFIX", "start it with '/'"),
        ({"PHONEVERIFY_DEFAULT_REGION": "XX"}, "PHONEVERIFY_DEFAULT_REGION", "region code"),
        (
            {"PHONEVERIFY_ALLOWED_COUNTRIES": ["US", "Narnia"]},
            "PHONEVERIFY_ALLOWED_COUNTRIES",
            "ISO 3166",
        ),
        (
            {"PHONEVERIFY_REFUSED_NUMBER_TYPES": ["EXPENSIVE"]},
            "PHONEVERIFY_REFUSED_NUMBER_TYPES",
            "PREMIUM_RATE",
        ),
        (
            {"PHONEVERIFY_DEFAULT_NEXT": "https://evil.example"},
            "PHONEVERIFY_DEFAULT_NEXT",
            "a path",
        ),
        ({"PHONEVERIFY_ALLOW_ENROLMENT": "maybe"}, "PHONEVERIFY_ALLOW_ENROLMENT", "True or False"),
        ({"SECRET_KEY": None}, "SECRET_KEY", "long random value"),
        ({"SECRET_KEY": "dev"}, "SECRET_KEY", "long random value"),
    ],
)
def test_bad_settings_fail_init_app_with_key_and_fix(
    tmp_path: Any, config: dict[str, Any], key: str, fix: str
) -> None:
    with pytest.raises(ConfigError) as info:
        build(tmp_path, **config)
    assert info.value.key == key
    assert str(info.value).startswith(key)
    assert fix in str(info.value)


def test_long_ttl_needs_opt_in_and_warns(tmp_path: Any, caplog: Any) -> None:
    with caplog.at_level(logging.WARNING, logger="flask_phoneverify"):
        app = build(tmp_path, PHONEVERIFY_TTL=1200, PHONEVERIFY_ALLOW_LONG_TTL=True)
    assert app.extensions["phoneverify"].state(app).settings.ttl == 1200
    assert any("PHONEVERIFY_TTL" in r.getMessage() for r in caplog.records)


def test_dev_phone_refused_outside_debug_or_testing(tmp_path: Any) -> None:
    app = Flask("prod", instance_path=str(tmp_path))
    app.config.update(SECRET_KEY=SECRET)
    with pytest.raises(ConfigError, match="PHONEVERIFY_PROVIDER.*outside debug or testing"):
        PhoneVerify(app)


def test_dev_phone_allowed_when_explicitly_on(tmp_path: Any) -> None:
    app = Flask("demo", instance_path=str(tmp_path))
    app.config.update(SECRET_KEY=SECRET, PHONEVERIFY_DEV_PHONE=True)
    PhoneVerify(app)
    assert app.extensions["phoneverify"].state(app).provider.name == "dev"


def test_list_settings_come_from_prefixed_env_as_json(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("FLASK_PHONEVERIFY_ALLOWED_COUNTRIES", '["US", "CA"]')
    monkeypatch.setenv("FLASK_PHONEVERIFY_PIN_LENGTH", "8")
    app = Flask("envapp", instance_path=str(tmp_path))
    app.config.update(TESTING=True, SECRET_KEY=SECRET)
    app.config.from_prefixed_env()
    PhoneVerify(app)
    st = app.extensions["phoneverify"].state(app)
    assert st.settings.allowed_countries == ("US", "CA")
    assert st.settings.pin_length == 8


def test_every_setting_has_a_doc_and_a_valid_default() -> None:
    names = [s.name for s in CORE_SETTINGS]
    assert len(names) == len(set(names))
    for s in CORE_SETTINGS:
        assert s.name.startswith("PHONEVERIFY_") and s.doc
        s.parse(s.default)


def test_style_defaults_to_keypad_where_the_provider_can(tmp_path: Any) -> None:
    app = build(tmp_path)
    assert app.extensions["phoneverify"].state(app).style.value == "keypad"


def test_allowed_countries_the_provider_cannot_call_are_refused(tmp_path: Any) -> None:
    voiceshot = {
        "PHONEVERIFY_PROVIDER": "voiceshot",
        "PHONEVERIFY_VOICESHOT_MENU_ID": "1-1234",
        "PHONEVERIFY_VOICESHOT_CALLER_ID": "2015550100",
    }
    with pytest.raises(ConfigError, match="GB, which the provider cannot call") as info:
        build(tmp_path, PHONEVERIFY_ALLOWED_COUNTRIES=["US", "GB"], **voiceshot)
    assert info.value.key == "PHONEVERIFY_ALLOWED_COUNTRIES"
    app = build(tmp_path, PHONEVERIFY_ALLOWED_COUNTRIES=["US", "CA"], **voiceshot)
    assert app.extensions["phoneverify"].state(app).provider.name == "voiceshot"


KIND_TYPES: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "list": tuple[str, ...],
}


def test_every_core_setting_has_exactly_one_typed_field_and_back() -> None:
    """The table and the typed object cannot drift: a row without a field (or a field
    without a row) fails here, not at a misspelt attribute in production."""
    fields = [f.name for f in dataclasses.fields(Settings) if f.name != "provider_values"]
    rows = [field_name(s) for s in CORE_SETTINGS]
    assert sorted(fields) == sorted(rows)
    assert len(set(rows)) == len(rows)


def test_typed_fields_match_the_kinds_of_their_rows() -> None:
    """A setting that may be unset (default None, not required) is Optional; no other is."""
    hints = typing.get_type_hints(Settings)
    for s in CORE_SETTINGS:
        want = KIND_TYPES[s.kind]
        if s.default is None and not s.required:
            want = want | None
        assert hints[field_name(s)] == want, s.name


def test_settings_hold_values_of_their_declared_types() -> None:
    """Values given as text (environment variables) arrive as their kind; the defaults of
    settings that may be unset stay None."""
    runtime = {"str": str, "int": int, "float": float, "bool": bool, "list": tuple}
    settings = Settings(
        {
            "PHONEVERIFY_TTL": "300",
            "PHONEVERIFY_POLL_INTERVAL": "1",
            "PHONEVERIFY_ALLOW_ENROLMENT": "yes",
            "PHONEVERIFY_ALLOWED_COUNTRIES": "US, CA",
        }
    )
    assert settings.ttl == 300
    assert settings.poll_interval == 1.0
    assert settings.allow_enrolment is True
    assert settings.allowed_countries == ("US", "CA")
    for s in CORE_SETTINGS:
        value = getattr(settings, field_name(s))
        if s.default is None:
            assert value is None, s.name
        else:
            assert type(value) is runtime[s.kind], s.name


def test_settings_are_frozen(tmp_path: Any) -> None:
    app = build(tmp_path)
    settings = app.extensions["phoneverify"].state(app).settings
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.ttl = 30


def test_none_means_unset_so_a_setting_with_a_default_is_never_none(tmp_path: Any) -> None:
    app = build(tmp_path, PHONEVERIFY_TTL=None, PHONEVERIFY_URL_PREFIX=None)
    settings = app.extensions["phoneverify"].state(app).settings
    assert settings.ttl == 600
    assert settings.url_prefix == "/phoneverify"


def test_provider_options_are_the_non_core_values_under_their_prefix() -> None:
    settings = Settings(
        {
            "PHONEVERIFY_DEV_PHONE": True,
            "PHONEVERIFY_VOICESHOT_MENU_ID": "1-1234",
            "PHONEVERIFY_VOICESHOT_API_KEY": "secret-sentinel-0001",
            "PHONEVERIFY_XVERIFY_API_KEY": "other",
        }
    )
    assert settings.dev_phone is True
    assert settings.prefixed("PHONEVERIFY_VOICESHOT_") == {
        "menu_id": "1-1234",
        "api_key": "secret-sentinel-0001",
    }
    assert settings.prefixed("PHONEVERIFY_DEV_") == {}
    assert "secret-sentinel-0001" not in repr(settings)
