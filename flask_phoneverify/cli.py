"""``flask phoneverify ...``: what an operator runs.

- ``providers``: the installed providers, their styles, whether this app's settings for
  each are complete.
- ``check``: the configuration, without calling anyone (settings, WSDL, callback address,
  database and tables); prints each problem with its fix.
- ``call NUMBER``: a real verification call, followed live in the terminal.
- ``show ID``: one verification and its audit events (numbers masked).
- ``reset --number N | --user ID | --ip A | --country CC``: clears every budget and
  cool-down keyed by it (audited as a ``reset`` event; no event is deleted).
- ``purge [--older-than DAYS]``: deletes finished verifications and events past retention.
- ``stats [--hours H]``: calls, outcomes, conversion and time to confirm per provider and
  per country; paused countries.
- ``callback-url PROVIDER`` and ``settings``.

Exit codes: 0 ok, 1 a problem found (or the call did not verify), 2 bad usage.
"""

from __future__ import annotations

import copy
import getpass
import ipaddress
import secrets
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NoReturn
from urllib.parse import urlsplit

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import inspect

from . import phone as phones
from .errors import BadInput, ConfigError, FlowError, ProviderError, WrongPin
from .flow import Flow, session_ref
from .limits import WINDOW, minute_of, reset_keys
from .models import Base, EventKind, Status, Verification
from .providers import REGISTRY, load
from .providers.base import Provider, Style
from .providers.dev import DevPhone
from .settings import CORE_SETTINGS, describe, read_settings
from .signals import FAILURE_REASONS, failure_reason
from .state import AppState, state
from .views.callbacks import callback_address
from .views.common import client_network

cli = AppGroup("phoneverify", help="flask-phoneverify: phone-call confirmation.")

PROBLEM = 1
DAY = 86400.0


def _fail(message: str) -> NoReturn:
    """Print ``message`` and end the command with exit code 1 (a problem found)."""
    click.echo(message, err=True)
    raise SystemExit(PROBLEM)


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "operator"


# -- providers ---------------------------------------------------------------------------


def installed_providers() -> dict[str, type[Provider] | str]:
    """Every provider the registry names: its class, or why it cannot be imported. (The one
    place the CLI reads the registry.)"""
    found: dict[str, type[Provider] | str] = {}
    for name in REGISTRY:
        try:
            found[name] = load(name)
        except ConfigError as e:  # a package that cannot be imported, or a clashing name
            cause = e.__cause__
            found[name] = (
                f"not installed ({cause.name or cause})"
                if isinstance(cause, ImportError)
                else str(e)
            )
    return found


def _provider_options(cls: type[Provider]) -> dict[str, Any]:
    """The app's checked settings for ``cls``, as its constructor takes them."""
    values = read_settings(current_app.config, cls.settings)
    prefix = f"PHONEVERIFY_{cls.name.upper()}_"
    return {k[len(prefix) :].lower(): v for k, v in values.items() if k.startswith(prefix)}


def _completeness(cls: type[Provider]) -> str:
    """'complete', or the first thing missing from this app's settings for ``cls``."""
    try:
        provider = cls(
            _provider_options(cls), style=cls.preferred_style, pin_length=6, app_name="check"
        )
    except ConfigError as e:
        return f"incomplete: {e}"
    provider.close()
    return "complete (simulated: debug or testing only)" if cls.simulated else "complete"


@cli.command("providers")
def providers_command() -> None:
    """List the installed providers, their styles, and whether this app's settings for
    each are complete (* marks the provider in use)."""
    active = state().provider.name
    for name, cls in installed_providers().items():
        mark = "*" if name == active else " "
        if isinstance(cls, str):
            click.echo(f"{mark} {name:<13} {'-':<24} {cls}")
            continue
        styles = ", ".join(sorted(s.value for s in cls.styles))
        click.echo(f"{mark} {name:<13} {styles:<24} {_completeness(cls)}")


# -- check -------------------------------------------------------------------------------


@dataclass
class Report:
    """What ``check`` found, line by line: fine, worth a look, or a problem with its fix."""

    problems: list[tuple[str, str]] = field(default_factory=list)

    def ok(self, what: str) -> None:
        """Something that is configured right."""
        click.echo(f"ok: {what}")

    def warn(self, what: str) -> None:
        """Something that works but deserves a look."""
        click.echo(f"warning: {what}")

    def problem(self, what: str, fix: str) -> None:
        """Something that stops verifications, and how to fix it (exit code 1)."""
        self.problems.append((what, fix))
        click.echo(f"problem: {what}\n  fix: {fix}")


def needs_callbacks(provider: Provider) -> bool:
    """Does the provider post call events to an address of ours?"""
    return provider.callback_per_call or (
        type(provider).parse_callback is not Provider.parse_callback
    )


def _public_https(url: str | None) -> str | None:
    """Why ``url`` is not a public https address, or None when it is."""
    if not url:
        return "PHONEVERIFY_EXTERNAL_URL is not set"
    parts = urlsplit(url)
    if parts.scheme != "https":
        return f"PHONEVERIFY_EXTERNAL_URL ({url}) is not https"
    host = parts.hostname or ""
    if host == "localhost" or host.endswith((".local", ".localhost", ".internal")):
        return f"PHONEVERIFY_EXTERNAL_URL names {host}, which the provider cannot reach"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None if "." in host else f"PHONEVERIFY_EXTERNAL_URL names {host!r}, not a domain"
    if not ip.is_global:
        return f"PHONEVERIFY_EXTERNAL_URL names {host}, a private address"
    return None


@cli.command("check")
def check_command() -> None:
    """Check the configuration without calling anyone; exit 1 when a problem is found."""
    st = state()
    report = Report()
    provider = st.provider
    report.ok(f"settings read: provider {provider.name}, {st.style.value} style")
    _check_provider(st, report)
    _check_database(st, report)
    if provider.simulated:
        report.warn(
            "the provider is the simulated phone: no real call is placed (never in production)"
        )
    if not st.settings.allowed_countries:
        report.warn(
            "PHONEVERIFY_ALLOWED_COUNTRIES is empty: any country may be called (toll fraud "
            "aims at costly destinations; list the countries your users live in)"
        )
    if st.settings.fraud_guard_min_conversion is None:
        report.warn("the fraud guard is off (PHONEVERIFY_FRAUD_GUARD_MIN_CONVERSION is unset)")
    if report.problems:
        click.echo(f"{len(report.problems)} problem(s) found.")
        raise SystemExit(PROBLEM)
    click.echo("No problem found.")


def _check_provider(st: AppState, report: Report) -> None:
    provider = st.provider
    service = getattr(provider, "service", None)
    if callable(service):  # a SOAP provider: its WSDL must load
        try:
            service()
        except ProviderError as e:
            report.problem(
                f"the WSDL of {provider.name} does not load: {e.detail or e.message}",
                f"check {provider.option_key('wsdl')} (unset: the WSDL in the package)",
            )
        else:
            report.ok(f"the WSDL of {provider.name} loads")
    if needs_callbacks(provider):
        why = _public_https(st.settings.external_url)
        if why is not None:
            report.problem(
                f"{why}, and {provider.name} posts call events to the site",
                "set PHONEVERIFY_EXTERNAL_URL to the site's public https:// address, then "
                f"paste `flask phoneverify callback-url {provider.name}` into its console",
            )
        else:
            report.ok(f"call events address is public https ({st.settings.external_url})")


def _check_database(st: AppState, report: Report) -> None:
    fix = (
        "create the tables: db.create_all() or a migration when the app passes `db`; "
        "otherwise the extension creates them in PHONEVERIFY_DATABASE_URI"
    )
    try:
        engine = st.store.engine
        with engine.connect() as conn:
            found = inspect(conn)
            tables = set(found.get_table_names())
            missing = [t.name for t in Base.metadata.sorted_tables if t.name not in tables]
            columns = [
                f"{t.name}.{c.name}"
                for t in Base.metadata.sorted_tables
                if t.name in tables
                for c in t.columns
                if c.name not in {col["name"] for col in found.get_columns(t.name)}
            ]
    except Exception as e:  # noqa: BLE001 - any failure means the database is unusable
        report.problem(
            f"the database cannot be reached: {type(e).__name__}",
            "check PHONEVERIFY_DATABASE_URI (or the app's SQLALCHEMY_DATABASE_URI) and "
            "that the database server is running",
        )
        return
    if missing:
        report.problem(f"tables missing: {', '.join(missing)}", fix)
    if columns:
        report.problem(f"columns missing: {', '.join(columns)}", "migrate the tables (" + fix + ")")
    if not missing and not columns:
        report.ok(f"database reachable, {len(Base.metadata.tables)} tables present")


# -- call --------------------------------------------------------------------------------


@cli.command("call")
@click.argument("number")
@click.option(
    "--style",
    type=click.Choice([s.value for s in Style]),
    help="Confirmation style (default: the app's).",
)
@click.option("--provider", "provider_name", help="Provider (default: the app's).")
def call_command(number: str, style: str | None, provider_name: str | None) -> None:
    """Place a real verification call to NUMBER and follow it live, to test credentials.

    Keypad style shows the PIN to key in; spoken style asks for the PIN the call speaks.
    Exit 0 once verified, 1 otherwise. The call counts on the number's limits."""
    st = state()
    try:
        e164 = phones.parse(number, st.settings.default_region)
    except BadInput as e:
        raise click.BadParameter(e.message, param_hint="NUMBER") from None
    with _flow_for(st, provider_name, style) as flow:
        _call(st, flow, e164)


@contextmanager
def _flow_for(st: AppState, name: str | None, style: str | None) -> Iterator[Flow]:
    """The app's flow, or one on another provider or style (closed afterwards)."""
    name = name or st.provider.name
    chosen = Style(style) if style else None
    if name == st.provider.name and chosen in (None, st.style):
        yield st.flow
        return
    if name not in REGISTRY:
        raise click.BadParameter(
            f"unknown provider {name!r}; one of: {', '.join(REGISTRY)}", param_hint="--provider"
        )
    cls = load(name)
    if chosen is None:
        chosen = st.style if name == st.provider.name else cls.preferred_style
    if chosen not in cls.styles:
        can = ", ".join(sorted(s.value for s in cls.styles))
        raise click.BadParameter(
            f"{name} cannot do {chosen.value}; it does: {can}", param_hint="--style"
        )
    if cls.simulated and not isinstance(st.provider, DevPhone):
        raise click.BadParameter(
            "the simulated phone is not this app's provider", param_hint="--provider"
        )
    try:
        provider = cls(
            _provider_options(cls),
            style=chosen,
            pin_length=st.settings.pin_length,
            app_name=st.provider.app_name,
        )
    except ConfigError as e:
        _fail(f"{name} is not configured: {e}")
    provider.sealer = st.provider.sealer  # the app's keys seal what a call keeps
    if isinstance(provider, DevPhone) and isinstance(st.provider, DevPhone):
        provider.attach(st.store, st.provider.pin_sealer, st.clock)
        provider.phone_url = st.provider.phone_url
    flow = copy.copy(st.flow)
    flow.provider = provider
    try:
        yield flow
    finally:
        provider.close()


def _call(st: AppState, flow: Flow, e164: str) -> None:
    user_id = f"cli:{_operator()}"
    session = session_ref(secrets.token_urlsafe(16))
    callback = None
    if flow.provider.callback_per_call:
        with current_app.test_request_context(base_url=st.settings.external_url or None):
            callback = callback_address(st, flow.provider.name)
    try:
        started = flow.start(
            user_id=user_id, phone=e164, enrol=True, session=session, ip=None, callback_url=callback
        )
    except FlowError as e:
        _fail(f"refused: {e.message}")
    except ProviderError as e:
        _fail(f"the provider failed: {e.message}" + (f" ({e.detail})" if e.detail else ""))
    v = started.verification
    click.echo(
        f"Calling {phones.mask(e164)} via {flow.provider.name} ({v.style} style), "
        f"verification {v.id[:8]}."
    )
    try:
        if v.style == Style.SPOKEN:
            v = _spoken(flow, v, user_id, session)
        else:
            if v.style == Style.KEYPAD:
                click.echo(f"When the call asks, key in this PIN: {started.pin}")
            v = _follow(st, flow, v, user_id, session)
    except (KeyboardInterrupt, click.Abort):
        try:
            flow.cancel(v.id, user_id=user_id, session=session)
        except FlowError:
            pass
        click.echo("\nCanceled.", err=True)
        raise SystemExit(PROBLEM) from None
    if v.status == Status.VERIFIED:
        click.echo("Verified: the phone confirmed.")
        return
    _fail(f"Not verified: {v.status}. {flow.message(v)}".rstrip())


def _spoken(flow: Flow, v: Verification, user_id: str, session: str) -> Verification:
    """Ask for the PIN the call speaks until it is right or the verification closes."""
    while True:
        pin = click.prompt("PIN spoken in the call", default="", show_default=False)
        try:
            return flow.confirm(v.id, pin, user_id=user_id, session=session)
        except WrongPin as e:
            click.echo(e.message)
        except FlowError as e:
            click.echo(e.message)
            return flow.owned(v.id, user_id=user_id)


def _follow(st: AppState, flow: Flow, v: Verification, user_id: str, session: str) -> Verification:
    """Show the call's progress until the phone confirms or the verification closes."""
    began = time.monotonic()
    deadline = began + st.settings.ttl + 5
    pause = min(max(st.settings.poll_interval, 0.1), 2.0)
    shown: tuple[str, str] | None = None
    while True:
        v = flow.refresh(flow.owned(v.id, user_id=user_id))
        if (v.status, v.call) != shown:
            shown = (v.status, v.call)
            click.echo(f"[{time.monotonic() - began:5.1f}s] {v.call:<9} {flow.message(v)}")
        if v.status == Status.VERIFIED:
            return flow.confirm(v.id, None, user_id=user_id, session=session)  # taken: final
        if not v.is_open or time.monotonic() > deadline:
            return v
        time.sleep(pause)


# -- show --------------------------------------------------------------------------------


@cli.command("show")
@click.argument("verification_id")
def show_command(verification_id: str) -> None:
    """Show one verification (its id, or the first characters logs show) and its events.

    An id made before ids stopped starting with "-" goes after "--": show -- -Xy12."""
    st = state()
    found = st.store.read(lambda tx: tx.find(verification_id))
    if not found:
        _fail(f"No verification {verification_id!r}.")
    if len(found) > 1:
        _fail(f"{verification_id!r} starts several verifications' ids: give more of it.")
    v = found[0]
    rows = [
        ("id", v.id),
        ("user", v.user_id),
        ("number", phones.mask(v.phone) + (" (enrolment)" if v.enrol else "")),
        ("country", v.country or phones.country_of(v.phone)),
        ("provider", f"{v.provider} ({v.style} style)"),
        ("status", v.status + (f": {v.reason}" if v.reason else "")),
        ("call", v.call),
        ("attempts", str(v.attempts)),
        ("calls", str(v.sends)),
        ("created", _when(v.created_at)),
        ("expires", _when(v.expires_at)),
        ("verified", _when(v.verified_at)),
        ("claimed", _when(v.claimed_at)),
    ]
    for label, value in rows:
        click.echo(f"{label:<9} {value}")
    click.echo("events:")
    for e in st.store.read(lambda tx: tx.events_of(v.id)):
        extra = " ".join(
            part
            for part in (
                f"ip {e['ip']}" if e["ip"] else "",
                e["detail"] or "",
            )
            if part
        )
        click.echo(f"  {_when(e['at'])}  {e['kind']:<14} {extra}".rstrip())


# -- reset -------------------------------------------------------------------------------


@cli.command("reset")
@click.option(
    "--number", help="A phone number (E.164, or national with PHONEVERIFY_DEFAULT_REGION)."
)
@click.option("--user", "user_id", help="A user id, as the app's users give it.")
@click.option("--ip", help="A client address (IPv6: its network of PHONEVERIFY_IPV6_PREFIX).")
@click.option("--country", help="A region (US) or non-geographic code (+881); lifts a pause.")
def reset_command(
    number: str | None, user_id: str | None, ip: str | None, country: str | None
) -> None:
    """Clear every call budget and cool-down keyed by exactly one number, user, client
    address or country. Audited as a `reset` event; no event is deleted."""
    given = [x for x in (number, user_id, ip, country) if x is not None]
    if len(given) != 1:
        raise click.UsageError("give exactly one of --number, --user, --ip, --country")
    st = state()
    if number is not None:
        try:
            number = phones.parse(number, st.settings.default_region)
        except BadInput as e:
            raise click.BadParameter(e.message, param_hint="--number") from None
        what = f"number {phones.mask(number)}"
    if ip is not None:
        ip = _network(ip, st.settings.ipv6_prefix)
        what = f"client network {ip}"
    if country is not None:
        country = _country(country)
        what = f"country {country}"
    if user_id is not None:
        what = f"user {user_id}"
    keys = reset_keys(number=number, user=user_id, ip=ip, country=country)
    now = st.clock()
    operator = _operator()

    def step(tx: Any) -> tuple[int, int]:
        gone = tx.forget_counters(keys)
        lifted = tx.lift_pause(country) if country is not None else 0
        detail = f"by {operator}: {gone} counter rows" + (", pause lifted" if lifted else "")
        if country is not None:
            detail += f" (country {country})"
        tx.record(
            {
                "kind": EventKind.RESET,
                "at": now,
                "user_id": user_id,
                "phone": number,
                "ip": ip,
                "detail": detail,
            }
        )
        return gone, lifted

    gone, lifted = st.store.write(step)
    click.echo(f"Reset {what}: {gone} budget and cool-down rows cleared.")
    if lifted:
        click.echo(f"The fraud guard's pause of {country} is lifted.")


def _network(raw: str, prefix: int) -> str:
    """The key the per-IP limit counts ``raw`` under (what views.common.client_ip gives)."""
    text = raw.strip()
    try:
        if "/" in text:
            return str(ipaddress.ip_network(text, strict=False))
        ipaddress.ip_address(text)
    except ValueError:
        raise click.BadParameter(f"{raw!r} is not an IP address", param_hint="--ip") from None
    found = client_network(text, prefix)
    assert found is not None
    return found


def _country(raw: str) -> str:
    text = raw.strip().upper()
    if text.startswith("+") and text[1:].isdigit():
        return text
    if text in phones.supported_regions():
        return text
    raise click.BadParameter(
        f"{raw!r} is not a region (US) nor a non-geographic code (+881)", param_hint="--country"
    )


# -- purge -------------------------------------------------------------------------------


@cli.command("purge")
@click.option(
    "--older-than",
    "days",
    type=click.IntRange(min=1),
    default=90,
    show_default=True,
    help="Retention in days.",
)
@click.option("--batch", type=click.IntRange(min=1), default=1000, show_default=True)
def purge_command(days: int, batch: int) -> None:
    """Delete finished verifications and audit events older than the retention, in batches
    (one short transaction each), and counter rows no limit reads any more."""
    st = state()
    now = st.clock()
    before = now - days * DAY
    verifications = _batches(st, lambda tx: tx.purge_verifications(before, batch), batch)
    events = _batches(st, lambda tx: tx.purge_events(before, batch), batch)
    stale = minute_of(now) - 2 * WINDOW
    leftovers = st.store.write(lambda tx: tx.purge_leftovers(before, stale))
    click.echo(
        f"Deleted {verifications} verifications and {events} events older than {days} days, "
        f"and {leftovers} stale counter, relay and simulated-call rows."
    )


def _batches(st: AppState, step: Any, batch: int) -> int:
    total = 0
    while True:
        done: int = st.store.write(step)
        total += done
        if done < batch:
            return total


# -- stats -------------------------------------------------------------------------------


@dataclass
class Tally:
    """The counts ``stats`` shows for one provider or country."""

    placed: int = 0
    verified: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    to_confirm: list[float] = field(default_factory=list)

    @property
    def ended(self) -> int:
        """Verifications that ended, verified or not (the conversion's base)."""
        return self.verified + sum(self.failed.values())

    def row(self, name: str) -> list[str]:
        """The table row for this tally, named ``name``."""
        conversion = f"{self.verified / self.ended:.0%}" if self.ended else "-"
        median = f"{statistics.median(self.to_confirm):.0f}s" if self.to_confirm else "-"
        failed = [str(self.failed[r]) for r in FAILURE_REASONS]
        return [name, str(self.placed), str(self.verified), *failed, conversion, median]


@cli.command("stats")
@click.option(
    "--hours",
    type=click.FloatRange(min=0, min_open=True),
    default=24.0,
    show_default=True,
    help="How far back.",
)
def stats_command(hours: float) -> None:
    """Calls placed, verified, failed by reason, conversion and median time to confirm,
    per provider and per country, for verifications started in the last HOURS; and the
    countries the fraud guard has paused."""
    st = state()
    now = st.clock()
    since = now - hours * 3600
    rows = st.store.read(lambda tx: tx.ended_since(since))
    placed = st.store.read(lambda tx: tx.placed_since(since))
    paused = st.store.read(lambda tx: tx.paused(now))
    by: dict[str, dict[str, Tally]] = {"provider": {}, "country": {}}
    for r in rows:
        country = r["country"] or phones.country_of(r["phone"])
        status = r["status"]
        if status == Status.CALLING and r["expires_at"] <= now:
            status = Status.EXPIRED.value  # its end, not yet recorded
        for kind, key in (("provider", r["provider"]), ("country", country)):
            tally = by[kind].setdefault(key, Tally())
            if status == Status.VERIFIED:
                tally.verified += 1
                if r["verified_at"] is not None:
                    tally.to_confirm.append(r["verified_at"] - r["created_at"])
            else:
                reason = failure_reason(status, r["reason"])
                if reason is not None:
                    tally.failed[reason] += 1
    for provider, country, phone, n in placed:
        by["provider"].setdefault(provider, Tally()).placed += n
        by["country"].setdefault(country or phones.country_of(phone), Tally()).placed += n
    click.echo(f"Verifications started since {_when(since)} ({hours:g} h):")
    head = ["placed", "verified", *FAILURE_REASONS, "conversion", "to_confirm"]
    for kind, tallies in by.items():
        table = [[kind, *head]] + [tallies[k].row(k) for k in sorted(tallies)]
        click.echo("")
        _table(table)
    click.echo("")
    if not paused:
        guard = "on" if st.settings.fraud_guard_min_conversion is not None else "off"
        click.echo(f"No country is paused (fraud guard {guard}).")
    for p in paused:
        click.echo(
            f"Paused: {p['country']} until {_when(p['until'])} "
            f"({(p['conversion'] or 0):.0%} of {p['calls']} ended verifications verified)"
        )


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        click.echo("  ".join(cells).rstrip())


# -- addresses and settings ----------------------------------------------------------------


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
    for cls in installed_providers().values():
        if not isinstance(cls, str):
            rows.extend(cls.settings)
    click.echo(describe(rows))
