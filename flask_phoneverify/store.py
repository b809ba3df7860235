"""Database access for the flow: one short transaction per step.

A flow step hands :meth:`Store.write` (or :meth:`Store.read`) a function of a
:class:`Tx`; the function does the step's reads, writes and audit event, and they
commit together or not at all. A step never keeps a transaction open across a
provider call. A step that meets a connection dropped by a database restart is
run once more on a fresh connection.

Every state change is one ``UPDATE ... WHERE id = ? AND status = 'calling'`` (or a
similar guard), so two requests racing for the same verification cannot both win:
the caller learns from the row count whether its change happened.

Write steps take the database's write lock first on SQLite (``BEGIN IMMEDIATE`` on
the store's own engine), so a step's reads and writes see no other writer; on
PostgreSQL the limit counters' row locks serialise what must be serialised.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    and_,
    case,
    create_engine,
    delete,
    event,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from .models import Base, Counter, DevCallRow, Event, Relayed, Status, Verification

__all__ = ["Store", "Tx"]

log = logging.getLogger("flask_phoneverify")

T = TypeVar("T")

V: Table = Verification.__table__  # type: ignore[assignment]
E: Table = Event.__table__  # type: ignore[assignment]
C: Table = Counter.__table__  # type: ignore[assignment]
R: Table = Relayed.__table__  # type: ignore[assignment]
D: Table = DevCallRow.__table__  # type: ignore[assignment]
_COLUMNS = tuple(col.name for col in V.columns)


class Tx:
    """The operations of one step, on the connection of its transaction."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # -- verifications -------------------------------------------------------------
    def get(self, verification_id: str) -> Verification | None:
        row = self.conn.execute(select(V).where(V.c.id == verification_id)).first()
        return None if row is None else _verification(row._mapping)

    def by_call_id(self, provider: str, call_id: str) -> Verification | None:
        row = self.conn.execute(
            select(V).where(V.c.call_id == call_id, V.c.provider == provider)
        ).first()
        return None if row is None else _verification(row._mapping)

    def add(self, v: Verification) -> None:
        self.conn.execute(insert(V).values({name: getattr(v, name) for name in _COLUMNS}))

    def change(
        self, verification_id: str, *, where: dict[str, Any] | None = None, **values: Any
    ) -> bool:
        """Set ``values`` when the row is open (and matches ``where``); True when it changed."""
        conditions = [V.c.id == verification_id, V.c.status == Status.CALLING.value]
        for name, expected in (where or {}).items():
            column = V.c[name]
            conditions.append(column.is_(None) if expected is None else column == expected)
        result = self.conn.execute(update(V).where(*conditions).values(**values))
        return bool(result.rowcount)

    def claim(self, verification_id: str, now: float) -> bool:
        """Mark a verified verification as taken into a session, once."""
        result = self.conn.execute(
            update(V)
            .where(
                V.c.id == verification_id,
                V.c.status == Status.VERIFIED.value,
                V.c.claimed_at.is_(None),
            )
            .values(claimed_at=now)
        )
        return bool(result.rowcount)

    def add_attempt(self, verification_id: str, max_attempts: int) -> tuple[int, str] | None:
        """Count one wrong PIN, locking at ``max_attempts``, in one statement.

        Returns (attempts, status) as this very update left them, or None when it did
        not count (no longer open). Only the update that locked sees status 'locked'."""
        row = self.conn.execute(
            update(V)
            .where(V.c.id == verification_id, V.c.status == Status.CALLING.value)
            .values(
                attempts=V.c.attempts + 1,
                status=case(
                    (V.c.attempts + 1 >= max_attempts, literal(Status.LOCKED.value)),
                    else_=V.c.status,
                ),
            )
            .returning(V.c.attempts, V.c.status)
        ).first()
        return None if row is None else (int(row[0]), str(row[1]))

    # -- events -------------------------------------------------------------------
    def record(self, kind: str, at: float, **fields: Any) -> None:
        self.conn.execute(insert(E).values(kind=str(kind), at=at, **fields))

    def rename_events(self, verification_id: str, kind: str, to: str, at: float) -> None:
        self.conn.execute(
            update(E)
            .where(E.c.verification_id == verification_id, E.c.kind == kind, E.c.at == at)
            .values(kind=to)
        )

    # -- counters -----------------------------------------------------------------
    def bump(self, scope: str, key: str, minute: int, by: int = 1) -> None:
        """Add ``by`` to one minute's count (creating the row)."""
        self._upsert(
            {"scope": scope, "key": key, "minute": minute, "n": max(by, 0)},
            {"n": C.c.n + by},
        )

    def counts(self, scope: str, key: str, first_minute: int) -> list[tuple[int, int]]:
        """(minute, count) of ``key`` from ``first_minute`` on, oldest first: at most the
        rows of one window, whatever the traffic."""
        rows = self.conn.execute(
            select(C.c.minute, C.c.n)
            .where(C.c.scope == scope, C.c.key == key, C.c.minute >= first_minute)
            .order_by(C.c.minute)
        )
        return [(int(m), int(n)) for m, n in rows]

    def swap_last(self, scope: str, key: str, at: float | None) -> float | None:
        """Set the time kept for ``key`` to ``at``; return the time it held before. The
        row stays locked until the transaction ends, serialising writers of ``key``."""
        if self.conn.dialect.name in ("sqlite", "postgresql"):
            row = self._upsert(
                {"scope": scope, "key": key, "minute": 0, "n": 0, "last_at": at},
                {"last_at": at, "prev_at": C.c.last_at},
                returning=True,
            )
            return row  # type: ignore[no-any-return]
        where = and_(C.c.scope == scope, C.c.key == key, C.c.minute == 0)
        prev = self.conn.execute(select(C.c.last_at).where(where).with_for_update()).first()
        if prev is None:
            self.conn.execute(insert(C).values(scope=scope, key=key, minute=0, n=0, last_at=at))
            return None
        self.conn.execute(update(C).where(where).values(last_at=at))
        return prev[0]  # type: ignore[no-any-return]

    def restore_last(self, scope: str, key: str, at: float) -> None:
        """Undo :meth:`swap_last` of ``at`` when nothing has replaced it since."""
        self.conn.execute(
            update(C)
            .where(C.c.scope == scope, C.c.key == key, C.c.minute == 0, C.c.last_at == at)
            .values(last_at=C.c.prev_at)
        )

    def _upsert(
        self, values: dict[str, Any], on_conflict: dict[str, Any], *, returning: bool = False
    ) -> Any:
        name = self.conn.dialect.name
        keys = ["scope", "key", "minute"]
        if name in ("sqlite", "postgresql"):
            dialect_insert = sqlite.insert if name == "sqlite" else postgresql.insert
            stmt: Any = dialect_insert(C).values(values)
            stmt = stmt.on_conflict_do_update(index_elements=keys, set_=on_conflict)
            if returning:
                return self.conn.execute(stmt.returning(C.c.prev_at)).scalar()
            self.conn.execute(stmt)
            return None
        where = and_(*(C.c[k] == values[k] for k in keys))
        if not self.conn.execute(update(C).where(where).values(on_conflict)).rowcount:
            self.conn.execute(insert(C).values(values))
        return None

    # -- digits relayed once --------------------------------------------------------
    def first_relay(self, call_id: str, digits: str, at: float, key: bytes) -> bool:
        """True the first time these digits are relayed for this call, in any worker."""
        mark = hashlib.blake2b(f"{call_id}:{digits}".encode(), key=key[:64]).hexdigest()[:64]
        exists = self.conn.execute(select(R.c.key).where(R.c.key == mark)).first()
        if exists is not None:
            return False
        self.conn.execute(insert(R).values(key=mark, at=at))
        return True

    # -- the simulated phone ----------------------------------------------------------
    def dev_ring(self, row: dict[str, Any], keep: int) -> None:
        """A new call on the simulated phone; it ends the call ringing on that number."""
        self.conn.execute(
            update(D).where(D.c.number == row["number"], D.c.state != "ended").values(state="ended")
        )
        self.conn.execute(insert(D).values(row))
        newest_kept = self.conn.execute(
            select(D.c.seq).order_by(D.c.seq.desc()).offset(keep - 1).limit(1)
        ).scalar()
        if newest_kept is not None:
            self.conn.execute(delete(D).where(D.c.seq < newest_kept))

    def dev_calls(self) -> list[dict[str, Any]]:
        rows = self.conn.execute(select(D).order_by(D.c.seq))
        return [dict(row._mapping) for row in rows]

    def dev_call(self, call_id: str) -> dict[str, Any] | None:
        row = self.conn.execute(select(D).where(D.c.id == call_id)).first()
        return None if row is None else dict(row._mapping)

    def dev_set_state(self, call_id: str, state: str, *, unless: str | None = None) -> bool:
        conditions = [D.c.id == call_id]
        if unless is not None:
            conditions.append(D.c.state != unless)
        return bool(self.conn.execute(update(D).where(*conditions).values(state=state)).rowcount)


class Store:
    """The extension's database: the app's engine, or an engine of its own."""

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
        """An ORM session on the store's engine, for reports and tests."""
        return Session(self.engine, expire_on_commit=False)

    def get(self, verification_id: str) -> Verification | None:
        """One verification as stored now (reports, the CLI and tests)."""
        return self.read(lambda tx: tx.get(verification_id))

    def by_call_id(self, provider: str, call_id: str) -> Verification | None:
        return self.read(lambda tx: tx.by_call_id(provider, call_id))

    def events(self, verification_id: str) -> list[Event]:
        """One verification's audit events, oldest first."""
        with self.session() as s:
            return list(
                s.scalars(
                    select(Event).where(Event.verification_id == verification_id).order_by(Event.id)
                )
            )

    def write(self, step: Callable[[Tx], T]) -> T:
        """Run ``step`` in one write transaction; it commits when ``step`` returns."""
        return self._run(step, write=True)

    def read(self, step: Callable[[Tx], T]) -> T:
        """Run ``step`` in one read-only transaction."""
        return self._run(step, write=False)

    def _run(self, step: Callable[[Tx], T], *, write: bool) -> T:
        for attempt in (1, 2):
            try:
                with self._transaction(write) as conn:
                    return step(Tx(conn))
            except DBAPIError as e:
                if attempt == 2 or not e.connection_invalidated:
                    raise
                log.warning("phoneverify: database connection lost; trying once more")
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[Connection]:
        engine = self.engine
        with engine.connect() as conn:
            if not write:
                yield conn  # begins on first use, rolled back on close
                return
            sqlite_db = engine.dialect.name == "sqlite"
            if sqlite_db and self._own is not None:
                conn.info["phoneverify_immediate"] = True
            with conn.begin():
                if sqlite_db and self._own is None:
                    # The app's SQLite engine: a first write takes the write lock, so the
                    # step's reads see no other writer (what BEGIN IMMEDIATE does).
                    conn.execute(update(C).where(literal(False)).values(n=C.c.n))
                yield conn


def _verification(row: Any) -> Verification:
    return Verification(**{name: row[name] for name in _COLUMNS})


def _create_tables(engine: Engine, tries: int = 10) -> None:
    """Create the tables that are missing. Workers starting together on a fresh database
    race between checking and creating; the loser checks again."""
    for attempt in range(tries):
        try:
            with engine.connect() as conn:
                conn.info["phoneverify_immediate"] = engine.dialect.name == "sqlite"
                with conn.begin():
                    Base.metadata.create_all(conn)
            return
        except DBAPIError:
            if attempt == tries - 1:
                raise


def _make_engine(uri: str) -> Engine:
    if uri.startswith("sqlite:///") and uri != "sqlite:///:memory:":
        folder = os.path.dirname(uri[len("sqlite:///") :])
        if folder:
            os.makedirs(folder, exist_ok=True)
    if uri.startswith("sqlite"):
        engine = create_engine(uri, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # the store says when transactions begin
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints, never torn
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            immediate = conn.info.pop("phoneverify_immediate", False)  # a write step
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    return create_engine(uri, pool_pre_ping=True)
