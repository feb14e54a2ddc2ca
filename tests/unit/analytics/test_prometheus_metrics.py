"""Request metrics: what one finished request adds, batched publishing, bounded labels,
worker gauges, and the merge of several worker processes' files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from portcullis.analytics.metrics import (
    LATENCY_BUCKETS,
    NO_NAME,
    OVERFLOW,
    MetricsObserver,
    RequestMetrics,
    WorkerGauges,
    prepare_metrics_dir,
    scrape_registry,
    status_class,
    sweep_dead_processes,
)
from portcullis.analytics.record import Flag, RequestRecord
from portcullis.limits.backend import LimitRequest
from portcullis.limits.memory import MemoryBackend
from portcullis.limits.spec import Algorithm, LimitSpec

SRC = str(Path(__file__).resolve().parents[3] / "src")


def record(**overrides: Any) -> RequestRecord:
    fields: dict[str, Any] = {
        "request_id": "r1",
        "started_at": 1_700_000_000.0,
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
        "bytes_out": 100,
        "client_ip": "127.0.0.1",
        "user_agent": None,
        "latency_ms": 12.0,
        "upstream_ms": 10.0,
        "gateway_ms": 2.0,
        "upstream_offset_ms": 1.0,
        "flags": 0,
        "error_kind": None,
        "trace_id": None,
        "priority": None,
    }
    fields.update(overrides)
    return RequestRecord(**fields)


def observer(**kwargs: Any) -> tuple[MetricsObserver, CollectorRegistry]:
    registry = CollectorRegistry()
    consumer_labels = kwargs.pop("consumer_labels", False)
    metrics = RequestMetrics(registry, consumer_labels=consumer_labels)
    return MetricsObserver(metrics, **kwargs), registry


def test_status_classes() -> None:
    assert [status_class(s) for s in (101, 200, 204, 302, 404, 499, 503)] == [
        "1xx",
        "2xx",
        "2xx",
        "3xx",
        "4xx",
        "4xx",
        "5xx",
    ]
    assert status_class(0) == "5xx"
    assert status_class(999) == "5xx"


def test_nothing_is_written_until_published() -> None:
    obs, registry = observer()
    obs.observe(record())
    labels = {"route": "users", "service": "accounts", "method": "GET", "status_class": "2xx"}
    assert registry.get_sample_value("portcullis_http_requests_total", labels) is None
    assert obs.publish() == 1
    assert registry.get_sample_value("portcullis_http_requests_total", labels) == 1.0
    # A second publish adds nothing: the deltas were consumed.
    assert obs.publish() == 0
    assert registry.get_sample_value("portcullis_http_requests_total", labels) == 1.0


def test_counts_bytes_histograms_and_flags() -> None:
    obs, registry = observer()
    obs.observe(record(latency_ms=0.5, upstream_ms=0.4, bytes_in=10, bytes_out=5))
    obs.observe(record(latency_ms=30.0, upstream_ms=25.0, bytes_in=0, bytes_out=7))
    obs.observe(record(latency_ms=120_000.0, upstream_ms=None, upstream_offset_ms=None))
    obs.observe(
        record(
            status=429,
            latency_ms=1.0,
            upstream_ms=None,
            upstream_offset_ms=None,
            bytes_out=90,
            flags=int(Flag.RATE_LIMITED | Flag.AUTH_FAILED),
        )
    )
    obs.observe(record(status=200, flags=int(Flag.CACHE_HIT)))
    obs.publish()
    get = registry.get_sample_value
    pair = {"route": "users", "service": "accounts"}
    ok = {**pair, "method": "GET", "status_class": "2xx"}
    assert get("portcullis_http_requests_total", ok) == 4
    assert get("portcullis_http_requests_total", {**ok, "status_class": "4xx"}) == 1
    assert get("portcullis_http_request_body_bytes_total", pair) == 10
    assert get("portcullis_http_response_body_bytes_total", pair) == 5 + 7 + 100 + 90 + 100
    # Cumulative buckets: 0.5 ms <= 1 ms; 1 ms <= 1 ms; 12 ms (the cache hit) <= 25 ms; 30 ms
    # <= 50 ms; 120 s only in +Inf.
    duration = "portcullis_http_request_duration_seconds"
    assert get(f"{duration}_bucket", {**pair, "le": "0.001"}) == 2
    assert get(f"{duration}_bucket", {**pair, "le": "0.025"}) == 3
    assert get(f"{duration}_bucket", {**pair, "le": "0.05"}) == 4
    assert get(f"{duration}_bucket", {**pair, "le": "60.0"}) == 4
    assert get(f"{duration}_bucket", {**pair, "le": "+Inf"}) == 5
    assert get(f"{duration}_count", pair) == 5
    assert get(f"{duration}_sum", pair) == pytest.approx((0.5 + 30 + 120_000 + 1 + 12) / 1000)
    upstream = "portcullis_upstream_request_duration_seconds"
    assert get(f"{upstream}_count", pair) == 3
    assert get(f"{upstream}_bucket", {**pair, "le": "0.0005"}) is None  # not a bucket of ours
    assert get(f"{upstream}_bucket", {**pair, "le": "0.001"}) == 1
    assert get(f"{upstream}_sum", pair) == pytest.approx((0.4 + 25 + 10) / 1000)
    flags = "portcullis_http_request_flags_total"
    assert get(flags, {**pair, "flag": "rate_limited"}) == 1
    assert get(flags, {**pair, "flag": "auth_failed"}) == 1
    assert get(flags, {**pair, "flag": "cache_hit"}) == 1
    assert get(flags, {**pair, "flag": "retried"}) is None


def test_batched_histogram_equals_observing_one_by_one() -> None:
    """The batched bucket update matches prometheus_client's own `observe`."""
    obs, registry = observer()
    reference = CollectorRegistry()
    direct = RequestMetrics(reference)
    latencies = [0.2, 1.0, 1.7, 4.9, 5.0, 77.0, 999.0, 2500.0, 61_000.0]
    for ms in latencies:
        obs.observe(record(latency_ms=ms))
        direct.duration.labels("users", "accounts").observe(ms / 1000)
    obs.publish()

    def samples(reg: CollectorRegistry) -> dict[tuple[str, str], float]:
        out = {}
        for family in reg.collect():
            if family.name == "portcullis_http_request_duration_seconds":
                for s in family.samples:
                    if not s.name.endswith("_created"):
                        out[(s.name, s.labels.get("le", ""))] = s.value
        return out

    ours, theirs = samples(registry), samples(reference)
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value), key
    assert len(LATENCY_BUCKETS) + 1 == sum(1 for name, _ in ours if name.endswith("_bucket"))


def label_sets(registry: CollectorRegistry, family: str) -> list[dict[str, str]]:
    return [
        s.labels
        for f in registry.collect()
        if f.name == family
        for s in f.samples
        if s.name == family + "_total"
    ]


def test_labels_never_carry_paths_methods_or_consumers_by_default() -> None:
    obs, registry = observer()
    for i in range(200):
        obs.observe(record(path=f"/users/{i}", method=f"X{i}", consumer=f"c{i}"))
    obs.observe(record(route=None, service=None, status=404))
    obs.publish()
    sets = label_sets(registry, "portcullis_http_requests")
    assert {"route": "users", "service": "accounts", "method": "OTHER", "status_class": "2xx"} in (
        sets
    )
    assert {"route": NO_NAME, "service": NO_NAME, "method": "GET", "status_class": "4xx"} in sets
    assert len(sets) == 2
    text = generate_latest(registry).decode()
    assert "/users/1" not in text
    assert "c1" not in text


def test_consumer_labels_when_enabled() -> None:
    obs, registry = observer(consumer_labels=True)
    obs.observe(record(consumer="alice"))
    obs.observe(record(consumer=None))
    obs.publish()
    consumers = {s["consumer"] for s in label_sets(registry, "portcullis_http_requests")}
    assert consumers == {"alice", NO_NAME}


def test_series_are_capped_and_the_rest_counted_as_other() -> None:
    obs, registry = observer(consumer_labels=True, max_series=10)
    for i in range(500):
        obs.observe(record(consumer=f"c{i}"))
    obs.publish()
    sets = label_sets(registry, "portcullis_http_requests")
    assert len(sets) == 11  # the first 10 consumers, then the route's folded set
    assert obs.series == 11
    folded = {"route": "users", "service": "accounts", "method": "GET", "status_class": "2xx"}
    get = registry.get_sample_value
    assert get("portcullis_http_requests_total", {**folded, "consumer": OVERFLOW}) == 490
    # Past 2 * max_series label sets, routes fold too.
    for i in range(30):
        obs.observe(record(route=f"r{i}", consumer="c0"))
    obs.publish()
    assert obs.series == 21
    overflow = {"route": OVERFLOW, "service": OVERFLOW, "method": "GET", "status_class": "2xx"}
    assert get("portcullis_http_requests_total", {**overflow, "consumer": OVERFLOW}) == 21
    assert len(obs._by_key) <= 2 * obs.max_series
    obs, registry = observer(max_series=10)
    for i in range(30):
        obs.observe(record(route=f"r{i}"))
    obs.publish()
    assert obs.series == 11
    assert registry.get_sample_value("portcullis_http_requests_total", overflow) == 20


class FakeQueue:
    def __init__(self, depth: int, dropped: int) -> None:
        self.queue_depth = depth
        self.dropped = dropped


class FakeLimiter:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {
            "upstream": "up",
            "limit": 20.0,
            "inflight": 3,
            "queued": 1,
            "admitted": {"critical": 5, "normal": 7},
            "shed": {"critical": 0, "normal": 2},
        }

    def stats(self) -> dict[str, object]:
        return self.values


async def test_the_inspector_queue_is_published_apart_from_the_request_log() -> None:
    registry = CollectorRegistry()
    gauges = WorkerGauges(registry)
    captures = FakeQueue(depth=4, dropped=2)
    gauges.refresh(config_version=1, log_queues=[FakeQueue(depth=1, dropped=0)],
                   inspector_queues=[captures])  # fmt: skip
    get = registry.get_sample_value
    assert get("portcullis_inspector_queue_depth") == 4
    assert get("portcullis_inspector_dropped_total") == 2
    assert get("portcullis_request_log_dropped_total") == 0
    captures.dropped = 5
    gauges.refresh(config_version=1, inspector_queues=[captures])
    assert get("portcullis_inspector_dropped_total") == 5


async def test_worker_gauges_read_every_source() -> None:
    registry = CollectorRegistry()
    gauges = WorkerGauges(registry)
    limits = MemoryBackend()
    queue = FakeQueue(depth=12, dropped=3)
    limiter = FakeLimiter()
    gauges.refresh(config_version=7, limits=limits, log_queues=[queue], limiters={"up": limiter})
    get = registry.get_sample_value
    assert get("portcullis_data_plane_workers") == 1
    assert get("portcullis_data_plane_config_version") == 7
    assert get("portcullis_request_log_queue_depth") == 12
    assert get("portcullis_request_log_dropped_total") == 3
    assert get("portcullis_ratelimit_backend_state", {"backend": "memory", "stat": "keys"}) == 0
    assert get("portcullis_shedding_state", {"upstream": "up", "stat": "limit"}) == 20
    shed = {"upstream": "up", "priority": "normal", "outcome": "shed"}
    assert get("portcullis_shedding_requests_total", shed) == 2
    # Cumulative sources are fed as differences; a reset source starts a new count.
    queue.dropped = 10
    limiter.values["shed"] = {"normal": 1}
    gauges.refresh(config_version=8, limits=limits, log_queues=[queue], limiters={"up": limiter})
    assert get("portcullis_request_log_dropped_total") == 10
    assert get("portcullis_shedding_requests_total", shed) == 3
    # An upstream that left the config reads 0.
    gauges.refresh(config_version=9, limits=limits, log_queues=[queue], limiters={})
    assert get("portcullis_shedding_state", {"upstream": "up", "stat": "inflight"}) == 0
    # Sources without the expected attributes are ignored, not fatal.
    gauges.refresh(config_version=9, limits=object(), log_queues=[object()], limiters={"x": 1})


async def test_limit_backend_decisions_become_counters() -> None:
    registry = CollectorRegistry()
    gauges = WorkerGauges(registry)
    limits = MemoryBackend()
    spec = LimitSpec(algorithm=Algorithm.fixed_window, limit=2, period_us=60_000_000)
    for _ in range(3):
        await limits.decide([LimitRequest(key="k", spec=spec)])
    gauges.refresh(config_version=1, limits=limits)
    events = "portcullis_ratelimit_backend_events_total"
    get = registry.get_sample_value
    assert get(events, {"backend": "memory", "event": "decisions_allowed"}) == 2
    assert get(events, {"backend": "memory", "event": "decisions_denied"}) == 1
    assert get("portcullis_ratelimit_backend_state", {"backend": "memory", "stat": "keys"}) == 1


def test_prepare_metrics_dir_empties_a_configured_dir(tmp_path: Path) -> None:
    configured = tmp_path / "metrics"
    configured.mkdir()
    (configured / "counter_123.db").write_bytes(b"old")
    (configured / "notes.txt").write_text("kept")
    assert prepare_metrics_dir(configured) == configured.resolve()
    assert sorted(p.name for p in configured.iterdir()) == ["notes.txt"]
    fresh = prepare_metrics_dir(None)
    assert fresh.is_dir()
    assert list(fresh.iterdir()) == []
    fresh.rmdir()


WORKER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {src!r})
    from portcullis.analytics.metrics import MetricsObserver, RequestMetrics, WorkerGauges
    from portcullis.analytics.record import RequestRecord

    obs = MetricsObserver(RequestMetrics())
    gauges = WorkerGauges()
    gauges.refresh(config_version=int(sys.argv[2]))
    for i in range(int(sys.argv[1])):
        obs.observe(RequestRecord(
            request_id=str(i), started_at=time.time(), method="GET", path="/p",
            path_template="/p", route="r", service="s", upstream_target="h:1",
            consumer=None, credential_id=None, status=200, bytes_in=0, bytes_out=2,
            client_ip="127.0.0.1", user_agent=None, latency_ms=3.0, upstream_ms=2.0,
            gateway_ms=1.0, upstream_offset_ms=0.5, flags=0, error_kind=None,
            trace_id=None, priority=None,
        ))
    obs.publish()
    print("ready", flush=True)
    sys.stdin.readline()
    if sys.argv[3] == "retire":
        gauges.retire()
    """
)


def scrape(path: Path) -> dict[str, Any]:
    text = generate_latest(scrape_registry(str(path))).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(families: dict[str, Any], family: str, sample: str, **labels: str) -> float | None:
    for s in families[family].samples:
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    return None


def test_multiprocess_collection_across_two_processes(tmp_path: Path) -> None:
    script = WORKER.format(src=SRC)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(n), str(version), mode],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n, version, mode in ((30, 5, "retire"), (12, 4, "crash"))
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready"
        families = scrape(tmp_path)
        requests = "portcullis_http_requests"
        assert value(families, requests, requests + "_total", route="r") == 42
        duration = "portcullis_http_request_duration_seconds"
        assert value(families, duration, duration + "_count", route="r") == 42
        assert value(families, duration, duration + "_bucket", le="0.005") == 42
        assert value(families, duration, duration + "_bucket", le="0.0025") == 0
        workers = "portcullis_data_plane_workers"
        assert value(families, workers, workers) == 2
        version = "portcullis_data_plane_config_version"
        assert value(families, version, version) == 4  # livemin: the laggard
        # One worker retires itself; the other is killed and swept at the next scrape.
        retiring, crashing = procs
        assert retiring.stdin is not None
        retiring.stdin.write("\n")
        retiring.stdin.flush()
        assert retiring.wait(10) == 0
        families = scrape(tmp_path)
        assert value(families, workers, workers) == 1
        assert value(families, version, version) == 4
        crashing.send_signal(signal.SIGKILL)
        crashing.wait(10)
        assert sweep_dead_processes(str(tmp_path)) == [crashing.pid]
        families = scrape(tmp_path)
        assert workers not in families or value(families, workers, workers) is None
        # Counters and histograms of gone processes stay: totals never go backwards.
        assert value(families, requests, requests + "_total", route="r") == 42
        assert value(families, duration, duration + "_count", route="r") == 42
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            for stream in (p.stdin, p.stdout):
                if stream is not None:
                    stream.close()


def test_observe_cost_is_small() -> None:
    """A loose guard on the per-request cost (the benchmark reports the real figure)."""
    obs, _ = observer()
    r = record(flags=int(Flag.RETRIED))
    n = 20_000
    start = time.perf_counter()
    for _ in range(n):
        obs.observe(r)
    per_request = (time.perf_counter() - start) / n
    assert per_request < 20e-6


def test_log_shippers_become_counters_and_a_queue_gauge() -> None:
    from portcullis.logship.shipper import ShipperRegistry

    registry = CollectorRegistry()
    gauges = WorkerGauges(registry)
    shippers = ShipperRegistry()
    stats = shippers.stats_for("http-log", "https://logs.example.com/in")
    stats.shipped, stats.dropped["queue_full"] = 40, 3
    gauges.refresh(config_version=1, shippers=shippers)
    get = registry.get_sample_value
    label = {"plugin": "http-log", "destination": "https://logs.example.com/in"}
    assert get("portcullis_log_shipping_shipped_total", label) == 40
    assert get("portcullis_log_shipping_dropped_total", {**label, "reason": "queue_full"}) == 3
    assert get("portcullis_log_shipping_dropped_total", {**label, "reason": "shutdown"}) == 0
    assert get("portcullis_log_shipping_queue_depth", label) == 0
    stats.shipped = 45
    gauges.refresh(config_version=1, shippers=shippers)
    assert get("portcullis_log_shipping_shipped_total", label) == 45
