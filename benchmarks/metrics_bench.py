"""Per-request cost of Prometheus metrics and OTLP tracing on the data-plane path.

Times, in prometheus_client's multiprocess mode (mmap files in a temp directory):

- `observe`: `MetricsObserver.observe(record)`, what every request pays;
- `publish`: one `MetricsObserver.publish()` per distinct label set (paid once per
  interval by the worker's metrics task, not by requests);
- `direct`: what the same metrics would cost written straight into the mmap files
  per request (one counter, two histograms, two byte counters), for comparison;
- `inc` / `observe_hist`: one multiprocess `Counter.inc` and `Histogram.observe`;
- `tracing`: `TracingObserver.observe(record)` with a BatchSpanProcessor and an
  exporter that discards (span building only; export runs on the processor's thread);
- `encoding`: the OTLP protobuf encoding of one request's spans, which the
  processor's thread pays (same process, so it still takes CPU from the worker).

Run: .venv/bin/python benchmarks/metrics_bench.py [--number N]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any


def per_call(fn: Callable[[], None], number: int, repeat: int = 5) -> float:
    """Best-of-`repeat` seconds per call."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--number", type=int, default=100_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="metrics-bench-") as tmp:
        # Multiprocess mode is chosen when prometheus_client is first imported.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tmp
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
        from prometheus_client import Counter, Histogram

        from portcullis.analytics.metrics import LATENCY_BUCKETS, MetricsObserver, RequestMetrics
        from portcullis.analytics.record import RequestRecord
        from portcullis.analytics.tracing import tracing_observer

        fields: dict[str, Any] = {
            "request_id": "0af7651916cd43dd8448eb211c80319c",
            "started_at": time.time(),
            "method": "GET",
            "path": "/users/42",
            "path_template": "/users",
            "route": "users",
            "service": "accounts",
            "upstream_target": "127.0.0.1:9000",
            "consumer": None,
            "credential_id": None,
            "status": 200,
            "bytes_in": 0,
            "bytes_out": 120,
            "client_ip": "127.0.0.1",
            "user_agent": "wrk",
            "latency_ms": 1.8,
            "upstream_ms": 1.2,
            "gateway_ms": 0.6,
            "upstream_offset_ms": 0.4,
            "flags": 0,
            "error_kind": None,
            "trace_id": "0af7651916cd43dd8448eb211c80319c",
            "priority": None,
        }
        record = RequestRecord(**fields)
        observer = MetricsObserver(RequestMetrics())
        results: dict[str, float] = {}
        results["observe"] = per_call(lambda: observer.observe(record), args.number)
        series = 200
        records = [RequestRecord(**{**fields, "route": f"r{i}"}) for i in range(series)]

        def publish_round() -> None:
            for r in records:
                observer.observe(r)
            observer.publish()

        rounds = max(10, args.number // 1000)
        results["publish (per label set)"] = per_call(publish_round, rounds) / series

        requests = Counter("bench_requests", "x", ["route", "service", "method", "status"])
        duration = Histogram("bench_duration", "x", ["route", "service"], buckets=LATENCY_BUCKETS)
        upstream = Histogram("bench_upstream", "x", ["route", "service"], buckets=LATENCY_BUCKETS)
        bytes_in = Counter("bench_in", "x", ["route", "service"])
        bytes_out = Counter("bench_out", "x", ["route", "service"])
        children = (
            requests.labels("users", "accounts", "GET", "2xx"),
            duration.labels("users", "accounts"),
            upstream.labels("users", "accounts"),
            bytes_in.labels("users", "accounts"),
            bytes_out.labels("users", "accounts"),
        )

        def direct() -> None:
            c, d, u, i, o = children
            c.inc()
            d.observe(0.0018)
            u.observe(0.0012)
            i.inc(0)
            o.inc(120)

        results["direct mmap writes (per request)"] = per_call(direct, args.number // 4)
        results["inc (one multiprocess counter)"] = per_call(children[0].inc, args.number)
        results["observe_hist (one multiprocess histogram)"] = per_call(
            lambda: children[1].observe(0.0018), args.number
        )

        class Discard(SpanExporter):
            def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        tracing = tracing_observer(Discard())
        # Rounds of 600 requests (1,800 spans) stay under the processor's queue (2,048),
        # so no span is dropped; the queue is drained between rounds, untimed.
        best = float("inf")
        for _ in range(max(5, args.number // 2000)):
            start = time.perf_counter()
            for _ in range(600):
                tracing.observe(record)
            best = min(best, (time.perf_counter() - start) / 600)
            tracing.force_flush()
        results["tracing observe (3 spans)"] = best
        collected: list[ReadableSpan] = []

        class Collect(SpanExporter):
            def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
                collected.extend(spans)
                return SpanExportResult.SUCCESS

        keeper = tracing_observer(Collect(), batch=False)
        for _ in range(200):
            keeper.observe(record)
        results["OTLP protobuf encoding (per request, exporter thread)"] = (
            per_call(lambda: encode_spans(collected).SerializeToString(), 20) / 200
        )
        tracing.shutdown()
    width = max(len(k) for k in results)
    for name, seconds in results.items():
        print(f"{name:<{width}}  {seconds * 1e6:8.3f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
