"""Database access for the flow: short transactions, conditional updates.

Every state change is one ``UPDATE ... WHERE id = ? AND status = 'calling'``
(or a similar guard), so two requests racing for the same verification cannot
both win: the caller learns from the row count whether its change happened.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, create_engine, delete, event, func, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from .models import OPEN, Base, Event, Verification

__all__ = ["Store"]


class Store:
    def __init__(
        self, *, shared: Callable[[], Engine] | None = None, uri: str | None = None
    ) -> None:
        """Either ``shared``: the app's engine (Flask-SQLAlchemy's ``db.engine``, resolved
        on each use since it needs an app context; its tables are the app's to create), or
        ``uri``: an engine of the store's own, opened with its tables on first use."""
        if (shared is None) == (uri is None):
            raise ValueError("give Store either shared= or uri=")
        self._shared = shared
        self._uri = uri
        self._own: Engine | None = None
        self._lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        if self._shared is not None:
            return self._shared()
        if self._own is None:
            with self._lock:
                if self._own is None:
                    assert self._uri is not None
                    engine = _make_engine(self._uri)
                    _create_tables(engine)
                    self._own = engine
        return self._own

    def close(self) -> None:
        """Close the connections of an engine the store opened itself."""
        with self._lock:
            if self._own is not None:
                self._own.dispose()
                self._own = None

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # -- verifications -------------------------------------------------------------
    def add(self, v: Verification) -> None:
        with self.session() as s, s.begin():
            s.add(v)

    def get(self, verification_id: str) -> Verification | None:
        with self.session() as s:
            return s.get(Verification, verification_id)

    def by_call_id(self, provider: str, call_id: str) -> Verification | None:
        with self.session() as s:
            return s.scalars(
                select(Verification).where(
                    Verification.call_id == call_id, Verification.provider == provider
                )
            ).first()

    def change(
        self, verification_id: str, *, where: dict[str, Any] | None = None, **values: Any
    ) -> bool:
        """Set ``values`` when the row is open (and matches ``where``); True when it changed."""
        conditions = [Verification.id == verification_id, Verification.status == OPEN]
        for name, expected in (where or {}).items():
            column = getattr(Verification, name)
            conditions.append(column.is_(None) if expected is None else column == expected)
        with self.session() as s, s.begin():
            result = s.execute(update(Verification).where(*conditions).values(**values))
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def claim(self, verification_id: str, now: float) -> bool:
        """Mark a verified verification as taken into a session, once."""
        with self.session() as s, s.begin():
            result = s.execute(
                update(Verification)
                .where(
                    Verification.id == verification_id,
                    Verification.status == "verified",
                    Verification.claimed_at.is_(None),
                )
                .values(claimed_at=now)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def add_attempt(self, verification_id: str, max_attempts: int) -> tuple[int, str] | None:
        """Count one wrong PIN, locking at ``max_attempts``, in one statement.

        Returns (attempts, status) as this very update left them, or None when it did
        not count (no longer open). Only the update that locked sees status 'locked'."""
        with self.session() as s, s.begin():
            row = s.execute(
                update(Verification)
                .where(Verification.id == verification_id, Verification.status == OPEN)
                .values(
                    attempts=Verification.attempts + 1,
                    status=func.coalesce(
                        _lock_when(Verification.attempts + 1 >= max_attempts), Verification.status
                    ),
                )
                .returning(Verification.attempts, Verification.status)
            ).first()
            return None if row is None else (int(row[0]), str(row[1]))

    # -- events -------------------------------------------------------------------
    def record(self, kind: str, at: float, **fields: Any) -> int:
        with self.session() as s, s.begin():
            row = Event(kind=kind, at=at, **fields)
            s.add(row)
            s.flush()
            return row.id

    def forget_event(self, event_id: int) -> None:
        with self.session() as s, s.begin():
            s.execute(delete(Event).where(Event.id == event_id))

    def window(
        self, kind: str, since: float, *, upto_id: int | None = None, **match: Any
    ) -> tuple[int, float | None]:
        """(how many ``kind`` events since ``since`` match, the oldest one's time)."""
        conditions = [Event.kind == kind, Event.at >= since]
        conditions += [getattr(Event, k) == v for k, v in match.items()]
        if upto_id is not None:
            conditions.append(Event.id <= upto_id)
        with self.session() as s:
            count, oldest = s.execute(
                select(func.count(Event.id), func.min(Event.at)).where(*conditions)
            ).one()
            return int(count), oldest

    def last_event_at(self, kind: str, **match: Any) -> float | None:
        conditions = [Event.kind == kind] + [getattr(Event, k) == v for k, v in match.items()]
        with self.session() as s:
            return s.scalar(select(func.max(Event.at)).where(*conditions))

    def events(self, verification_id: str) -> list[Event]:
        with self.session() as s:
            return list(
                s.scalars(
                    select(Event).where(Event.verification_id == verification_id).order_by(Event.id)
                )
            )


def _create_tables(engine: Engine, tries: int = 10) -> None:
    """Create the tables that are missing. Workers starting together on a fresh database
    race between checking and creating; the loser checks again."""
    for attempt in range(tries):
        try:
            Base.metadata.create_all(engine)
            return
        except DBAPIError:
            if attempt == tries - 1:
                raise


def _lock_when(condition: Any) -> Any:
    from sqlalchemy import case, literal

    return case((condition, literal("locked")), else_=None)


def _make_engine(uri: str) -> Engine:
    if uri.startswith("sqlite:///") and uri != "sqlite:///:memory:":
        folder = os.path.dirname(uri[len("sqlite:///") :])
        if folder:
            os.makedirs(folder, exist_ok=True)
    if uri.startswith("sqlite"):
        engine = create_engine(uri, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(uri, pool_pre_ping=True)
