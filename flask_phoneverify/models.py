"""The store's tables, and the statuses and event kinds kept in them.

- ``phoneverify_verifications``: one row per verification.
- ``phoneverify_events``: the audit trail (started, call_placed, confirmed...).
- ``phoneverify_counters``: what the limits count, per key and per minute, so a limit
  check reads at most one hour's worth of minute rows whatever the traffic.
- ``phoneverify_relayed``: digits a provider may report twice for one entry, kept as
  keyed hashes so every worker counts them once.
- ``phoneverify_dev_calls``: the simulated phone's calls, so every worker sees them.
- ``phoneverify_guard``: the fraud guard's word per country (last checked, paused until).
- ``phoneverify_recovery_codes``: each user's unused recovery codes, as keyed hashes.
- ``phoneverify_devices``: devices remembered after a phone confirmation, as keyed hashes
  of the ids their signed cookies carry.

They are declared on the extension's own metadata. When the app passes its
Flask-SQLAlchemy ``db``, the tables are also added to ``db.metadata``, so
``db.create_all()`` and Flask-Migrate/Alembic see them, and the store uses
``db.engine``; otherwise the store opens its own SQLite file in the instance
folder (or PHONEVERIFY_DATABASE_URI) and creates the tables on first use.

Times are UNIX seconds (float) from the extension's clock, so tests can move
time without sleeping.
"""

from __future__ import annotations

import enum

from sqlalchemy import Boolean, Float, Index, Integer, LargeBinary, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "Base",
    "Verification",
    "Event",
    "Counter",
    "Relayed",
    "DevCallRow",
    "GuardRow",
    "RecoveryCode",
    "Device",
    "Status",
    "EventKind",
]


class Status(enum.StrEnum):
    """A verification's status; it only moves forward from CALLING."""

    CALLING = "calling"
    VERIFIED = "verified"
    FAILED = "failed"
    EXPIRED = "expired"
    LOCKED = "locked"
    CANCELED = "canceled"


class EventKind(enum.StrEnum):
    """What an audit event records."""

    STARTED = "started"
    RESENT = "resent"
    CALL_PLACED = "call_placed"
    CALL_FAILED = "call_failed"
    PROVIDER_ERROR = "provider_error"
    CONFIRMED = "confirmed"
    WRONG_PIN = "wrong_pin"
    LOCKED = "locked"
    EXPIRED = "expired"
    CANCELED = "canceled"
    REFUSED = "refused"
    BRIDGE = "bridge"
    #: a call the limits counted
    CALL = "call"
    #: a counted call that was never placed (the provider refused it): no longer counted
    CALL_RELEASED = "call_released"
    #: a provider failed to place the call through its own fault; the next one places it
    FAILOVER = "failover"
    #: an operator cleared the budgets and cool-downs of a number, user, IP or country
    RESET = "reset"
    #: the fraud guard paused calls to a country
    COUNTRY_PAUSED = "country_paused"
    #: a new set of recovery codes (the old set is gone)
    RECOVERY_CODES = "recovery_codes"
    RECOVERY_USED = "recovery_used"
    RECOVERY_FAILED = "recovery_failed"
    #: a device remembered after a phone confirmation, a login it opened, devices forgotten
    DEVICE_REMEMBERED = "device_remembered"
    DEVICE_LOGIN = "device_login"
    DEVICES_FORGOTTEN = "devices_forgotten"


class Base(DeclarativeBase):
    """The extension's own declarative base, so its tables can join an app's metadata."""

    metadata = MetaData()


class Verification(Base):
    """One verification: a user proving one number, through one or more calls."""

    __tablename__ = "phoneverify_verifications"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255), index=True)
    phone: Mapped[str] = mapped_column(String(20))  # E.164
    enrol: Mapped[bool] = mapped_column(Boolean, default=False)  # a number typed by the user
    provider: Mapped[str] = mapped_column(String(32))
    style: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=Status.CALLING.value)
    call: Mapped[str] = mapped_column(String(16), default="queued")
    call_id: Mapped[str] = mapped_column(String(50), unique=True)  # random per call, ours
    provider_ref: Mapped[str | None] = mapped_column(String(255), nullable=True)
    pin_hash: Mapped[str] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    sends: Mapped[int] = mapped_column(Integer, default=1)
    session_ref: Mapped[str] = mapped_column(String(64), index=True)  # hash of the session nonce
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)  # who asked, for release
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)  # readable, for the user
    created_at: Mapped[float] = mapped_column(Float)
    sent_at: Mapped[float] = mapped_column(Float, default=0.0)  # when the current call was counted
    expires_at: Mapped[float] = mapped_column(Float)
    polled_at: Mapped[float] = mapped_column(Float, default=0.0)
    event_at: Mapped[float] = mapped_column(Float, default=0.0)  # last callback event
    #: status requests of the current call that failed in a row (PHONEVERIFY_MAX_POLL_ERRORS)
    poll_errors: Mapped[int] = mapped_column(Integer, default=0)
    verified_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    claimed_at: Mapped[float | None] = mapped_column(Float, nullable=True)  # session marked
    #: the number's region ('US') or non-geographic code ('+881'): the fraud guard and
    #: the stats count per country
    country: Mapped[str | None] = mapped_column(String(8), nullable=True, default=None)
    #: the locale of the request that started it (``fr``, ``es_MX``): what its calls speak
    locale: Mapped[str | None] = mapped_column(String(35), nullable=True)

    __table_args__ = (Index("ix_phoneverify_verifications_country", "country", "created_at"),)

    @property
    def is_open(self) -> bool:
        """True while the verification may still change (status ``calling``)."""
        return self.status == Status.CALLING


class Event(Base):
    """The audit trail: every decision, with its time, user, number and IP; never a PIN."""

    __tablename__ = "phoneverify_events"
    __table_args__ = (
        Index("ix_phoneverify_events_kind_at", "kind", "at"),
        Index("ix_phoneverify_events_user", "user_id", "kind", "at"),
        Index("ix_phoneverify_events_phone", "phone", "kind", "at"),
        Index("ix_phoneverify_events_verification", "verification_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(32))
    verification_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    user_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    phone: Mapped[str | None] = mapped_column(String(20), nullable=True)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)  # never a PIN or a secret


class Counter(Base):
    """How many times ``scope``/``key`` was counted in one minute (``minute`` = at // 60).

    A limit sums at most the last sixty rows of its key, so its cost does not grow with
    traffic. Minute 0 of the ``last_call`` scope holds the time of the last call to a
    number (the cool-down), one row per number, updated in place: every start to that
    number locks it first, which is what serialises simultaneous starts to one number.
    """

    __tablename__ = "phoneverify_counters"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    minute: Mapped[int] = mapped_column(Integer, primary_key=True)
    n: Mapped[int] = mapped_column(Integer, default=0)
    last_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    prev_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Relayed(Base):
    """Digits already counted for one call (a keyed hash of call id and digits)."""

    __tablename__ = "phoneverify_relayed"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    at: Mapped[float] = mapped_column(Float, index=True)


class DevCallRow(Base):
    """One call on the simulated phone. A spoken call's PIN is kept only encrypted;
    a keypad call's PIN is not kept at all. Its state is not kept either: it is read
    from the verification whose current call it is (a call another one replaced, or
    whose verification closed, has ended)."""

    __tablename__ = "phoneverify_dev_calls"
    __table_args__ = (Index("ix_phoneverify_dev_calls_number", "number", "seq"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(16), unique=True)
    call_id: Mapped[str] = mapped_column(String(50))
    owner: Mapped[str | None] = mapped_column(String(255), nullable=True)  # the user called
    number: Mapped[str] = mapped_column(String(20))
    style: Mapped[str] = mapped_column(String(16))
    app_name: Mapped[str] = mapped_column(String(255))
    sealed_pin: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    locale: Mapped[str | None] = mapped_column(String(35), nullable=True)  # what the call says


class GuardRow(Base):
    """The fraud guard's state for one country (the key limits count countries under):
    when its conversion was last computed, and until when its calls are paused. Every
    worker reads it, so a pause holds across workers."""

    __tablename__ = "phoneverify_guard"

    country: Mapped[str] = mapped_column(String(8), primary_key=True)
    checked_at: Mapped[float] = mapped_column(Float, default=0.0)
    until: Mapped[float | None] = mapped_column(Float, nullable=True)
    calls: Mapped[int] = mapped_column(Integer, default=0)  # ended verifications counted
    conversion: Mapped[float | None] = mapped_column(Float, nullable=True)


class RecoveryCode(Base):
    """One unused recovery code of a user, kept only as a keyed hash; using it deletes the
    row (one conditional DELETE), so a code works once."""

    __tablename__ = "phoneverify_recovery_codes"

    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[float] = mapped_column(Float)


class Device(Base):
    """A device remembered for a user and the number confirmed on it: its signed cookie
    carries a random id, kept here only as a keyed hash, so deleting the row revokes the
    cookie (``forget_remembered_devices``, a changed number)."""

    __tablename__ = "phoneverify_devices"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255), index=True)
    number_tag: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    used_at: Mapped[float | None] = mapped_column(Float, nullable=True)
