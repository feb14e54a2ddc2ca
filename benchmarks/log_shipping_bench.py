"""What a log plugin costs the data plane: CPU per request with and without one, same run.

Drives `ProxyApp` in-process like hot_path_bench.py (an in-memory upstream that answers
at once, the default worker's observers: request-log queue and metrics), on a route with
no log plugin (`none`) and the same route with `file-log` (to a temporary file) or
`syslog` (UDP to a local socket that nobody reads). Rounds alternate so both see the
same machine.

Two figures per plugin: the request path (what a request pays: the record built and
appended to the shipper's queue; the queue holds every record of the round, so the
drain never runs in between), and the shipping (encoding, writing, per record), timed
as the drain after the round. CPU time (`time.process_time`, all threads: file writes
run on a worker thread).

Run from the repository root:
    .venv/bin/python benchmarks/log_shipping_bench.py [-n 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import uvloop

from benchmarks.hot_path_bench import _ORIGIN, InstantUpstream, _discard_rows, _scope
from portcullis.analytics.log_queue import RequestLogQueue
from portcullis.analytics.metrics import MetricsObserver, RequestMetrics
from portcullis.asgi import Message
from portcullis.logging import configure_logging
from portcullis.logship.shipper import ShipperRegistry
from portcullis.model.config import GatewayConfig
from portcullis.plugins.env import PluginEnv
from portcullis.proxy.app import ProxyApp
from portcullis.runtime.holder import SnapshotHolder
from portcullis.runtime.snapshot import build_snapshot
from portcullis.settings import Settings

QUEUE = 1_000_000


def _config(plugin: str, target: str) -> dict[str, Any]:
    if plugin == "none":
        return _ORIGIN
    common = {"queue_size": QUEUE, "batch_size": 500, "flush_interval": 60, "drain_timeout": 60}
    if plugin == "file-log":
        config: dict[str, Any] = {"path": target, **common}
    else:
        host, port = target.rsplit(":", 1)
        config = {"host": host, "port": int(port), **common}
    return {**_ORIGIN, "plugins": [{"name": plugin, "config": config}]}


async def _round(plugin: str, target: str, n: int) -> tuple[float, float]:
    """CPU µs per request on the request path, and per record shipped."""
    registry = ShipperRegistry()
    snapshot = build_snapshot(
        GatewayConfig.model_validate(_config(plugin, target)), 1, env=PluginEnv(shippers=registry)
    )
    log = RequestLogQueue(
        _discard_rows("bench"), capacity=QUEUE, batch_size=1000, flush_interval=1.0
    )
    observers: list[Any] = [log, MetricsObserver(RequestMetrics(registry=None))]
    app = ProxyApp(Settings(), SnapshotHolder(snapshot), InstantUpstream(), observers=observers)

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        return None

    log.start()
    started = time.process_time()
    for _ in range(n):
        await app(_scope(), receive, send)
    await log.aclose(timeout=30.0)
    request_path = time.process_time() - started
    started = time.process_time()
    await registry.aclose()
    shipping = time.process_time() - started
    if plugin != "none":
        (stats,) = registry.stats()
        assert stats.shipped == n, stats
        assert not any(stats.dropped.values()), stats
    return request_path * 1e6 / n, shipping * 1e6 / n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=20_000, help="requests per round [20000]")
    p.add_argument("--rounds", type=int, default=5, help="rounds per configuration [5]")
    p.add_argument("--plugins", default="file-log,syslog", help="log plugins to compare")
    args = p.parse_args(argv)
    configure_logging("warning")
    with (
        tempfile.TemporaryDirectory() as tmp,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
    ):
        udp.bind(("127.0.0.1", 0))
        targets = {
            "none": "",
            "file-log": str(Path(tmp) / "requests.log"),
            "syslog": f"127.0.0.1:{udp.getsockname()[1]}",
        }
        names = [n for n in args.plugins.split(",") if n]
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in ["none", *names]}
        for _ in range(args.rounds):
            for name in results:
                results[name].append(uvloop.run(_round(name, targets[name], args.n)))
    base = statistics.median(r for r, _ in results["none"])
    print(f"{'none':10} request path median {base:6.1f} us/req  ({args.rounds} x {args.n})")
    for name in names:
        path = statistics.median(r for r, _ in results[name])
        ship = statistics.median(s for _, s in results[name])
        print(
            f"{name:10} request path median {path:6.1f} us/req  ratio {path / base:.3f}"
            f"  (+{path - base:.1f} us);  shipping {ship:5.1f} us/record off the request path"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
