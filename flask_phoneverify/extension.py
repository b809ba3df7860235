"""PhoneVerify: the extension object.

The object never holds an app: ``init_app`` reads and checks the settings once,
builds the provider, the store and the flow for that app, keeps them in the app's
:class:`~flask_phoneverify.state.AppState`, mounts the blueprints and registers
itself as ``app.extensions["phoneverify"]``. The provider's clients and the store's
own engine are closed when the app goes away (or by :meth:`PhoneVerify.close`).
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask

from . import i18n
from . import phone as phones
from .breaker import Breaker
from .cli import cli
from .csrf import exempt_from_flask_wtf
from .errors import ConfigError
from .flow import Flow, Policy
from .gate import connect_login_signals
from .guard import FraudGuard
from .limits import Limits
from .metrics import metrics
from .models import Base
from .pins import PinHasher, derive_key
from .providers import load
from .providers.base import Provider, Style
from .providers.dev import DevPhone
from .recovery import Recovery
from .redirects import safe_next
from .remember import Devices
from .sealing import Sealer
from .settings import CORE_SETTINGS, Settings, read_settings
from .signals import Notifier
from .state import KEY, AppState, Hooks, state
from .store import Store
from .tokens import Tokens
from .views import make_blueprint

__all__ = ["PhoneVerify"]

log = logging.getLogger("flask_phoneverify")
#: what the key of the number hash in the session marker is derived for
MARKER_LABEL = b"flask-phoneverify marker number v1"

F = TypeVar("F", bound=Callable[..., Any])

MIN_SECRET_KEY = 16
SHORT_TTL = 600


class PhoneVerify:
    """Phone-call confirmation for a Flask app.

    ``db``: the app's Flask-SQLAlchemy instance, to keep the extension's tables in
    the app's database; without it the extension keeps its own SQLite file in the
    instance folder. ``clock``: a function returning UNIX seconds (tests move it).
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        db: Any = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.db = db
        self.clock: Callable[[], float] = clock or time.time
        self.hooks = Hooks()
        if app is not None:
            self.init_app(app)

    # -- registrars ------------------------------------------------------------------
    def user_loader(self, func: F) -> F:
        """Register a function returning the current user (or None when nobody is
        logged in); for apps without Flask-Login."""
        self.hooks.user_loader = func
        return func

    def phone_saver(self, func: F) -> F:
        """Register ``func(user, e164)``, called once a number typed on the verify
        page (enrolment) has been verified: the only way the app learns it."""
        self.hooks.phone_saver = func
        return func

    def unverified_handler(self, func: F) -> F:
        """Register a function whose response replaces the gate's redirect or 401."""
        self.hooks.unverified_handler = func
        return func

    def before_call(self, func: F) -> F:
        """Register ``func(attempt)``, called before any call is placed (start, resend,
        support bridge) with a read-only :class:`~flask_phoneverify.guard.CallAttempt`, for
        the app's own fraud scoring or number lookups. Raising
        :class:`~flask_phoneverify.errors.CallRefused` refuses the call (403
        ``call_refused`` with its message; nothing counted or placed); returning allows it.
        It runs before the limits are counted, outside any transaction."""
        self.hooks.before_call = func
        return func

    # -- setup -------------------------------------------------------------------------
    def init_app(self, app: Flask) -> None:
        """Read and check the settings, build what the app needs, mount the pages.

        Settings are read here, once: later changes to ``app.config`` are not seen."""
        if "phoneverify" in app.extensions:
            raise RuntimeError(
                "A 'PhoneVerify' instance has already been registered on this Flask app."
                " Import and use that instance instead."
            )
        settings = self._read_settings(app)
        keys = _secret_keys(app)
        providers = self._build_providers(app, settings)
        provider = providers[0]
        store = self._build_store(app, settings)
        limits = Limits(
            max_failures_per_hour=settings.max_failures_per_hour,
            per_number=settings.calls_per_number_per_hour,
            per_user=settings.calls_per_user_per_hour,
            per_ip=settings.calls_per_ip_per_hour,
            global_per_hour=settings.calls_per_hour,
            per_country=settings.calls_per_country_per_hour,
            enrol_per_number=settings.enrol_calls_per_number_per_hour,
            enrol_per_user=settings.enrol_calls_per_user_per_hour,
            bridge_per_user=settings.bridge_calls_per_user_per_hour,
            number_cooldown=settings.number_cooldown,
        )
        policy = Policy(
            allowed_regions=phones.check_regions(
                "PHONEVERIFY_ALLOWED_COUNTRIES", settings.allowed_countries
            ),
            refused_types=phones.check_type_names(
                "PHONEVERIFY_REFUSED_NUMBER_TYPES", settings.refused_number_types
            ),
            allowed_non_geographic=phones.check_non_geographic(
                "PHONEVERIFY_ALLOWED_NON_GEOGRAPHIC_CODES", settings.allowed_non_geographic_codes
            ),
        )
        phones.check_regions_reachable(
            "PHONEVERIFY_ALLOWED_COUNTRIES",
            policy.allowed_regions,
            _calling_codes(providers),
        )
        clock = self.clock  # read once, like the settings
        guard = (
            None
            if settings.fraud_guard_min_conversion is None
            else FraudGuard(
                min_conversion=settings.fraud_guard_min_conversion,
                min_calls=settings.fraud_guard_min_calls,
                window=settings.fraud_guard_window,
                cooldown=settings.fraud_guard_cooldown,
            )
        )
        notify = Notifier(app, metrics() if settings.metrics else None)
        flow = Flow(
            store=store,
            provider=provider,
            hasher=PinHasher(keys),
            limits=limits,
            policy=policy,
            clock=clock,
            ttl=settings.ttl,
            max_attempts=settings.max_attempts,
            pin_length=settings.pin_length,
            poll_interval=settings.poll_interval,
            app_name=provider.app_name,
            relay_key=derive_key(keys[0], b"flask-phoneverify relayed digits v1"),
            providers=providers,
            breaker=Breaker(
                store,
                clock,
                failures=settings.breaker_failures,
                cooldown=settings.breaker_cooldown,
            ),
            max_poll_errors=settings.max_poll_errors,
            notify=notify,
            hooks=self.hooks,
            guard=guard,
        )
        for each in providers:
            each.sealer = Sealer(keys, label=b"flask-phoneverify provider seal v1")
            if isinstance(each, DevPhone):
                each.attach(store, Sealer(keys), clock)
                each.phone_url = settings.url_prefix.rstrip("/") + "/dev/phone"
        st = AppState(
            settings=settings,
            provider=provider,
            providers=providers,
            store=store,
            flow=flow,
            tokens=Tokens(keys, clock),
            clock=clock,
            hooks=self.hooks,
            marker_key=derive_key(keys[0], MARKER_LABEL),
            marker_fallback_keys=tuple(derive_key(k, MARKER_LABEL) for k in keys[1:]),
            recovery=Recovery(
                store=store,
                limits=limits,
                secret_keys=keys,
                clock=clock,
                count=settings.recovery_codes,
            ),
            devices=Devices(store, keys, clock, settings.remember_days),
        )
        app.extensions[KEY] = st
        app.extensions["phoneverify"] = self
        weakref.finalize(app, st.close)

        app.register_blueprint(make_blueprint(), url_prefix=settings.url_prefix.rstrip("/") or None)
        app.cli.add_command(cli)
        exempt_from_flask_wtf(app)
        connect_login_signals(app)
        i18n.init_app(app)

    def state(self, app: Flask | None = None) -> AppState:
        """The per-app state; a clear error when init_app was not called for the app."""
        return state(app)

    def close(self, app: Flask | None = None) -> None:
        """Close the provider's clients and the store's own engine for ``app`` now."""
        state(app).close()

    # -- helpers for init_app ------------------------------------------------------------
    def _read_settings(self, app: Flask) -> Settings:
        core = read_settings(app.config, CORE_SETTINGS)
        names = core["PHONEVERIFY_PROVIDER"]
        if not names:
            raise ConfigError(
                "PHONEVERIFY_PROVIDER", "is empty", "name a provider, such as 'phoneconfirm'"
            )
        if len(set(names)) != len(names):
            raise ConfigError("PHONEVERIFY_PROVIDER", f"is {names!r}", "list each provider once")
        values = dict(core)
        for name in names:
            values.update(read_settings(app.config, load(name).settings))
        settings = Settings(values)
        if settings.ttl > SHORT_TTL:
            if not settings.allow_long_ttl:
                raise ConfigError(
                    "PHONEVERIFY_TTL",
                    f"is {settings.ttl} s, longer than the {SHORT_TTL} s a PIN should live",
                    "lower it, or set PHONEVERIFY_ALLOW_LONG_TTL = True to accept the risk",
                )
            log.warning(
                "phoneverify: PHONEVERIFY_TTL is %d s; PINs living over %d s are easier to abuse",
                settings.ttl,
                SHORT_TTL,
            )
        prefix = settings.url_prefix
        if not prefix.startswith("/"):
            raise ConfigError("PHONEVERIFY_URL_PREFIX", f"is {prefix!r}", "start it with '/'")
        if (
            settings.default_region
            and settings.default_region.upper() not in phones.supported_regions()
        ):
            raise ConfigError(
                "PHONEVERIFY_DEFAULT_REGION",
                f"is {settings.default_region!r}",
                "use an ISO 3166 alpha-2 region code such as 'US', or leave it unset",
            )
        if not _safe_default_next(settings.default_next):
            raise ConfigError(
                "PHONEVERIFY_DEFAULT_NEXT",
                f"is {settings.default_next!r}",
                "use a path such as '/'",
            )
        if settings.external_url and not settings.external_url.startswith(("https://", "http://")):
            raise ConfigError(
                "PHONEVERIFY_EXTERNAL_URL",
                f"is {settings.external_url!r}",
                "use the site's public base URL, such as 'https://example.com'",
            )
        return settings

    def _build_providers(self, app: Flask, settings: Settings) -> tuple[Provider, ...]:
        """The providers PHONEVERIFY_PROVIDER lists, in its order, all in one style (the
        first one's preferred style, unless PHONEVERIFY_STYLE names one)."""
        classes = [load(name) for name in settings.provider]
        style: Style | None = None
        built: list[Provider] = []
        for cls in classes:
            provider = self._build_provider(app, settings, cls, style, len(classes) > 1)
            style = provider.style
            built.append(provider)
        return tuple(built)

    def _build_provider(
        self,
        app: Flask,
        settings: Settings,
        cls: type[Provider],
        first_style: Style | None = None,
        listed: bool = False,
    ) -> Provider:
        chosen = settings.style if first_style is None else first_style.value
        if chosen is None and cls.preferred_style is Style.DELIVERY:
            raise ConfigError(
                "PHONEVERIFY_STYLE",
                f"is unset, and provider {cls.name!r} can only report delivery (a delivered "
                "call proves that a line answered, not that the user holds the phone)",
                "set PHONEVERIFY_STYLE = 'delivery' to accept that, or choose a provider "
                "that can do keypad or spoken",
            )
        style = cls.preferred_style if chosen is None else Style(chosen)
        if style not in cls.styles:
            can = ", ".join(sorted(s.value for s in cls.styles))
            if first_style is not None and settings.style is None:
                raise ConfigError(
                    "PHONEVERIFY_PROVIDER",
                    f"lists {cls.name!r}, which cannot do {style.value!r}, the style of the "
                    f"first provider listed (it can do: {can})",
                    "set PHONEVERIFY_STYLE to a style every listed provider can do, or list "
                    "only providers that can do the same",
                )
            raise ConfigError(
                "PHONEVERIFY_STYLE",
                f"is {style.value!r}, which provider {cls.name!r} cannot do",
                f"use one of: {can}"
                + (", or list only providers that can do it" if listed else ""),
            )
        if style is Style.DELIVERY and first_style is None:
            log.warning(
                "phoneverify: PHONEVERIFY_STYLE='delivery': a delivered call proves that a line "
                "answered, not that the user holds that phone"
            )
        if cls.needs_external_url and not settings.external_url:
            raise ConfigError(
                "PHONEVERIFY_EXTERNAL_URL",
                f"is unset, and provider {cls.name!r} signs the address of each request it "
                "makes to this site",
                "set it to the site's public base URL, such as 'https://example.com'",
            )
        if style is Style.SPOKEN and not cls.voicemail_safe:
            log.warning(
                "phoneverify: provider %r speaks the code to whatever answers, voicemail "
                "included (no key is asked first); see its page in docs/providers/",
                cls.name,
            )
        if cls.simulated and not (app.debug or app.testing or settings.dev_phone):
            raise ConfigError(
                "PHONEVERIFY_PROVIDER",
                "is 'dev' (the simulated phone) outside debug or testing mode",
                "choose a real provider for production, or set PHONEVERIFY_DEV_PHONE = True "
                "for a demo",
            )
        app_name = settings.app_name or _pretty_name(app)
        options = settings.prefixed(f"PHONEVERIFY_{cls.name.upper()}_")
        return cls(options, style=style, pin_length=settings.pin_length, app_name=app_name)

    def _build_store(self, app: Flask, settings: Settings) -> Store:
        if self.db is not None:
            db = self.db
            for table in Base.metadata.sorted_tables:
                if table.name not in db.metadata.tables:
                    table.to_metadata(db.metadata)
            return Store(shared=lambda: db.engine)
        uri = settings.database_uri or "sqlite:///" + os.path.join(
            app.instance_path, "phoneverify.sqlite3"
        )
        return Store(uri=uri)


def _calling_codes(providers: tuple[Provider, ...]) -> frozenset[int] | None:
    """The calling codes the listed providers can reach between them (None: any)."""
    codes: set[int] = set()
    for provider in providers:
        if provider.calling_codes is None:
            return None
        codes |= provider.calling_codes
    return frozenset(codes)


def _secret_keys(app: Flask) -> list[str | bytes]:
    key = app.config.get("SECRET_KEY")
    fix = (
        "set app.config['SECRET_KEY'] to a long random value, for example the output of "
        "python -c 'import secrets; print(secrets.token_hex(32))'"
    )
    if not key:
        raise ConfigError("SECRET_KEY", "is missing", fix)
    if not isinstance(key, str | bytes) or len(key) < MIN_SECRET_KEY:
        raise ConfigError("SECRET_KEY", f"is shorter than {MIN_SECRET_KEY} characters", fix)
    fallbacks = app.config.get("SECRET_KEY_FALLBACKS") or []
    if not isinstance(fallbacks, list | tuple):
        raise ConfigError("SECRET_KEY_FALLBACKS", "is not a list", "use a list of old keys")
    return [key, *fallbacks]


def _pretty_name(app: Flask) -> str:
    name = app.name.rsplit(".", 1)[-1].replace("_", " ").strip()
    return name.title() if name and name != "__main__" else "this site"


def _safe_default_next(path: str) -> bool:
    return safe_next(path) == path
