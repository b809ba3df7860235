"""Simultaneous starts cannot beat the limits: the per-number cool-down and the hourly
budgets hold when several workers start calls to one number at the same instant, as
threads of one process and as separate processes, on SQLite and on PostgreSQL."""

from __future__ import annotations

import multiprocessing
import threading
import time
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event, func, select

from flask_phoneverify import PhoneVerify
from flask_phoneverify.errors import RateLimited
from flask_phoneverify.limits import Limits
from flask_phoneverify.models import Counter, DevCallRow, Verification
from flask_phoneverify.state import state
from flask_phoneverify.store import Recheck, Store, Tx

from .helpers import SECRET, statements_of

NUMBER = "+12015550123"
STARTS = 6


def build(uri: str, cooldown: int, per_number: int, **config: Any) -> Flask:
    """One worker's app: the simulated phone, generous limits but the two under test
    (and ``config``)."""
    app = Flask("race", instance_path="/nonexistent-instance")
    app.config.update(
        TESTING=True,
        SECRET_KEY=SECRET,
        PHONEVERIFY_DATABASE_URI=uri,
        PHONEVERIFY_NUMBER_COOLDOWN=cooldown,
        PHONEVERIFY_CALLS_PER_NUMBER_PER_HOUR=per_number,
        PHONEVERIFY_CALLS_PER_USER_PER_HOUR=100,
        PHONEVERIFY_CALLS_PER_IP_PER_HOUR=100,
        **config,
    )
    PhoneVerify(app)
    return app


def start_once(app: Flask, user: str, wait: Any) -> str:
    """Wait for the others, then start a verification to NUMBER."""
    flow = state(app).flow
    wait()
    try:
        flow.start(
            user_id=user, phone=NUMBER, enrol=False, session="s" * 64, ip=None, callback_url=None
        )
    except RateLimited:
        return "limited"
    return "placed"


def _process(uri: str, cooldown: int, per_number: int, user: str, barrier: Any, out: Any) -> None:
    app = build(uri, cooldown, per_number)
    try:
        out.put(start_once(app, user, lambda: barrier.wait(60)))
    finally:
        state(app).close()


def race(uri: str, mode: str, *, cooldown: int, per_number: int) -> list[str]:
    first = build(uri, cooldown, per_number)
    _ = state(first).store.engine  # the tables, created once before the workers start
    state(first).close()
    if mode == "threads":
        apps = [build(uri, cooldown, per_number) for _ in range(STARTS)]
        barrier = threading.Barrier(STARTS)
        results: list[str] = []

        def go(i: int) -> None:
            results.append(start_once(apps[i], f"u{i}", lambda: barrier.wait(60)))

        threads = [threading.Thread(target=go, args=(i,)) for i in range(STARTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        for app in apps:
            state(app).close()
        return results
    ctx = multiprocessing.get_context("spawn")
    pbarrier = ctx.Barrier(STARTS)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_process, args=(uri, cooldown, per_number, f"u{i}", pbarrier, out))
        for i in range(STARTS)
    ]
    for p in procs:
        p.start()
    got = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
    return got


def stored(uri: str) -> tuple[int, int]:
    """(verifications stored, calls that rang on the simulated phone)."""
    app = build(uri, 0, 100)
    with state(app).store.session() as s:
        counts = (
            s.scalar(select(func.count()).select_from(Verification)) or 0,
            s.scalar(select(func.count()).select_from(DevCallRow)) or 0,
        )
    state(app).close()
    return counts


def test_simultaneous_starts_within_the_limits_all_place_their_call(tmp_path: Any) -> None:
    """The race itself refuses nothing that the limits allow."""
    uri = f"sqlite:///{tmp_path}/one.sqlite3"
    assert race(uri, "threads", cooldown=0, per_number=100).count("placed") == STARTS
    assert stored(uri) == (STARTS, STARTS)


@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_simultaneous_starts_to_one_number_place_one_call_in_the_cool_down(
    database_uri: str, mode: str
) -> None:
    results = race(database_uri, mode, cooldown=30, per_number=100)
    assert sorted(results) == ["limited"] * (STARTS - 1) + ["placed"], results
    assert stored(database_uri) == (1, 1)


@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_simultaneous_starts_never_exceed_the_numbers_hourly_budget(
    database_uri: str, mode: str
) -> None:
    results = race(database_uri, mode, cooldown=0, per_number=2)
    assert sorted(results) == ["limited"] * (STARTS - 2) + ["placed"] * 2, results
    assert stored(database_uri) == (2, 2)


def test_starts_on_either_side_of_a_minute_boundary_share_one_hourly_budget(
    database_uri: str,
) -> None:
    """One user, budget 1, two starts to two numbers whose transactions overlap across a
    minute boundary (the first is held open by a slow database after it read its counts):
    exactly one is admitted."""
    from sqlalchemy import event

    minute = 29_000_000
    apps = []
    for at in (minute * 60 - 0.5, minute * 60 + 0.2):
        app = Flask("edge", instance_path="/nonexistent-instance")
        app.config.update(
            TESTING=True,
            SECRET_KEY=SECRET,
            PHONEVERIFY_DATABASE_URI=database_uri,
            PHONEVERIFY_NUMBER_COOLDOWN=0,
            PHONEVERIFY_CALLS_PER_USER_PER_HOUR=1,
        )
        PhoneVerify(app, clock=lambda at=at: at)
        apps.append(app)
    _ = state(apps[0]).store.engine
    first_read = threading.Event()

    def slow(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        if statement.startswith("SELECT phoneverify_counters") and not first_read.is_set():
            first_read.set()
            threading.Event().wait(0.6)  # the first start keeps its transaction open

    event.listen(state(apps[0]).store.engine, "after_cursor_execute", slow)
    results: dict[int, str] = {}

    def go(i: int, number: str) -> None:
        try:
            state(apps[i]).flow.start(
                user_id="u",
                phone=number,
                enrol=False,
                session="s" * 64,
                ip=None,
                callback_url=None,
            )
            results[i] = "placed"
        except RateLimited:
            results[i] = "limited"

    a = threading.Thread(target=go, args=(0, "+12015550123"))
    a.start()
    assert first_read.wait(30)
    b = threading.Thread(target=go, args=(1, "+12015550124"))
    b.start()
    a.join(60)
    b.join(60)
    for app in apps:
        state(app).close()
    assert sorted(results.values()) == ["limited", "placed"], results


def generous_limits(**given: int) -> Limits:
    """Limits of 100 an hour on every budget and failures, no cool-down, but ``given``."""
    budgets = dict.fromkeys(
        ("max_failures_per_hour", "per_number", "per_user", "per_ip", "global_per_hour"), 100
    )
    return Limits(**{**budgets, "number_cooldown": 0, "per_country": 100, **given})


def wait_for_a_waiter(store: Any, holder: Any) -> None:
    """PostgreSQL: return once some session waits for a lock ``holder`` (a connection in
    a transaction) holds."""
    pid = holder.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    for _ in range(200):
        with store.engine.connect() as look:
            blocked = look.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE %(pid)s = ANY(pg_blocking_pids(pid))",
                {"pid": pid},
            ).scalar()
        if blocked:
            return
        time.sleep(0.05)
    raise AssertionError("nobody waited for the lock")


#: how a start's counting step runs: in a transaction, or (PostgreSQL) as one statement
#: that is its own transaction (Store.write_one, as Flow.start runs it without a guard)
STEPS = ["transaction", "one-statement"]


def step_of(store: Store, kind: str) -> Any:
    """Run a step as ``kind``; one statement that cannot prove its limits runs again in
    a transaction, as Flow.start does."""
    if kind == "transaction":
        return store.write

    def one_statement(step: Any) -> Any:
        try:
            return store.write_one(step)
        except Recheck:
            return store.write(step)

    return one_statement


def reserving(limits: Limits, user: str, phone: str, now: float) -> Any:
    """The step that counts a call of ``user`` to ``phone`` at ``now`` (no client address)."""
    return lambda tx: limits.reserve_call(tx, user_id=user, phone=phone, ip=None, now=now)


def outcome_of(run: Any, step: Any) -> str:
    """Run ``step`` with ``run``: "placed", or the name of the limit that refused it."""
    try:
        run(step)
    except RateLimited as e:
        return e.limit or "limited"
    return "placed"


#: why a test of a step's one statement without a transaction skips on SQLite
ONE_STATEMENT_ON_POSTGRES = "only PostgreSQL runs a step's one statement without a transaction"


@pytest.mark.parametrize("kind", STEPS)
@pytest.mark.parametrize("counted_before", [0, 1], ids=["room-left", "last-slot-taken"])
def test_a_start_that_waited_for_another_starts_lock_counts_that_start(
    database_uri: str, counted_before: int, kind: str
) -> None:
    """On PostgreSQL a start reads its windows in the statement that counts it, so they
    miss a start that committed while it waited for the budget's row lock; the anchor's
    growth must make up for it. Here B reads, waits for A's lock, and goes on once A
    commits: with room for both B places its call; with A taking the last slot B is
    refused (the app-wide budget of 2 holds exactly)."""
    limits = generous_limits(global_per_hour=2)
    store = Store(uri=database_uri)
    now = 1_800_000_000.0

    try:
        for i in range(counted_before):
            store.write(reserving(limits, f"old{i}", f"+1201555019{i}", now))
        postgres = store.engine.dialect.name == "postgresql"
        outcome: list[str] = []
        with store.engine.connect() as a:
            first = a.begin()
            if not postgres:
                a.exec_driver_sql("BEGIN IMMEDIATE")
            reserving(limits, "a", "+12015550181", now)(Tx(a))  # locks held, not committed

            def b() -> None:
                step = reserving(limits, "b", "+12015550182", now)
                outcome.append(outcome_of(step_of(store, kind), step))

            waiting = threading.Thread(target=b)
            waiting.start()
            if postgres:
                wait_for_a_waiter(store, a)
            else:
                waiting.join(0.3)  # B waits for the write lock
            first.commit()
            waiting.join(30)
        assert outcome == (["placed"] if counted_before == 0 else ["app"])
    finally:
        store.close()


@pytest.mark.parametrize("kind", STEPS)
def test_on_postgresql_a_start_far_from_its_limits_reads_its_windows_once(
    database_uri: str, kind: str
) -> None:
    """The windows come back with the statement that counts the call; they are read
    again, exactly, only when that reading cannot prove the call within every limit
    (as one statement: that statement fails, changing nothing, and the step runs again
    in a transaction)."""
    if not database_uri.startswith("postgresql"):
        pytest.skip("PostgreSQL reads its windows with the count")
    limits = generous_limits(max_failures_per_hour=5, global_per_hour=3)
    store = Store(uri=database_uri)
    statements = statements_of(store.engine)
    reads: list[int] = []
    try:
        for i in range(4):
            statements.clear()
            step = reserving(limits, f"u{i}", f"+1201555017{i}", 1.8e9 + i)
            outcome = outcome_of(step_of(store, kind), step)
            reads.append(sum("FROM phoneverify_counters" in s for s in statements))
            assert outcome == ("placed" if i < 3 else "app")
    finally:
        store.close()
    # up to the last slot the reading proves room; past it, it is read again and refused
    assert reads == ([1, 1, 1, 2] if kind == "transaction" else [1, 1, 1, 3])


@pytest.mark.parametrize("kind", STEPS)
def test_a_wrong_pin_counted_while_a_start_waited_still_refuses_that_start(
    database_uri: str, kind: str
) -> None:
    """On PostgreSQL the windows a start reads with its count are as they stood before it
    waited; a wrong PIN that reached the hourly cap meanwhile must still refuse it (the
    user's wrong-PIN anchor grew, so the start reads again)."""
    if not database_uri.startswith("postgresql"):
        pytest.skip("SQLite write steps run one at a time")
    limits = generous_limits(max_failures_per_hour=1)
    store = Store(uri=database_uri)
    now = 1_800_000_000.0
    outcome: list[str] = []

    def b() -> None:
        step = reserving(limits, "u", "+12015550162", now)
        outcome.append(outcome_of(step_of(store, kind), step))

    try:
        with store.engine.connect() as a:
            first = a.begin()
            reserving(limits, "a", "+12015550161", now)(Tx(a))
            waiting = threading.Thread(target=b)
            waiting.start()
            wait_for_a_waiter(store, a)  # B read its windows and waits for A's row lock
            assert store.write(lambda tx: limits.count_failure(tx, "u", now))  # the cap
            first.commit()
            waiting.join(30)
    finally:
        store.close()
    assert outcome == ["failures"]


def _autocommit_of_counting(engine: Any) -> list[bool]:
    """For each statement ``engine`` runs from now on that counts a call: whether it ran
    as its own transaction (the driver's autocommit)."""
    seen: list[bool] = []

    def record(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "INSERT INTO phoneverify_counters" in statement:
            seen.append(bool(conn.connection.dbapi_connection.autocommit))

    event.listen(engine, "before_cursor_execute", record)
    return seen


def test_on_postgresql_a_start_in_one_statement_commits_alone_or_changes_nothing(
    database_uri: str,
) -> None:
    """As one statement the count is its own transaction. A start that statement cannot
    prove within the limits (in the cool-down, past the last slot) leaves every counter
    as it was and is then decided in a transaction, as before."""
    if not database_uri.startswith("postgresql"):
        pytest.skip(ONE_STATEMENT_ON_POSTGRES)
    limits = generous_limits(global_per_hour=2, number_cooldown=60)
    store = Store(uri=database_uri)
    now = 1_800_000_000.0

    def start(phone: str, at: float) -> str:
        return outcome_of(step_of(store, "one-statement"), reserving(limits, "u", phone, at))

    def counters() -> list[tuple[Any, ...]]:
        with store.session() as s:
            rows = s.execute(select(Counter.scope, Counter.key, Counter.minute, Counter.n))
            return sorted(tuple(row) for row in rows)

    try:
        own = _autocommit_of_counting(store.engine)
        assert start("+12015550191", now) == "placed"
        assert own == [True]  # counted, proven and committed by one statement
        for phone, at, refused in (
            ("+12015550191", now + 10, "cooldown"),
            ("+12015550192", now + 20, None),
            ("+12015550193", now + 30, "app"),
        ):
            before = counters()
            own.clear()
            outcome = start(phone, at)
            if refused is None:
                assert outcome == "placed" and own == [True]
                continue
            assert outcome == refused
            assert own[0] and not any(own[1:]) and len(own) >= 2  # then a transaction
            assert counters() == before
    finally:
        store.close()


@pytest.mark.parametrize("guard", [False, True], ids=["no-guard", "fraud-guard"])
def test_on_postgresql_flow_start_counts_in_one_statement_unless_a_guard_reads_more(
    database_uri: str, guard: bool
) -> None:
    """Flow.start's counting step is one statement of its own on PostgreSQL; with the
    fraud guard on, whose check reads and writes after the count, it is a transaction."""
    if not database_uri.startswith("postgresql"):
        pytest.skip(ONE_STATEMENT_ON_POSTGRES)
    guarded = {"PHONEVERIFY_FRAUD_GUARD_MIN_CONVERSION": 0.5} if guard else {}
    app = build(database_uri, cooldown=0, per_number=100, **guarded)
    try:
        own = _autocommit_of_counting(state(app).store.engine)
        assert start_once(app, "u1", lambda: None) == "placed"
        assert own and all(flag is not guard for flag in own)
    finally:
        state(app).close()


def test_on_postgresql_a_worker_sends_starts_near_a_limit_straight_to_a_transaction(
    database_uri: str,
) -> None:
    """A start in the number's cool-down fails its one statement and is refused by the
    transaction after it; the same worker's next start to that number within the minute
    goes to a transaction at once (each failed statement is an error line in
    PostgreSQL's log, and a caller at a limit would repeat it)."""
    if not database_uri.startswith("postgresql"):
        pytest.skip(ONE_STATEMENT_ON_POSTGRES)
    from prometheus_client import REGISTRY

    def rechecks() -> float:
        name = "phoneverify_limit_rechecks_total"
        return REGISTRY.get_sample_value(name, {"limit": "cooldown"}) or 0.0

    app = build(database_uri, cooldown=600, per_number=100, PHONEVERIFY_METRICS=True)
    try:
        own = _autocommit_of_counting(state(app).store.engine)
        before = rechecks()
        assert start_once(app, "u1", lambda: None) == "placed"
        assert own == [True]
        own.clear()
        assert start_once(app, "u2", lambda: None) == "limited"
        assert own[0] and own[1:] and not any(own[1:])
        assert rechecks() == before + 1  # the cool-down, counted for operators
        own.clear()
        assert start_once(app, "u3", lambda: None) == "limited"
        assert own and not any(own)
        assert rechecks() == before + 1
    finally:
        state(app).close()


def test_on_postgresql_a_one_statement_start_names_what_it_could_not_prove(
    database_uri: str,
) -> None:
    """The failed statement's Recheck names the limits its reading could not prove (what
    the worker then sends straight to a transaction): the cool-down, then the last slot
    of the app-wide budget."""
    if not database_uri.startswith("postgresql"):
        pytest.skip(ONE_STATEMENT_ON_POSTGRES)
    limits = generous_limits(global_per_hour=2, number_cooldown=60)
    store = Store(uri=database_uri)
    now = 1_800_000_000.0

    def start(phone: str, at: float) -> None:
        store.write_one(reserving(limits, "u", phone, at))

    try:
        start("+12015550171", now)
        with pytest.raises(Recheck) as cooling:
            start("+12015550171", now + 1)
        assert cooling.value.keys == (("last_call", "+12015550171"),)
        start("+12015550172", now + 2)  # the app-wide budget's last slot
        with pytest.raises(Recheck) as spent:
            start("+12015550173", now + 3)
        assert spent.value.keys == (("app", "*"),)
    finally:
        store.close()


def test_on_psycopg_flow_start_is_one_statement_on_the_drivers_own_cursor(
    database_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With nothing listening to the engine (as in production) the counting statement goes
    through psycopg's RawCursor as its own transaction, and the server proves it: it
    succeeds the first time."""
    if not database_uri.startswith("postgresql+psycopg"):
        pytest.skip("psycopg only")
    from psycopg import RawCursor

    counted: list[tuple[bool, str]] = []
    original = RawCursor.execute

    def execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        if b"INSERT INTO phoneverify_counters" in (
            query if isinstance(query, bytes) else str(query).encode()
        ):
            try:
                result = original(self, query, *args, **kwargs)
            except Exception as e:
                counted.append((self.connection.autocommit, type(e).__name__))
                raise
            counted.append((self.connection.autocommit, "ok"))
            return result
        return original(self, query, *args, **kwargs)

    app = build(database_uri, cooldown=0, per_number=100)
    try:
        assert state(app).store.engine.dialect.driver == "psycopg"  # tables made first
        monkeypatch.setattr(RawCursor, "execute", execute)
        assert start_once(app, "u1", lambda: None) == "placed"
        assert start_once(app, "u2", lambda: None) == "placed"
    finally:
        state(app).close()
    assert counted == [(True, "ok"), (True, "ok")]
