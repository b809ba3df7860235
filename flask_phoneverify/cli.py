"""``flask phoneverify ...``: settings reference and provider callback addresses."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

from .errors import ConfigError
from .providers import REGISTRY, load
from .settings import CORE_SETTINGS, describe
from .state import state
from .views.callbacks import callback_address

cli = AppGroup("phoneverify", help="flask-phoneverify: phone-call confirmation.")


@cli.command("callback-url")
@click.argument("provider")
def callback_url(provider: str) -> None:
    """Print the signed address to paste into PROVIDER's console for call events."""
    st = state()
    if provider not in REGISTRY:
        raise click.BadParameter(f"unknown provider {provider!r}; one of: {', '.join(REGISTRY)}")
    base = st.settings.external_url
    with current_app.test_request_context(base_url=base or None):
        url = callback_address(st, provider)
    if not base:
        click.echo(
            "warning: PHONEVERIFY_EXTERNAL_URL is not set; the host below is a guess.", err=True
        )
    click.echo(url)


@cli.command("settings")
def settings_reference() -> None:
    """Print every PHONEVERIFY_* setting as a Markdown table."""
    rows = list(CORE_SETTINGS)
    for name in REGISTRY:
        try:
            rows.extend(load(name).settings)
        except (ImportError, ConfigError):  # a broken package's settings are not listed
            continue
    click.echo(describe(rows))
