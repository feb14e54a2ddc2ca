"""Prometheus metrics of the data plane, shared across worker processes.

`portcullis serve` runs several data-plane worker processes and one control-plane
process; Prometheus scrapes only the control plane (`GET /metrics` on :8001). The
workers therefore use prometheus_client's multiprocess mode: every process writes
its values into mmap-backed files in one directory (`PROMETHEUS_MULTIPROC_DIR`,
set by `portcullis serve` for both planes before they start), and the control
plane merges the files of every process at scrape time (`MultiProcessCollector`).

Request metrics cost the request path almost nothing: `MetricsObserver.observe`
adds each finished request to plain-Python per-series accumulators (one dict
lookup and a few integer additions), and `publish()` — called every
`metrics_interval` seconds by the worker's `MetricsPublisher` task and once at
shutdown — moves the accumulated deltas into the mmap files. A worker that is
killed loses at most one interval of request counts; everything published
before stays in its files, so totals survive worker restarts.

Label cardinality is bounded: routes and services come from the config (never raw
paths), methods outside the standard set become `OTHER`, statuses become classes
(`2xx`), consumers are labels only when `metrics_consumer_labels` is on, and past
`metrics_max_series` label sets new combinations are counted under `(other)`.

Worker gauges use the `live*` multiprocess modes, whose files die with their
process (`mark_process_dead`, done by a stopping worker itself and, for workers
that crashed, by the control plane's scrape). Per-target upstream health is *not*
a worker gauge: targets come and go with the config and multiprocess gauges
cannot drop a label set, so the control plane derives those series from the
workers' heartbeats instead (see `portcullis.analytics.health`).
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import tempfile
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from portcullis.analytics.record import Flag, RequestRecord
from portcullis.periodic import Periodic

if TYPE_CHECKING:
    from portcullis.logship.shipper import ShipperRegistry
    from portcullis.runtime.holder import SnapshotHolder
    from portcullis.settings import Settings

log = structlog.get_logger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Latency buckets in seconds, for the whole request and for the upstream call.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
# The same bounds in milliseconds (the record's unit), with +Inf last, for bisecting.
_BOUNDS_MS = (*(b * 1000.0 for b in LATENCY_BUCKETS), float("inf"))
METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
OTHER_METHOD = "OTHER"
# Label values that no configured name can take (names never contain parentheses).
NO_NAME = "(none)"
OVERFLOW = "(other)"
_STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
FLAG_NAMES: tuple[tuple[int, str], ...] = (
    (Flag.RATE_LIMITED, "rate_limited"),
    (Flag.AUTH_FAILED, "auth_failed"),
    (Flag.CACHE_HIT, "cache_hit"),
    (Flag.CACHE_MISS, "cache_miss"),
    (Flag.SHED, "shed"),
    (Flag.RETRIED, "retried"),
    (Flag.CIRCUIT_OPEN, "circuit_open"),
    (Flag.CLIENT_ABORTED, "client_aborted"),
    (Flag.REQUEST_INVALID, "request_invalid"),
    (Flag.RESPONSE_MISMATCH, "response_mismatch"),
)
# Rate-limit backend `snapshot()` keys: cumulative counters become Prometheus counters
# (fed by deltas), the others are the worker's current state.
LIMIT_COUNTERS = frozenset(
    {
        "decisions_allowed",
        "decisions_denied",
        "backend_errors",
        "backend_timeouts",
        "fallback_decisions",
        "failopen_decisions",
        "failclosed_decisions",
        "circuit_opened",
        "recoveries",
        "script_loads",
        "evictions",
        "expired",
    }
)
LIMIT_GAUGES = frozenset({"fallback_active", "local_keys", "keys"})
# Adaptive concurrency limiter `stats()` keys exported as gauges.
SHEDDING_GAUGES = ("limit", "inflight", "queued")


def multiprocess_dir() -> str | None:
    """The multiprocess metrics directory of this process, or None when metrics are local."""
    path = os.environ.get(MULTIPROC_ENV)
    return path if path and os.path.isdir(path) else None


def status_class(status: int) -> str:
    """`2xx` for 200..299 and so on; statuses outside 100..599 count as `5xx`."""
    index = status // 100 - 1
    return _STATUS_CLASSES[index] if 0 <= index < 5 else "5xx"


def _add_histogram(child: Histogram, counts: list[int], total: float) -> None:
    """Add pre-bucketed observations to a histogram child in one go.

    prometheus_client only offers `observe(value)` (two mmap writes each); the
    child's per-bucket values (`_buckets`, non-cumulative, one per upper bound
    including +Inf) and `_sum` take the batched deltas instead. Covered by a unit
    test that checks the exposed histogram, so a library change cannot go unseen.
    """
    child._sum.inc(total)
    buckets = child._buckets
    for i, n in enumerate(counts):
        if n:
            buckets[i].inc(n)


class RequestMetrics:
    """The request metric families (one set per process).

    With `registry=None` the metrics are registered nowhere: in multiprocess mode
    the control plane's `MultiProcessCollector` reads them from the files.
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, *, consumer_labels: bool = False
    ) -> None:
        self.consumer_labels = consumer_labels
        labels = ["route", "service", "method", "status_class"]
        if consumer_labels:
            labels.append("consumer")
        self.requests = Counter(
            "portcullis_http_requests",
            "Requests answered by the data plane",
            labels,
            registry=registry,
        )
        self.duration = Histogram(
            "portcullis_http_request_duration_seconds",
            "Time from receiving a request until its response ended",
            ["route", "service"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.upstream_duration = Histogram(
            "portcullis_upstream_request_duration_seconds",
            "Time from the first upstream attempt until the upstream response ended "
            "(all attempts; requests that reached an upstream only)",
            ["route", "service"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.bytes_in = Counter(
            "portcullis_http_request_body_bytes",
            "Request body bytes received from clients",
            ["route", "service"],
            registry=registry,
        )
        self.bytes_out = Counter(
            "portcullis_http_response_body_bytes",
            "Response body bytes sent to clients",
            ["route", "service"],
            registry=registry,
        )
        self.flags = Counter(
            "portcullis_http_request_flags",
            "Requests by what happened to them: rate_limited, auth_failed, cache_hit, "
            "cache_miss, shed, retried, circuit_open, client_aborted, request_invalid, "
            "response_mismatch",
            ["route", "service", "flag"],
            registry=registry,
        )


class _Series:
    """Accumulated, not yet published observations of one label set."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "children",
        "count",
        "flagsets",
        "labels",
        "latency",
        "latency_ms",
        "upstream",
        "upstream_ms",
    )

    def __init__(self, labels: tuple[str, ...]) -> None:
        # route, service, method, status class[, consumer]
        self.labels = labels
        self.count = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.latency = [0] * len(_BOUNDS_MS)
        self.latency_ms = 0.0
        self.upstream = [0] * len(_BOUNDS_MS)
        self.upstream_ms = 0.0
        # flag bitmask -> requests with exactly that mask
        self.flagsets: dict[int, int] = {}
        # The metric children of this label set, looked up at its first publish.
        self.children: tuple[Counter, Counter, Counter, Histogram, Histogram | None] | None = None


class MetricsObserver:
    """A `RequestObserver` that counts every finished request into `RequestMetrics`.

    The per-request work is a dict lookup on the record's (route, service,
    method, status[, consumer]) and a few additions; `publish()` writes the sums.
    Raw keys are cached up to `2 * max_series` entries. Past `max_series` label
    sets, a new set has its consumer folded into `(other)`; past `2 * max_series`
    (or without consumer labels) its route and service too: at most
    `2 * max_series` sets plus one per method and status class.
    """

    def __init__(self, metrics: RequestMetrics, *, max_series: int = 5000) -> None:
        self.metrics = metrics
        self.max_series = max_series
        self._consumers = metrics.consumer_labels
        self._by_key: dict[tuple[Any, ...], _Series] = {}
        self._by_labels: dict[tuple[str, ...], _Series] = {}

    @property
    def series(self) -> int:
        """Distinct label sets seen so far (bounded by `max_series` plus the overflow sets)."""
        return len(self._by_labels)

    def observe(self, record: RequestRecord) -> None:
        method = record.method
        consumer = record.consumer if self._consumers else None
        key = (record.route, record.service, method, record.status, consumer)
        series = self._by_key.get(key)
        if series is None:
            series = self._series_for(key)
        series.count += 1
        series.bytes_in += record.bytes_in
        series.bytes_out += record.bytes_out
        latency = record.latency_ms
        series.latency[bisect_left(_BOUNDS_MS, latency)] += 1
        series.latency_ms += latency
        upstream = record.upstream_ms
        if upstream is not None:
            series.upstream[bisect_left(_BOUNDS_MS, upstream)] += 1
            series.upstream_ms += upstream
        flags = record.flags
        if flags:
            series.flagsets[flags] = series.flagsets.get(flags, 0) + 1

    def _series_for(self, key: tuple[Any, ...]) -> _Series:
        route, service, method, status, consumer = key
        labels: tuple[str, ...] = (
            route or NO_NAME,
            service or NO_NAME,
            method if method in METHODS else OTHER_METHOD,
            status_class(status),
        )
        if self._consumers:
            labels += (consumer or NO_NAME,)
        series = self._by_labels.get(labels)
        if series is None:
            count = len(self._by_labels)
            if count >= self.max_series:
                # Consumers are what multiplies label sets: fold them first and keep the
                # route (up to 2 * max_series sets), else fold route and service as well.
                if self._consumers and count < 2 * self.max_series:
                    labels = (*labels[:4], OVERFLOW)
                else:
                    labels = (OVERFLOW, OVERFLOW, *labels[2:4])
                    if self._consumers:
                        labels += (OVERFLOW,)
                series = self._by_labels.get(labels)
            if series is None:
                series = self._by_labels[labels] = _Series(labels)
        # Raw keys vary more than label sets (methods, statuses): cap their cache too.
        if len(self._by_key) < 2 * self.max_series:
            self._by_key[key] = series
        return series

    def publish(self) -> int:
        """Write the accumulated deltas into the metrics; returns the requests published."""
        m = self.metrics
        published = 0
        for series in self._by_labels.values():
            count = series.count
            if not count:
                continue
            labels = series.labels
            pair = labels[:2]
            children = series.children
            if children is None:
                children = series.children = (
                    m.requests.labels(*labels),
                    m.bytes_in.labels(*pair),
                    m.bytes_out.labels(*pair),
                    m.duration.labels(*pair),
                    None,  # created on the first upstream call (no empty histograms)
                )
            requests, bytes_in, bytes_out, duration, upstream = children
            requests.inc(count)
            if series.bytes_in:
                bytes_in.inc(series.bytes_in)
            if series.bytes_out:
                bytes_out.inc(series.bytes_out)
            _add_histogram(duration, series.latency, series.latency_ms / 1000.0)
            if series.upstream_ms or any(series.upstream):
                if upstream is None:
                    upstream = m.upstream_duration.labels(*pair)
                    series.children = (requests, bytes_in, bytes_out, duration, upstream)
                _add_histogram(upstream, series.upstream, series.upstream_ms / 1000.0)
            for mask, n in series.flagsets.items():
                for bit, name in FLAG_NAMES:
                    if mask & bit:
                        m.flags.labels(*pair, name).inc(n)
            published += count
            series.count = series.bytes_in = series.bytes_out = 0
            series.latency = [0] * len(_BOUNDS_MS)
            series.upstream = [0] * len(_BOUNDS_MS)
            series.latency_ms = series.upstream_ms = 0.0
            series.flagsets = {}
        return published


class _Deltas:
    """Feeds a cumulative per-process number into a Prometheus counter by differences."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last: dict[tuple[str, ...], float] = {}

    def feed(self, counter: Counter, labels: tuple[str, ...], value: float) -> None:
        previous = self.last.get(labels, 0.0)
        # A source that restarted from zero (e.g. a replaced backend) starts a new count.
        delta = value - previous if value >= previous else value
        self.last[labels] = value
        if delta > 0:
            (counter.labels(*labels) if labels else counter).inc(delta)


class WorkerGauges:
    """Per-worker state exported as `live*` gauges (and counters fed by deltas).

    `refresh()` reads each source once; every source is optional and read
    defensively, since a broken statistic must never break the data plane.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.workers = Gauge(
            "portcullis_data_plane_workers",
            "Live data-plane worker processes",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.config_version = Gauge(
            "portcullis_data_plane_config_version",
            "Lowest config version served by a live data-plane worker",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.limit_state = Gauge(
            "portcullis_ratelimit_backend_state",
            "Rate-limit backend state summed over live workers: fallback_active (workers "
            "answering by their failure policy because Redis is unreachable), local_keys "
            "(keys of the local fallback), keys (keys of the memory backend)",
            ["backend", "stat"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.limit_events = Counter(
            "portcullis_ratelimit_backend_events",
            "Rate-limit backend events: decisions_allowed, decisions_denied, backend_errors, "
            "backend_timeouts, fallback_decisions, failopen_decisions, failclosed_decisions, "
            "circuit_opened, recoveries, script_loads, evictions, expired",
            ["backend", "event"],
            registry=registry,
        )
        self.log_queue_depth = Gauge(
            "portcullis_request_log_queue_depth",
            "Request-log records waiting to be written, summed over live workers",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.log_dropped = Counter(
            "portcullis_request_log_dropped",
            "Request-log records dropped because the queue was full",
            registry=registry,
        )
        self.inspector_queue_depth = Gauge(
            "portcullis_inspector_queue_depth",
            "Captured exchanges (request inspector) waiting to be written, summed over live "
            "workers",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.inspector_dropped = Counter(
            "portcullis_inspector_dropped",
            "Captured exchanges (request inspector) dropped because the queue was full",
            registry=registry,
        )
        self.shedding = Gauge(
            "portcullis_shedding_state",
            "Adaptive concurrency per upstream, summed over live workers: limit (the learned "
            "concurrency limits), inflight (requests admitted and not finished), queued "
            "(critical requests waiting for a slot); 0 after the upstream left the config",
            ["upstream", "stat"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.shedding_requests = Counter(
            "portcullis_shedding_requests",
            "Requests to upstreams with adaptive concurrency, by priority class and outcome "
            "(admitted, shed)",
            ["upstream", "priority", "outcome"],
            registry=registry,
        )
        self.ship_queue = Gauge(
            "portcullis_log_shipping_queue_depth",
            "Records the log plugins (http-log, file-log, syslog) have queued and not shipped, "
            "by plugin and destination, summed over live workers",
            ["plugin", "destination"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.shipped = Counter(
            "portcullis_log_shipping_shipped",
            "Records the log plugins delivered, by plugin and destination",
            ["plugin", "destination"],
            registry=registry,
        )
        self.ship_dropped = Counter(
            "portcullis_log_shipping_dropped",
            "Records the log plugins dropped, by plugin, destination and reason (queue_full, "
            "retries_exhausted, rejected, shutdown)",
            ["plugin", "destination", "reason"],
            registry=registry,
        )
        self._ship_deltas = _Deltas()
        self._shedding_deltas = _Deltas()
        self._shedding_upstreams: set[str] = set()
        self._limit_deltas = _Deltas()
        self._dropped = _Deltas()
        self._inspector_dropped = _Deltas()
        self.workers.set(1)

    def refresh(
        self,
        *,
        config_version: int,
        limits: object | None = None,
        log_queues: Iterable[object] = (),
        inspector_queues: Iterable[object] = (),
        limiters: Mapping[str, object] | None = None,
        shippers: ShipperRegistry | None = None,
    ) -> None:
        """Update every gauge from the worker's current state."""
        self.config_version.set(config_version)
        if limits is not None:
            self._refresh_limits(limits)
        totals = _queue_totals(log_queues)
        if totals is not None:
            self.log_queue_depth.set(totals[0])
            self._dropped.feed(self.log_dropped, (), totals[1])
        totals = _queue_totals(inspector_queues)
        if totals is not None:
            self.inspector_queue_depth.set(totals[0])
            self._inspector_dropped.feed(self.inspector_dropped, (), totals[1])
        if limiters is not None:
            self._refresh_shedding(limiters)
        if shippers is not None:
            self._refresh_shipping(shippers)

    def _refresh_shipping(self, shippers: ShipperRegistry) -> None:
        for stats in shippers.stats():
            label = (stats.plugin, stats.destination)
            self.ship_queue.labels(*label).set(stats.queued)
            self._ship_deltas.feed(self.shipped, label, stats.shipped)
            self.shipped.labels(*label)  # present at 0, so rate() and alerts see it
            for reason, count in stats.dropped.items():
                self.ship_dropped.labels(*label, reason)
                self._ship_deltas.feed(self.ship_dropped, (*label, reason), count)

    def _refresh_limits(self, limits: object) -> None:
        snapshot = getattr(limits, "snapshot", None)
        if not callable(snapshot):
            return
        stats = snapshot()
        if not isinstance(stats, Mapping):
            return
        backend = str(getattr(limits, "name", type(limits).__name__))
        for key, value in stats.items():
            if key in LIMIT_COUNTERS:
                self._limit_deltas.feed(self.limit_events, (backend, key), float(value))
            elif key in LIMIT_GAUGES:
                self.limit_state.labels(backend, key).set(float(value))

    def _refresh_shedding(self, limiters: Mapping[str, object]) -> None:
        seen: set[str] = set()
        for upstream, limiter in limiters.items():
            stats_of = getattr(limiter, "stats", None)
            stats = stats_of() if callable(stats_of) else None
            if not isinstance(stats, Mapping):
                continue
            seen.add(upstream)
            for stat in SHEDDING_GAUGES:
                value = stats.get(stat)
                if isinstance(value, int | float):
                    self.shedding.labels(upstream, stat).set(float(value))
            for outcome in ("admitted", "shed"):
                by_class = stats.get(outcome)
                if isinstance(by_class, Mapping):
                    for priority, n in by_class.items():
                        if isinstance(n, int | float):
                            labels = (upstream, str(priority), outcome)
                            self._shedding_deltas.feed(self.shedding_requests, labels, n)
        for gone in self._shedding_upstreams - seen:
            for stat in SHEDDING_GAUGES:
                self.shedding.labels(gone, stat).set(0.0)
        self._shedding_upstreams = seen

    def retire(self) -> None:
        """This worker is stopping: drop its live gauges from the merged view."""
        path = multiprocess_dir()
        if path is not None:
            mark_process_dead(os.getpid(), path)  # type: ignore[no-untyped-call]


class MetricsPublisher:
    """The worker task that publishes request metrics and refreshes gauges periodically."""

    def __init__(
        self,
        observer: MetricsObserver,
        gauges: WorkerGauges,
        refresh: Callable[[WorkerGauges], None],
        *,
        interval: float,
    ) -> None:
        self.observer = observer
        self.gauges = gauges
        self._refresh = refresh
        self.interval = interval
        self._loop = Periodic("metrics", self._tick_async, interval=interval)

    def tick(self) -> None:
        """Publish and refresh once (errors are logged, never raised)."""
        try:
            self.observer.publish()
        except Exception:
            log.exception("metrics.publish_failed")
        try:
            self._refresh(self.gauges)
        except Exception:
            log.exception("metrics.refresh_failed")

    async def _tick_async(self) -> None:
        self.tick()

    def start(self) -> None:
        self.tick()
        self._loop.start()

    async def stop(self) -> None:
        """Publish what is left and retire this worker's live gauges."""
        await self._loop.stop()
        self.tick()
        self.gauges.retire()


def _queue_totals(queues: Iterable[object]) -> tuple[float, float] | None:
    """(records waiting, records dropped) over batch queues (`analytics.log_queue`); None
    when there is none."""
    depth = dropped = 0.0
    found = False
    for queue in queues:
        d = getattr(queue, "queue_depth", None)
        n = getattr(queue, "dropped", None)
        if isinstance(d, int | float) and isinstance(n, int | float):
            depth += d
            dropped += n
            found = True
    return (depth, dropped) if found else None


def start_worker_metrics(
    holder: SnapshotHolder,
    limits: object | None,
    settings: Settings,
    *,
    log_queues: Sequence[object] = (),
    inspector_queues: Sequence[object] = (),
    shippers: ShipperRegistry | None = None,
) -> MetricsPublisher | None:
    """Start publishing this worker's metrics; None without a metrics dir.

    The publisher's `observer` is the one to give the proxy, so it counts requests.

    Without `PROMETHEUS_MULTIPROC_DIR` nothing could read this worker's metrics
    (only the control plane serves `/metrics`), so nothing is counted.
    """
    if multiprocess_dir() is None:
        log.info("metrics.off", reason=f"{MULTIPROC_ENV} is not set")
        return None
    observer = MetricsObserver(
        RequestMetrics(consumer_labels=settings.metrics_consumer_labels),
        max_series=settings.metrics_max_series,
    )

    def refresh(gauges: WorkerGauges) -> None:
        gauges.refresh(
            config_version=holder.current.version,
            limits=limits,
            log_queues=list(log_queues),
            inspector_queues=list(inspector_queues),
            # Adaptive concurrency limiters by upstream (upstream/shedding.py), when configured.
            limiters=getattr(holder.current, "limiters", None),
            shippers=shippers,
        )

    publisher = MetricsPublisher(
        observer, WorkerGauges(), refresh, interval=settings.metrics_interval
    )
    publisher.start()
    return publisher


def prepare_metrics_dir(configured: Path | None) -> Path:
    """The multiprocess directory for one `portcullis serve` run, ready and empty.

    A configured directory is created if needed and emptied of metric files (a
    previous run's counters would otherwise add to this one's). Without one, a
    fresh temporary directory is made and removed when this process exits.
    """
    if configured is not None:
        configured.mkdir(parents=True, exist_ok=True)
        for stale in configured.glob("*.db"):
            stale.unlink(missing_ok=True)
        return configured.resolve()
    path = Path(tempfile.mkdtemp(prefix="portcullis-metrics-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


# -- control plane: collecting ----------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_dead_processes(path: str) -> list[int]:
    """Retire the live gauges of processes that died without doing it themselves.

    A crashed or killed worker leaves its `gauge_live*_<pid>.db` files behind;
    its counters and histograms are kept (their totals must not go backwards).
    Returns the pids retired. Every process writing here runs on this host.
    """
    dead: set[int] = set()
    for name in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        pid_text = os.path.basename(name).rsplit("_", 1)[-1][:-3]
        if pid_text.isdigit() and not _pid_alive(int(pid_text)):
            dead.add(int(pid_text))
    for pid in dead:
        mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
    return sorted(dead)


class StaticCollector(Collector):
    """Serves metric families computed before the scrape (e.g. from the store)."""

    def __init__(self, families: Iterable[Any]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Any]:
        yield from self._families


class _Delegate(Collector):
    """Serves another registry's metrics inside a per-scrape registry."""

    def __init__(self, source: CollectorRegistry) -> None:
        self._source = source

    def collect(self) -> Iterator[Any]:
        yield from self._source.collect()


def scrape_registry(path: str | None, extra: Iterable[Collector] = ()) -> CollectorRegistry:
    """A registry for one scrape: every process's files, or this process's own metrics.

    Without a multiprocess directory only this process's default registry is
    served (a control plane started outside `portcullis serve`).
    """
    registry = CollectorRegistry()
    if path is not None:
        sweep_dead_processes(path)
        MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    else:
        from prometheus_client import REGISTRY

        registry.register(_Delegate(REGISTRY))
    for collector in extra:
        registry.register(collector)
    return registry
