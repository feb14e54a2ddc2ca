"""Webhook delivery: enqueue → first attempt latency at a steady event rate, and sustained
deliveries per second, each beside a baseline measured in the same run.

1. Latency: events are published on the event bus at `--rate` per second for
   `--seconds`; each is recorded (with its outbox message) in its own transaction,
   then the worker, woken by the bus, delivers it to a local receiver. Latency is
   receiver arrival - commit. Baseline: the same signed POST made directly, right after
   the same commit, with no queue in between (what the outbox, claim and bookkeeping add
   is the difference).
2. Throughput: `--burst` events are recorded first, then one worker delivers them all;
   deliveries/s. Baseline: the same number of signed POSTs sent directly with the
   worker's concurrency (the receiver's and the client's ceiling on this machine).

The receiver is an aiohttp server in its own thread (its own event loop), answering
204. Store: a temporary SQLite file, or `--database-url` (e.g. a PostgreSQL database).

    .venv/bin/python benchmarks/webhook_bench.py
    .venv/bin/python benchmarks/webhook_bench.py --rate 100 --seconds 20 --burst 5000
    .venv/bin/python benchmarks/webhook_bench.py --store postgresql   # a throw-away server

Results: printed, and saved to benchmarks/results/webhooks-<UTC timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from portcullis.events.bus import InProcessBus, record_event
from portcullis.events.catalogue import EventType
from portcullis.identity.secrets import ServerSecret
from portcullis.settings import Settings
from portcullis.store.engine import create_engine, write_transaction
from portcullis.store.migrations import upgrade_to_head
from portcullis.webhooks.endpoints import NewEndpoint, create_endpoint
from portcullis.webhooks.runner import WebhookDelivery, destination_policy
from portcullis.webhooks.sender import Sender
from portcullis.webhooks.signing import SigningKeys, message_id

SERVER = ServerSecret.from_secret(b"webhook-benchmark-secret-0123456789abcd")
DATA = {"key_id": "k1", "consumer": "alice", "environment": "live", "status": "revoked"}


class Receiver:
    """Records (event id → monotonic arrival time), answering on its own thread and loop."""

    def __init__(self) -> None:
        self.arrivals: dict[int, float] = {}
        self.count = 0
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from support.threaded_aiohttp import ThreadedAiohttpServer

        self._server = ThreadedAiohttpServer(
            lambda app: app.router.add_post("/hook", self._handle), name="bench-receiver"
        )

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.count += 1
        event_id = json.loads(body).get("event_id")
        if isinstance(event_id, int):
            self.arrivals.setdefault(event_id, time.monotonic())
        return web.Response(status=204)

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.port}/hook"


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {
        "count": len(ordered),
        "p50_ms": round(at(0.5), 2),
        "p95_ms": round(at(0.95), 2),
        "p99_ms": round(at(0.99), 2),
        "max_ms": round(ordered[-1] * 1000, 2),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 2),
    }


async def _wait_for(predicate: Any, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.01)  # benchmark harness polling, not test synchronisation
    return bool(predicate())


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="portcullis-webhook-bench-"))
    url = args.database_url or f"sqlite+aiosqlite:///{workdir / 'store.db'}"
    await upgrade_to_head(url)
    engine = create_engine(url)
    receiver = Receiver()
    receiver.start()
    settings = Settings(webhook_allowed_networks=["127.0.0.0/8"], webhook_poll_interval=1.0)
    async with write_transaction(engine) as conn:
        _, secret = await create_endpoint(
            conn,
            SERVER,
            NewEndpoint(receiver.url, ["key.*"], max_concurrency=64),
            datetime.now(UTC),
        )
    keys = SigningKeys.parse([secret])
    results: dict[str, Any] = {"store": "postgresql" if args.database_url else "sqlite"}

    # 1. latency at a steady rate, beside direct posts after the same commit
    bus = InProcessBus(engine)
    delivery = WebhookDelivery(engine, settings, SERVER, bus)
    delivery.start()
    committed: dict[int, float] = {}
    direct: list[float] = []
    direct_sender = Sender(destination_policy(settings))
    interval = 1.0 / args.rate
    start = time.monotonic()
    for n in range(int(args.rate * args.seconds)):
        await asyncio.sleep(max(0.0, start + n * interval - time.monotonic()))
        event = await bus.publish(EventType.KEY_REVOKED, "key:k1", DATA)
        committed[event.id] = time.monotonic()
        if n % 10 == 0:
            # Every tenth event also goes straight to the receiver: the no-queue baseline.
            body = json.dumps({"event_id": -event.id}).encode()
            before = time.monotonic()
            await direct_sender.send(
                receiver.url, keys.headers(message_id(), int(time.time()), body), body
            )
            direct.append(time.monotonic() - before)
    await _wait_for(lambda: all(i in receiver.arrivals for i in committed), time.monotonic() + 60)
    await delivery.stop()
    await bus.close()
    latencies = [receiver.arrivals[i] - t for i, t in committed.items() if i in receiver.arrivals]
    results["latency"] = {
        "rate_per_s": args.rate,
        "seconds": args.seconds,
        "delivered": len(latencies),
        "lost": len(committed) - len(latencies),
        "queued": _percentiles(latencies),
        "direct_baseline": _percentiles(direct),
        "target": "p99 < 250 ms (issue 15)",
    }

    # 2. sustained deliveries, beside direct posts with the same concurrency
    ids: list[int] = []
    for _ in range(args.burst):
        async with write_transaction(engine) as conn:
            ids.append((await record_event(conn, EventType.KEY_REVOKED, "key:k1", DATA)).id)
    delivery = WebhookDelivery(engine, settings, SERVER)
    before = time.monotonic()
    delivery.start()
    done = await _wait_for(lambda: all(i in receiver.arrivals for i in ids), before + 600)
    queued_seconds = time.monotonic() - before
    await delivery.stop()

    semaphore = asyncio.Semaphore(64)

    async def post(n: int) -> None:
        body = json.dumps({"event_id": -(10**9 + n)}).encode()
        async with semaphore:
            await direct_sender.send(
                receiver.url, keys.headers(message_id(), int(time.time()), body), body
            )

    before = time.monotonic()
    await asyncio.gather(*(post(n) for n in range(args.burst)))
    direct_seconds = time.monotonic() - before
    await direct_sender.close()
    queued_rate = args.burst / queued_seconds
    direct_rate = args.burst / direct_seconds
    results["throughput"] = {
        "events": args.burst,
        "all_delivered": done,
        "queued_per_s": round(queued_rate, 1),
        "direct_baseline_per_s": round(direct_rate, 1),
        "ratio": round(queued_rate / direct_rate, 3),
    }
    receiver.stop()
    await engine.dispose()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=100.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--burst", type=int, default=2000)
    parser.add_argument("--database-url", default=None)
    parser.add_argument(
        "--store",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="postgresql: start a throw-away server (tests/support/postgres.py)",
    )
    args = parser.parse_args()
    if args.store == "postgresql" and args.database_url is None:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from support.postgres import running_postgres

        with running_postgres() as server:
            args.database_url = server.create_database("webhook_bench")
            results = asyncio.run(run(args))
    else:
        results = asyncio.run(run(args))
    results["when"] = datetime.now(UTC).isoformat()
    print(json.dumps(results, indent=2))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (out / f"webhooks-{stamp}.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
