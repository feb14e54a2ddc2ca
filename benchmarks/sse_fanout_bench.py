"""SSE fan-out: thousands of concurrent `GET /admin/v1/stream` clients on one control-plane
process (granian, one worker), fed by a producer at a steady event rate.

For each client count (default 500, then 5,000) in one run, on one server:

1. Open the clients (raw asyncio sockets, an `asyncio.Protocol` each that only splits
   frames and notes when each `id:` arrived) and let them sit idle: server memory per
   idle connection = RSS delta of the server process / clients (psutil).
2. A producer records `--rate` events/s for `--seconds` (each in its own transaction on
   the store, then published on the Redis event bus that wakes the server, as another
   control-plane node or a background job does). Fan-out latency of an event = receipt
   at a client - the producer's commit (one clock: the same process). Reported over
   every delivery (p50/p99/max) and per event until its *last* client got it (p50/p99/
   max of that). Server CPU = psutil cpu_times delta of the server process over the
   producer's window / wall time.
3. Close every client; the server's `portcullis_stream_open` must return to 0.

Baseline in the same run: the smaller client count; the table gives the 5,000/500 ratios
(linear fan-out would make CPU and memory ratios ~10 and latency grow with the time
to write to every client).

    .venv/bin/python benchmarks/sse_fanout_bench.py
    .venv/bin/python benchmarks/sse_fanout_bench.py --clients 500,5000 --rate 10 --seconds 10

Loopback only; the store is a temporary SQLite file, the Redis a throw-away server
(tests/support). The whole run is bounded by `--budget` seconds (default 180).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

import psutil
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from portcullis.events.bus import RedisBus, record_events
from portcullis.store.engine import create_engine, write_transaction
from portcullis.store.migrations import upgrade_to_head
from support.live_streams import (
    PLANE_ENV,
    gauge_reaches,
    key_created,
    request_bytes,
    signed_in,
    stream_gauges,
)
from support.redis import running_redis
from support.servers import control_plane

OPEN_CONCURRENCY = 200


def raise_fd_limit(needed: int) -> int:
    """Lift the soft open-files limit (inherited by the server we start) to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard == resource.RLIM_INFINITY else max(soft, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft < needed:
        raise SystemExit(f"open-files limit {soft} < {needed} needed (hard limit {hard})")
    return soft


class Client(asyncio.Protocol):
    """One SSE client: notes (event id, arrival) for every frame with an `id:`."""

    def __init__(self, opened: asyncio.Future[None]) -> None:
        self.opened = opened
        self.buffer = b""
        self.arrivals: list[tuple[int, float]] = []
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.buffer += data
        if not self.opened.done():
            if b"\r\n\r\n" in self.buffer and not self.buffer.startswith(b"HTTP/1.1 200"):
                self.opened.set_exception(AssertionError(self.buffer[:300]))
                return
            if b"stream open" not in self.buffer:
                return
            self.opened.set_result(None)
            self.buffer = self.buffer[self.buffer.index(b"stream open") :]
        *frames, self.buffer = self.buffer.split(b"\n\n")
        for frame in frames:
            # Chunked transfer coding may put a size line before a frame: find `id:`.
            at = frame.find(b"id: ")
            if at >= 0:
                end = frame.index(b"\n", at)
                self.arrivals.append((int(frame[at + 4 : end]), now))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed before the stream opened"))


@dataclass
class Phase:
    clients: int
    open_seconds: float = 0.0
    rss_idle_delta: int = 0
    cpu_seconds: float = 0.0
    idle_cpu_seconds: float = 0.0
    idle_window: float = 1.0
    window: float = 0.0
    events: int = 0
    deliveries: int = 0
    expected: int = 0
    per_delivery: list[float] = field(default_factory=list)
    per_event_last: list[float] = field(default_factory=list)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def open_clients(port: int, request: bytes, n: int) -> list[Client]:
    loop = asyncio.get_running_loop()
    clients: list[Client] = []
    todo = iter(range(n))

    async def opener() -> None:
        for _ in todo:
            opened: asyncio.Future[None] = loop.create_future()
            _, client = await loop.create_connection(partial(Client, opened), "127.0.0.1", port)
            assert client.transport is not None
            client.transport.write(request)
            await opened
            clients.append(client)

    await asyncio.gather(*(opener() for _ in range(OPEN_CONCURRENCY)))
    return clients


async def phase(
    args: argparse.Namespace,
    url: str,
    port: int,
    server: psutil.Process,
    bus: RedisBus,
    request: bytes,
    n: int,
) -> Phase:
    result = Phase(n)
    rss_before = server.memory_info().rss
    started = time.perf_counter()
    clients = await open_clients(port, request, n)
    result.open_seconds = time.perf_counter() - started
    await gauge_reaches(url, "portcullis_stream_live", args.own_live + n, timeout=60)
    await asyncio.sleep(1.0)  # idle: let the server settle before reading its memory
    result.rss_idle_delta = server.memory_info().rss - rss_before
    idle_before, idle_start = server.cpu_times(), time.perf_counter()
    await asyncio.sleep(args.idle)
    idle_after = server.cpu_times()
    result.idle_cpu_seconds = (idle_after.user + idle_after.system) - (
        idle_before.user + idle_before.system
    )
    result.idle_window = time.perf_counter() - idle_start
    print(
        f"  {n} clients open in {result.open_seconds:.1f} s; idle server CPU "
        f"{100 * result.idle_cpu_seconds / result.idle_window:.0f}%",
        flush=True,
    )

    committed: dict[int, float] = {}
    interval = 1.0 / args.rate
    cpu_before = server.cpu_times()
    window_start = time.perf_counter()
    for i in range(int(args.rate * args.seconds)):
        due = window_start + i * interval
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        async with write_transaction(bus.engine) as conn:
            (event,) = await record_events(conn, [key_created(i)])
        committed[event.id] = time.perf_counter()
        await bus.deliver([event])
    # Let the last event reach everyone (bounded), then close the CPU window.
    last = max(committed)
    deadline = time.perf_counter() + 30
    while time.perf_counter() < deadline and not all(
        c.arrivals and c.arrivals[-1][0] >= last for c in clients
    ):
        await asyncio.sleep(0.05)
    result.window = time.perf_counter() - window_start
    cpu_after = server.cpu_times()
    result.cpu_seconds = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    result.events = len(committed)
    result.expected = len(committed) * n
    last_arrival: dict[int, float] = {}
    for client in clients:
        for event_id, at in client.arrivals:
            if event_id in committed:
                latency = at - committed[event_id]
                result.per_delivery.append(latency)
                last_arrival[event_id] = max(last_arrival.get(event_id, 0.0), latency)
    result.deliveries = len(result.per_delivery)
    result.per_event_last = list(last_arrival.values())

    for client in clients:
        if client.transport is not None:
            client.transport.abort()
    await gauge_reaches(url, "portcullis_stream_open", args.own, timeout=60)
    return result


async def run(
    args: argparse.Namespace,
    url: str,
    port: int,
    server: psutil.Process,
    redis_url: str,
    database_url: str,
) -> list[Phase]:
    token = await signed_in(url, database_url, "bench@example.com")
    request = request_bytes(port, token, "?types=key.created")
    bus = RedisBus(create_engine(database_url), redis_url)
    await bus.start()
    try:
        # The process's own streams (presence follows config changes on one).
        own = await stream_gauges(url)
        args.own, args.own_live = own["portcullis_stream_open"], own["portcullis_stream_live"]
        # Warm up the endpoint (first requests build caches) before any measurement.
        warm = await open_clients(port, request, 20)
        for client in warm:
            assert client.transport is not None
            client.transport.abort()
        await gauge_reaches(url, "portcullis_stream_open", args.own)
        return [await phase(args, url, port, server, bus, request, n) for n in args.clients]
    finally:
        await bus.close()
        await bus.engine.dispose()


def report(phases: list[Phase], args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    for p in phases:
        rows.append(
            {
                "clients": p.clients,
                "open_s": round(p.open_seconds, 1),
                "opens_per_s": round(p.clients / p.open_seconds),
                "rss_per_idle_client_kib": round(p.rss_idle_delta / p.clients / 1024, 1),
                "events": p.events,
                "deliveries": p.deliveries,
                "expected_deliveries": p.expected,
                "delivery_p50_ms": round(pct(p.per_delivery, 0.50) * 1000, 1),
                "delivery_p99_ms": round(pct(p.per_delivery, 0.99) * 1000, 1),
                "delivery_max_ms": round(max(p.per_delivery, default=float("nan")) * 1000, 1),
                "all_clients_p50_ms": round(pct(p.per_event_last, 0.50) * 1000, 1),
                "all_clients_p99_ms": round(pct(p.per_event_last, 0.99) * 1000, 1),
                "all_clients_max_ms": round(max(p.per_event_last, default=float("nan")) * 1000, 1),
                "server_cpu_idle_percent": round(100 * p.idle_cpu_seconds / p.idle_window, 1),
                "server_cpu_percent": round(100 * p.cpu_seconds / p.window, 1),
                "server_cpu_ms_per_delivery": round(1000 * p.cpu_seconds / max(p.deliveries, 1), 3),
            }
        )
    columns = list(rows[0])
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    print()
    print(f"SSE fan-out at {args.rate} events/s for {args.seconds} s, one control-plane process")
    for name, width in zip(columns, widths, strict=True):
        print(f"  {name:<26}" + "  ".join(f"{r[name]!s:>{max(width, 8)}}" for r in rows))
    ratios: dict[str, float] = {}
    if len(rows) >= 2:
        small, big = rows[0], rows[-1]
        for name in (
            "rss_per_idle_client_kib",
            "delivery_p99_ms",
            "all_clients_p99_ms",
            "server_cpu_idle_percent",
            "server_cpu_percent",
            "server_cpu_ms_per_delivery",
        ):
            if small[name]:
                ratios[name] = round(big[name] / small[name], 2)
        print(f"  ratio {big['clients']}/{small['clients']} clients: {ratios}")
    return {"rate": args.rate, "seconds": args.seconds, "phases": rows, "ratios": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="500,5000")
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--queue-size", type=int, default=None, help="PORTCULLIS_STREAM_QUEUE_SIZE")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of idle CPU measure")
    parser.add_argument(
        "--recheck", type=float, default=None, help="PORTCULLIS_STREAM_RECHECK_SECONDS"
    )
    parser.add_argument("--budget", type=float, default=180.0, help="abort after this long")
    args = parser.parse_args()
    args.clients = [int(n) for n in args.clients.split(",")]
    limit = raise_fd_limit(2 * max(args.clients) + 1000)
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="sse-bench-"))
    try:
        database_url = f"sqlite+aiosqlite:///{tmp / 'store.db'}"
        asyncio.run(upgrade_to_head(database_url))
        with running_redis() as redis:
            env = {
                **PLANE_ENV,
                "PORTCULLIS_REDIS_URL": redis.url,
            }
            if args.recheck is not None:
                env["PORTCULLIS_STREAM_RECHECK_SECONDS"] = str(args.recheck)
            if args.queue_size is not None:
                env["PORTCULLIS_STREAM_QUEUE_SIZE"] = str(args.queue_size)
            with control_plane(database_url, env=env) as plane:
                assert plane.process is not None
                (server,) = psutil.Process(plane.process.pid).children()
                took = time.monotonic() - started
                print(f"open-files limit {limit}; server pid {server.pid}; up in {took:.0f} s")

                async def bounded() -> list[Phase]:
                    remaining = args.budget - (time.monotonic() - started)
                    async with asyncio.timeout(remaining):
                        return await run(
                            args, plane.url, plane.port, server, redis.url, database_url
                        )

                phases = uvloop.run(bounded())
        results = report(phases, args)
        results["total_seconds"] = round(time.monotonic() - started, 1)
        print(json.dumps(results, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
