"""`flask phoneverify ...` commands."""

from __future__ import annotations

from typing import Any

from flask_phoneverify.settings import CORE_SETTINGS


def test_callback_url_is_signed_for_the_provider(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_EXTERNAL_URL="https://bank.example")
    result = h.app.test_cli_runner().invoke(args=["phoneverify", "callback-url", "dev"])
    assert result.exit_code == 0, result.output
    url = result.output.strip().splitlines()[-1]
    assert url.startswith("https://bank.example/phoneverify/callback/dev/")
    token = url.rsplit("/", 1)[-1]
    h.ext.state(h.app).tokens.check_callback(token, "dev")


def test_callback_url_refuses_unknown_provider(make_app: Any) -> None:
    h = make_app()
    result = h.app.test_cli_runner().invoke(args=["phoneverify", "callback-url", "nope"])
    assert result.exit_code != 0 and "unknown provider" in result.output


def test_settings_reference_lists_every_core_setting(make_app: Any) -> None:
    h = make_app()
    result = h.app.test_cli_runner().invoke(args=["phoneverify", "settings"])
    assert result.exit_code == 0
    for s in CORE_SETTINGS:
        assert f"`{s.name}`" in result.output
