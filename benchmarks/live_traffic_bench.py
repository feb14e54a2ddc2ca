"""Live traffic's own costs (analytics/live.py, services/streams/traffic.py), in process.

- `worker`: CPU per record of `WorkerTraffic.observe` (on the request's path) and of the
  per-second sums (the worker's task: pairs, latency bins, reports, their JSON), over
  200k records spread over 10 routes and 10 consumers; and the report sizes.
- `store`: the store transport on a temp SQLite file: 8 workers' reports of one second
  inserted (one transaction), a control plane's poll that finds them (read, decode,
  merge) and an empty poll; medians over 30 seconds.

The whole per-request cost in context is `hot_path_bench.py --live-traffic`.

Run from the repository root:
    .venv/bin/python benchmarks/live_traffic_bench.py [worker|store]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from portcullis.analytics.live import (
    Organizations,
    SecondAggregator,
    SecondReport,
    StoreReportSink,
    WorkerTraffic,
)
from portcullis.analytics.record import RequestRecord
from portcullis.model.config import GatewayConfig
from portcullis.services.streams.traffic import LiveTraffic
from portcullis.settings import Settings
from portcullis.store.engine import create_engine
from portcullis.store.migrations import upgrade_to_head

ROUTES, CONSUMERS = 10, 10
CONFIG = GatewayConfig.model_validate(
    {
        "services": [{"name": "svc", "url": "http://127.0.0.1:9"}],
        "routes": [
            {"name": f"route-{n}", "service": "svc", "paths": [f"/r{n}"]} for n in range(ROUTES)
        ],
        "consumers": [{"username": f"consumer-{n}"} for n in range(CONSUMERS)],
    }
)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def records(n: int, second: float) -> list[RequestRecord]:
    rng = random.Random(1)
    out = []
    for i in range(n):
        latency = rng.lognormvariate(2.5, 0.8)
        out.append(
            RequestRecord(
                request_id="r",
                started_at=second + 0.5 - latency / 1000,
                method="GET",
                path="/",
                path_template=None,
                route=f"route-{i % ROUTES}",
                service="svc",
                upstream_target=None,
                consumer=f"consumer-{i % CONSUMERS}" if i % 2 else None,
                credential_id=None,
                status=500 if i % 50 == 0 else 200,
                bytes_in=0,
                bytes_out=0,
                client_ip="127.0.0.1",
                user_agent=None,
                latency_ms=latency,
                upstream_ms=None,
                gateway_ms=latency,
                upstream_offset_ms=None,
                flags=0,
                error_kind=None,
                trace_id=None,
                priority=None,
            )
        )
    return out


class Discard:
    async def send(self, reports: Sequence[SecondReport]) -> None:
        [r.to_json() for r in reports]

    async def aclose(self) -> None:
        return None


def aggregator(worker: str = "portcullis:host:1") -> SecondAggregator:
    return SecondAggregator(
        worker, Organizations(lambda: CONFIG), max_routes=200, max_consumers=200
    )


def bench_worker(n: int, rounds: int) -> None:
    observe_ns, sums_us = [], []
    for _ in range(rounds):
        clock = Clock(1_700_000_000.5)
        batch = records(n, 1_700_000_000)
        traffic = WorkerTraffic(Discard(), aggregator(), capacity=n + 1, clock=clock)
        started = time.process_time()
        for record in batch:
            traffic.observe(record)
        observed = time.process_time()
        clock.now += 1
        asyncio.run(traffic.flush())
        done = time.process_time()
        observe_ns.append((observed - started) / n * 1e9)
        sums_us.append((done - observed) / n * 1e6)
    print(
        f"observe: median {statistics.median(observe_ns):.0f} ns/record;"
        f" per-second sums: median {statistics.median(sums_us):.2f} us/record"
        f"  ({rounds} x {n} records, {ROUTES} routes, {CONSUMERS} consumers)"
    )
    agg = aggregator()
    print(f"report bytes: idle {len(agg.report(1).to_json())}", end="")
    agg.add(2, records(2000, 2))
    print(f"; 2000 requests over {ROUTES} routes / {CONSUMERS} consumers", end="")
    print(f" {len(agg.report(2).to_json())}")


async def bench_store(seconds: int, workers: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/live.db"
        await upgrade_to_head(url)
        engine = create_engine(url)
        clock = Clock(float(int(time.time())) + 0.5)
        live = LiveTraffic(engine, Settings(), None, clock=clock)
        sink = StoreReportSink(engine, clock=clock)
        inserts, polls, empty = [], [], []
        for _ in range(seconds):
            second = int(clock())
            reports = []
            for w in range(workers):
                agg = aggregator(f"portcullis:host:{w}")
                agg.add(second, records(2000, second))
                reports.append(agg.report(second))
            clock.now += 1
            t = time.perf_counter()
            await sink.send(reports)
            inserts.append(time.perf_counter() - t)
            t = time.perf_counter()
            await live.poll_store()
            polls.append(time.perf_counter() - t)
            t = time.perf_counter()
            await live.poll_store()
            empty.append(time.perf_counter() - t)
            live.tick()
        await engine.dispose()
    size = len(reports[0].to_json())
    print(
        f"sqlite store, {workers} workers' reports of {size} bytes per second: insert"
        f" {statistics.median(inserts) * 1000:.1f} ms, a poll finding them"
        f" {statistics.median(polls) * 1000:.1f} ms, an empty poll"
        f" {statistics.median(empty) * 1000:.1f} ms (medians of {seconds}); frames {live.frames}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", nargs="*", help="worker and/or store [both]")
    p.add_argument("-n", type=int, default=200_000, help="records per round [200000]")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    args.what = args.what or ["worker", "store"]
    if "worker" in args.what:
        bench_worker(args.n, args.rounds)
    if "store" in args.what:
        asyncio.run(bench_store(30, 8))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
