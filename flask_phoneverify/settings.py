"""The one table of ``PHONEVERIFY_*`` settings, and the reader that checks them.

Every setting is declared once, here (the core) or in its provider's module
(``Provider.settings``), as a :class:`Setting` row: name, default, kind and a
one-line doc. ``init_app`` reads them through :func:`read_settings`, which turns
a wrong value into a :class:`ConfigError` that names the key and the fix, and
keeps them as :class:`Settings`, whose typed attributes let mypy check every use
of a core setting. The configuration reference in ``docs/config.md`` is
generated from these rows (``flask phoneverify settings --markdown``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .errors import ConfigError

__all__ = ["Setting", "CORE_SETTINGS", "read_settings", "Settings"]

_KINDS = ("str", "int", "float", "bool", "list")


@dataclass(frozen=True)
class Setting:
    """One configuration key: its name, default, kind, bounds and a one-line doc, declared once
    so the checks, the error messages and the docs cannot disagree."""

    name: str
    default: Any
    kind: str
    doc: str
    required: bool = False
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    secret: bool = False

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:  # pragma: no cover - a programming error
            raise ValueError(f"unknown setting kind {self.kind!r}")

    def parse(self, raw: Any) -> Any:
        """Coerce ``raw`` (from ``app.config``) to this setting's kind, or raise, so nothing
        past ``init_app`` meets a value of the wrong kind. None counts as unset (the default),
        so a setting with a default is never None."""
        if raw is None:
            raw = self.default
        if raw is None:
            if self.required:
                raise ConfigError(self.name, "is required", self._fix())
            return None
        value = _COERCE[self.kind](self, raw)
        if self.choices is not None and value not in self.choices:
            raise ConfigError(
                self.name,
                f"is {self.show(raw)}",
                f"use one of: {', '.join(repr(c) for c in self.choices)}",
            )
        if self.kind in ("int", "float"):
            assert isinstance(value, int | float)
            if self.minimum is not None and value < self.minimum:
                raise ConfigError(
                    self.name, f"is {self.show(raw)}", f"use a value of at least {self.minimum:g}"
                )
            if self.maximum is not None and value > self.maximum:
                raise ConfigError(
                    self.name, f"is {self.show(raw)}", f"use a value of at most {self.maximum:g}"
                )
        if self.required and value in ("", []):
            raise ConfigError(self.name, "is empty", self._fix())
        return value

    def show(self, raw: Any) -> str:
        """``raw`` as an error message may quote it: never for a secret, since messages reach
        logs."""
        return "a hidden value" if self.secret else repr(raw)

    def _fix(self) -> str:
        return f"set app.config[{self.name!r}] (or the environment variable FLASK_{self.name})"


def _as_str(setting: Setting, raw: Any) -> str:
    if not isinstance(raw, str | int):
        raise ConfigError(
            setting.name, f"is {type(raw).__name__} {setting.show(raw)}", "use a string"
        )
    return str(raw)


def _as_int(setting: Setting, raw: Any) -> int:
    if isinstance(raw, bool):
        raise ConfigError(setting.name, f"is {setting.show(raw)}", "use a whole number")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and raw.strip().lstrip("-").isdigit():
        return int(raw.strip())
    raise ConfigError(setting.name, f"is {setting.show(raw)}", "use a whole number")


def _as_float(setting: Setting, raw: Any) -> float:
    if isinstance(raw, bool):
        raise ConfigError(setting.name, f"is {setting.show(raw)}", "use a number")
    if isinstance(raw, int | float):
        return float(raw)
    if isinstance(raw, str):
        try:
            return float(raw)
        except ValueError:
            pass
    raise ConfigError(setting.name, f"is {setting.show(raw)}", "use a number")


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _as_bool(setting: Setting, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
        return raw.strip().lower() in _TRUE
    raise ConfigError(setting.name, f"is {setting.show(raw)}", "use True or False")


def _as_list(setting: Setting, raw: Any) -> list[str]:
    if isinstance(raw, str):
        text = raw.strip()
        if text.startswith("["):
            try:
                raw = json.loads(text)
            except ValueError as e:
                raise ConfigError(
                    setting.name, f"is {setting.show(raw)}", "use a JSON list of strings"
                ) from e
        else:
            raw = [part for part in (p.strip() for p in text.split(",")) if part]
    if not isinstance(raw, list | tuple | set | frozenset) or not all(
        isinstance(item, str) for item in raw
    ):
        raise ConfigError(
            setting.name, f"is {setting.show(raw)}", 'use a list of strings, e.g. ["US", "CA"]'
        )
    return list(raw)


_COERCE = {"str": _as_str, "int": _as_int, "float": _as_float, "bool": _as_bool, "list": _as_list}


_REFUSED_TYPES = ["PREMIUM_RATE", "SHARED_COST", "UAN", "PAGER", "VOICEMAIL", "PERSONAL_NUMBER"]

CORE_SETTINGS: tuple[Setting, ...] = (
    Setting("PHONEVERIFY_PROVIDER", "dev", "str", "Voice provider that places the calls."),
    Setting(
        "PHONEVERIFY_STYLE",
        None,
        "str",
        "keypad (page shows the PIN, caller keys it in), spoken (call speaks the PIN, user types "
        "it) or delivery (opt-in, proves only that the call was delivered); unset: the provider's "
        "preferred style.",
        choices=("keypad", "spoken", "delivery"),
    ),
    Setting("PHONEVERIFY_PIN_LENGTH", 6, "int", "Digits in a PIN.", minimum=6, maximum=12),
    Setting(
        "PHONEVERIFY_TTL",
        600,
        "int",
        "Seconds a verification stays open (at most 600 unless PHONEVERIFY_ALLOW_LONG_TTL).",
        minimum=30,
        maximum=86400,
    ),
    Setting(
        "PHONEVERIFY_ALLOW_LONG_TTL",
        False,
        "bool",
        "Allow PHONEVERIFY_TTL above 600 s (warns at start: long-lived PINs are easier to abuse).",
    ),
    Setting(
        "PHONEVERIFY_MAX_ATTEMPTS",
        5,
        "int",
        "Wrong PINs before a verification locks.",
        minimum=1,
        maximum=20,
    ),
    Setting(
        "PHONEVERIFY_VERIFIED_TTL",
        43200,
        "int",
        "Seconds a confirmation lasts in the session.",
        minimum=1,
    ),
    Setting("PHONEVERIFY_URL_PREFIX", "/phoneverify", "str", "Where the blueprint is mounted."),
    Setting(
        "PHONEVERIFY_DEFAULT_REGION",
        None,
        "str",
        "Region (ISO 3166 alpha-2, e.g. US) for numbers typed without +country.",
    ),
    Setting(
        "PHONEVERIFY_BASE_TEMPLATE",
        None,
        "str",
        "Template the pages extend (must define a `content` block, and a `title` block for the "
        "page's title); unset: a standalone layout.",
    ),
    Setting(
        "PHONEVERIFY_USER_PHONE_ATTR",
        "phone",
        "str",
        "Attribute of the user that holds the phone number.",
    ),
    Setting(
        "PHONEVERIFY_ALLOW_ENROLMENT",
        False,
        "bool",
        "Let a user with no phone on file type one on the verify page.",
    ),
    Setting(
        "PHONEVERIFY_DEV_PHONE",
        False,
        "bool",
        "Allow the simulated phone outside debug or testing mode (never in production).",
    ),
    Setting(
        "PHONEVERIFY_APP_NAME",
        None,
        "str",
        "Name spoken in calls and shown on pages; unset: the app's name.",
    ),
    Setting(
        "PHONEVERIFY_DEFAULT_NEXT",
        "/",
        "str",
        "Same-site path to go to after verification when no safe `next` was given.",
    ),
    Setting(
        "PHONEVERIFY_DATABASE_URI",
        None,
        "str",
        "Database for the extension's own store when no `db` is passed; unset: SQLite in the "
        "instance folder.",
    ),
    Setting(
        "PHONEVERIFY_POLL_INTERVAL",
        2.0,
        "float",
        "Seconds between two status requests to the provider for one verification.",
        minimum=0,
        maximum=60,
    ),
    Setting(
        "PHONEVERIFY_MAX_FAILURES_PER_HOUR",
        10,
        "int",
        "Wrong PINs per user in an hour before new calls are refused for a cool-down.",
        minimum=1,
        maximum=100,
    ),
    Setting(
        "PHONEVERIFY_CALLS_PER_NUMBER_PER_HOUR",
        3,
        "int",
        "Calls to one number in an hour.",
        minimum=1,
    ),
    Setting(
        "PHONEVERIFY_CALLS_PER_USER_PER_HOUR", 5, "int", "Calls for one user in an hour.", minimum=1
    ),
    Setting(
        "PHONEVERIFY_CALLS_PER_IP_PER_HOUR",
        10,
        "int",
        "Calls asked from one client IP in an hour.",
        minimum=1,
    ),
    Setting(
        "PHONEVERIFY_ENROL_CALLS_PER_NUMBER_PER_HOUR",
        3,
        "int",
        "Calls in an hour to a number being enrolled (typed on the verify page), across all "
        "enrolling accounts; counted apart from the calls that protect a number's owner.",
        minimum=1,
    ),
    Setting(
        "PHONEVERIFY_ENROL_CALLS_PER_USER_PER_HOUR",
        3,
        "int",
        "Calls in an hour to numbers one account is enrolling.",
        minimum=1,
    ),
    Setting(
        "PHONEVERIFY_BRIDGE_CALLS_PER_USER_PER_HOUR",
        2,
        "int",
        'Calls to the support line ("Talk to us" after a failed or locked verification) for '
        "one user in an hour; counted apart from the verification calls.",
        minimum=1,
    ),
    Setting(
        "PHONEVERIFY_IPV6_PREFIX",
        64,
        "int",
        "IPv6 clients are counted per network of this prefix length (one /64 is one "
        "household or host, which can rotate through its addresses at will).",
        minimum=32,
        maximum=128,
    ),
    Setting(
        "PHONEVERIFY_CALLS_PER_HOUR",
        200,
        "int",
        "Calls placed by the whole app in an hour.",
        minimum=1,
    ),
    Setting(
        "PHONEVERIFY_NUMBER_COOLDOWN",
        30,
        "int",
        "Seconds between two calls to one number.",
        minimum=0,
    ),
    Setting(
        "PHONEVERIFY_ALLOWED_COUNTRIES",
        [],
        "list",
        "Regions (ISO 3166 alpha-2) that may be called; empty: all.",
    ),
    Setting(
        "PHONEVERIFY_REFUSED_NUMBER_TYPES",
        _REFUSED_TYPES,
        "list",
        "phonenumbers number types never called (premium rate and similar toll-fraud targets).",
    ),
    Setting(
        "PHONEVERIFY_ALLOWED_NON_GEOGRAPHIC_CODES",
        [],
        "list",
        "Non-geographic calling codes (satellite and international networks: 800, 808, 870, "
        "878, 881, 882, 883, 888, 979) that may be called; all are refused by default, being "
        "toll-fraud targets.",
    ),
    Setting(
        "PHONEVERIFY_CALLS_PER_COUNTRY_PER_HOUR",
        50,
        "int",
        "Calls to numbers of one country (or one non-geographic code) in an hour, across the app.",
        minimum=1,
    ),
    Setting(
        "PHONEVERIFY_EXTERNAL_URL",
        None,
        "str",
        "Public base URL (https://example.com) used to build provider callback addresses.",
    ),
    Setting(
        "PHONEVERIFY_CALLBACK_MAX_BYTES",
        65536,
        "int",
        "Largest provider callback body accepted.",
        minimum=256,
    ),
    Setting(
        "PHONEVERIFY_METRICS",
        False,
        "bool",
        "Count calls, outcomes, provider latency and refusals as Prometheus metrics (needs "
        "the `metrics` extra: prometheus_client); the app serves `/metrics` itself.",
    ),
    Setting(
        "PHONEVERIFY_FRAUD_GUARD_MIN_CONVERSION",
        None,
        "float",
        "Fraud guard: pause calls to a country when fewer than this share (0-1) of its recent "
        "ended verifications were verified; unset: the guard is off.",
        minimum=0,
        maximum=1,
    ),
    Setting(
        "PHONEVERIFY_FRAUD_GUARD_MIN_CALLS",
        20,
        "int",
        "Fraud guard: ended verifications to one country, within the window, before its "
        "conversion is judged.",
        minimum=1,
    ),
    Setting(
        "PHONEVERIFY_FRAUD_GUARD_WINDOW",
        3600,
        "int",
        "Fraud guard: seconds of started verifications whose conversion is judged.",
        minimum=60,
    ),
    Setting(
        "PHONEVERIFY_FRAUD_GUARD_COOLDOWN",
        3600,
        "int",
        "Fraud guard: seconds a paused country stays paused.",
        minimum=1,
    ),
    Setting(
        "PHONEVERIFY_REMEMBER_DAYS",
        0,
        "int",
        'Days a device stays remembered after a phone confirmation with "Remember this '
        'device" (a signed cookie bound to the user and number, revocable); 0: off.',
        minimum=0,
        maximum=365,
    ),
    Setting(
        "PHONEVERIFY_RECOVERY_CODES",
        10,
        "int",
        "One-time recovery codes in a set a user generates after a phone confirmation; "
        "0: no recovery codes.",
        minimum=0,
        maximum=50,
    ),
    Setting(
        "PHONEVERIFY_OPENAPI",
        False,
        "bool",
        "Serve the JSON API's OpenAPI 3.1 document at `<prefix>/openapi.json`.",
    ),
)


@dataclass(frozen=True, init=False)
class Settings:
    """The checked core settings as typed attributes, so mypy catches a misspelt or misused
    setting; one field per :data:`CORE_SETTINGS` row, named by its key in lower case without
    ``PHONEVERIFY_`` (``settings.pin_length``). Provider options stay a mapping, read with
    :meth:`prefixed`, because each provider declares its own.

    Build it with ``Settings(values)``: ``values`` maps setting names to values as
    :func:`read_settings` returns them; a core key that is missing takes its default, and every
    key that is not a core setting is kept as a provider option.
    """

    provider: str
    style: str | None
    pin_length: int
    ttl: int
    allow_long_ttl: bool
    max_attempts: int
    verified_ttl: int
    url_prefix: str
    default_region: str | None
    base_template: str | None
    user_phone_attr: str
    allow_enrolment: bool
    dev_phone: bool
    app_name: str | None
    default_next: str
    database_uri: str | None
    poll_interval: float
    max_failures_per_hour: int
    calls_per_number_per_hour: int
    calls_per_user_per_hour: int
    calls_per_ip_per_hour: int
    enrol_calls_per_number_per_hour: int
    enrol_calls_per_user_per_hour: int
    bridge_calls_per_user_per_hour: int
    ipv6_prefix: int
    calls_per_hour: int
    number_cooldown: int
    allowed_countries: tuple[str, ...]
    refused_number_types: tuple[str, ...]
    allowed_non_geographic_codes: tuple[str, ...]
    calls_per_country_per_hour: int
    external_url: str | None
    callback_max_bytes: int
    metrics: bool
    fraud_guard_min_conversion: float | None
    fraud_guard_min_calls: int
    fraud_guard_window: int
    fraud_guard_cooldown: int
    remember_days: int
    recovery_codes: int
    openapi: bool
    #: every value that is not a core setting, by full key; out of ``repr`` as it holds secrets
    provider_values: Mapping[str, Any] = field(repr=False)

    def __init__(self, values: Mapping[str, Any]) -> None:
        core = read_settings(values, CORE_SETTINGS)
        for setting in CORE_SETTINGS:
            value = core[setting.name]
            if setting.kind == "list":
                value = tuple(value)
            object.__setattr__(self, field_name(setting), value)
        extra = {k: v for k, v in values.items() if k not in core}
        object.__setattr__(self, "provider_values", MappingProxyType(extra))

    def prefixed(self, prefix: str) -> dict[str, Any]:
        """A provider's options: the values under ``prefix``, with the prefix cut and the rest
        lower-cased, as the provider's constructor takes them."""
        return {
            k[len(prefix) :].lower(): v
            for k, v in self.provider_values.items()
            if k.startswith(prefix)
        }


def field_name(setting: Setting) -> str:
    """The :class:`Settings` attribute that holds a core setting, so code and tests agree on
    one spelling."""
    return setting.name.removeprefix("PHONEVERIFY_").lower()


def read_settings(config: Mapping[str, Any], table: Iterable[Setting]) -> dict[str, Any]:
    """Every row of ``table`` read from ``config`` (its default when unset) and checked, so a
    wrong value fails ``init_app`` instead of a request."""
    out: dict[str, Any] = {}
    for setting in table:
        raw = config.get(setting.name, setting.default)
        out[setting.name] = setting.parse(raw)
    return out


def describe(table: Sequence[Setting]) -> str:
    """A Markdown table of the settings, so docs/config.md is generated from the rows the code
    reads and cannot drift from them."""
    lines = ["| Setting | Default | Kind | What it does |", "|---|---|---|---|"]
    for s in table:
        default = (
            "(required)" if s.required else ("unset" if s.default is None else f"`{s.default!r}`")
        )
        lines.append(f"| `{s.name}` | {default} | {s.kind} | {s.doc} |")
    return "\n".join(lines)
