"""The store's hot statements run straight on the DBAPI cursor when nothing listens to
the engine's execution events, and through SQLAlchemy when something does: both ways
must answer alike (booleans as booleans, RETURNING rows, executemany), on SQLite and on
PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from sqlalchemy import event

from flask_phoneverify.models import Status
from flask_phoneverify.store import Store, Tx, detached

from .helpers import scratch_postgres

SERVER = os.environ.get("PHONEVERIFY_TEST_POSTGRES")


@pytest.fixture(params=["sqlite", "postgresql"])
def new_database(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Callable[[], str]]:
    """Makes a fresh empty database of the parameter's kind; returns its URI."""
    if request.param == "postgresql" and not SERVER:
        pytest.skip("PHONEVERIFY_TEST_POSTGRES is not set")
    with ExitStack() as stack:
        made: list[str] = []

        def new() -> str:
            if request.param == "sqlite":
                made.append(f"sqlite:///{tmp_path}/store{len(made)}.sqlite3")
            else:
                assert SERVER is not None
                made.append(stack.enter_context(scratch_postgres(SERVER)))
            return made[-1]

        yield new


def _verification(vid: str, call_id: str) -> Any:
    return detached(
        {
            "id": vid,
            "user_id": "u1",
            "phone": "+12015550123",
            "enrol": True,
            "provider": "dev",
            "style": "keypad",
            "status": Status.CALLING.value,
            "call": "queued",
            "call_id": call_id,
            "provider_ref": None,
            "pin_hash": "h" * 64,
            "attempts": 0,
            "sends": 1,
            "session_ref": "s1",
            "ip": "192.0.2.1",
            "reason": None,
            "created_at": 1000.0,
            "sent_at": 1000.0,
            "expires_at": 5000.0,
            "polled_at": 0.0,
            "event_at": 0.0,
            "poll_errors": 0,
            "verified_at": None,
            "claimed_at": None,
            "country": "US",
            "locale": None,
        }
    )


def _steps(store: Store, tag: str) -> list[Any]:
    """One verification's life through the hot statements; what each answered."""
    vid, call_id = f"v{tag}", f"c{tag}"
    seen: list[Any] = []

    def write(tx: Tx) -> None:
        tx.add(_verification(vid, call_id))
        tx.record({"kind": "started", "at": 1000.0, "verification_id": vid})
        tx.record(
            {"kind": "call", "at": 1000.0, "verification_id": vid},
            {"kind": "call_placed", "at": 1000.0, "verification_id": vid},
        )
        tx.bump([("number", f"n{tag}", 16, 1), ("user", f"u{tag}", 16, 1)])
        tx.bump([("number", f"n{tag}", 16, 2)])
        tx.bump([("user", f"u{tag}", 16, 1), ("user", f"u{tag}", 16, 1)])  # one row, twice
        seen.append(tx.counts([("number", f"n{tag}"), ("user", f"u{tag}")], 10))
        seen.append(tx.swap_last("last_call", f"n{tag}", 900.0))
        seen.append(tx.swap_last("last_call", f"n{tag}", 1000.0))
        both = [("number", f"m{tag}", 0, 0), ("number", f"m{tag}", 16, 1)]
        seen.append(tx.bump(both, swap=("last_call", f"m{tag}", 700.0)))
        seen.append(tx.bump(both, swap=("last_call", f"m{tag}", 800.0)))
        seen.append(tx.swap_last("last_call", f"m{tag}", 900.0))  # the swap kept its time
        seen.append(tx.counts([("number", f"m{tag}")], 0))
        row = {
            "id": f"d{tag}",
            "call_id": call_id,
            "owner": "u1",
            "number": "+12015550123",
            "style": "keypad",
            "app_name": "Demo",
            "sealed_pin": b"\x00sealed",
            "created_at": 1000.0,
            "locale": None,
        }
        tx.dev_ring(row)
        tx.dev_ring({**row, "id": f"e{tag}", "sealed_pin": None})
        tx.dev_trim(100)

    store.write(write)
    got = store.get(vid)
    assert got is not None
    seen.append({k: getattr(got, k) for k in ("enrol", "attempts", "status", "expires_at")})
    seen.append(store.by_call_id("dev", call_id) is not None)

    def later(tx: Tx) -> None:
        seen.append(tx.placed(vid, call_id, "ref-1", "ringing"))
        seen.append(tx.add_attempt(vid, max_attempts=2))
        seen.append(tx.change(vid, where={"call": "ringing"}, status=Status.VERIFIED.value))
        claimed = tx.claim_own(vid, "u1", "s1", now=2000.0)
        seen.append(None if claimed is None else (claimed.enrol, claimed.claimed_at))
        seen.append(tx.claim_own(vid, "u1", "s1", now=2001.0))  # once only
        seen.append(tx.owner_of_call(call_id))
        seen.append(
            [
                {k: c[k] for k in ("id", "superseded", "v_status", "sealed_pin")}
                for c in tx.dev_calls(10, "+12015550123", "u1")
            ]
        )
        one = tx.dev_call(f"d{tag}")
        seen.append(None if one is None else (one["superseded"], one["v_call"]))
        seen.append(tx.dev_call("nothing"))

    store.write(later)
    return seen


def test_the_hot_statements_answer_alike_with_and_without_listeners(
    new_database: Callable[[], str],
) -> None:
    plain, listened = Store(uri=new_database()), Store(uri=new_database())
    statements: list[str] = []
    try:
        direct = _steps(plain, "1")
        event.listen(listened.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
        through = _steps(listened, "1")
    finally:
        plain.close()
        listened.close()
    assert statements, "with a listener, the statements go through SQLAlchemy"
    assert direct == through
    counts, prev, swapped, *both = direct[:7]
    stored, found, placed, attempt, changed, claimed, again = direct[7:14]
    assert counts == {("number", "n1"): [(16, 3)], ("user", "u1"): [(16, 3)]}
    assert (prev, swapped) == (None, 900.0)
    assert both == [None, 700.0, 800.0, {("number", "m1"): [(0, 0), (16, 2)]}]
    assert stored == {"enrol": True, "attempts": 0, "status": "calling", "expires_at": 5000.0}
    assert stored["enrol"] is True  # a boolean, not the 1 SQLite keeps
    assert found is True and placed == "ringing" and attempt == (1, "calling")
    assert changed is True and claimed == (True, 2000.0) and claimed[0] is True
    assert again is None
    owner, listing, one, none = direct[14:]
    assert owner == "u1" and none is None
    assert listing == [
        {"id": "d1", "superseded": True, "v_status": "verified", "sealed_pin": b"\x00sealed"},
        {"id": "e1", "superseded": False, "v_status": "verified", "sealed_pin": None},
    ]
    assert listing[0]["superseded"] is True
    assert one == (True, "ringing")


def test_an_orm_session_on_the_stores_own_sqlite_engine_is_one_transaction(
    tmp_path: Any,
) -> None:
    """The store's own SQLite driver begins no transaction by itself: its ORM session
    must, or a rollback would leave the rows already flushed."""
    from flask_phoneverify.models import Event

    store = Store(uri=f"sqlite:///{tmp_path}/orm.sqlite3")
    try:
        with store.session() as s:
            s.add(Event(at=1.0, kind="x"))
            s.flush()
            s.add(Event(at=2.0, kind="y"))
            s.flush()
            s.rollback()
        with store.session() as s:
            assert s.query(Event).count() == 0
    finally:
        store.close()


@pytest.mark.parametrize("listened", [False, True], ids=["direct", "listened"])
def test_a_change_records_its_events_only_when_it_changed_the_row(
    new_database: Callable[[], str], listened: bool
) -> None:
    """Confirm's conditional update and its audit event: both or neither (one statement
    on PostgreSQL), with and without a listener on the engine."""
    store = Store(uri=new_database())
    if listened:
        event.listen(store.engine, "before_cursor_execute", lambda *a: None)
    confirmed = [{"kind": "confirmed", "at": 1500.0, "verification_id": "v1", "ip": "x"}]

    def confirm(pin_hash: str) -> bool:
        return store.write_one(
            lambda tx: tx.change_recording(
                "v1",
                confirmed,
                where={"pin_hash": pin_hash},
                status=Status.VERIFIED.value,
                verified_at=1500.0,
            )
        )

    try:
        store.write(lambda tx: tx.add(_verification("v1", "c1")))
        assert confirm("wrong" * 8) is False
        assert store.events("v1") == []
        assert confirm("h" * 64) is True
        assert confirm("h" * 64) is False  # no longer open: no second event
        got = store.get("v1")
        assert got is not None and (got.status, got.verified_at) == ("verified", 1500.0)
        events = [(e.kind, e.at, e.verification_id, e.ip, e.user_id) for e in store.events("v1")]
        assert events == [("confirmed", 1500.0, "v1", "x", None)]
    finally:
        store.close()


def test_a_write_one_step_on_postgresql_is_its_statements_own_transaction(
    new_database: Callable[[], str],
) -> None:
    """No BEGIN and COMMIT around it (what makes it one round trip), and a second write
    is refused before it runs; elsewhere it is an ordinary write step."""
    store = Store(uri=new_database())
    try:
        postgres = store.engine.dialect.name == "postgresql"
        store.write(lambda tx: tx.add(_verification("v1", "c1")))

        def in_transaction(tx: Tx) -> Any:
            return tx.conn.exec_driver_sql("SELECT txid_current_if_assigned()").scalar()

        if postgres:

            def verify_then_look(tx: Tx) -> Any:
                tx.change("v1", status=Status.VERIFIED.value)
                return in_transaction(tx)

            assert store.write_one(verify_then_look) is None  # the write already committed
            # an ordinary write step holds its transaction's id after a write
            assert store.write(lambda tx: (tx.claim("v1", 2000.0), in_transaction(tx))[1])

        store.write(lambda tx: tx.add(_verification("v2", "c2")))

        def twice(tx: Tx) -> None:
            tx.change("v2", status=Status.VERIFIED.value)
            tx.claim("v2", 3000.0)

        if postgres:
            with pytest.raises(RuntimeError, match="second"):
                store.write_one(twice)
        else:
            store.write_one(twice)
        got = store.get("v2")
        assert got is not None and got.status == "verified"
        assert got.claimed_at == (None if postgres else 3000.0)
    finally:
        store.close()


def test_rows_inserted_later_are_seen_by_the_step_and_gone_with_its_rollback(
    new_database: Callable[[], str],
) -> None:
    """On PostgreSQL a step's inserts wait for its next statement: the step still reads
    what it wrote, events keep the order they were recorded in, a statement on other
    tables carries them, and a step that fails leaves none of them."""
    store = Store(uri=new_database())
    seen: dict[str, Any] = {}

    def write(tx: Tx) -> None:
        tx.record({"kind": "first", "at": 1.0, "verification_id": "v1"})
        tx.add(_verification("v1", "c1"))
        tx.record({"kind": "second", "at": 1.0, "verification_id": "v1"})
        seen["got"] = tx.get("v1")  # reads their table: written first
        tx.add(_verification("v3", "c3"))
        tx.record({"kind": "third", "at": 1.0, "verification_id": "v1"})
        seen["swapped"] = tx.swap_last("last_call", "n1", 5.0)  # other tables: carries them
        seen["events"] = [e["kind"] for e in tx.events_of("v1")]

    def fails(tx: Tx) -> None:
        tx.add(_verification("v2", "c2"))
        tx.record({"kind": "lost", "at": 1.0, "verification_id": "v2"})
        tx.swap_last("last_call", "n2", 5.0)
        raise RuntimeError("the step fails")

    try:
        store.write(write)
        assert seen["swapped"] is None
        assert seen["got"] is not None and seen["got"].id == "v1"
        assert seen["events"] == ["first", "second", "third"]
        assert [e.kind for e in store.events("v1")] == ["first", "second", "third"]
        assert store.get("v3") is not None
        with pytest.raises(RuntimeError):
            store.write(fails)
        assert store.get("v2") is None and store.events("v2") == []
        assert store.write(lambda tx: tx.swap_last("last_call", "n2", 6.0)) is None
    finally:
        store.close()


def test_on_psycopg_the_statements_reach_the_server_as_compiled(
    new_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """psycopg's ordinary cursor rewrites ``%(name)s`` placeholders on every execution,
    and caches that only for statements under 50 parameters; the store's carry
    PostgreSQL's own ``$1`` placeholders and go to the server as they are."""
    uri = new_database()
    if not uri.startswith("postgresql+psycopg"):
        pytest.skip("psycopg only")
    from psycopg import _queries  # the rewriting that must not run

    rewritten: list[Any] = []
    original = _queries.PostgresQuery.convert

    def convert(self: Any, query: Any, params: Any) -> None:
        rewritten.append(query)
        original(self, query, params)

    store = Store(uri=uri)
    try:
        assert store.engine.dialect.driver == "psycopg"  # tables made before counting
        monkeypatch.setattr(_queries.PostgresQuery, "convert", convert)
        seen = _steps(store, "1")
    finally:
        store.close()
    assert rewritten == []
    assert seen[0] == {("number", "n1"): [(16, 3)], ("user", "u1"): [(16, 3)]}


@pytest.mark.parametrize("listened", [False, True], ids=["direct", "listened"])
def test_a_typed_pin_is_confirmed_in_one_statement_only_when_everything_matches(
    new_database: Callable[[], str], listened: bool
) -> None:
    """``confirm_own``: this user's and session's open call of the style, in time, of one
    of the providers, with the PIN's hash; verified and claimed with its audit event, once.
    On PostgreSQL the event travels in the update's own statement (a write_one step)."""
    store = Store(uri=new_database())
    v = _verification("v1", "c1")
    v.style = "spoken"
    right: dict[str, Any] = {
        "user_id": "u1",
        "session": "s1",
        "style": "spoken",
        "pin_hash": "h" * 64,
        "now": 2000.0,
        "providers": ("dev",),
        "kind": "confirmed",
    }
    if listened:
        event.listen(store.engine, "before_cursor_execute", lambda *a: None)
    try:
        store.write(lambda tx: tx.add(v))
        for other in (
            {"user_id": "u2"},
            {"session": "s2"},
            {"style": "keypad"},
            {"pin_hash": "x" * 64},
            {"now": 5000.0},  # its end
            {"providers": ("xverify",)},
            {"providers": ()},
        ):
            given = {**right, **other}
            assert store.write_one(lambda tx, given=given: tx.confirm_own("v1", **given)) is None, (
                other
            )
        assert store.events("v1") == []
        got = store.write_one(lambda tx: tx.confirm_own("v1", **right))
        assert got is not None and got.status == "verified" and got.enrol is True
        assert (got.verified_at, got.claimed_at, got.reason) == (2000.0, 2000.0, None)
        assert store.write_one(lambda tx: tx.confirm_own("v1", **right)) is None  # once
        stored = store.get("v1")
        assert stored is not None and stored.status == "verified"
        assert [(e.kind, e.at, e.user_id, e.phone) for e in store.events("v1")] == [
            ("confirmed", 2000.0, "u1", "+12015550123")
        ]
    finally:
        store.close()
