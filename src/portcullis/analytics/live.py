"""Live traffic, the data-plane side: each worker sums every second of its traffic and
sends that report to the control plane (see docs/live-traffic.md, docs/decisions/018).

`WorkerTraffic.observe` is a `RequestObserver`: it appends the finished request's
record to a bounded deque and returns (O(1), nothing else on the request's path; when
the deque is full the record is dropped and counted). Just after each second ends, a
task of the worker drains the deque and sums the records by the second they ended in:
per route, per consumer and per organization, requests, 4xx, 5xx and a latency sketch
(`analytics.sketch`, so the control plane's p95 over every worker is within 1 %), and
the totals. A second keeps at most `max_routes` routes and `max_consumers` consumers;
the others are summed under `_other` (their number is reported). Every second gets a
report, an empty one when the worker was idle: the control plane knows which workers
are alive from them and does not wait for a worker that has nothing to say.

Reports go out through a `ReportSink`: Redis pub/sub when `redis_url` is set
(`RedisReportSink`), else a row in the store's `live_traffic_reports` table
(`StoreReportSink`), which control planes poll. A report that cannot be sent is
counted (`lost`) and logged, never retried: a live view has no use for old seconds.

The wire format (`SecondReport.to_json`) is JSON with the sketches in base64; the
control plane's side (`services/streams/traffic.py`) reads it with `from_json`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from sqlalchemy import delete, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.analytics.record import RequestRecord
from portcullis.analytics.sketch import (
    KEY_MULTIPLIER,
    MAX_VALUE,
    MIN_VALUE,
    LatencySketch,
    SketchError,
)
from portcullis.model.config import GatewayConfig
from portcullis.redis_client import REDIS_FAILURES, SharedRedis
from portcullis.settings import Settings
from portcullis.store.analytics_tables import LiveTrafficReportRow
from portcullis.store.engine import write_transaction

log = structlog.get_logger(__name__)

OTHER = "_other"  # the entry that sums routes or consumers beyond the cap
REPORT_VERSION = 1
# Rows of the store transport older than this many seconds are deleted by the workers.
STORE_KEEP_SECONDS = 120
_PRUNE_EVERY = 30  # seconds between a worker's deletes of old rows
_SEND_TIMEOUT = 2.0
_WARN_INTERVAL = 10.0


class ReportError(ValueError):
    """Text that is not a live-traffic report this module wrote."""


@dataclass(slots=True)
class Counts:
    """One key's traffic over one second: requests, 4xx, 5xx and their latencies."""

    requests: int = 0
    errors_4xx: int = 0
    errors_5xx: int = 0
    sketch: LatencySketch = field(default_factory=LatencySketch)
    # The route's or consumer's organization (None: the operator's, gateway-wide).
    organization: str | None = None

    def merge(self, other: Counts) -> None:
        self.requests += other.requests
        self.errors_4xx += other.errors_4xx
        self.errors_5xx += other.errors_5xx
        self.sketch.merge(other.sketch)

    def p95(self) -> float | None:
        return self.sketch.quantile(0.95)

    def to_wire(self) -> list[Any]:
        sketch = base64.b64encode(self.sketch.to_bytes()).decode("ascii")
        return [self.requests, self.errors_4xx, self.errors_5xx, sketch, self.organization]

    @classmethod
    def from_wire(cls, value: Any) -> Counts:
        if not isinstance(value, list) or len(value) != 5:
            raise ReportError("an entry is a list of 5 items")
        requests, e4, e5, sketch, org = value
        if not all(isinstance(n, int) and n >= 0 for n in (requests, e4, e5)):
            raise ReportError("counts are non-negative integers")
        if not isinstance(sketch, str) or not (org is None or isinstance(org, str)):
            raise ReportError("bad sketch or organization")
        try:
            decoded = LatencySketch.from_bytes(base64.b64decode(sketch, validate=True))
        except (SketchError, binascii.Error) as exc:
            raise ReportError(f"bad latency sketch: {exc}") from exc
        return cls(requests, e4, e5, decoded, org)


@dataclass(slots=True)
class SecondReport:
    """One worker's traffic in one epoch second (see the module docstring)."""

    worker: str
    second: int
    totals: Counts = field(default_factory=Counts)
    routes: dict[str, Counts] = field(default_factory=dict)
    consumers: dict[str, Counts] = field(default_factory=dict)
    # Per organization: requests on its routes or by its consumers (each request once).
    organizations: dict[str, Counts] = field(default_factory=dict)
    # Records this worker dropped (queue full) since its previous report.
    dropped: int = 0
    # Distinct routes / consumers summed under `_other` (over the caps).
    folded_routes: int = 0
    folded_consumers: int = 0
    # The worker's last report (it is stopping): do not wait for it any more.
    final: bool = False

    def to_json(self) -> str:
        def entries(values: Mapping[str, Counts]) -> dict[str, list[Any]]:
            return {name: counts.to_wire() for name, counts in values.items()}

        return json.dumps(
            {
                "v": REPORT_VERSION,
                "worker": self.worker,
                "second": self.second,
                "totals": self.totals.to_wire(),
                "routes": entries(self.routes),
                "consumers": entries(self.consumers),
                "organizations": entries(self.organizations),
                "dropped": self.dropped,
                "folded": [self.folded_routes, self.folded_consumers],
                "final": self.final,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> SecondReport:
        """The inverse of `to_json`; `ReportError` for anything else."""
        try:
            value = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ReportError(f"not JSON: {exc}") from exc
        if not isinstance(value, dict) or value.get("v") != REPORT_VERSION:
            raise ReportError("not a live-traffic report (unknown version)")
        try:
            worker, second, folded = value["worker"], value["second"], value["folded"]
            if not isinstance(worker, str) or not isinstance(second, int):
                raise ReportError("bad worker or second")
            if not (isinstance(folded, list) and len(folded) == 2):
                raise ReportError("bad folded counts")

            def entries(key: str) -> dict[str, Counts]:
                raw = value[key]
                if not isinstance(raw, dict):
                    raise ReportError(f"{key} is not an object")
                return {str(name): Counts.from_wire(item) for name, item in raw.items()}

            return cls(
                worker=worker,
                second=second,
                totals=Counts.from_wire(value["totals"]),
                routes=entries("routes"),
                consumers=entries("consumers"),
                organizations=entries("organizations"),
                dropped=int(value["dropped"]),
                folded_routes=int(folded[0]),
                folded_consumers=int(folded[1]),
                final=bool(value["final"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ReportError):
                raise
            raise ReportError(f"malformed report: {exc!r}") from exc


class Organizations:
    """Which organization each route and consumer of the serving config belongs to,
    computed once per config (the snapshot's `config` object)."""

    def __init__(self, config: Callable[[], GatewayConfig]) -> None:
        self._config = config
        self._seen: GatewayConfig | None = None
        self.routes: dict[str, str | None] = {}
        self.consumers: dict[str, str | None] = {}

    def refresh(self) -> None:
        config = self._config()
        if config is not self._seen:
            self._seen = config
            self.routes = {r.name: r.organization for r in config.routes}
            self.consumers = {c.username: c.organization for c in config.consumers}


class _Pair:
    """One (route, consumer) pair's requests in one second, latencies binned once."""

    __slots__ = ("bins", "e4", "e5", "high", "low", "requests", "zero")

    def __init__(self) -> None:
        self.requests = self.e4 = self.e5 = self.zero = 0
        self.bins: dict[int, int] = {}
        self.low = math.inf
        self.high = -math.inf

    def counts(self, organization: str | None = None) -> Counts:
        sketch = LatencySketch.from_bins(self.bins, self.zero, self.low, self.high)
        return Counts(self.requests, self.e4, self.e5, sketch, organization)


class SecondAggregator:
    """Sums records into per-second `SecondReport`s, with bounded keys per second.

    Each record costs one latency-bin computation and one dict update (of its (route,
    consumer) pair); the routes, consumers, organizations and totals are summed from
    the pairs when the second is reported (few pairs, many records)."""

    def __init__(
        self,
        worker: str,
        organizations: Organizations,
        *,
        max_routes: int,
        max_consumers: int,
    ) -> None:
        self.worker = worker
        self.orgs = organizations
        self.max_routes = max_routes
        self.max_consumers = max_consumers
        self._seconds: dict[int, dict[tuple[str | None, str | None], _Pair]] = {}

    def add(self, second: int, records: Sequence[RequestRecord]) -> None:
        """Sum `records` into `second` (the caller decides which second they belong to)."""
        pairs = self._seconds.get(second)
        if pairs is None:
            pairs = self._seconds[second] = {}
        log_, ceil, multiplier = math.log, math.ceil, KEY_MULTIPLIER
        for record in records:
            key = (record.route, record.consumer)
            pair = pairs.get(key)
            if pair is None:
                pair = pairs[key] = _Pair()
            pair.requests += 1
            status = record.status
            if status >= 500:
                pair.e5 += 1
            elif status >= 400:
                pair.e4 += 1
            latency = record.latency_ms
            if latency >= MIN_VALUE:  # (what LatencySketch.add does, binned once here)
                if latency > MAX_VALUE:
                    latency = MAX_VALUE
                k = ceil(log_(latency) * multiplier)
                pair.bins[k] = pair.bins.get(k, 0) + 1
            else:
                latency = latency if latency > 0 else 0.0  # also NaN
                pair.zero += 1
            if latency < pair.low:
                pair.low = latency
            if latency > pair.high:
                pair.high = latency

    def seconds(self) -> list[int]:
        return sorted(self._seconds)

    def report(self, second: int) -> SecondReport:
        """Take `second`'s sums out as a report (an empty report if it has none)."""
        out = SecondReport(self.worker, second)
        pairs = self._seconds.pop(second, None)
        if not pairs:
            return out
        self.orgs.refresh()
        route_orgs, consumer_orgs = self.orgs.routes, self.orgs.consumers
        folded_routes: set[str] = set()
        folded_consumers: set[str] = set()
        for (route, consumer), pair in pairs.items():
            counts = pair.counts()
            out.totals.merge(counts)
            route_org = consumer_org = None
            if route is not None:
                route_org = route_orgs.get(route)
                _add(out.routes, route, route_org, counts, self.max_routes, folded_routes)
            if consumer is not None:
                consumer_org = consumer_orgs.get(consumer)
                _add(out.consumers, consumer, consumer_org, counts, self.max_consumers,
                     folded_consumers)  # fmt: skip
            # An organization's total: requests on its routes or by its consumers, once.
            for org in {route_org, consumer_org} - {None}:
                assert org is not None
                _add(out.organizations, org, org, counts, None, None)
        out.folded_routes = len(folded_routes)
        out.folded_consumers = len(folded_consumers)
        return out


def _add(
    entries: dict[str, Counts],
    name: str,
    organization: str | None,
    counts: Counts,
    cap: int | None,
    folded: set[str] | None,
) -> None:
    """Merge `counts` into `entries[name]`; past `cap` names (`_other` counting as one
    once it exists), into `_other` (and `name` into `folded`)."""
    mine = entries.get(name)
    if mine is None:
        if cap is not None and len(entries) >= cap:
            if folded is not None:
                folded.add(name)
            name, organization = OTHER, None
            mine = entries.get(OTHER)
        if mine is None:
            mine = entries[name] = Counts(organization=organization)
    mine.merge(counts)


class ReportSink(Protocol):
    """Where a worker's reports go (the control planes read them from there)."""

    async def send(self, reports: Sequence[SecondReport]) -> None:
        """Send the reports; raises when they could not be sent."""

    async def aclose(self) -> None: ...


class RedisReportSink:
    """Publishes each report on the live-traffic channel (every control plane listens)."""

    def __init__(self, redis: SharedRedis, channel: str) -> None:
        self.redis = redis
        self.channel = channel

    async def send(self, reports: Sequence[SecondReport]) -> None:
        circuit = self.redis.circuit
        if circuit.blocked():
            raise ConnectionError("redis is unavailable (circuit open)")
        try:
            for report in reports:
                await self.redis.client.publish(self.channel, report.to_json())
        except REDIS_FAILURES as exc:
            circuit.failed(exc)
            raise
        except BaseException:
            circuit.abandoned()
            raise
        circuit.succeeded()

    async def aclose(self) -> None:
        return None  # the worker's SharedRedis is closed by its owner


class StoreReportSink:
    """Inserts each report as a `live_traffic_reports` row; deletes old rows now and then."""

    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._clock = clock
        self._pruned_at = -math.inf

    async def send(self, reports: Sequence[SecondReport]) -> None:
        rows = [
            {"second": r.second, "worker": r.worker[:160], "payload": r.to_json()} for r in reports
        ]
        now = self._clock()
        async with write_transaction(self._engine) as conn:
            await conn.execute(insert(LiveTrafficReportRow), rows)
            if now - self._pruned_at >= _PRUNE_EVERY:
                await conn.execute(
                    delete(LiveTrafficReportRow).where(
                        LiveTrafficReportRow.second < int(now) - STORE_KEEP_SECONDS
                    )
                )
                self._pruned_at = now

    async def aclose(self) -> None:
        return None


def report_sink(engine: AsyncEngine, settings: Settings, redis: SharedRedis | None) -> ReportSink:
    """Redis pub/sub when the process has a Redis, else the store."""
    if redis is not None:
        return RedisReportSink(redis, settings.live_traffic_channel)
    return StoreReportSink(engine)


class WorkerTraffic:
    """A `RequestObserver` that queues records and, every second, sends the sums of the
    second that just ended (see the module docstring).

    Counters: `dropped` (records refused: queue full or closed), `sent` and `lost`
    (reports sent, and given up because the sink failed), `late` (records that ended in
    a second already reported, counted in the next report instead).
    """

    def __init__(
        self,
        sink: ReportSink,
        aggregator: SecondAggregator,
        *,
        capacity: int,
        offset: float = 0.02,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._sink = sink
        self.aggregator = aggregator
        self.capacity = capacity
        self.offset = offset
        self._clock = clock
        self._pending: deque[RequestRecord] = deque()
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        # Every second up to this one has been reported.
        self._reported_through = int(clock()) - 1
        self.dropped = 0
        self._dropped_reported = 0
        self.sent = 0
        self.lost = 0
        self.late = 0
        self._warned_at = -math.inf

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        sink: ReportSink,
        worker: str,
        config: Callable[[], GatewayConfig],
    ) -> WorkerTraffic:
        aggregator = SecondAggregator(
            worker,
            Organizations(config),
            max_routes=settings.live_traffic_max_routes,
            max_consumers=settings.live_traffic_max_consumers,
        )
        return cls(sink, aggregator, capacity=settings.live_traffic_queue_size)

    def observe(self, record: RequestRecord) -> None:
        """Queue `record` for this second's sums, or drop and count it. O(1)."""
        pending = self._pending
        if len(pending) >= self.capacity or self._closed:
            self.dropped += 1
            return
        pending.append(record)

    def collect(self, final: bool = False) -> list[SecondReport]:
        """Sum the queued records and take the reports of every second that ended (with
        `final`, the current one too); an empty report for the second that just ended
        when nothing happened in it."""
        now = self._clock()
        current = int(now)
        pending = self._pending
        records = [pending.popleft() for _ in range(len(pending))]
        aggregator = self.aggregator
        by_second: dict[int, list[RequestRecord]] = {}
        floor = self._reported_through + 1
        for record in records:
            try:
                second = int(record.started_at + record.latency_ms / 1000.0)
            except (ValueError, OverflowError):  # not a finite time: count it now
                second = current
            if second > current:  # a record cannot end in the future (clock steps)
                second = current
            if second < floor:
                # Ended in a second already reported (clock adjustments): the next one.
                self.late += 1
                second = floor
            by_second.setdefault(second, []).append(record)
        for second, group in by_second.items():
            aggregator.add(second, group)
        last = current if final else current - 1
        due = [s for s in aggregator.seconds() if s <= last]
        if last >= floor and last not in due:
            due.append(last)
        reports = [aggregator.report(s) for s in sorted(due)]
        if reports:
            self._reported_through = max(self._reported_through, reports[-1].second)
            reports[0].dropped = self.dropped - self._dropped_reported
            self._dropped_reported = self.dropped
            reports[-1].final = final
        return reports

    async def flush(self, final: bool = False) -> None:
        """Send what `collect` returns; a failure is counted and logged, never raised."""
        reports = self.collect(final)
        if not reports:
            return
        try:
            async with asyncio.timeout(_SEND_TIMEOUT):
                await self._sink.send(reports)
        except asyncio.CancelledError:
            self.lost += len(reports)
            raise
        except Exception as exc:
            self.lost += len(reports)
            now = time.monotonic()
            if now - self._warned_at >= _WARN_INTERVAL:
                self._warned_at = now
                log.warning(
                    "live_traffic.send_failed",
                    reports=len(reports),
                    lost_total=self.lost,
                    error=str(exc),
                    kind=type(exc).__name__,
                )
        else:
            self.sent += len(reports)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="portcullis-live-traffic")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        while True:
            now = self._clock()
            # Just after the second ends, so the records of its last moments are queued.
            await asyncio.sleep(math.floor(now) + 1 + self.offset - now)
            try:
                await self.flush()
            except Exception:  # never let a bug stop the worker's reports for good
                log.exception("live_traffic.flush_failed")

    async def aclose(self) -> None:
        """Stop, and send the current second's sums marked final (the control plane
        stops waiting for this worker). Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush(final=True)
        await self._sink.aclose()
        (log.warning if self.dropped or self.lost else log.info)(
            "live_traffic.closed", sent=self.sent, dropped=self.dropped, lost=self.lost
        )
