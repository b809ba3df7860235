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

import functools
import hashlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    Float,
    Integer,
    Table,
    and_,
    bindparam,
    case,
    cast,
    create_engine,
    delete,
    event,
    exists,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import Session, configure_mappers
from sqlalchemy.orm.base import manager_of_class

from .models import (
    Base,
    Counter,
    DevCallRow,
    Device,
    Event,
    GuardRow,
    RecoveryCode,
    Relayed,
    Status,
    Verification,
)
from .prepared import Prepared, after_inserts, execute, row_params

__all__ = ["Recheck", "Store", "Tx", "Window", "Within", "detached"]

log = logging.getLogger("flask_phoneverify")

T = TypeVar("T")

V: Table = Verification.__table__  # type: ignore[assignment]
E: Table = Event.__table__  # type: ignore[assignment]
C: Table = Counter.__table__  # type: ignore[assignment]
R: Table = Relayed.__table__  # type: ignore[assignment]
D: Table = DevCallRow.__table__  # type: ignore[assignment]
G: Table = GuardRow.__table__  # type: ignore[assignment]
RC: Table = RecoveryCode.__table__  # type: ignore[assignment]
DV: Table = Device.__table__  # type: ignore[assignment]
_COLUMNS = tuple(col.name for col in V.columns)
_NO_EVENT = {"verification_id": None, "user_id": None, "phone": None, "ip": None, "detail": None}


_GET = Prepared(select(V).where(V.c.id == bindparam("vid")))
_BY_CALL = Prepared(
    select(V).where(V.c.call_id == bindparam("call_id"), V.c.provider == bindparam("provider"))
)

_ADD = Prepared(insert(V), keyed=True)
_PLACED = Prepared(
    update(V)
    .where(
        V.c.id == bindparam("vid"),
        V.c.call_id == bindparam("cid"),
        V.c.status == Status.CALLING.value,
    )
    .values(
        provider_ref=bindparam("ref"),
        call=case((V.c.call == "queued", bindparam("progress")), else_=V.c.call),
    )
    .returning(V.c.call)
)

_CLAIM = Prepared(
    update(V)
    .where(
        V.c.id == bindparam("vid"),
        V.c.status == Status.VERIFIED.value,
        V.c.claimed_at.is_(None),
        V.c.expires_at > bindparam("now"),
    )
    .values(claimed_at=bindparam("now"))
)

#: this verification (``vid``) of this user (``uid``) and session (``sref``), before its
#: end (``now``): what a one-statement claim or confirm asks of the row
_OWN_IN_TIME = (
    V.c.id == bindparam("vid"),
    V.c.user_id == bindparam("uid"),
    V.c.session_ref == bindparam("sref"),
    V.c.expires_at > bindparam("now"),
)

_CLAIM_OWN = Prepared(
    update(V)
    .where(*_OWN_IN_TIME, V.c.status == Status.VERIFIED.value, V.c.claimed_at.is_(None))
    .values(claimed_at=bindparam("now"))
    .returning(*V.c)
)


@functools.lru_cache(maxsize=16)
def _confirm_own(providers: tuple[str, ...], dialect: str) -> Prepared:
    """:meth:`Tx.confirm_own`'s statement for the providers whose spoken PINs are
    checked here alone; on PostgreSQL with its audit event in the WITH clause (the
    event's verification, user and number taken from the updated row)."""
    confirmed = (
        update(V)
        .where(
            *_OWN_IN_TIME,
            V.c.status == Status.CALLING.value,
            V.c.style == bindparam("b_style"),
            V.c.pin_hash == bindparam("b_pin_hash"),
            V.c.provider.in_([literal(name) for name in providers]),
        )
        .values(
            status=Status.VERIFIED.value,
            verified_at=bindparam("now"),
            claimed_at=bindparam("now"),
            reason=None,
        )
        .returning(*V.c)
    )
    if dialect != "postgresql":
        return Prepared(confirmed)
    changed = confirmed.cte("changed")
    event = select(
        bindparam("now", type_=E.c.at.type),
        bindparam("kind", type_=E.c.kind.type),
        changed.c.id,
        changed.c.user_id,
        changed.c.phone,
    )
    columns = ["at", "kind", "verification_id", "user_id", "phone"]
    recorded = insert(E).from_select(columns, event).cte("recorded")
    return Prepared(select(changed).add_cte(recorded), writes=True)


_ADD_ATTEMPT = Prepared(
    update(V)
    .where(V.c.id == bindparam("vid"), V.c.status == Status.CALLING.value)
    .values(
        attempts=V.c.attempts + 1,
        status=case(
            (V.c.attempts + 1 >= bindparam("max_attempts"), literal(Status.LOCKED.value)),
            else_=V.c.status,
        ),
    )
    .returning(V.c.attempts, V.c.status)
)

_RECORD = Prepared(insert(E).inline(), keyed=True)  # no RETURNING of the new id
#: a statement that only carries inserts (:meth:`Tx.flush`)
_NOTHING = Prepared(select(literal(1)))


def _either(pairs: int) -> Any:
    """(scope, key) is one of ``pairs`` pairs given as ``s0``/``k0``, ``s1``/``k1``..."""
    return or_(
        *(
            and_(C.c.scope == bindparam(f"s{i}"), C.c.key == bindparam(f"k{i}"))
            for i in range(pairs)
        )
    )


@functools.cache
def _counts(pairs: int) -> Any:
    """The window query for ``pairs`` (scope, key) pairs, built once per pair count (an
    expanding IN of tuples would be rendered again on every call)."""
    return Prepared(
        select(C.c.scope, C.c.key, C.c.minute, C.c.n)
        .where(_either(pairs), C.c.minute >= bindparam("first"))
        .order_by(C.c.minute)
    )


def _upserts() -> tuple[dict[str, Any], dict[str, Any]]:
    """The counters' upserts, for the dialects that have them: one adds to counts; the
    other also swaps a kept time (its rows with a time set it and answer the one before,
    the others keep theirs)."""
    bump: dict[str, Any] = {}
    both: dict[str, Any] = {}
    for name, dialect_insert in (("sqlite", sqlite.insert), ("postgresql", postgresql.insert)):
        stmt = dialect_insert(C)
        bump[name] = Prepared(
            stmt.on_conflict_do_update(
                index_elements=["scope", "key", "minute"], set_={"n": C.c.n + stmt.excluded.n}
            ),
            keyed=True,
        )
        both[name] = Prepared(
            _swapping(stmt).returning(C.c.scope, C.c.key, C.c.minute, C.c.n, C.c.prev_at),
            keyed=True,
        )
    return bump, both


def _swapping(stmt: Any) -> Any:
    """The counters' upsert that also swaps a kept time (see :func:`_upserts`)."""
    given = stmt.excluded.last_at
    return stmt.on_conflict_do_update(
        index_elements=["scope", "key", "minute"],
        set_={
            "n": C.c.n + stmt.excluded.n,
            "last_at": func.coalesce(given, C.c.last_at),
            "prev_at": case((given.is_not(None), C.c.last_at), else_=C.c.prev_at),
        },
    )


_UPSERT, _UPSERT_SWAP = _upserts()  # the swapping one answers every row it wrote
_ROW_KEYS = ("scope", "key", "minute", "n", "last_at")


#: what a start's one statement makes its database say when its own reading cannot prove
#: every limit met (the statement fails, so it changed nothing; see :class:`Within`)
RECHECK = "phoneverify: limits need a second look"


@functools.lru_cache(maxsize=64)
def _swap_and_look(count: int, pairs: int) -> Prepared:
    """PostgreSQL: the swapping upsert of ``count`` rows and, in the same statement, the
    rows of ``pairs`` (scope, key) pairs from the first minute on and their minute-0
    rows, as the statement's snapshot holds them: before its own changes and before any
    row lock it waited for. Its rows: ``seen`` 0 for a row the upsert wrote, as it left
    it; 1 for a row read."""
    written = _UPSERT_SWAP["postgresql"].of_rows(_ROW_KEYS, count).cte("written")
    both = union_all(
        select(
            literal(0).label("seen"),
            written.c.scope,
            written.c.key,
            written.c.minute,
            written.c.n,
            written.c.prev_at,
        ),
        select(
            literal(1).label("seen"),
            C.c.scope,
            C.c.key,
            C.c.minute,
            C.c.n,
            null().label("prev_at"),
        ).where(_either(pairs), or_(C.c.minute >= bindparam("first"), C.c.minute == 0)),
    ).subquery("both")
    return Prepared(select(both).order_by(both.c.seen, both.c.minute), writes=True)


@functools.lru_cache(maxsize=64)
def _count_within(count: int, pairs: int, budgets: int, failures: bool) -> Prepared:
    """PostgreSQL: :func:`_swap_and_look`'s upsert and reading, judged by the server: the
    statement answers nothing and succeeds only when that reading proves every limit of
    :class:`Within` met, as :meth:`Limits.reserve_call` would judge it; otherwise the
    server's cast of :data:`RECHECK` to a number fails it.

    Proven: each budget's window plus its anchor's growth (the calls reserved since the
    snapshot, this one included; at least one) within its limit; the wrong-PIN anchor
    unchanged and its window under its cap; the kept time (the upsert's first row, as it
    was after its lock) at least the cool-down old."""
    written = _UPSERT_SWAP["postgresql"].of_rows(_ROW_KEYS, count).cte("written")
    minute = C.c.minute
    seen = (
        select(
            C.c.scope,
            C.c.key,
            func.coalesce(func.sum(C.c.n).filter(minute >= bindparam("first")), 0).label("total"),
            func.coalesce(func.max(C.c.n).filter(minute == 0), 0).label("before"),
        )
        .where(_either(pairs), or_(minute >= bindparam("first"), minute == 0))
        .group_by(C.c.scope, C.c.key)
        .cte("seen")
    )

    def of(cte: Any, column: Any, i: int, *where: Any) -> Any:
        found = select(column).where(
            cte.c.scope == bindparam(f"s{i}"), cte.c.key == bindparam(f"k{i}"), *where
        )
        return found.scalar_subquery()

    def grown(i: int) -> Any:
        after = of(written, written.c.n, i, written.c.minute == 0)
        return after - func.coalesce(of(seen, seen.c.before, i), 0)

    def total(i: int) -> Any:
        return func.coalesce(of(seen, seen.c.total, i), 0)

    proofs = {
        str(i): and_(grown(i) >= 1, total(i) + grown(i) <= bindparam(f"lim{i}"))
        for i in range(budgets)
    }
    if failures:
        proofs["f"] = and_(grown(budgets) == 0, total(budgets) < bindparam(f"lim{budgets}"))
    kept = select(written.c.prev_at).where(
        written.c.scope == bindparam("r0_scope", type_=C.c.scope.type),
        written.c.key == bindparam("r0_key", type_=C.c.key.type),
        written.c.minute == 0,
    )
    last = kept.scalar_subquery()
    now, cooldown = bindparam("now", type_=Float), bindparam("cooldown", type_=Float)
    proofs["c"] = or_(last.is_(None), now - last >= cooldown)
    # the message names what was not proven: a budget's index, "f" failures, "c" cool-down
    unproven: Any = literal(RECHECK + ":")
    for name, proof in proofs.items():
        unproven = unproven + case((proof, ""), else_=" " + name)
    proven = case((and_(*proofs.values()), "1"), else_=unproven)
    return Prepared(select(cast(proven, Integer)).add_cte(written), writes=True)


_NEWER = D.alias("newer")
_DEV_CALLS = (
    select(
        D,
        V.c.status.label("v_status"),
        V.c.call.label("v_call"),
        exists().where(_NEWER.c.number == D.c.number, _NEWER.c.seq > D.c.seq).label("superseded"),
    )
    .select_from(D.outerjoin(V, V.c.call_id == D.c.call_id))
    .order_by(D.c.seq.desc())
)
_DEV_NEWEST = _DEV_CALLS.limit(bindparam("b_count"))
_DEV_TO_NUMBER = _DEV_NEWEST.where(D.c.number == bindparam("b_number"))
_DEV_ONE = Prepared(_DEV_CALLS.where(D.c.id == bindparam("b_id")))
_DEV_LISTS = {
    (False, False): Prepared(_DEV_NEWEST),
    (True, False): Prepared(_DEV_TO_NUMBER),
    (False, True): Prepared(_DEV_NEWEST.where(D.c.owner == bindparam("b_owner"))),
    (True, True): Prepared(_DEV_TO_NUMBER.where(D.c.owner == bindparam("b_owner"))),
}
_DEV_RING = Prepared(insert(D), keyed=True)
_OPEN_OF_SESSION = select(V).where(
    V.c.session_ref == bindparam("b_sref"), V.c.status == Status.CALLING.value
)
_OWNER = Prepared(select(V.c.user_id).where(V.c.call_id == bindparam("b_call_id")))
_DEV_TRIM = Prepared(
    delete(D).where(D.c.seq <= select(func.max(D.c.seq)).scalar_subquery() - bindparam("b_keep"))
)
#: the counters' scope of the providers' circuit breakers
BREAKER = "breaker"
_BREAKERS = Prepared(
    select(C.c.key, C.c.n, C.c.last_at).where(C.c.scope == BREAKER, C.c.minute == 0)
)
_BREAKER = select(C.c.n, C.c.last_at).where(
    C.c.scope == BREAKER, C.c.key == bindparam("b_key"), C.c.minute == 0
)
_BREAKER_OPEN = (
    update(C)
    .where(C.c.scope == BREAKER, C.c.key == bindparam("b_key"), C.c.minute == 0)
    .values(last_at=bindparam("b_until"))
)
_BREAKER_RESET = (
    update(C)
    .where(C.c.scope == BREAKER, C.c.key == bindparam("b_key"), C.c.minute == 0, C.c.n != 0)
    .values(n=0, last_at=None)
)


@functools.lru_cache(maxsize=64)
def _change(shape: tuple[tuple[str, ...], tuple[tuple[str, bool], ...]]) -> Any:
    """The UPDATE of :meth:`Tx.change` for one shape (the columns set, the columns
    compared and which of them must be NULL), built once per shape."""
    names, compared = shape
    conditions = [V.c.id == bindparam("b_vid"), V.c.status == Status.CALLING.value]
    for name, is_null in compared:
        column = V.c[name]
        conditions.append(column.is_(None) if is_null else column == bindparam(f"w_{name}"))
    return Prepared(update(V).where(*conditions).values({n: bindparam(f"v_{n}") for n in names}))


@functools.lru_cache(maxsize=64)
def _change_recording(
    shape: tuple[tuple[str, ...], tuple[tuple[str, bool], ...]], keys: tuple[str, ...], count: int
) -> Prepared:
    """PostgreSQL: :func:`_change` and the ``count`` audit events it writes when it changed
    the row, as one statement answering how many rows it changed (the UPDATE and the
    INSERT in its WITH clause, the events selected from the UPDATE's rows: none changed,
    no event)."""
    changed = _change(shape).stmt.returning(V.c.id).cte("changed")
    rows = [
        select(*(bindparam(f"r{i}_{k}", type_=E.c[k].type).label(k) for k in keys)).select_from(
            changed
        )
        for i in range(count)
    ]
    source = rows[0] if count == 1 else union_all(*rows)
    recorded = insert(E).from_select(list(keys), source).cte("recorded")
    return Prepared(select(func.count()).select_from(changed).add_cte(recorded), writes=True)


Key = tuple[str, str]


@dataclass(frozen=True)
class Within:
    """Limits a start's one statement proves from what it reads (see
    :meth:`Tx.count_within`): ``limits``, the hourly limit of each budget (the first keys
    read, in order); ``failures_cap``, the wrong-PIN cap of the key after them (None: not
    checked); the cool-down (seconds, 0 for none) of the kept time swapped at ``now``."""

    limits: tuple[int, ...]
    failures_cap: int | None
    now: float
    cooldown: float


class Recheck(Exception):
    """A step's one statement could not prove its limits met from its own reading, so it
    failed and changed nothing: run the step again with :meth:`Store.write`, where the
    limits are read again, exactly. ``keys``: the (scope, key)s it could not prove."""

    def __init__(self, keys: tuple[Key, ...] = ()) -> None:
        super().__init__(*keys)
        self.keys = keys


@dataclass(frozen=True)
class Window:
    """What :meth:`Tx.bump_and_look` read of some (scope, key)s' counters.

    ``rows``: each key's (minute, count) rows from the first minute on, oldest first.
    ``exact``: read after the bump, with every row lock it took held, so they hold every
    committed change and the bump's own. Otherwise (PostgreSQL, read by the bump's own
    statement) they are as of the statement's start: before its own changes and before
    any lock it waited for; ``before`` and ``after`` then hold each key's minute-0 count
    as read that way and as the bump left it."""

    rows: dict[Key, list[tuple[int, int]]]
    exact: bool = True
    before: dict[Key, int] = field(default_factory=dict)
    after: dict[Key, int] = field(default_factory=dict)


def _counter_rows(
    rows: list[tuple[str, str, int, int]], swap: tuple[str, str, float] | None = None
) -> list[dict[str, Any]]:
    """The counters' upsert rows for ``rows`` (scope, key, minute, count to add), a row
    given twice merged (an upsert may touch a row once), in order; with ``swap``
    (scope, key, at) its kept-time row comes first and every row names ``last_at``."""
    merged: dict[tuple[str, str, int], int] = {}
    for s, k, m, by in rows:
        merged[(s, k, m)] = merged.get((s, k, m), 0) + by
    if swap is None:
        return [{"scope": s, "key": k, "minute": m, "n": by} for (s, k, m), by in merged.items()]
    scope, key, at = swap
    first = {"scope": scope, "key": key, "minute": 0, "n": 0, "last_at": at}
    return [first] + [
        {"scope": s, "key": k, "minute": m, "n": by, "last_at": None}
        for (s, k, m), by in merged.items()
    ]


def _event_rows(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Audit events as rows of the events table (every column but ``id``)."""
    return [{**_NO_EVENT, **e, "kind": str(e["kind"])} for e in events]


class Tx:
    """The operations of one step, on the connection of its transaction.

    The statements used on every verification are built once (module level, with bind
    parameters), so a step pays for executing them, not for building them.

    On PostgreSQL, rows the step inserts without needing an answer (a new verification,
    audit events, a simulated call) wait, and go to the server inside the step's next
    statement (see :func:`~flask_phoneverify.prepared.after_inserts`), or on their own
    before a statement that touches their tables, before the connection is used
    directly, and before the step commits. Each round trip to the server costs more than
    the statement it carries."""

    def __init__(self, conn: Connection, *, one_write: bool = False) -> None:
        self._conn = conn
        self._after: list[Callable[[], None]] = []
        #: a step of :meth:`Store.write_one` without a transaction around it (PostgreSQL):
        #: its first writing statement must be its only one
        self._one_write = one_write
        self._wrote = False
        self.dialect: str = conn.dialect.name
        #: rows waiting to be inserted, by keyed INSERT and columns (PostgreSQL)
        self._waiting: dict[tuple[Prepared, tuple[str, ...]], list[dict[str, Any]]] = {}

    @property
    def single(self) -> bool:
        """This step's one writing statement is its own transaction (PostgreSQL,
        :meth:`Store.write_one`): it commits when it ends."""
        return self._one_write

    @property
    def conn(self) -> Connection:
        """The step's connection, for statements of its own; the rows still waiting to be
        inserted are written first."""
        self.flush()
        return self._conn

    def run(self, prepared: Prepared, params: dict[str, Any] | list[dict[str, Any]]) -> Any:
        """Execute a :class:`Prepared` statement in this step (a list of rows to insert:
        as one multi-row INSERT)."""
        waiting = self._waiting
        if waiting and any(prepared.tables & insert.tables for insert, _ in waiting):
            self._writing()  # the waiting rows go first, in a statement of their own
            if prepared.writes:
                self._writing()  # a second: refused before either is sent
            self._send(_NOTHING, {})
            return execute(self._conn, prepared, params)
        if prepared.writes or waiting:
            self._writing()
        return self._send(prepared, params)

    def _send(self, prepared: Prepared, params: dict[str, Any] | list[dict[str, Any]]) -> Any:
        """Execute ``prepared`` carrying the rows waiting to be inserted."""
        waiting = self._waiting
        if not waiting:
            return execute(self._conn, prepared, params)
        self._waiting = {}
        inserts = tuple((insert, keys, len(rows)) for (insert, keys), rows in waiting.items())
        shape = None
        if prepared.keyed:  # its rows as a statement of their own (Prepared.of_rows)
            sets = params if isinstance(params, list) else [params]
            shape = (tuple(sets[0]), len(sets))
            params = row_params(sets, shape[0])
        assert isinstance(params, dict)
        params = dict(params)
        for j, ((_, keys), rows) in enumerate(waiting.items()):
            params.update(row_params(rows, keys, f"w{j}_"))
        return execute(self._conn, after_inserts(prepared, shape, inserts), params)

    def insert_later(self, prepared: Prepared, rows: list[dict[str, Any]]) -> None:
        """Insert ``rows`` (a keyed INSERT's, all with the same columns) with the step's
        next statement on PostgreSQL; now elsewhere. Rows of one INSERT keep their order."""
        if not rows:
            return
        if self.dialect != "postgresql":
            self.run(prepared, rows)
            return
        self._waiting.setdefault((prepared, tuple(rows[0])), []).extend(rows)

    def flush(self) -> None:
        """Insert the rows still waiting, in one statement."""
        if self._waiting:
            self._writing()
            self._send(_NOTHING, {})  # it touches no table: it carries them all

    def _writing(self) -> None:
        if self._one_write:
            if self._wrote:  # it runs as its own transaction: a second would not join it
                raise RuntimeError("a step of Store.write_one wrote a second statement")
            self._wrote = True

    def after_commit(self, func: Callable[[], None]) -> None:
        """Run ``func`` once this step's transaction has committed (signals, metrics): never
        for a step that rolled back, and once even when the store ran the step twice."""
        self._after.append(func)

    # -- verifications -------------------------------------------------------------
    def get(self, verification_id: str) -> Verification | None:
        """The verification ``verification_id``, or None."""
        row = self.run(_GET, {"vid": verification_id}).first()
        return None if row is None else detached(row._mapping)

    def by_call_id(self, provider: str, call_id: str) -> Verification | None:
        """The verification of ``provider`` whose current call is ``call_id``, or None."""
        row = self.run(_BY_CALL, {"call_id": call_id, "provider": provider}).first()
        return None if row is None else detached(row._mapping)

    def open_of_user(self, user_id: str) -> list[Verification]:
        """The user's open verifications (to lock them all at the failure cap)."""
        rows = self.conn.execute(
            select(V).where(V.c.user_id == user_id, V.c.status == Status.CALLING.value)
        )
        return [detached(row._mapping) for row in rows]

    def open_of_session(self, session: str) -> list[Verification]:
        """A login session's open verifications (to end them at logout)."""
        rows = self.conn.execute(_OPEN_OF_SESSION, {"b_sref": session})
        return [detached(row._mapping) for row in rows]

    def add(self, v: Verification) -> None:
        """Insert a new verification."""
        self.insert_later(_ADD, [{name: getattr(v, name) for name in _COLUMNS}])

    def change(
        self, verification_id: str, *, where: dict[str, Any] | None = None, **values: Any
    ) -> bool:
        """Set ``values`` when the row is open (and matches ``where``); True when it changed."""
        return self.change_recording(verification_id, (), where=where, **values)

    def change_recording(
        self,
        verification_id: str,
        events: Sequence[dict[str, Any]],
        /,
        *,
        where: dict[str, Any] | None = None,
        **values: Any,
    ) -> bool:
        """:meth:`change`, and ``events`` (as :meth:`record` takes them) recorded when it
        changed the row: both or neither, in one statement on PostgreSQL."""
        where = where or {}
        shape = (tuple(values), tuple((k, v is None) for k, v in where.items()))
        params: dict[str, Any] = {"b_vid": verification_id}
        params.update({f"w_{k}": v for k, v in where.items() if v is not None})
        params.update({f"v_{k}": v for k, v in values.items()})
        if events and self.dialect == "postgresql":
            rows = _event_rows(events)
            keys = tuple(rows[0])
            params.update(row_params(rows, keys))
            return bool(self.run(_change_recording(shape, keys, len(rows)), params).scalar())
        changed = bool(self.run(_change(shape), params).rowcount)
        if changed and events:
            self.record(*events)
        return changed

    def placed(self, verification_id: str, call_id: str, reference: str, call: str) -> str | None:
        """Keep a placed call's reference, and its progress unless an event already moved
        it on; the progress now stored, or None when the call is no longer current."""
        row = self.run(
            _PLACED,
            {"vid": verification_id, "cid": call_id, "ref": reference, "progress": call},
        ).first()
        return None if row is None else str(row[0])

    def expire_unclaimed(self, verification_id: str, reason: str) -> bool:
        """A confirmation never taken into a session before the verification's end has
        expired with it (the only move away from 'verified')."""
        result = self.conn.execute(
            update(V)
            .where(
                V.c.id == verification_id,
                V.c.status == Status.VERIFIED.value,
                V.c.claimed_at.is_(None),
            )
            .values(status=Status.EXPIRED.value, reason=reason)
        )
        return bool(result.rowcount)

    def claim(self, verification_id: str, now: float) -> bool:
        """Mark a verified verification as taken into a session, once."""
        return bool(self.run(_CLAIM, {"vid": verification_id, "now": now}).rowcount)

    def claim_own(
        self, verification_id: str, user_id: str, session: str, now: float
    ) -> Verification | None:
        """:meth:`claim` for this user and session in one statement; the verification as
        claimed, or None when it is not verified, not theirs or already claimed."""
        row = self.run(
            _CLAIM_OWN, {"vid": verification_id, "uid": user_id, "sref": session, "now": now}
        ).first()
        return None if row is None else detached(row._mapping)

    def confirm_own(
        self,
        verification_id: str,
        *,
        user_id: str,
        session: str,
        style: str,
        pin_hash: str,
        now: float,
        providers: tuple[str, ...],
        kind: str,
    ) -> Verification | None:
        """A typed PIN confirmed and claimed in one statement, with its audit event
        (``kind``): the verification as confirmed, or None when it is not this user's and
        session's, not open, not of ``style``, past its time, not of one of ``providers``,
        or its PIN hash is not ``pin_hash``. None decides nothing: the caller looks again."""
        if not providers:
            return None
        params = {
            "vid": verification_id,
            "uid": user_id,
            "sref": session,
            "b_style": style,
            "b_pin_hash": pin_hash,
            "now": now,
        }
        if self.dialect == "postgresql":
            row = self.run(_confirm_own(providers, self.dialect), {**params, "kind": kind}).first()
            return None if row is None else detached(row._mapping)
        row = self.run(_confirm_own(providers, self.dialect), params).first()
        if row is None:
            return None
        v = detached(row._mapping)
        event = {"kind": kind, "at": now, "verification_id": v.id}
        self.record({**event, "user_id": v.user_id, "phone": v.phone})
        return v

    def add_attempt(self, verification_id: str, max_attempts: int) -> tuple[int, str] | None:
        """Count one wrong PIN, locking at ``max_attempts``, in one statement.

        Returns (attempts, status) as this very update left them, or None when it did
        not count (no longer open). Only the update that locked sees status 'locked'."""
        row = self.run(_ADD_ATTEMPT, {"vid": verification_id, "max_attempts": max_attempts}).first()
        return None if row is None else (int(row[0]), str(row[1]))

    # -- events -------------------------------------------------------------------
    def record(self, *events: dict[str, Any]) -> None:
        """Add audit events (each a dict of the events table's columns but ``id``)."""
        self.insert_later(_RECORD, _event_rows(events))  # several rows: one multi-row INSERT

    def rename_events(self, verification_id: str, kind: str, to: str, at: float) -> None:
        """Re-kind a verification's events of ``kind`` at ``at`` (a counted call that was
        never placed is no longer counted)."""
        self.conn.execute(
            update(E)
            .where(E.c.verification_id == verification_id, E.c.kind == kind, E.c.at == at)
            .values(kind=to)
        )

    # -- counters -----------------------------------------------------------------
    def bump(
        self, rows: list[tuple[str, str, int, int]], *, swap: tuple[str, str, float] | None = None
    ) -> float | None:
        """Add to each (scope, key, minute)'s count, creating the rows, in the given
        order (the order their row locks are taken in). ``swap``: (scope, key, at) for
        :meth:`swap_last`, done first in the same statement; its answer is returned."""
        params = _counter_rows(rows)
        name = self.dialect
        if name in _UPSERT:
            if swap is None:
                if params:
                    self.run(_UPSERT[name], params)  # one statement, rows in order
                return None
            sets = _counter_rows(rows, swap)
            for row in self.run(_UPSERT_SWAP[name], sets):  # one statement, rows in order
                if (row[0], row[1], row[2]) == (swap[0], swap[1], 0):
                    return row[4]  # type: ignore[no-any-return]
            raise AssertionError("the swapped row answers")  # pragma: no cover
        previous = self._swap_each(*swap) if swap is not None else None
        for p in params:
            where = and_(C.c.scope == p["scope"], C.c.key == p["key"], C.c.minute == p["minute"])
            if not self.conn.execute(update(C).where(where).values(n=C.c.n + p["n"])).rowcount:
                self.conn.execute(insert(C).values(p))
        return previous

    def counts(
        self, keys: list[tuple[str, str]], first_minute: int
    ) -> dict[tuple[str, str], list[tuple[int, int]]]:
        """(minute, count) rows of each (scope, key) from ``first_minute`` on, oldest
        first, in one query: at most one window's rows per key, whatever the traffic."""
        out: dict[tuple[str, str], list[tuple[int, int]]] = {key: [] for key in keys}
        params: dict[str, Any] = {"first": first_minute}
        for i, (scope, key) in enumerate(keys):
            params[f"s{i}"], params[f"k{i}"] = scope, key
        rows = self.run(_counts(len(keys)), params)
        for scope, key, minute, n in rows:
            out[(scope, key)].append((int(minute), int(n)))
        return out

    def bump_and_look(
        self,
        rows: list[tuple[str, str, int, int]],
        *,
        swap: tuple[str, str, float],
        keys: list[Key],
        first_minute: int,
    ) -> tuple[float | None, Window]:
        """:meth:`bump` with ``swap``, and the :class:`Window` of ``keys`` from
        ``first_minute`` on: on PostgreSQL read in the bump's own statement (one round trip
        instead of two, and no second one while its row locks are held), elsewhere read
        after it (exact)."""
        if self.dialect != "postgresql":
            kept = self.bump(rows, swap=swap)
            return kept, Window(self.counts(keys, first_minute))
        scope, key, _ = swap
        count, params = self._count_params(rows, swap, keys, first_minute)
        window: dict[Key, list[tuple[int, int]]] = {pair: [] for pair in keys}
        before: dict[Key, int] = {}
        after: dict[Key, int] = {}
        previous: float | None = None
        for seen, s, k, minute, n, prev_at in self.run(_swap_and_look(count, len(keys)), params):
            if not seen:
                if (s, k) == (scope, key) and minute == 0:
                    previous = prev_at
                elif minute == 0:
                    after[(s, k)] = int(n)
            elif minute == 0:
                before[(s, k)] = int(n)
            else:
                window[(s, k)].append((int(minute), int(n)))
        return previous, Window(window, exact=False, before=before, after=after)

    def count_within(
        self,
        rows: list[tuple[str, str, int, int]],
        *,
        swap: tuple[str, str, float],
        keys: list[Key],
        first_minute: int,
        within: Within,
    ) -> None:
        """PostgreSQL, a step whose statement is its own transaction (:attr:`single`):
        :meth:`bump_and_look`'s statement, committed only when the server proves from
        its reading the limits ``within`` met (``keys``: each budget's, then the
        wrong-PIN key when its cap is checked); otherwise it fails, changing nothing, and
        :class:`Recheck` is raised."""
        if not self.single:
            raise RuntimeError("only a statement that is its own transaction proves limits")
        count, params = self._count_params(rows, swap, keys, first_minute)
        failures = within.failures_cap is not None
        caps = [*within.limits, *([within.failures_cap] if failures else [])]
        params.update({f"lim{i}": cap for i, cap in enumerate(caps)})
        params["now"] = within.now
        params["cooldown"] = within.cooldown if within.cooldown else -math.inf
        statement = _count_within(count, len(keys), len(within.limits), failures)
        try:
            self.run(statement, params)
        except DBAPIError as e:  # its class differs by driver; the message is the server's
            message = str(e.orig)
            if RECHECK + ":" not in message:
                raise
            named = message.split(RECHECK + ":", 1)[1].split('"', 1)[0].split()
            unproven = {
                **{str(i): key for i, key in enumerate(keys)},
                "f": keys[-1],
                "c": (swap[0], swap[1]),
            }
            raise Recheck(tuple(unproven[n] for n in named if n in unproven)) from None

    @staticmethod
    def _count_params(
        rows: list[tuple[str, str, int, int]],
        swap: tuple[str, str, float],
        keys: list[Key],
        first_minute: int,
    ) -> tuple[int, dict[str, Any]]:
        """The counting statement's row count and parameters."""
        sets = _counter_rows(rows, swap)
        params: dict[str, Any] = row_params(sets, _ROW_KEYS)
        params["first"] = first_minute
        for i, (s, k) in enumerate(keys):
            params[f"s{i}"], params[f"k{i}"] = s, k
        return len(sets), params

    def swap_last(self, scope: str, key: str, at: float) -> float | None:
        """Set the time kept for ``key`` to ``at``; return the time it held before. The
        row stays locked until the transaction ends, serialising writers of ``key``."""
        return self.bump([], swap=(scope, key, at))

    def _swap_each(self, scope: str, key: str, at: float) -> float | None:
        """:meth:`swap_last` on a database without upserts: lock, then insert or update."""
        where = and_(C.c.scope == scope, C.c.key == key, C.c.minute == 0)
        found = self.conn.execute(select(C.c.last_at).where(where).with_for_update()).first()
        if found is None:
            self.conn.execute(insert(C).values(scope=scope, key=key, minute=0, n=0, last_at=at))
            return None
        self.conn.execute(update(C).where(where).values(last_at=at, prev_at=C.c.last_at))
        return found[0]  # type: ignore[no-any-return]

    def restore_last(self, scope: str, key: str, at: float) -> None:
        """Undo :meth:`swap_last` of ``at`` when nothing has replaced it since."""
        self.conn.execute(
            update(C)
            .where(C.c.scope == scope, C.c.key == key, C.c.minute == 0, C.c.last_at == at)
            .values(last_at=C.c.prev_at)
        )

    # -- the providers' circuit breakers ---------------------------------------------
    # One counter row per provider (scope "breaker", minute 0): ``n`` its faults in a
    # row, ``last_at`` the time until which it is skipped.
    def breakers(self) -> dict[str, tuple[int, float | None]]:
        """Every provider's faults in a row and the end of its cool-down."""
        rows = self.run(_BREAKERS, {})
        return {str(key): (int(n), last_at) for key, n, last_at in rows}

    def breaker_fault(
        self, provider: str, now: float, failures: int, cooldown: float
    ) -> tuple[int, float | None]:
        """Count one more fault in a row; at ``failures`` the provider is skipped until
        ``now + cooldown``. Returns its faults in a row and the end of its cool-down."""
        self.bump([(BREAKER, provider, 0, 1)])
        n, until = self.conn.execute(_BREAKER, {"b_key": provider}).one()
        if int(n) >= failures:
            until = now + cooldown
            self.conn.execute(_BREAKER_OPEN, {"b_key": provider, "b_until": until})
        return int(n), until

    def breaker_reset(self, provider: str) -> None:
        """A call went through: the provider's faults in a row start again from zero."""
        self.conn.execute(_BREAKER_RESET, {"b_key": provider})

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
    def owner_of_call(self, call_id: str) -> str | None:
        """The user whose verification's current call ``call_id`` is."""
        owner: str | None = self.run(_OWNER, {"b_call_id": call_id}).scalar()
        return owner

    def dev_ring(self, row: dict[str, Any]) -> None:
        """A new call on the simulated phone (``row`` names its owner: the user whose
        verification placed it)."""
        self.insert_later(_DEV_RING, [row])

    def dev_trim(self, keep: int) -> None:
        """Forget the simulated phone's calls but the newest ``keep``."""
        self.run(_DEV_TRIM, {"b_keep": keep})

    def dev_calls(
        self, count: int, number: str | None = None, owner: str | None = None
    ) -> list[dict[str, Any]]:
        """The newest ``count`` calls (to ``number`` only, when given), oldest first, each
        with its verification's status and progress, and whether a newer call to
        its number replaced it."""
        query = _DEV_LISTS[(bool(number), owner is not None)]
        rows = self.run(query, {"b_count": count, "b_number": number, "b_owner": owner})
        return [dict(row._mapping) for row in reversed(rows.all())]

    def dev_call(self, call_id: str) -> dict[str, Any] | None:
        """One simulated call with its verification's state, or None."""
        row = self.run(_DEV_ONE, {"b_id": call_id}).first()
        return None if row is None else dict(row._mapping)

    # -- recovery codes -------------------------------------------------------------------
    def recovery_hashes(self, user_id: str) -> list[str]:
        """The keyed hashes of the user's unused recovery codes."""
        rows = self.conn.execute(select(RC.c.code_hash).where(RC.c.user_id == user_id))
        return [str(r[0]) for r in rows]

    def recovery_left(self, user_id: str) -> int:
        """How many unused recovery codes ``user_id`` has."""
        found = self.conn.execute(
            select(func.count()).select_from(RC).where(RC.c.user_id == user_id)
        ).scalar()
        return int(found or 0)

    def replace_recovery(self, user_id: str, hashes: list[str], at: float) -> None:
        """A new set of codes; the old set stops working in the same transaction."""
        self.conn.execute(delete(RC).where(RC.c.user_id == user_id))
        rows = [{"user_id": user_id, "code_hash": h, "created_at": at} for h in hashes]
        if rows:
            self.conn.execute(insert(RC), rows)

    def use_recovery(self, user_id: str, code_hash: str) -> bool:
        """Spend one code: one conditional DELETE, so of two requests racing with the same
        code only one sees the row go."""
        result = self.conn.execute(
            delete(RC).where(RC.c.user_id == user_id, RC.c.code_hash == code_hash)
        )
        return bool(result.rowcount)

    # -- remembered devices ---------------------------------------------------------------
    def add_device(self, row: dict[str, Any]) -> None:
        """Record a remembered device (its id kept only as a keyed hash)."""
        self.conn.execute(insert(DV).values(row))

    def use_device(self, id_hash: str, user_id: str, number_tag: str | None, now: float) -> bool:
        """Mark a remembered device used, when it is still on record for this user and
        number and not expired; True when it was."""
        result = self.conn.execute(
            update(DV)
            .where(
                DV.c.id_hash == id_hash,
                DV.c.user_id == user_id,
                DV.c.number_tag == number_tag,
                DV.c.expires_at > now,
            )
            .values(used_at=now)
        )
        return bool(result.rowcount)

    def forget_devices(self, user_id: str, now: float | None = None) -> int:
        """Delete the user's remembered devices (with ``now``: the expired ones only)."""
        stmt = delete(DV).where(DV.c.user_id == user_id)
        if now is not None:
            stmt = stmt.where(DV.c.expires_at <= now)
        return int(self.conn.execute(stmt).rowcount or 0)

    # -- the fraud guard ----------------------------------------------------------------
    def guard_row(self, country: str) -> tuple[float, float | None] | None:
        """(checked_at, until) of ``country``'s guard row: one primary-key read."""
        row = self.conn.execute(_GUARD_ROW, {"b_country": country}).first()
        return None if row is None else (float(row[0]), row[1])

    def guard_claim(self, country: str, seen: float | None, now: float) -> bool:
        """Take the turn to compute ``country``'s conversion: True for one caller per
        ``seen`` checked_at (None: there was no row)."""
        if seen is None:
            return self._insert_once(G, {"country": country, "checked_at": now, "calls": 0})
        result = self.conn.execute(
            update(G).where(G.c.country == country, G.c.checked_at == seen).values(checked_at=now)
        )
        return bool(result.rowcount)

    def conversion(self, country: str, since: float, now: float) -> tuple[int, int]:
        """(ended, verified) of the verifications to ``country`` started since ``since``:
        ended = closed, or open past their end (the pumper's page need not ask); a call
        never placed (the provider refused it) is not counted, so an outage pauses nobody."""
        ended = or_(V.c.status != Status.CALLING.value, V.c.expires_at <= now)
        never_placed = and_(V.c.status == Status.FAILED.value, V.c.provider_ref.is_(None))
        query = select(
            func.count(),
            func.coalesce(func.sum(case((V.c.status == Status.VERIFIED.value, 1), else_=0)), 0),
        ).where(V.c.country == country, V.c.created_at >= since, ended, ~never_placed)
        row = self.conn.execute(query).one()
        return int(row[0]), int(row[1])

    def guard_pause(
        self, country: str, until: float, calls: int, conversion: float, now: float
    ) -> bool:
        """Pause ``country`` until ``until`` unless a pause already holds; True when this
        call set it (so it is announced once, whichever worker decided it)."""
        values = {"until": until, "calls": calls, "conversion": conversion, "checked_at": now}
        result = self.conn.execute(
            update(G)
            .where(G.c.country == country, or_(G.c.until.is_(None), G.c.until <= now))
            .values(**values)
        )
        if result.rowcount:
            return True
        return self._insert_once(G, {"country": country, **values})

    def paused(self, now: float) -> list[dict[str, Any]]:
        """The countries paused now, with what paused them."""
        rows = self.conn.execute(select(G).where(G.c.until > now).order_by(G.c.country))
        return [dict(row._mapping) for row in rows]

    def lift_pause(self, country: str) -> int:
        """End a fraud-guard pause of ``country`` (``flask phoneverify reset --country``)."""
        return self.conn.execute(
            update(G).where(G.c.country == country, G.c.until.is_not(None)).values(until=None)
        ).rowcount

    def verified_before(self, user_id: str, phone: str) -> bool:
        """Has this user verified this number before (on the user_id index)?"""
        query = select(V.c.id).where(
            V.c.user_id == user_id, V.c.phone == phone, V.c.status == Status.VERIFIED.value
        )
        return self.conn.execute(query.limit(1)).first() is not None

    def _insert_once(self, table: Table, values: dict[str, Any]) -> bool:
        """Insert the row unless its key exists; True when this call inserted it."""
        name = self.dialect
        if name in ("sqlite", "postgresql"):
            dialect_insert = sqlite.insert if name == "sqlite" else postgresql.insert
            stmt = dialect_insert(table).values(values).on_conflict_do_nothing()
            return bool(self.conn.execute(stmt).rowcount)
        self.conn.execute(insert(table).values(values))  # pragma: no cover - other databases
        return True  # pragma: no cover

    # -- operations (the CLI) ----------------------------------------------------------
    def forget_counters(self, keys: list[tuple[str, str]]) -> int:
        """Delete every counter row (budgets and their anchors, cool-downs, wrong PINs) of
        these (scope, key) pairs; how many went."""
        gone = 0
        for scope, key in keys:
            gone += self.conn.execute(delete(C).where(C.c.scope == scope, C.c.key == key)).rowcount
        return gone

    def find(self, prefix: str) -> list[Verification]:
        """Verifications whose id is or starts with ``prefix`` (logs show 8 characters)."""
        rows = self.conn.execute(
            select(V).where(V.c.id.startswith(prefix, autoescape=True)).limit(2)
        )
        return [detached(row._mapping) for row in rows]

    def events_of(self, verification_id: str) -> list[dict[str, Any]]:
        """One verification's audit events, oldest first (``flask phoneverify show``)."""
        rows = self.conn.execute(
            select(E).where(E.c.verification_id == verification_id).order_by(E.c.id)
        )
        return [dict(row._mapping) for row in rows]

    def purge_verifications(self, before: float, batch: int) -> int:
        """Delete up to ``batch`` finished verifications created before ``before`` (open
        ones past their end count as finished)."""
        finished = or_(V.c.status != Status.CALLING.value, V.c.expires_at < before)
        ids = select(V.c.id).where(V.c.created_at < before, finished).limit(batch)
        found = [row[0] for row in self.conn.execute(ids)]
        if not found:
            return 0
        self.conn.execute(delete(V).where(V.c.id.in_(found)))
        return len(found)

    def purge_events(self, before: float, batch: int) -> int:
        """Delete up to ``batch`` audit events older than ``before``; how many went."""
        ids = [
            row[0] for row in self.conn.execute(select(E.c.id).where(E.c.at < before).limit(batch))
        ]
        if not ids:
            return 0
        self.conn.execute(delete(E).where(E.c.id.in_(ids)))
        return len(ids)

    def purge_leftovers(self, before: float, stale_minute: int) -> int:
        """Rows no check reads any more: counter minutes before ``stale_minute`` (anchors and
        cool-downs, minute 0, stay), relayed digits and simulated calls before ``before``."""
        gone = self.conn.execute(
            delete(C).where(C.c.minute > 0, C.c.minute < stale_minute)
        ).rowcount
        gone += self.conn.execute(delete(R).where(R.c.at < before)).rowcount
        gone += self.conn.execute(delete(D).where(D.c.created_at < before)).rowcount
        return int(gone)

    def ended_since(self, since: float) -> list[dict[str, Any]]:
        """What the stats need of each verification started since ``since``."""
        cols = (
            V.c.provider,
            V.c.country,
            V.c.phone,
            V.c.status,
            V.c.reason,
            V.c.created_at,
            V.c.verified_at,
            V.c.expires_at,
            V.c.provider_ref,
        )
        return [
            dict(row._mapping)
            for row in self.conn.execute(select(*cols).where(V.c.created_at >= since))
        ]

    def placed_since(self, since: float) -> list[tuple[str, str | None, str, int]]:
        """(provider, country, phone, calls placed) per verification with calls placed since
        ``since`` (each call, resends included, leaves one ``call_placed`` event)."""
        query = (
            select(V.c.provider, V.c.country, V.c.phone, func.count())
            .select_from(E.join(V, V.c.id == E.c.verification_id))
            .where(E.c.kind == "call_placed", E.c.at >= since)
            .group_by(V.c.id, V.c.provider, V.c.country, V.c.phone)
        )
        return [(r[0], r[1], r[2], int(r[3])) for r in self.conn.execute(query)]


_GUARD_ROW = select(G.c.checked_at, G.c.until).where(G.c.country == bindparam("b_country"))


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
        """The database engine: the app's (``db.engine``) or the store's own, made on first use."""
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

    @property
    def proves_limits(self) -> bool:
        """A start may be one statement that proves its own limits (:meth:`Tx.count_within`):
        PostgreSQL through psycopg 3, which sends values apart from the statement, so the
        server's log line for a statement that could not prove them holds none of them
        (psycopg2 writes them into the statement's text)."""
        dialect = self.engine.dialect
        return bool(dialect.name == "postgresql" and dialect.driver == "psycopg")

    def close(self) -> None:
        """Close the connections of an engine the store opened itself."""
        with self._lock:
            if self._own is not None:
                self._own.dispose()
                self._own = None

    def session(self) -> Session:
        """An ORM session on the store's engine, for reports and tests."""
        session = Session(self.engine, expire_on_commit=False)
        if self._own is not None and self.engine.dialect.name == "sqlite":
            # the store's own SQLite driver begins nothing by itself
            event.listen(session, "after_begin", _begin_orm)
        return session

    def get(self, verification_id: str) -> Verification | None:
        """One verification as stored now (reports, the CLI and tests)."""
        return self.read(lambda tx: tx.get(verification_id))

    def by_call_id(self, provider: str, call_id: str) -> Verification | None:
        """The verification of ``provider`` whose current call is ``call_id``."""
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

    def write_one(self, step: Callable[[Tx], T]) -> T:
        """Run ``step``, whose writes are one statement (reads may come before and after
        it), as :meth:`write` does; on PostgreSQL that statement is its own transaction,
        with no BEGIN and COMMIT around it: one round trip instead of three, and its row
        locks held only while it runs. A second writing statement is a programming error
        (RuntimeError). A step whose statement raised :class:`Recheck` changed nothing;
        the caller runs it again with :meth:`write`."""
        return self._run(step, write=True, one_write=True)

    def read(self, step: Callable[[Tx], T]) -> T:
        """Run ``step`` in one read-only transaction."""
        return self._run(step, write=False)

    def _run(self, step: Callable[[Tx], T], *, write: bool, one_write: bool = False) -> T:
        """Run ``step``; once more on a fresh connection when the database dropped the
        first. (A drop between the server's commit and its answer would run a write step
        twice: rare, and each step's guards make the second a refusal, not a double.)"""
        for attempt in (1, 2):
            try:
                with self._transaction(write, one_write) as conn:
                    # its statement is its own transaction: no second write may follow it
                    tx = Tx(conn, one_write=one_write and conn.dialect.name == "postgresql")
                    result = step(tx)
                    tx.flush()
            except DBAPIError as e:
                if attempt == 2 or not e.connection_invalidated:
                    raise
                log.warning("phoneverify: database connection lost; trying once more")
                continue
            for notice in tx._after:  # committed: only now may the world hear of it
                notice()
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def _transaction(self, write: bool, one_write: bool = False) -> Iterator[Connection]:
        engine = self.engine
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql" and (not write or one_write):
                # each statement its own transaction: one round trip, no BEGIN and COMMIT
                yield conn.execution_options(isolation_level="AUTOCOMMIT")
                return
            if not write:
                # the store's own SQLite engine: a read step's one statement needs no BEGIN
                yield conn  # otherwise begins on first use, rolled back on close
                return
            with conn.begin():
                if engine.dialect.name == "sqlite":
                    # The write lock first, so the step's reads see no other writer.
                    _lock_for_write(conn, own=self._own is not None)
                yield conn


configure_mappers()  # the instances below skip the constructor that would trigger it
_NEW_VERIFICATION: Callable[[], Verification] = manager_of_class(Verification).new_instance


def detached(values: Any) -> Verification:
    """A :class:`Verification` outside any ORM session from a mapping of all its columns
    (a row, or a new one's values), its attributes filled in directly: the mapped
    constructor's per-attribute bookkeeping costs more than a query on the hot path."""
    v = _NEW_VERIFICATION()
    v.__dict__.update({name: values[name] for name in _COLUMNS})
    return v


_BEGIN_IMMEDIATE = Prepared(text("BEGIN IMMEDIATE"))


def _begin_orm(_session: Session, _transaction: Any, conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN")


def _lock_for_write(conn: Connection, *, own: bool) -> None:
    """Take SQLite's write lock at the start of a write step, so its reads see no other
    writer. The store's own engine runs the driver without implicit transactions and
    begins with BEGIN IMMEDIATE; an app's engine begins on its first write, so the
    step makes one that changes nothing."""
    if own:
        Tx(conn).run(_BEGIN_IMMEDIATE, {})
    else:
        conn.execute(update(C).where(literal(False)).values(n=C.c.n))


def _create_tables(engine: Engine, tries: int = 10) -> None:
    """Create the tables that are missing. Workers starting together on a fresh database
    race between checking and creating; the loser checks again."""
    for attempt in range(tries):
        try:
            with engine.connect() as conn, conn.begin():
                if engine.dialect.name == "sqlite":
                    _lock_for_write(conn, own=True)
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

        return engine
    # The same cap as SQLAlchemy's defaults (5 + 10 overflow), all of it kept: an overflow
    # connection is closed when handed back, so a threaded worker busier than five
    # requests at once would open a new server connection (a server process) every few
    # steps. Last in, first out, so under light load the same few stay warm.
    engine = create_engine(uri, pool_size=POOL_SIZE, max_overflow=0, pool_use_lifo=True)
    _ping_idle_connections(engine)
    return engine


#: connections the store's own engine keeps per process (server databases)
POOL_SIZE = 15


#: a pooled connection idle longer than this is pinged before use
IDLE_PING = 1.0


def _ping_idle_connections(engine: Engine) -> None:
    """Ping a connection before use when it has sat idle in the pool (``pool_pre_ping``
    for connections a database restart may have dropped, without a round trip per step
    under load); a connection dropped while in use is covered by the step's retry."""

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_conn: Any, record: Any) -> None:
        record.info["phoneverify_idle"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("phoneverify_idle")
        if since is None or time.monotonic() - since < IDLE_PING:
            return
        try:
            cursor = dbapi_conn.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
            dbapi_conn.rollback()  # the ping leaves no transaction open
        except Exception as e:  # noqa: BLE001 - any failure means a dead connection
            raise DisconnectionError("stale pooled connection") from e
