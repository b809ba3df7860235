"""The provider interface: what every voice provider implements.

This is public API, exported from :mod:`flask_phoneverify.providers` and described
in ``docs/providers/writing.md``; a provider package registers its class under the
entry-point group ``flask_phoneverify.providers`` and tests it with
:class:`flask_phoneverify.testing.ProviderContract`.

A provider knows nothing of Flask, the database or sessions. It is built once
per app from its own settings (``PHONEVERIFY_<NAME>_<OPTION>``, declared in its
``settings`` class attribute and handed over already checked, keys lower-cased
without the prefix), and then:

- declares the styles it can do (``styles``) and the one it prefers;
- places a call (:meth:`Provider.place_call`) and returns a :class:`CallTicket`;
- reports a call's progress when polled (:meth:`Provider.call_status`), or
  turns a request the vendor makes to our callback address, whole
  (:class:`CallbackRequest`: the address as the vendor requested it, headers,
  body), into :class:`CallEvent` values (:meth:`Provider.parse_callback`), after
  checking the vendor's signature when it signs; then answers that request per
  event (:meth:`Provider.callback_reply`, a :class:`CallbackReply`), so a vendor
  that expects instructions back (Twilio's TwiML) gets them, built from what
  each event did (:class:`EventResult`);
- may check a typed code itself (:meth:`Provider.check_code`);
- may bridge the user to a support line (:meth:`Provider.bridge`).

Failures are raised as the :class:`~flask_phoneverify.errors.ProviderError`
family; ``message`` is for users, ``detail`` for the log. A failure to place a call
that is the provider's fault (anything but :class:`ProviderRejected`) hands the call
to the next provider PHONEVERIFY_PROVIDER lists, and counts on its circuit breaker.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

from ..errors import (
    ConfigError,
    ProviderConfigError,
    ProviderError,
    ProviderProtocolError,
    ProviderRejected,
    ProviderUnavailable,
)
from ..i18n import N_, gettext, spoken_language
from ..settings import Setting

if TYPE_CHECKING:  # the sealer and the store are init_app's; providers only use them
    from ..sealing import Sealer
    from ..store import Tx

__all__ = [
    "Style",
    "CallState",
    "Outcome",
    "CallRequest",
    "CallTicket",
    "PlacedCall",
    "CallReport",
    "CallEvent",
    "CallbackRequest",
    "CallbackReply",
    "EventResult",
    "VOICEMAIL_REASON",
    "Provider",
    "ConfigError",
    "ProviderError",
    "ProviderUnavailable",
    "ProviderRejected",
    "ProviderConfigError",
    "ProviderProtocolError",
    "Setting",
    "timeout_setting",
    "check_url",
]


class Style(enum.StrEnum):
    """How the person proves they hold the phone."""

    KEYPAD = "keypad"  # the page shows the PIN; the call asks the person to key it in
    SPOKEN = "spoken"  # the call speaks the PIN; the person types it on the page
    DELIVERY = "delivery"  # the provider reports only that the call was delivered (opt-in)


class CallState(enum.StrEnum):
    """The call's own progress; never a verification status."""

    QUEUED = "queued"
    RINGING = "ringing"
    ANSWERED = "answered"
    DELIVERED = "delivered"
    ENDED = "ended"


class Outcome(enum.StrEnum):
    """What a provider report means for the verification."""

    PENDING = "pending"  # nothing decided yet
    CONFIRMED = "confirmed"  # keypad: right digits pressed; delivery: delivered; spoken: PIN heard
    FAILED = "failed"  # the call did not do its job; ``reason`` says why
    VOICEMAIL = "voicemail"  # a machine answered: the verification fails (VOICEMAIL_REASON)


#: what the user reads when a machine answered the call (failure reason ``voicemail``)
VOICEMAIL_REASON = N_("The call reached voicemail, not you.")


@dataclass(frozen=True)
class CallRequest:
    """One call to place."""

    number: str  # E.164, e.g. "+12015550100"
    pin: str  # spoken style: the digits to speak; keypad style: the digits to wait for
    style: Style
    call_id: str  # our random reference for this call (TransactionID, callid, reference)
    app_name: str  # to name the caller in the call's text
    callback_url: str | None = None  # where the provider may post events, when it does
    #: the locale of the request that started the verification (``fr``, ``es_MX``), or
    #: None; :meth:`Provider.call_language` says which language the call can speak
    locale: str | None = None


@dataclass(frozen=True)
class CallTicket:
    """What a placed call returns: the provider's handle to follow it."""

    reference: str  # job GUID, REQUESTID, transaction number, continuation token...
    call: CallState = CallState.RINGING


@dataclass(frozen=True)
class PlacedCall:
    """A call being followed, as the flow hands it back to the provider."""

    reference: str | None
    call_id: str
    number: str
    style: Style


@dataclass(frozen=True)
class CallReport:
    """A provider's word on a call.

    ``digits`` carries keys the person pressed that the flow must check against
    the PIN's hash itself (providers that relay keypresses rather than compare).
    """

    call: CallState | None = None
    outcome: Outcome = Outcome.PENDING
    digits: str | None = None
    reason: str | None = None  # shown to the user when the outcome is FAILED
    detail: str | None = None  # for the log and the audit trail only
    reference: str | None = None  # a renewed handle for the next status request, if any
    once: bool = False
    """digits this provider may report more than once for one entry (a keypress event,
    then the call's summary): the flow counts them once per call and number, in the
    database"""


@dataclass(frozen=True)
class CallEvent:
    """One event posted to our callback address, tied to a call by our call id."""

    call_id: str
    report: CallReport
    number: str | None = None  # E.164, when the event carries the number


#: form fields read from a callback body at most (vendors send a few dozen)
MAX_FORM_FIELDS = 200


@dataclass(frozen=True)
class CallbackRequest:
    """A request a vendor made to our callback address, whole, so a provider can check a
    vendor's signature over exactly what was sent.

    ``url`` is the address as the vendor requested it, query included: built on
    PHONEVERIFY_EXTERNAL_URL when it is set (behind a proxy the app's own view of
    its address differs from the one the vendor signed)."""

    url: str
    method: str = "POST"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    content_type: str = ""

    def header(self, name: str) -> str | None:
        """A header's value, whatever the case of its name."""
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)

    @property
    def form(self) -> list[tuple[str, str]]:
        """The body's fields when it is form-encoded (in order, repeats kept), else none."""
        if self.content_type.split(";", 1)[0].strip().lower() != (
            "application/x-www-form-urlencoded"
        ):
            return []
        try:
            text = self.body.decode("utf-8")
        except UnicodeDecodeError:
            return []
        try:
            return parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
        except ValueError:  # more fields than any vendor sends: read as none
            return []

    @property
    def query(self) -> dict[str, str]:
        """The address's query fields (the first of each name)."""
        fields: dict[str, str] = {}
        for name, value in parse_qsl(urlsplit(self.url).query, keep_blank_values=True):
            fields.setdefault(name, value)
        return fields


@dataclass(frozen=True)
class CallbackReply:
    """How to answer a callback request: instructions for vendors that take them."""

    body: str | bytes = "OK"
    content_type: str = "text/plain"
    status: int = 200


@dataclass(frozen=True)
class EventResult:
    """What one callback event did, for the provider's reply (say thanks, ask again...).

    ``current``: the event named a live verification's current call; ``status``: the
    verification's status after it (``calling``, ``verified``, ``failed``...), None when
    no verification was found."""

    current: bool
    status: str | None = None
    attempts_left: int | None = None


class Provider:
    """Base class of the voice providers. Subclasses set the class attributes and
    implement :meth:`place_call` and, for polled providers, :meth:`call_status`."""

    name: ClassVar[str]
    styles: ClassVar[frozenset[Style]]
    preferred_style: ClassVar[Style]
    #: provider-specific settings, full names (``PHONEVERIFY_<NAME>_<OPTION>``)
    settings: ClassVar[tuple[Setting, ...]] = ()
    #: whether the flow asks :meth:`call_status` (at most once per poll interval)
    polled: ClassVar[bool] = True
    #: a simulated provider (the dev phone): refused outside debug/testing
    simulated: ClassVar[bool] = False
    #: the country calling codes it can call (None: any); checked before a call is placed
    calling_codes: ClassVar[frozenset[int] | None] = None
    #: whether :meth:`place_call` reads ``CallRequest.callback_url`` (an events address
    #: sent with each call); vendors configured once in their console do not need it
    callback_per_call: ClassVar[bool] = False
    #: the languages its calls can be spoken in (None: every shipped language); a call
    #: asked in another language speaks English
    speaks: ClassVar[frozenset[str] | None] = frozenset({"en"})
    #: whether init_app must refuse to start without PHONEVERIFY_EXTERNAL_URL (a vendor that
    #: signs the address it requested needs the address as the world sees it)
    needs_external_url: ClassVar[bool] = False
    #: spoken style: whether the call speaks the code only after a key a machine does not
    #: press (and never to an answering machine it detects); init_app warns otherwise
    voicemail_safe: ClassVar[bool] = False
    #: encrypts what a call must carry and get back (a spoken code inside a signed address);
    #: init_app sets it, with a key derived from SECRET_KEY, before any call
    sealer: Sealer | None = None
    #: core settings under this provider's prefix that are about it (the simulated
    #: phone's PHONEVERIFY_DEV_PHONE); any other core setting there refuses the name
    core_settings: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self, options: Mapping[str, Any], *, style: Style, pin_length: int, app_name: str
    ) -> None:
        """Keep the checked options; raise :class:`ConfigError` for what does not fit together.

        Nothing may touch the network here: init_app builds providers.
        """
        self.options = dict(options)
        self.style = style
        self.pin_length = pin_length
        self.app_name = app_name

    @classmethod
    def option_key(cls, option: str) -> str:
        """The full setting name of one of this provider's options."""
        return f"PHONEVERIFY_{cls.name.upper()}_{option.upper()}"

    # -- calls ---------------------------------------------------------------
    def place_call(self, request: CallRequest) -> CallTicket:
        """Place the call ``request`` describes; the ticket's reference is how it is followed.
        Raises the ProviderError family when the call cannot be placed."""
        raise NotImplementedError

    def call_language(self, request: CallRequest) -> str:
        """The language this call speaks (a shipped one, e.g. ``fr``): the verification's
        when this provider can speak it, else English. Texts in it come from
        ``i18n.for_locale(language)``."""
        return spoken_language(request.locale, self.speaks)

    #: places its calls as rows of the extension's own store (the simulated phone): the
    #: flow then rings it with :meth:`ring` inside the step that admits the call, so a
    #: start is one transaction and a failed start leaves no call behind
    in_store: ClassVar[bool] = False

    def ring(self, tx: Tx, request: CallRequest, *, owner: str | None) -> CallTicket:
        """Place the call inside the store transaction ``tx`` (``in_store`` providers)."""
        raise NotImplementedError

    def announce(self, request: CallRequest) -> None:
        """Say where the call rang, once its transaction committed (``in_store`` providers)."""

    def call_status(self, call: PlacedCall) -> CallReport:
        """The call's progress now. Providers that are not polled never get asked."""
        return CallReport()

    def check_code(self, call: PlacedCall, pin: str) -> bool | None:
        """Ask the provider whether ``pin`` is right. None: this provider does not check."""
        return None

    # -- callbacks ------------------------------------------------------------
    def parse_callback(self, request: CallbackRequest) -> list[CallEvent]:
        """Turn a request the vendor made to our callback address into events.

        Raise :class:`~flask_phoneverify.errors.Forbidden` when a vendor that signs its
        requests did not sign this one (answered 403), a ProviderError for a body that
        cannot be read (answered 400)."""
        raise ProviderProtocolError(gettext("This provider does not post call events."))

    def callback_reply(
        self, request: CallbackRequest, results: Sequence[tuple[CallEvent, EventResult]]
    ) -> CallbackReply:
        """The answer to ``request``, once its events were applied (``results``, in order)."""
        return CallbackReply()

    # -- bridge to a person ------------------------------------------------------
    @property
    def can_bridge(self) -> bool:
        """True when :meth:`bridge` may be offered (a support line is configured)."""
        return False

    def bridge(self, number: str) -> str:
        """Connect ``number`` (E.164) to the configured support line; returns a reference.
        It never verifies anyone."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the provider's network clients (its httpx client, its SOAP session).

        Called once, when the app is torn down; the provider is not used after it."""


def timeout_setting(name: str, vendor: str) -> Setting:
    """PHONEVERIFY_<NAME>_TIMEOUT: every network provider has one, 10 s by default."""
    return Setting(
        f"PHONEVERIFY_{name.upper()}_TIMEOUT",
        10.0,
        "float",
        f"Seconds to wait for {vendor} to connect and to answer.",
        minimum=0.05,
        maximum=120,
    )


def check_url(key: str, value: object, example: str) -> str:
    """``value`` as an http(s) address (without a trailing slash), or ConfigError naming ``key``."""
    url = str(value or "").strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(key, f"is {value!r}", f"use an http(s) address such as {example!r}")
    return url.rstrip("/")
