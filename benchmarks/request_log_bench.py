"""The request-log count check and the logging overhead on the proxy path.

`run` (the default) starts an nginx origin and `portcullis serve --workers W` in
front of it on a fresh store (SQLite by default, `--postgres` for a throw-away
PostgreSQL server), sends GETs at a fixed rate for `--duration` seconds from
`--procs` load processes, waits for every response, stops the gateway with
SIGTERM (graceful: each worker flushes its queue) and compares

    responses the clients received  ==  rows in request_log

It also reports the achieved rate, latency percentiles, the gateway's CPU per
request, and what the workers said when they closed their queues (rows written,
dropped because the queue was full, lost after write failures). With
`--compare` the same load runs a second time with PORTCULLIS_REQUEST_LOG_ENABLED=
false, side by side: that difference is the logging overhead.

The load generator is paced like wrk2 (open loop: request i is due at
start + i/rate whether or not earlier ones have answered; a request that finds
no free connection waits in a backlog, and its latency counts from when it was
due, so a stalled server shows up in the percentiles instead of slowing the
client down). It speaks raw HTTP/1.1 keep-alive over asyncio protocols (uvloop)
so that one process can drive several thousand requests a second; unlike wrk it
counts every request it sent, including the last in-flight ones, which is what
an exact count comparison needs.

`micro` measures `RequestLogQueue.observe()` in µs per call and the insert
strategies of the writer (executemany with positional tuples vs SQLAlchemy Core
with dicts) in rows/s on SQLite (and PostgreSQL with `--postgres`).

Run from the repository root, e.g.
    .venv/bin/python benchmarks/request_log_bench.py --rate 5000 --duration 60 --compare
    .venv/bin/python benchmarks/request_log_bench.py micro --postgres
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import queue
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, cast

if __package__ in (None, ""):
    # Run as a script (`python benchmarks/request_log_bench.py`): make the package importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
from rich.console import Console
from rich.table import Table
from structlog.testing import capture_logs

from benchmarks._procs import (
    ManagedProcess,
    StartupError,
    free_port,
    nginx_origin_conf,
    nginx_process,
    wait_until_ready,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
ORIGIN_BODY = '{"ok":true}'
REQUEST_PATH = "/bench/items"

console = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True)


class BenchError(RuntimeError):
    """The benchmark could not produce a result (a server failed, a count is unreadable)."""


# --------------------------------------------------------------------------- load generator
@dataclass
class LoadResult:
    """What one load process (or all of them, merged) sent and received."""

    sent: int = 0
    responses: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0  # connection lost or refused with a request outstanding
    late: int = 0  # requests that waited for a free connection
    connections: int = 0
    elapsed_s: float = 0.0  # from the first due time to the last response
    latencies_ms: list[float] = field(default_factory=list, repr=False)  # since due
    service_ms: list[float] = field(default_factory=list, repr=False)  # since sent

    def merge(self, other: LoadResult) -> None:
        self.sent += other.sent
        self.responses += other.responses
        for status, n in other.statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + n
        self.errors += other.errors
        self.late += other.late
        self.connections += other.connections
        self.elapsed_s = max(self.elapsed_s, other.elapsed_s)
        self.latencies_ms.extend(other.latencies_ms)
        self.service_ms.extend(other.service_ms)

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: one request at a time, Content-Length bodies."""

    def __init__(self, load: _PacedLoad) -> None:
        self.load = load
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.need: int | None = None
        self.status = 0
        self.due = 0.0
        self.sent_at = 0.0
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, hence the cast.
        self.transport = cast(asyncio.Transport, transport)

    def send(self, due: float, now: float) -> None:
        assert self.transport is not None
        self.due, self.sent_at, self.busy = due, now, True
        self.transport.write(self.load.request)

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        while True:
            if self.need is None:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(buf[:end]).lower()
                self.status = int(head[9:12])
                at = head.find(b"\r\ncontent-length:")
                if at < 0:
                    self.load.failed(self)
                    return
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17 : stop if stop >= 0 else len(head)])
                self.need = end + 4 + length
            if len(buf) < self.need:
                return
            del buf[: self.need]
            self.need = None
            self.load.answered(self, self.status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.load.lost(self)


class _PacedLoad:
    """Open-loop load at `rate` req/s for `duration` s over up to `max_connections`."""

    def __init__(
        self, port: int, rate: float, duration: float, connections: int, max_connections: int
    ) -> None:
        self.port = port
        self.rate = rate
        self.duration = duration
        self.initial = connections
        self.max_connections = max_connections
        self.request = (
            f"GET {REQUEST_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "User-Agent: request-log-bench\r\nAccept: */*\r\n\r\n"
        ).encode()
        self.idle: list[_Connection] = []
        self.backlog: deque[float] = deque()
        self.opening = 0
        self.open = 0
        self.inflight = 0
        self.result = LoadResult()
        self.statuses: Counter[int] = Counter()
        self.loop = asyncio.get_running_loop()
        self.all_done = asyncio.Event()
        self.scheduling = True
        self.last_answer = 0.0

    async def _connect(self) -> None:
        self.opening += 1
        try:
            _, conn = await self.loop.create_connection(
                lambda: _Connection(self), "127.0.0.1", self.port
            )
        except OSError:
            self.opening -= 1
            self.result.errors += 1
            return
        self.opening -= 1
        self.open += 1
        self.result.connections += 1
        self._ready(conn)

    def _send(self, conn: _Connection, due: float) -> None:
        self.inflight += 1
        conn.send(due, time.perf_counter())

    def _ready(self, conn: _Connection) -> None:
        if self.backlog:
            self.result.late += 1
            self._send(conn, self.backlog.popleft())
        else:
            self.idle.append(conn)
            self._check_done()

    def _check_done(self) -> None:
        if not self.scheduling and not self.backlog and not self.inflight:
            self.all_done.set()

    def dispatch(self, due: float) -> None:
        self.result.sent += 1
        if self.idle:
            self._send(self.idle.pop(), due)
            return
        self.backlog.append(due)
        if self.open + self.opening < self.max_connections:
            self.loop.create_task(self._connect())

    def answered(self, conn: _Connection, status: int) -> None:
        now = time.perf_counter()
        conn.busy = False
        self.inflight -= 1
        self.result.responses += 1
        self.statuses[status] += 1
        self.result.latencies_ms.append((now - conn.due) * 1000.0)
        self.result.service_ms.append((now - conn.sent_at) * 1000.0)
        self.last_answer = now
        self._ready(conn)

    def failed(self, conn: _Connection) -> None:
        if conn.transport is not None:
            conn.transport.close()

    def lost(self, conn: _Connection) -> None:
        self.open -= 1
        if conn in self.idle:
            self.idle.remove(conn)
        if conn.busy:
            conn.busy = False
            self.inflight -= 1
            self.result.errors += 1
        if self.backlog and self.open + self.opening < self.max_connections:
            self.loop.create_task(self._connect())
        self._check_done()

    async def run(self) -> LoadResult:
        await asyncio.gather(*(self._connect() for _ in range(self.initial)))
        start = time.perf_counter()
        due_count = 0
        total = int(self.rate * self.duration)
        while due_count < total:
            now = time.perf_counter()
            due_now = min(total, int((now - start) * self.rate) + 1)
            while due_count < due_now:
                self.dispatch(start + due_count / self.rate)
                due_count += 1
            await asyncio.sleep(0.001)
        self.scheduling = False
        self._check_done()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_done.wait(), 60)
        # Anything still outstanding after a minute is counted as an error.
        outstanding = self.result.sent - self.result.responses - self.result.errors
        self.result.errors += max(0, outstanding)
        self.result.elapsed_s = max(self.last_answer - start, 1e-9)
        self.result.statuses = dict(self.statuses)
        for conn in self.idle:
            if conn.transport is not None:
                conn.transport.close()
        return self.result


def _load_process(
    port: int,
    rate: float,
    duration: float,
    connections: int,
    max_connections: int,
    start_at: float,
    out: Any,
) -> None:
    """Entry point of one load process: wait for the common start time, run, report."""
    import uvloop

    async def main() -> LoadResult:
        load = _PacedLoad(port, rate, duration, connections, max_connections)
        await asyncio.sleep(max(0.0, start_at - time.time()))
        return await load.run()

    try:
        out.put(asdict(uvloop.run(main())))
    except BaseException as exc:
        out.put({"error": f"{type(exc).__name__}: {exc}"})
        raise


def drive_load(
    port: int, *, rate: float, duration: float, procs: int, connections: int
) -> LoadResult:
    """Run `procs` paced load processes at rate/procs each; merge their results."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 1.5  # every process is started and connected by then
    workers = [
        ctx.Process(
            target=_load_process,
            args=(port, rate / procs, duration, connections, connections * 8, start_at, out),
            daemon=True,
        )
        for _ in range(procs)
    ]
    for w in workers:
        w.start()
    merged = LoadResult()
    deadline = time.monotonic() + duration + 120
    try:
        for _ in workers:
            while True:
                try:
                    got = out.get(timeout=1.0)
                    break
                except queue.Empty:
                    if time.monotonic() > deadline or any(w.exitcode for w in workers):
                        raise BenchError("a load process died or hung") from None
            if "error" in got:
                raise BenchError(f"load process failed: {got['error']}")
            merged.merge(LoadResult(**got))
    finally:
        for w in workers:
            w.join(timeout=10)
            if w.is_alive():
                w.kill()
    return merged


# --------------------------------------------------------------------------- gateway
@dataclass
class RunResult:
    """One end-to-end run: load, rows, the workers' queue totals, gateway CPU."""

    label: str
    logging: bool
    workers: int
    target_rate: float
    duration_s: float
    load: LoadResult
    rows: int | None  # rows of the load's requests
    other_rows: int  # rows of the readiness probes (GET /)
    written: int  # all rows, as the workers counted them when they closed
    dropped: int
    lost: int
    closed_workers: int
    gateway_cpu_s: float

    @property
    def achieved_rate(self) -> float:
        return self.load.responses / self.load.elapsed_s if self.load.elapsed_s else 0.0

    @property
    def counts_equal(self) -> bool:
        return self.rows is not None and self.rows == self.load.responses and not self.load.errors

    def summary(self) -> dict[str, Any]:
        load = self.load
        return {
            "label": self.label,
            "logging": self.logging,
            "workers": self.workers,
            "target_rate": self.target_rate,
            "duration_s": self.duration_s,
            "sent": load.sent,
            "responses": load.responses,
            "ok_2xx": load.ok,
            "statuses": {str(k): v for k, v in sorted(load.statuses.items())},
            "client_errors": load.errors,
            "late_requests": load.late,
            "connections": load.connections,
            "achieved_rate": round(self.achieved_rate, 1),
            "latency_ms": {
                q: round(percentile(load.latencies_ms, float(q)), 3) for q in ("50", "99", "99.9")
            },
            "service_ms": {
                q: round(percentile(load.service_ms, float(q)), 3) for q in ("50", "99")
            },
            "rows": self.rows,
            "other_rows": self.other_rows,
            "written": self.written,
            "dropped": self.dropped,
            "lost": self.lost,
            "closed_workers": self.closed_workers,
            "counts_equal": self.counts_equal if self.logging else None,
            "gateway_cpu_s": round(self.gateway_cpu_s, 3),
            "gateway_cpu_us_per_request": round(
                self.gateway_cpu_s / load.responses * 1e6 if load.responses else 0.0, 1
            ),
        }


def gateway_config(origin_port: int) -> str:
    return (
        'format_version: "1"\n'
        "services:\n"
        "  - name: bench-origin\n"
        f"    url: http://127.0.0.1:{origin_port}\n"
        "routes:\n"
        "  - name: bench\n"
        "    service: bench-origin\n"
        "    paths: [/]\n"
    )


def _cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def queue_totals(log_text: str) -> tuple[int, int, int, int]:
    """Sum the `request_log.closed` lines of every worker: (written, dropped, lost, workers)."""
    written = dropped = lost = workers = 0
    for line in log_text.splitlines():
        if "request_log.closed" not in line:
            continue
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            written += int(event["written"])
            dropped += int(event["dropped"])
            lost += int(event["lost"])
            workers += 1
    return written, dropped, lost, workers


COUNT_SQL = (
    "SELECT count(*), coalesce(sum(CASE WHEN path = '" + REQUEST_PATH + "' THEN 1 ELSE 0 END), 0)"
    " FROM request_log"
)


def count_rows(database_url: str) -> tuple[int, int]:
    """Rows in request_log: (all, those of the load's path) — the readiness probe's GET /
    is logged too. Read after the gateway stopped: nothing writes any more."""
    if database_url.startswith("sqlite"):
        path = database_url.split("///", 1)[1]
        with contextlib.closing(sqlite3.connect(path)) as conn:
            total, bench = conn.execute(COUNT_SQL).fetchone()
            return int(total), int(bench)

    async def pg_count() -> tuple[int, int]:
        from sqlalchemy import text

        from portcullis.store.engine import create_engine

        engine = create_engine(database_url)
        try:
            async with engine.connect() as conn:
                total, bench = (await conn.execute(text(COUNT_SQL))).one()
                return int(total), int(bench)
        finally:
            await engine.dispose()

    return asyncio.run(pg_count())


def run_once(
    args: argparse.Namespace, tmp: Path, origin_port: int, database_url: str, *, logging: bool
) -> RunResult:
    """Start a gateway, load it, stop it gracefully, count."""
    label = "logging on" if logging else "logging off"
    work = tmp / ("on" if logging else "off")
    work.mkdir()
    config = work / "gateway.yaml"
    config.write_text(gateway_config(origin_port))
    proxy_port, admin_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTCULLIS_")}
    env |= {
        "PORTCULLIS_DATABASE_URL": database_url,
        # info: each worker's `request_log.closed` line (written, dropped, lost) is read back.
        "PORTCULLIS_LOG_LEVEL": "info",
        "PORTCULLIS_SECRET_KEY_FILE": str(work / "secret"),
        "PORTCULLIS_SHUTDOWN_GRACE": str(args.grace),
        "PORTCULLIS_REQUEST_LOG_ENABLED": "true" if logging else "false",
        "PORTCULLIS_REQUEST_LOG_QUEUE_SIZE": str(args.queue_size),
        "PORTCULLIS_REQUEST_LOG_BATCH_SIZE": str(args.batch_size),
        "PORTCULLIS_REQUEST_LOG_FLUSH_INTERVAL": str(args.flush_interval),
    }
    argv = [sys.executable, "-m", "portcullis", "serve", "--config", str(config)]
    argv += ["--proxy-port", str(proxy_port), "--admin-port", str(admin_port)]
    argv += ["--workers", str(args.workers)]
    gw = ManagedProcess(f"portcullis ({label})", argv, log_path=work / "serve.log", env=env)
    gw.start()
    try:
        wait_until_ready(gw, proxy_port, timeout=60, expect_body=ORIGIN_BODY.encode())
        gw.remember_tree()
        procs = gw.processes()
        cpu_before = _cpu_seconds(procs)
        load = drive_load(
            proxy_port,
            rate=args.rate,
            duration=args.duration,
            procs=args.procs,
            connections=args.connections,
        )
        cpu = _cpu_seconds(procs) - cpu_before
    finally:
        # SIGTERM: granian drains, each worker flushes its request-log queue.
        gw.stop(grace=args.grace + 30)
    written, dropped, lost, closed = queue_totals(gw.log_path.read_text(errors="replace"))
    total, rows = count_rows(database_url) if logging else (0, 0)
    return RunResult(
        label, logging, args.workers, args.rate, args.duration, load,
        rows if logging else None, total - rows, written, dropped, lost, closed, cpu,
    )  # fmt: skip


@contextlib.contextmanager
def database(args: argparse.Namespace, tmp: Path, name: str) -> Iterator[str]:
    """A fresh store URL: a SQLite file in `tmp`, or a new database on a throw-away server."""
    if not args.postgres:
        yield f"sqlite+aiosqlite:///{tmp / f'{name}.db'}"
        return
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from support.postgres import running_postgres

    with running_postgres() as server:
        yield server.create_database()


def render(results: list[RunResult]) -> None:
    table = Table(title="request log: served vs logged, and the cost of logging")
    table.add_column("")
    for r in results:
        table.add_column(r.label, justify="right")
    rows: list[tuple[str, list[str]]] = []
    summaries = [r.summary() for r in results]

    def line(name: str, fmt: Any) -> None:
        rows.append((name, [fmt(s) for s in summaries]))

    line("target rate (req/s)", lambda s: f"{s['target_rate']:,.0f}")
    line("achieved rate (req/s)", lambda s: f"{s['achieved_rate']:,.0f}")
    line("sent", lambda s: f"{s['sent']:,}")
    line("responses (2xx)", lambda s: f"{s['responses']:,} ({s['ok_2xx']:,})")
    line("client errors", lambda s: f"{s['client_errors']:,}")
    line("late (waited for a connection)", lambda s: f"{s['late_requests']:,}")
    line(
        "p50 / p99 / p99.9 ms (from due)",
        lambda s: " / ".join(f"{v:.2f}" for v in s["latency_ms"].values()),
    )
    line(
        "p50 / p99 ms (service)", lambda s: " / ".join(f"{v:.2f}" for v in s["service_ms"].values())
    )
    line("gateway CPU µs / request", lambda s: f"{s['gateway_cpu_us_per_request']:,.0f}")
    line("rows in request_log", lambda s: "—" if s["rows"] is None else f"{s['rows']:,}")
    line(
        "queue: written / dropped / lost",
        lambda s: f"{s['written']:,} / {s['dropped']:,} / {s['lost']:,}" if s["logging"] else "—",
    )
    line(
        "rows == responses",
        lambda s: "—" if s["counts_equal"] is None else ("YES" if s["counts_equal"] else "NO"),
    )
    for name, cells in rows:
        table.add_row(name, *cells)
    console.print(table)


def run_main(args: argparse.Namespace) -> int:
    if args.duration <= 0 or args.rate <= 0:
        err.print("[red]--duration and --rate must be > 0[/]")
        return 2
    busy = psutil.cpu_percent(interval=0.5)
    if busy > 20:
        err.print(f"[yellow]warning: CPUs {busy:.0f}% busy before the run (shared machine)[/]")
    results: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="portcullis-rlbench-") as name:
        tmp = Path(name)
        origin_port = free_port()
        origin = nginx_process(
            "nginx origin",
            tmp / "origin",
            nginx_origin_conf(tmp / "origin", origin_port, ORIGIN_BODY),
        )
        origin.start()
        try:
            wait_until_ready(origin, origin_port, timeout=30, expect_body=ORIGIN_BODY.encode())
            modes = [True, False] if args.compare else [True]
            for logging in modes:
                with database(args, tmp, "on" if logging else "off") as url:
                    results.append(run_once(args, tmp, origin_port, url, logging=logging))
        except (StartupError, BenchError) as exc:
            err.print(f"[red]error:[/] {exc}")
            return 1
        finally:
            origin.stop()
    render(results)
    logged = results[0]
    if logged.achieved_rate < args.rate * 0.98:
        console.print(
            f"[yellow]the target rate was not reached: {logged.achieved_rate:,.0f} of "
            f"{args.rate:,.0f} req/s (the count check holds at the rate reached)[/]"
        )
    save(args, "run", {"runs": [r.summary() for r in results]})
    return 0 if logged.counts_equal else 1


# --------------------------------------------------------------------------- micro
def _record() -> Any:
    from portcullis.analytics.record import RequestRecord

    return RequestRecord(
        request_id="0af7651916cd43dd8448eb211c80319c", started_at=time.time(), method="GET",
        path="/bench/items/42", path_template="/bench", route="bench", service="bench-origin",
        upstream_target="127.0.0.1:9000", consumer="alice", credential_id="k-123",
        status=200, bytes_in=0, bytes_out=11, client_ip="127.0.0.1",
        user_agent="request-log-bench", latency_ms=1.2, upstream_ms=0.9, gateway_ms=0.3,
        upstream_offset_ms=0.2, flags=0, error_kind=None,
        trace_id="0af7651916cd43dd8448eb211c80319c", priority=None,
    )  # fmt: skip


def micro_observe(n: int = 1_000_000) -> dict[str, float]:
    """µs per observe() on a queue with room, and on a full queue (the drop path)."""
    from portcullis.analytics.log_queue import RequestLogQueue

    async def nowrite(_: Any) -> None:
        return None

    record = _record()
    queue = RequestLogQueue(nowrite, capacity=n + 1, batch_size=n + 2, flush_interval=60)
    started = time.perf_counter()
    for _ in range(n):
        queue.observe(record)
    room = (time.perf_counter() - started) / n * 1e6
    full = RequestLogQueue(nowrite, capacity=1, batch_size=10, flush_interval=60)
    full.observe(record)
    with capture_logs():  # the one rate-limited drop warning
        started = time.perf_counter()
        for _ in range(n):
            full.observe(record)
        dropping = (time.perf_counter() - started) / n * 1e6
    return {"observe_us": round(room, 3), "observe_full_us": round(dropping, 3)}


async def micro_insert(url: str, batches: int, batch_size: int) -> dict[str, float]:
    """Rows/s for the writer's tuples/executemany and for Core insert with dicts."""
    from sqlalchemy import insert

    from portcullis.analytics.log_queue import COLUMNS, RequestLogWriter, record_row
    from portcullis.store.analytics_tables import RequestLogRow
    from portcullis.store.engine import create_engine, write_transaction
    from portcullis.store.migrations import upgrade_to_head

    await upgrade_to_head(url)
    engine = create_engine(url)
    try:
        writer = RequestLogWriter(engine, "bench:host:1")
        records = [_record() for _ in range(batch_size)]
        await writer.write(records)  # warm: connection, statement cache

        started = time.perf_counter()
        for _ in range(batches):
            await writer.write(records)
        tuples = batches * batch_size / (time.perf_counter() - started)

        stmt = insert(RequestLogRow)
        started = time.perf_counter()
        for _ in range(batches):
            dicts = [
                dict(zip(COLUMNS, record_row(r, "bench:host:1"), strict=True)) for r in records
            ]
            async with write_transaction(engine) as conn:
                await conn.execute(stmt, dicts)
        dicts_rate = batches * batch_size / (time.perf_counter() - started)
    finally:
        await engine.dispose()
    return {"tuples_rows_per_s": round(tuples), "dicts_rows_per_s": round(dicts_rate)}


def micro_main(args: argparse.Namespace) -> int:
    results: dict[str, Any] = {"observe": micro_observe()}
    with tempfile.TemporaryDirectory(prefix="portcullis-rlmicro-") as name:
        tmp = Path(name)
        results["sqlite"] = asyncio.run(
            micro_insert(f"sqlite+aiosqlite:///{tmp / 'micro.db'}", args.batches, args.batch_size)
        )
        if args.postgres:
            with database(args, tmp, "micro") as url:
                results["postgresql"] = asyncio.run(
                    micro_insert(url, args.batches, args.batch_size)
                )
    table = Table(title=f"request log micro-benchmarks (batches of {args.batch_size})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("observe(), queue with room", f"{results['observe']['observe_us']:.3f} µs")
    table.add_row("observe(), queue full (drop)", f"{results['observe']['observe_full_us']:.3f} µs")
    for backend in ("sqlite", "postgresql"):
        if backend in results:
            r = results[backend]
            table.add_row(f"{backend}: executemany, tuples", f"{r['tuples_rows_per_s']:,} rows/s")
            table.add_row(f"{backend}: Core insert, dicts", f"{r['dicts_rows_per_s']:,} rows/s")
    console.print(table)
    save(args, "micro", results)
    return 0


# --------------------------------------------------------------------------- main
def save(args: argparse.Namespace, kind: str, data: dict[str, Any]) -> None:
    if args.no_save:
        return
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"request-log-{kind}-{stamp}.json"
    options = {k: v for k, v in vars(args).items() if k != "func"}
    path.write_text(json.dumps({"options": options, "cpus": os.cpu_count(), **data}, indent=2))
    console.print(f"saved {path.relative_to(REPO_ROOT)}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="request_log_bench", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "command",
        nargs="?",
        choices=("run", "micro"),
        default="run",
        help="run: the count check and overhead (default); micro: observe() and inserts",
    )
    p.add_argument("--rate", type=float, default=5000, help="requests/s in total [5000]")
    p.add_argument("--duration", type=float, default=60, help="seconds of load [60]")
    p.add_argument("--workers", type=int, default=2, help="gateway workers [2]")
    p.add_argument("--procs", type=int, default=2, help="load processes [2]")
    p.add_argument("--connections", type=int, default=16, help="per load process [16]")
    p.add_argument("--compare", action="store_true", help="run again with logging off")
    p.add_argument("--queue-size", type=int, default=100_000, help="per worker [100000]")
    p.add_argument("--batch-size", type=int, default=1000, help="rows per insert [1000]")
    p.add_argument("--flush-interval", type=float, default=1.0, help="seconds [1]")
    p.add_argument("--grace", type=float, default=30, help="gateway shutdown grace, s [30]")
    p.add_argument("--batches", type=int, default=50, help="micro: batches per strategy [50]")
    p.add_argument("--postgres", action="store_true", help="use a throw-away PostgreSQL store")
    p.add_argument("--no-save", action="store_true", help="don't write a JSON result file")
    return p.parse_args(argv)


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return micro_main(args) if args.command == "micro" else run_main(args)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
