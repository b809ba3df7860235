"""Statements of the store's hot path, compiled once per dialect and run straight on
the DBAPI cursor.

SQLAlchemy's ``Connection.execute`` costs about three times a small statement's own
time on SQLite (cache key, execution context, result metadata). :func:`execute` skips
it when nothing listens to the engine's execution events, and goes through it when
something does (query recorders, tests injecting faults), so listeners see every
statement. Either way a driver error is handled by SQLAlchemy (its exception classes,
and a dropped connection invalidated for the step's retry).

On psycopg (3.2 and later) the statements are compiled with PostgreSQL's own ``$1``
placeholders and sent through its ``RawCursor``, which passes them on as they are:
psycopg's ordinary cursor rewrites ``%(name)s`` placeholders on every execution, and
caches that work only for statements under 50 parameters and 4 KB, which a step's
statement carrying its waiting inserts is not.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import Connection, bindparam
from sqlalchemy.exc import MultipleResultsFound, NoResultFound
from sqlalchemy.sql.util import find_tables

__all__ = ["Prepared", "execute", "after_inserts", "row_params"]


def execute(
    conn: Connection, prepared: Prepared, params: dict[str, Any] | list[dict[str, Any]]
) -> Any:
    """Run ``prepared`` on ``conn`` (a list of rows to insert: as one multi-row INSERT);
    the result answers ``first``, ``one``, ``scalar``, ``scalar_one``, ``all``,
    iteration and ``rowcount`` like SQLAlchemy's."""
    if conn._has_events or conn.engine._has_events:  # what SQLAlchemy itself checks
        return conn.execute(prepared.stmt, params)
    if isinstance(params, list) and len(params) > 1:  # rows to insert, in one statement
        compiled, params = prepared.rows(conn.dialect, params)
    else:
        params = params[0] if isinstance(params, list) else params
        compiled = prepared.compiled(conn.dialect, params)
    raw = compiled.raw_cursor
    cursor = conn.connection.cursor() if raw is None else raw(conn.connection.dbapi_connection)
    try:
        cursor.execute(compiled.sql, compiled.params(params))
        rows = compiled.rows(cursor) if compiled.described else []
        return _Result(rows, cursor.rowcount)
    except conn.dialect.loaded_dbapi.Error as e:
        conn._handle_dbapi_exception(e, compiled.sql, params, cursor, None)
    finally:
        cursor.close()


class Prepared:
    """A statement of the hot path (built once, with bind parameters), compiled once per
    dialect and, for an INSERT that names no values, per set of columns given."""

    __slots__ = ("stmt", "keyed", "writes", "_compiled", "_tables")

    def __init__(self, stmt: Any, *, keyed: bool = False, writes: bool = False) -> None:
        self.stmt = stmt
        self.keyed = keyed  # an INSERT whose columns are the keys of its parameters
        #: it changes rows: a DML statement, or ``writes`` (a SELECT whose WITH clause does)
        self.writes = writes or bool(stmt.is_dml)
        #: by dialect and driver, the columns given (a keyed INSERT's) and the number of rows
        self._compiled: dict[tuple[str, tuple[str, ...], int], _Compiled] = {}
        self._tables: frozenset[str] | None = None

    @property
    def tables(self) -> frozenset[str]:
        """The names of the tables the statement reads or writes."""
        if self._tables is None:
            self._tables = frozenset(t.name for t in find_tables(self.stmt, include_crud=True))
        return self._tables

    def compiled(self, dialect: Any, params: dict[str, Any]) -> _Compiled:
        """The statement for one row of ``params`` on ``dialect``, compiled on first use."""
        keys = tuple(params) if self.keyed else ()
        index = (dialect.dialect_description, keys, 1)
        found = self._compiled.get(index)
        if found is None:
            found = self._compiled[index] = _Compiled(self.stmt, dialect, keys)
        return found

    def rows(self, dialect: Any, sets: list[dict[str, Any]]) -> tuple[_Compiled, dict[str, Any]]:
        """A keyed INSERT of several rows as one statement with one VALUES row per set
        (one execution, rows in the given order) and its parameters."""
        assert self.keyed, "only an INSERT named by its parameters takes several rows"
        keys = tuple(sets[0])
        index = (dialect.dialect_description, keys, len(sets))
        found = self._compiled.get(index)
        if found is None:
            found = self._compiled[index] = _Compiled(self.of_rows(keys, len(sets)), dialect, ())
        return found, row_params(sets, keys)

    def of_rows(self, keys: tuple[str, ...], count: int, prefix: str = "") -> Any:
        """A keyed INSERT as a statement of ``count`` rows of the columns ``keys``, its
        parameters named as :func:`row_params` names them."""
        assert self.keyed, "only an INSERT named by its parameters takes several rows"
        columns = self.stmt.table.c
        return self.stmt.values(
            [
                {k: bindparam(f"{prefix}r{i}_{k}", type_=columns[k].type) for k in keys}
                for i in range(count)
            ]
        )


def row_params(
    sets: list[dict[str, Any]], keys: tuple[str, ...], prefix: str = ""
) -> dict[str, Any]:
    """The parameters of rows ``sets`` for :meth:`Prepared.of_rows`."""
    return {f"{prefix}r{i}_{k}": one[k] for i, one in enumerate(sets) for k in keys}


@functools.lru_cache(maxsize=256)
def after_inserts(
    main: Prepared,
    shape: tuple[tuple[str, ...], int] | None,
    inserts: tuple[tuple[Prepared, tuple[str, ...], int], ...],
) -> Prepared:
    """PostgreSQL: ``main`` and, before it in its WITH clause, ``inserts`` (keyed
    INSERTs, each with its columns and row count; parameters as :func:`row_params` names
    them, prefixed ``w0_``, ``w1_``...), as one statement: one round trip instead of one
    per statement. ``shape``: when ``main`` is a keyed INSERT, its columns and row count
    (:meth:`Prepared.of_rows`). The server runs every data-modifying WITH clause to
    completion, but ``main`` does not see their rows, so it must not touch their tables."""
    ctes = [
        insert.of_rows(keys, count, f"w{j}_").cte(f"w{j}")
        for j, (insert, keys, count) in enumerate(inserts)
    ]
    stmt = main.of_rows(*shape) if shape is not None else main.stmt
    return Prepared(stmt.add_cte(*ctes), writes=True)


@functools.cache
def _native(dialect_class: Any) -> tuple[Any, Any] | None:
    """For psycopg 3.2 and later: a dialect like ``dialect_class`` that renders
    PostgreSQL's own ``$1`` placeholders, and psycopg's cursor that sends them as they
    are. None for other drivers."""
    if getattr(dialect_class, "driver", None) != "psycopg" or getattr(
        dialect_class, "is_async", False
    ):
        return None
    try:
        from psycopg import RawCursor  # the driver is optional: imported only when used
    except ImportError:  # psycopg 3.1
        return None
    return dialect_class(paramstyle="numeric_dollar"), RawCursor


class _Compiled:
    """One :class:`Prepared` statement's SQL, parameters and row shape for one dialect."""

    __slots__ = (
        "sql",
        "positions",
        "names",
        "fixed",
        "binders",
        "described",
        "dialect",
        "row",
        "raw_cursor",
    )

    def __init__(self, stmt: Any, dialect: Any, keys: tuple[str, ...]) -> None:
        native = _native(dialect.__class__)
        #: the cursor class that takes the statement's placeholders as they are, if any
        self.raw_cursor = native[1] if native else None
        compiled = stmt.compile(
            dialect=native[0] if native else dialect, column_keys=list(keys) if keys else None
        )
        self.sql = str(compiled)
        binds = compiled.binds
        self.names = tuple(binds)
        #: the values the statement carries itself (its literals)
        self.fixed = {
            name: bind.effective_value for name, bind in binds.items() if not bind.required
        }
        # qmark and $1 placeholders take a tuple in the statement's order; pyformat a dict
        self.positions = tuple(compiled.positiontup) if compiled.positional else None
        self.binders = {}
        for name, bind in binds.items():
            convert = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if convert is not None:
                self.binders[name] = convert
        described = getattr(stmt, "column_descriptions", None)
        if described is None:
            described = getattr(stmt, "returning_column_descriptions", None) or []
        self.described = [(d["name"], d["type"].dialect_impl(dialect)) for d in described]
        self.dialect = dialect
        self.row: Callable[[Any], _Row] | None = None

    def rows(self, cursor: Any) -> list[_Row]:
        """The cursor's rows; their shape is learnt from the first answer's description
        (some drivers' readers depend on the type the server sent)."""
        if self.row is None:
            dialect = self.dialect
            codes = [d[1] for d in cursor.description]
            readers = [
                impl.result_processor(dialect, code)
                for (_, impl), code in zip(self.described, codes, strict=True)
            ]
            self.row = _row_type(tuple(name for name, _ in self.described), readers)
        row = self.row
        return [row(r) for r in cursor.fetchall()]

    def params(self, given: dict[str, Any]) -> Any:
        values = {**self.fixed, **given} if self.fixed else dict(given)
        for name, convert in self.binders.items():
            if values.get(name) is not None:
                values[name] = convert(values[name])
        if self.positions is None:
            return {k: values[k] for k in self.names}
        return tuple(values[k] for k in self.positions)


class _Row(tuple):  # type: ignore[type-arg]
    """A row of a :class:`Prepared` statement: a tuple, and ``_mapping`` by column name
    (the parts of SQLAlchemy's rows the store reads)."""

    __slots__ = ()
    _names: tuple[str, ...] = ()

    @property
    def _mapping(self) -> dict[str, Any]:
        return dict(zip(self._names, self, strict=True))


def _row_type(names: tuple[str, ...], readers: list[Any]) -> Callable[[Any], _Row]:
    kind: Any = type("Row", (_Row,), {"__slots__": (), "_names": names})
    if not any(readers):
        return kind  # type: ignore[no-any-return]
    pairs = [(i, read) for i, read in enumerate(readers) if read is not None]

    def make(values: Any) -> _Row:  # e.g. a driver without booleans answers 0 and 1
        values = list(values)
        for i, read in pairs:
            values[i] = read(values[i])
        return kind(values)  # type: ignore[no-any-return]

    return make


class _Result:
    """What a :class:`Prepared` statement answered: the parts of SQLAlchemy's result the
    store uses."""

    __slots__ = ("rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self.rows = rows
        self.rowcount = rowcount

    def first(self) -> Any:
        return self.rows[0] if self.rows else None

    def one(self) -> Any:
        if len(self.rows) != 1:
            raise NoResultFound("expected one row") if not self.rows else MultipleResultsFound()
        return self.rows[0]

    def scalar(self) -> Any:
        return self.rows[0][0] if self.rows else None

    def scalar_one(self) -> Any:
        return self.one()[0]

    def all(self) -> list[Any]:
        return self.rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self.rows)
