"""Whole verifications per second under ``gunicorn -w 4`` (gthread) with concurrent
clients, the store on SQLite against the store on PostgreSQL, in one run.

    pip install -e '.[bench]'
    PHONEVERIFY_TEST_POSTGRES=postgresql+psycopg://postgres@127.0.0.1:5432/postgres \\
        python bench/load.py [--clients 50] [--seconds 8] [--rounds 6] [--style spoken]
                             [--new-connections]

Two gunicorn servers run the same small Flask-Login app with the extension and the
dev phone (``common.login_app``), one on a SQLite file, one on a scratch database
made on the PostgreSQL server named by PHONEVERIFY_TEST_POSTGRES (dropped afterwards);
without that variable only SQLite runs and the ratio is skipped. Each server first
serves a short unmeasured warm-up phase (workers import, connect and prepare their
statements). Then each round runs one load phase on each server, back to back, the
order alternating from round to round. In a phase, --clients threads each run whole
verifications back to back (login, start, the dev phone's part, one status poll,
confirm, the gated page; every client its own user, number and loopback address, keep-alive
connections, or with --new-connections a new connection per request so that any
worker may take it) until --seconds have passed; the phase's rate is the verifications
completed inside the phase over its length (the clients' last ones, still running at
its end, finish before the next phase starts and are not counted). Failed verifications are
counted and shown, never retried. Loopback only; every request times out after 30 s.

The machine's speed drifts over tens of seconds (other tenants), so the two rates are
compared round by round, between phases run one after the other: the result is the
median over the rounds of PostgreSQL's rate divided by SQLite's in the same round.

Target: that median at least 0.9.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import httpx  # noqa: E402
from common import ROOT, login, scratch_postgres, verify  # noqa: E402

BENCH = os.path.dirname(os.path.abspath(__file__))
TARGET = 0.9
STARTUP_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def gunicorn(
    name: str, uri: str, tmp: str, *, style: str, workers: int, threads: int
) -> Iterator[str]:
    """A gunicorn serving the bench app on ``uri``; yields its base URL, always stopped."""
    port = free_port()
    instance = os.path.join(tmp, name)
    env = {
        **os.environ,
        "FLASK_PHONEVERIFY_DATABASE_URI": uri,
        "FLASK_PHONEVERIFY_STYLE": style,
        "FLASK_PHONEVERIFY_NUMBER_COOLDOWN": "0",
        "FLASK_PHONEVERIFY_CALLS_PER_NUMBER_PER_HOUR": "1000000",
        "FLASK_PHONEVERIFY_CALLS_PER_USER_PER_HOUR": "1000000",
        "FLASK_PHONEVERIFY_CALLS_PER_IP_PER_HOUR": "1000000",
        "FLASK_PHONEVERIFY_CALLS_PER_HOUR": "1000000",
        "FLASK_PHONEVERIFY_CALLS_PER_COUNTRY_PER_HOUR": "1000000",
    }
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        str(workers),
        "--worker-class",
        "gthread",
        "--threads",
        str(threads),
        "--bind",
        f"127.0.0.1:{port}",
        "--graceful-timeout",
        "5",
        "--pythonpath",
        f"{BENCH},{ROOT}",
        f"common:login_app({name!r}, {instance!r}, from_env=True)",
    ]
    log_path = os.path.join(tmp, f"{name}.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"gunicorn ({name}) exited:\n" + open(log_path).read())
                try:
                    httpx.get(base + "/gated", timeout=1.0)
                    break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"gunicorn ({name}) did not start in time")
                time.sleep(0.2)
            yield base
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=15)


def phase(
    base: str, clients: int, seconds: float, style: str, serial: list[int], keepalive: bool
) -> Any:
    """One load phase; returns (completed per second, completed, failed, first failure)."""
    done = [0] * clients
    failed = [0] * clients
    first_error: list[str] = []
    stop_at = time.monotonic() + seconds

    def client(i: int) -> None:
        limits = httpx.Limits(max_keepalive_connections=None if keepalive else 0)
        # its own address on the loopback network (127.0.0.0/8), as people come from
        # networks of their own: the per-IP budget is per client, not one shared counter
        address = f"127.0.{1 + i // 250}.{1 + i % 250}"
        transport = httpx.HTTPTransport(local_address=address, limits=limits)
        with httpx.Client(base_url=base, timeout=30.0, transport=transport) as http:
            while time.monotonic() < stop_at:
                serial[i] += 1
                uid = i + 10_000 * serial[i]  # its own user; the number ends in i's digits
                http.cookies.clear()
                try:
                    verify(http, login(http, uid), style, uid)
                    if time.monotonic() <= stop_at:  # finished inside the phase
                        done[i] += 1
                except (AssertionError, httpx.HTTPError, ValueError, KeyError) as e:
                    failed[i] += 1
                    if not first_error:
                        first_error.append(f"{type(e).__name__}: {e}"[:300])

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 120)
    return sum(done) / seconds, sum(done), sum(failed), (first_error or [""])[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--style", choices=("keypad", "spoken"), default="spoken")
    parser.add_argument(
        "--new-connections",
        action="store_true",
        help="every request on a new connection, so any worker may take it (no keep-alive)",
    )
    args = parser.parse_args()
    server = os.environ.get("PHONEVERIFY_TEST_POSTGRES")
    if not server:
        print("PHONEVERIFY_TEST_POSTGRES is unset: PostgreSQL skipped, SQLite alone, no ratio")
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        uris = {"sqlite": f"sqlite:///{tmp}/load.sqlite3"}
        if server:
            uris["postgresql"] = stack.enter_context(scratch_postgres(server))
        bases = {
            name: stack.enter_context(
                gunicorn(
                    name, uri, tmp, style=args.style, workers=args.workers, threads=args.threads
                )
            )
            for name, uri in uris.items()
        }
        print(
            f"gunicorn -w {args.workers} -k gthread --threads {args.threads}, "
            f"{args.clients} clients, {args.style} style, {args.seconds:g} s phases"
        )
        rates: dict[str, list[float]] = {name: [] for name in bases}
        failures = 0
        serial = [0] * args.clients
        for name, base in bases.items():
            _, _, failed, error = phase(
                base, args.clients, args.warmup, args.style, serial, not args.new_connections
            )
            if failed:
                print(f"  warm-up {name}: {failed} verifications failed, the first: {error}")
        for r in range(args.rounds):
            order = list(bases) if r % 2 == 0 else list(reversed(bases))
            for name in order:
                rate, done, failed, error = phase(
                    bases[name],
                    args.clients,
                    args.seconds,
                    args.style,
                    serial,
                    not args.new_connections,
                )
                rates[name].append(rate)
                failures += failed
                note = f"  first failure: {error}" if failed else ""
                print(
                    f"  round {r + 1} {name:10s} {rate:7.1f} verifications/s "
                    f"({done} done, {failed} failed){note}"
                )
    for name, values in rates.items():
        print(f"{name:10s} median {statistics.median(values):7.1f} verifications/s")
    if "postgresql" in rates:
        paired = [pg / lite for pg, lite in zip(rates["postgresql"], rates["sqlite"], strict=True)]
        ratio = statistics.median(paired)
        verdict = "MET" if ratio >= TARGET else "NOT MET"
        if failures:
            verdict = f"NOT MET: {failures} verifications failed, so the rates do not compare"
        print("PostgreSQL / SQLite by round: " + " ".join(f"{x:.2f}" for x in paired))
        print(
            f"PostgreSQL / SQLite: median {ratio:.2f}x over {len(paired)} rounds "
            f"(target: at least {TARGET}x) {verdict}"
        )


if __name__ == "__main__":
    main()
