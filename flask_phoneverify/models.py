"""The store: two tables, ``phoneverify_verifications`` and ``phoneverify_events``.

They are declared on the extension's own metadata. When the app passes its
Flask-SQLAlchemy ``db``, the tables are also added to ``db.metadata``, so
``db.create_all()`` and Flask-Migrate/Alembic see them, and the store uses
``db.engine``; otherwise the store opens its own SQLite file in the instance
folder (or PHONEVERIFY_DATABASE_URI) and creates the tables on first use.

The store writes through its own connections and commits each step at once, so
it never commits (or rolls back) the app's own session, and a provider failure
never leaves a half-written verification.

Times are UNIX seconds (float) from the extension's clock, so tests can move
time without sleeping.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Float, Index, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["Base", "Verification", "Event", "OPEN", "STATUSES"]

OPEN = "calling"
STATUSES = ("calling", "verified", "failed", "expired", "locked", "canceled")


class Base(DeclarativeBase):
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
    status: Mapped[str] = mapped_column(String(16), default=OPEN)
    call: Mapped[str] = mapped_column(String(16), default="queued")
    call_id: Mapped[str] = mapped_column(String(50), unique=True)  # random per call, ours
    provider_ref: Mapped[str | None] = mapped_column(String(255), nullable=True)
    pin_hash: Mapped[str] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    sends: Mapped[int] = mapped_column(Integer, default=1)
    session_ref: Mapped[str] = mapped_column(String(64))  # hash of the asking session's nonce
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)  # readable, for the user
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    polled_at: Mapped[float] = mapped_column(Float, default=0.0)
    event_at: Mapped[float] = mapped_column(Float, default=0.0)  # last callback event
    verified_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    claimed_at: Mapped[float | None] = mapped_column(Float, nullable=True)  # session marked

    @property
    def is_open(self) -> bool:
        return self.status == OPEN


class Event(Base):
    """The audit trail, and what the limits count (calls, wrong PINs)."""

    __tablename__ = "phoneverify_events"
    __table_args__ = (
        Index("ix_phoneverify_events_kind_at", "kind", "at"),
        Index("ix_phoneverify_events_user", "user_id", "kind", "at"),
        Index("ix_phoneverify_events_phone", "phone", "kind", "at"),
        Index("ix_phoneverify_events_ip", "ip", "kind", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(32))
    verification_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    user_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    phone: Mapped[str | None] = mapped_column(String(20), nullable=True)
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)  # never a PIN or a secret
