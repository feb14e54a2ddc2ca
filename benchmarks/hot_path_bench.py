"""The gateway's own CPU per request, without sockets: ProxyApp driven in-process.

wrk against a running gateway measures everything at once (granian, the kernel's
loopback, the upstream) and, on a shared 2-core machine, mostly the neighbours. This
drives `ProxyApp` directly from one event loop with an in-memory upstream that
answers at once, with the observers a default worker has (the request log queue,
whose rows are built as its writer builds them, and the metrics observer), and
reports the CPU time (`time.process_time`) per request: what Portcullis's own Python
costs on the hot path, stable enough to compare changes on a busy machine.

Configurations (`--configs`): `none` (one service, one catch-all route, no plugins);
`api-stable`, `api-deprecated`, `api-shared`: the same route as an API version's (see
CONFIGS), for the cost of version resolution.
Plugin configurations need a `PluginEnv` (credentials, limits) and are not here yet.

`--capture RATE` measures each configuration twice per round, alternating: with no
capture, and with a request-inspector capture on the route sampling RATE of the
requests (runtime/captures.py; the exchanges are built, redacted and discarded).

`--profile` prints cProfile's top functions (cumulative) for the first configuration.

`--access-chain` times only each configuration's access chain (the request context
built, every access step run) in ns/request: the API version steps' own cost, which
the whole-request CPU figure on a busy machine is too noisy to show.

`--live-traffic` measures each configuration twice per round, alternating: as a default
worker has it (with the live-traffic observer, `analytics/live.py`, whose per-second
sums are computed over the round's records as its task would, their reports discarded)
and without it; it prints both and their ratio.

Run from the repository root:
    .venv/bin/python benchmarks/hot_path_bench.py [-n 20000] [--rounds 3] [--profile]
    .venv/bin/python benchmarks/hot_path_bench.py --live-traffic --rounds 5
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import uvloop

from portcullis.analytics.live import SecondReport, WorkerTraffic
from portcullis.analytics.log_queue import RequestLogQueue, record_row
from portcullis.analytics.metrics import MetricsObserver, RequestMetrics
from portcullis.analytics.record import RequestRecord
from portcullis.asgi import Message
from portcullis.model.config import GatewayConfig
from portcullis.proxy.app import ProxyApp
from portcullis.proxy.context import ProxyContext
from portcullis.runtime.holder import SnapshotHolder
from portcullis.runtime.snapshot import build_snapshot
from portcullis.settings import Settings
from portcullis.upstream.transport import (
    Origin,
    TransportTimeouts,
    UpstreamRequest,
    UpstreamResponse,
)

BODY = b'{"ok":true}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"11")]


class InstantUpstream:
    """A transport whose upstream answers every request at once with the same body."""

    async def send(
        self, origin: Origin, request: UpstreamRequest, timeouts: TransportTimeouts
    ) -> UpstreamResponse:
        return UpstreamResponse(status=200, headers=list(HEADERS), body=_body())

    async def aclose(self) -> None:
        return None


async def _body() -> AsyncIterator[bytes]:
    yield BODY


def _discard_rows(node: str) -> Any:
    async def write(records: Sequence[RequestRecord]) -> None:
        # The writer's CPU work without the store: the rows it would insert.
        [record_row(r, node) for r in records]

    return write


_ORIGIN = {
    "services": [
        {"name": "origin", "url": "http://127.0.0.1:9"},
        {"name": "other", "url": "http://127.0.0.1:9/other"},
    ],
    "routes": [{"name": "all", "service": "origin", "paths": ["/"]}],
}
_DEPRECATED = {
    "status": "deprecated",
    "deprecated_at": "2026-01-01T00:00:00Z",
    "sunset_at": "2099-01-01T00:00:00Z",
    "deprecation_link": "https://docs.example.com/deprecation",
    "brownouts": [{"start": "2098-01-01T00:00:00Z", "end": "2098-01-02T00:00:00Z", "share": 0.5}],
}
CONFIGS: dict[str, dict[str, Any]] = {
    "none": _ORIGIN,
    # API versions (runtime/versions.py): the route is a stable version's (one step that
    # sets ctx.api/api_version), a deprecated one's (lifecycle headers, the sunset and
    # brownout clock checks), or shared by the versions (header lookup, then the default
    # version chosen after the auth phase, its service swapped in).
    "api-stable": {
        **_ORIGIN,
        "apis": [{"name": "a", "versions": [{"name": "v1", "routes": ["all"]}]}],
    },
    "api-deprecated": {
        **_ORIGIN,
        "apis": [
            {
                "name": "a",
                "versions": [{"name": "v1", "routes": ["all"], **_DEPRECATED}, {"name": "v2"}],
            }
        ],
    },
    "api-shared": {
        **_ORIGIN,
        "apis": [
            {
                "name": "a",
                "routes": ["all"],
                "default_version": "v2",
                "versions": [{"name": "v1"}, {"name": "v2", "service": "other"}],
            }
        ],
    },
}


class _DiscardReports:
    async def send(self, reports: Sequence[SecondReport]) -> None:
        # The sink's CPU work without the transport: the JSON it would send.
        [r.to_json() for r in reports]

    async def aclose(self) -> None:
        return None


def _app(
    config: dict[str, Any], live: bool = False, capture: float | None = None
) -> tuple[ProxyApp, RequestLogQueue, WorkerTraffic | None]:
    settings = Settings()
    snapshot = build_snapshot(GatewayConfig.model_validate(config), 1)
    if capture is not None:
        # Imported here: the bench also runs against trees without the inspector
        # (benchmarks/side_by_side.py).
        from portcullis.runtime.captures import CaptureSession

        session = CaptureSession(
            "bench", "all", time.time() + 3600, capture, 10**9, sink=lambda exchange: None
        )
        snapshot.captures.install([session])
    log = RequestLogQueue(
        _discard_rows("bench"), capacity=1_000_000, batch_size=1000, flush_interval=1.0
    )
    metrics = MetricsObserver(RequestMetrics(registry=None))
    observers: list[Any] = [log, metrics]
    traffic: WorkerTraffic | None = None
    if live:
        traffic = WorkerTraffic.from_settings(
            settings.model_copy(update={"live_traffic_queue_size": 1_000_000}),
            _DiscardReports(),
            "bench",
            lambda: snapshot.config,
        )
        observers.append(traffic)
    app = ProxyApp(settings, SnapshotHolder(snapshot), InstantUpstream(), observers=observers)
    return app, log, traffic


def _scope() -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "scheme": "http",
        "root_path": "",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 40000),
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"user-agent", b"wrk"),
            (b"accept", b"*/*"),
        ],
    }


async def _run(
    app: ProxyApp, log: RequestLogQueue, n: int, traffic: WorkerTraffic | None = None
) -> float:
    """CPU seconds for `n` sequential requests (the log queue drained as it fills; the
    live-traffic sums computed and encoded at the end, as its task does every second)."""

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        return None

    log.start()
    try:
        started = time.process_time()
        for _ in range(n):
            await app(_scope(), receive, send)
        # Let the queue write what is left (its row building is part of the cost).
        await log.aclose(timeout=5.0)
        if traffic is not None:
            await traffic.aclose()  # sums every queued record, as the per-second task does
        return time.process_time() - started
    finally:
        await log.aclose(timeout=5.0)


def measure(
    name: str, n: int, rounds: int, live: bool = False, capture: float | None = None
) -> list[float]:
    results = []
    for _ in range(rounds):
        app, log, traffic = _app(CONFIGS[name], live, capture)
        seconds = uvloop.run(_run(app, log, n, traffic))
        results.append(seconds * 1e6 / n)
    return results


def compare_live(name: str, n: int, rounds: int) -> tuple[list[float], list[float]]:
    """Rounds alternating without / with live traffic (so both see the same machine)."""
    without: list[float] = []
    with_live: list[float] = []
    for _ in range(rounds):
        without += measure(name, n, 1, live=False)
        with_live += measure(name, n, 1, live=True)
    return without, with_live


def profile(name: str, n: int) -> None:
    app, log, _ = _app(CONFIGS[name])
    profiler = cProfile.Profile()
    profiler.enable()
    uvloop.run(_run(app, log, n))
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


def access_chain_ns(name: str, n: int) -> float:
    """Nanoseconds per request of the route's access chain alone (for `none`: empty), the
    request context built as the proxy builds it; the coroutines are driven without an
    event loop (the version steps never suspend)."""
    snapshot = build_snapshot(GatewayConfig.model_validate(CONFIGS[name]), 1)
    match = snapshot.router.match("GET", "", "/", [])
    assert match is not None
    route = match.payload
    scope = _scope()
    access = route.chain.access

    def once() -> None:
        ctx = ProxyContext(scope, route, "GET", "/", "127.0.0.1", "rid", None, [])
        for plugin in access:
            try:  # noqa: SIM105 (contextlib.suppress would add to what is timed)
                plugin.access(ctx).send(None)
            except StopIteration:
                pass

    for _ in range(1000):
        once()
    started = time.perf_counter_ns()
    for _ in range(n):
        once()
    return (time.perf_counter_ns() - started) / n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=20_000, help="requests per round [20000]")
    p.add_argument("--rounds", type=int, default=3, help="rounds per configuration [3]")
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated configurations")
    p.add_argument("--profile", action="store_true", help="cProfile the first configuration")
    p.add_argument(
        "--live-traffic", action="store_true", help="compare without / with live traffic"
    )
    p.add_argument(
        "--capture",
        type=float,
        metavar="RATE",
        help="compare without / with a request-inspector capture sampling RATE (0-1]",
    )
    p.add_argument(
        "--access-chain",
        action="store_true",
        help="time each configuration's access chain alone (ns/request, best of rounds)",
    )
    args = p.parse_args(argv)
    names = [c for c in args.configs.split(",") if c]
    unknown = set(names) - set(CONFIGS)
    if unknown:
        p.error(f"unknown configuration(s): {', '.join(sorted(unknown))}")
    if args.profile:
        profile(names[0], args.n)
        return 0
    if args.access_chain:
        for name in names:
            per = [access_chain_ns(name, args.n) for _ in range(args.rounds)]
            print(f"{name:24} access chain best {min(per):7.0f} ns/req  ({args.rounds} x {args.n})")
        return 0
    for name in names:
        if args.live_traffic:
            without, with_live = compare_live(name, args.n, args.rounds)
            ratio = statistics.median(with_live) / statistics.median(without)
            print(
                f"{name:24} without live traffic: median {statistics.median(without):6.1f}"
                f" us/req (best {min(without):6.1f}); with: median"
                f" {statistics.median(with_live):6.1f} (best {min(with_live):6.1f});"
                f" ratio {ratio:.3f}  ({args.rounds} x {args.n} each)"
            )
            continue
        if args.capture is not None:
            without, captured = [], []
            for _ in range(args.rounds):
                without += measure(name, args.n, 1)
                captured += measure(name, args.n, 1, capture=args.capture)
            print(
                f"{name:24} no capture: median {statistics.median(without):6.1f} us/req"
                f" (best {min(without):6.1f}); capture at {args.capture:g}: median"
                f" {statistics.median(captured):6.1f} (best {min(captured):6.1f})"
                f"  ({args.rounds} x {args.n} each)"
            )
            continue
        per = measure(name, args.n, args.rounds)
        print(
            f"{name:24} best {min(per):6.1f} us/req  median {statistics.median(per):6.1f}"
            f"  (CPU per request, {args.rounds} x {args.n})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
