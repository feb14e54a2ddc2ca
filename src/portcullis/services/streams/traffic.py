"""Live traffic, the control-plane side: every worker's per-second reports merged into one
frame per second (see docs/live-traffic.md and docs/decisions/018).

`LiveTraffic` (one per control-plane process) receives the data-plane workers'
`SecondReport`s (`analytics/live.py`) from every node: over Redis pub/sub when the
process has a Redis, else by polling the store's `live_traffic_reports` table. Reports
of one epoch second are merged (counts added, latency sketches merged, so a p95 over
all workers is within 1 % of the exact value) and the second's `TrafficFrame` is
emitted once every live worker reported it, or `live_traffic_grace` seconds after the
second ended, whichever comes first. A worker is live while it reported one of the
last `EXPECT_SECONDS` seconds and did not send its final report; workers send a report
every second, an empty one when idle. A report arriving after its second's frame went
out is counted in `late_reports` (and the frame is not changed: clients have it).

A frame is emitted for every second, also when nothing happened (requests 0, and
`workers` 0 when no data plane reported): clients see that the stream is alive, and
the second is the frame's stream position, without gaps. The last
`live_traffic_history_seconds` frames are kept (`since`, for clients that resume);
`listen` gives a bounded async iterator of the frames to come (a listener that falls
behind loses its oldest frames, counted in its `dropped`).

Each frame is merged gateway-wide; `TrafficFrame.visible_to(organization)` is what an
admin limited to an organization sees: its routes and consumers, and totals that are
the requests on its routes or by its consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.analytics.live import OTHER, Counts, ReportError, SecondReport
from portcullis.redis_client import SharedRedis
from portcullis.services.scoping import OrgScope
from portcullis.settings import Settings
from portcullis.store.admin_tables import OrganizationRow
from portcullis.store.analytics_tables import LiveTrafficReportRow

log = structlog.get_logger(__name__)

# A worker whose last report is older than this many seconds is no longer waited for.
EXPECT_SECONDS = 3
# Reports for seconds further ahead than this (a skewed clock) are refused.
_FUTURE_SECONDS = 5
# The store transport re-reads the ids of this many seconds back (rows commit out of order).
_STORE_LOOKBACK = 10
_RECONNECT_MIN, _RECONNECT_MAX = 0.5, 5.0
_TICK = 0.05  # seconds between two checks for a due frame when nothing arrives
# Organization names -> ids are read again this often, and at most once a second when a
# report names an organization not known yet.
_ORGS_REFRESH, _ORGS_UNKNOWN_REFRESH = 10.0, 1.0

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class TrafficEntry:
    """One route's, one consumer's or the totals' traffic over one second."""

    requests: int
    errors_4xx: int
    errors_5xx: int
    p95_ms: float | None
    # The id of the route's / consumer's organization (None: gateway-wide, operators only).
    organization_id: str | None

    @classmethod
    def of(cls, counts: Counts, organization_id: str | None) -> TrafficEntry:
        p95 = counts.p95()
        return cls(
            counts.requests,
            counts.errors_4xx,
            counts.errors_5xx,
            None if p95 is None else round(p95, 3),
            organization_id,
        )

    @classmethod
    def idle(cls, organization_id: str | None = None) -> TrafficEntry:
        return cls(0, 0, 0, None, organization_id)

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors_4xx": self.errors_4xx,
            "errors_5xx": self.errors_5xx,
            "p95_ms": self.p95_ms,
            "organization_id": self.organization_id,
        }


@dataclass(frozen=True, slots=True)
class TrafficFrame:
    """Every worker's traffic in one epoch second, merged (see the module docstring)."""

    second: int  # epoch second: the frame's stream position
    totals: TrafficEntry  # organization_id None (or the viewer's organization)
    routes: Mapping[str, TrafficEntry]
    consumers: Mapping[str, TrafficEntry]
    workers: int  # worker reports merged
    # Per organization: the requests on its routes or by its consumers (for visible_to).
    organizations: Mapping[str, TrafficEntry] = field(default_factory=dict, compare=False)
    # Records the workers dropped (their queues were full) in the reports merged here.
    dropped: int = 0
    # Distinct routes / consumers summed under `_other` by some worker (over the caps).
    folded_routes: int = 0
    folded_consumers: int = 0

    def visible_to(self, organization_id: str | None) -> TrafficFrame:
        """What an admin limited to the organization `organization_id` (an id, as
        `OrgScope.organization_id`) sees: its routes and consumers, and as totals the
        requests on its routes or by its consumers (None: an unlimited admin, all)."""
        if organization_id is None:
            return self
        org = organization_id
        return TrafficFrame(
            second=self.second,
            totals=self.organizations.get(org) or TrafficEntry.idle(org),
            routes={n: e for n, e in self.routes.items() if e.organization_id == org},
            consumers={n: e for n, e in self.consumers.items() if e.organization_id == org},
            workers=self.workers,
            organizations={org: self.organizations[org]} if org in self.organizations else {},
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "second": self.second,
            "totals": self.totals.as_json(),
            "routes": {name: e.as_json() for name, e in self.routes.items()},
            "consumers": {name: e.as_json() for name, e in self.consumers.items()},
            "workers": self.workers,
            "dropped": self.dropped,
            "folded": {"routes": self.folded_routes, "consumers": self.folded_consumers},
        }


class _Merge:
    """The reports of one second merged so far."""

    __slots__ = ("consumers", "dropped", "folded", "organizations", "routes", "totals", "workers")

    def __init__(self) -> None:
        self.workers: set[str] = set()
        self.totals = Counts()
        self.routes: dict[str, Counts] = {}
        self.consumers: dict[str, Counts] = {}
        self.organizations: dict[str, Counts] = {}
        self.dropped = 0
        self.folded = [0, 0]

    def add(self, report: SecondReport, max_routes: int, max_consumers: int) -> None:
        self.workers.add(report.worker)
        self.totals.merge(report.totals)
        _merge_into(self.routes, report.routes, max_routes)
        _merge_into(self.consumers, report.consumers, max_consumers)
        _merge_into(self.organizations, report.organizations, None)
        self.dropped += report.dropped
        self.folded[0] += report.folded_routes
        self.folded[1] += report.folded_consumers

    def frame(self, second: int, org_ids: Mapping[str, str]) -> TrafficFrame:
        def org(name: str | None) -> str | None:
            # Reports name organizations as the config does; frames carry their ids. A
            # name with no organization behind it is gateway-wide (operators only).
            return None if name is None else org_ids.get(name)

        def entries(values: dict[str, Counts]) -> dict[str, TrafficEntry]:
            return {name: TrafficEntry.of(c, org(c.organization)) for name, c in values.items()}

        return TrafficFrame(
            second=second,
            totals=TrafficEntry.of(self.totals, None),
            routes=entries(self.routes),
            consumers=entries(self.consumers),
            workers=len(self.workers),
            organizations={
                org_id: TrafficEntry.of(c, org_id)
                for c in self.organizations.values()
                if (org_id := org(c.organization)) is not None
            },
            dropped=self.dropped,
            folded_routes=self.folded[0],
            folded_consumers=self.folded[1],
        )


def _merge_into(into: dict[str, Counts], new: Mapping[str, Counts], cap: int | None) -> None:
    for name, counts in new.items():
        mine = into.get(name)
        if mine is None:
            if cap is not None and len(into) >= cap and name != OTHER:
                # Over the cap across workers too: summed under `_other`.
                name = OTHER
                mine = into.get(OTHER)
            if mine is None:
                mine = into[name] = Counts(
                    organization=None if name == OTHER else counts.organization
                )
        mine.merge(counts)


def merge_frame(
    second: int,
    reports: list[SecondReport],
    settings: Settings,
    org_ids: Mapping[str, str] = _EMPTY,
) -> TrafficFrame:
    """The frame of `second` from these reports (one per worker); `org_ids`: organization
    name -> id."""
    merged = _Merge()
    for report in reports:
        merged.add(report, settings.live_traffic_max_routes, settings.live_traffic_max_consumers)
    return merged.frame(second, org_ids)


class TrafficListener:
    """A bounded queue of frames to come (an async iterator); the oldest frames go first
    when it is full (counted in `dropped`). `close` ends the iteration."""

    def __init__(self, maxsize: int, detach: Callable[[TrafficListener], None]) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self.dropped = 0
        self._frames: deque[TrafficFrame] = deque()
        self._wakeup = asyncio.Event()
        self._closed = False
        self._detach = detach

    def offer(self, frame: TrafficFrame) -> None:
        if self._closed:
            return
        if len(self._frames) >= self.maxsize:
            self._frames.popleft()
            self.dropped += 1
        self._frames.append(frame)
        self._wakeup.set()

    def pending(self) -> int:
        return len(self._frames)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._wakeup.set()
            self._detach(self)

    def __aiter__(self) -> TrafficListener:
        return self

    async def __anext__(self) -> TrafficFrame:
        while not self._frames:
            if self._closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._frames.popleft()


class LiveTraffic:
    """Merges the workers' reports into frames and hands them out (see the module doc).

    `receive(report)` and `tick()` are the whole merge; `start` runs the transport's
    reader and a ticker calling them. Counters: `reports` (received), `late_reports`
    (after their second's frame), `bad_reports` (unreadable or far off in time),
    `frames` (emitted).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        settings: Settings,
        redis: SharedRedis | None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self.settings = settings
        self._redis = redis
        self._clock = clock
        self.grace = settings.live_traffic_grace
        self._history: deque[TrafficFrame] = deque(maxlen=settings.live_traffic_history_seconds)
        self._pending: dict[int, _Merge] = {}
        # Worker -> the last second it reported (final reports remove it).
        self._workers: dict[str, int] = {}
        # Worker -> the first second it reported (not waited for before that).
        self._first: dict[str, int] = {}
        # Every frame up to this second was emitted.
        self._emitted_through = int(clock()) - 1
        self._listening_since = clock()
        self._listeners: list[TrafficListener] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._arrived = asyncio.Event()
        self._seen_ids: dict[int, int] = {}  # store transport: row id -> its second
        self._org_ids: dict[str, str] = {}  # organization name -> id
        self._org_ids_at = -math.inf
        self.reports = 0
        self.late_reports = 0
        self.bad_reports = 0
        self.frames = 0
        self.subscribed = asyncio.Event()

    # ------------------------------------------------------------------ merging

    def receive(self, report: SecondReport) -> None:
        """Merge one worker's report into its second (or count it late / bad)."""
        now_second = int(self._clock())
        if report.second > now_second + _FUTURE_SECONDS:
            self.bad_reports += 1
            return
        self.reports += 1
        if report.final:
            self._workers.pop(report.worker, None)
            self._first.pop(report.worker, None)
        else:
            if report.second >= self._workers.get(report.worker, report.second):
                self._workers[report.worker] = report.second
            if report.second < self._first.setdefault(report.worker, report.second):
                self._first[report.worker] = report.second
        if report.second <= self._emitted_through:
            self.late_reports += 1
            log.info(
                "live_traffic.late_report",
                worker=report.worker,
                second=report.second,
                behind=self._emitted_through - report.second,
            )
            return
        merged = self._pending.get(report.second)
        if merged is None:
            merged = self._pending[report.second] = _Merge()
        merged.add(
            report, self.settings.live_traffic_max_routes, self.settings.live_traffic_max_consumers
        )
        self._arrived.set()

    async def receive_text(self, text: str | bytes) -> None:
        """Read one report from the transport, learn its organizations' ids, merge it."""
        try:
            report = SecondReport.from_json(text)
        except ReportError as exc:
            self.bad_reports += 1
            log.warning("live_traffic.bad_report", error=str(exc))
            return
        names = {
            c.organization
            for values in (report.routes, report.consumers, report.organizations)
            for c in values.values()
            if c.organization is not None
        }
        age = time.monotonic() - self._org_ids_at
        if age >= _ORGS_REFRESH or (age >= _ORGS_UNKNOWN_REFRESH and names - self._org_ids.keys()):
            await self.refresh_organizations()
        self.receive(report)

    async def refresh_organizations(self) -> None:
        """Read every organization's name and id (reports name them, frames carry ids)."""
        self._org_ids_at = time.monotonic()
        try:
            async with self._engine.connect() as conn:
                rows = (await conn.execute(select(OrganizationRow.name, OrganizationRow.id))).all()
        except Exception as exc:
            log.warning("live_traffic.organizations_failed", error=str(exc))
            return
        self._org_ids = {str(name): str(org_id) for name, org_id in rows}

    def use_organizations(self, org_ids: Mapping[str, str]) -> None:
        """Set the organization name -> id map (tests; `refresh_organizations` reads it)."""
        self._org_ids = dict(org_ids)
        self._org_ids_at = time.monotonic()

    def expected(self, second: int) -> set[str]:
        """The workers whose report of `second` is waited for: those that reported one of
        the few seconds before it (a worker's first second is merged, not waited for)."""
        first = self._first
        return {
            w
            for w, last in self._workers.items()
            if last >= second - EXPECT_SECONDS and first.get(w, second) < second
        }

    def tick(self) -> list[TrafficFrame]:
        """Emit every frame that is due, in order; the frames emitted."""
        now = self._clock()
        current = int(now)
        out: list[TrafficFrame] = []
        while self._emitted_through + 1 < current:
            second = self._emitted_through + 1
            merged = self._pending.get(second)
            if now < second + 1 + self.grace:
                # Before the grace deadline only when every worker is known to have
                # reported: the workers are known from the seconds before, so not for a
                # second that began before this process listened.
                expected = self.expected(second)
                if (
                    second <= self._listening_since
                    or not expected
                    or merged is None
                    or not expected <= merged.workers
                ):
                    break
            self._pending.pop(second, None)
            frame = (merged or _Merge()).frame(second, self._org_ids)
            self._emitted_through = second
            self._emit(frame)
            out.append(frame)
        if out:
            # Workers silent for a minute (gone without a final report) are forgotten.
            gone = [w for w, last in self._workers.items() if last < current - 60]
            for worker in gone:
                del self._workers[worker]
                self._first.pop(worker, None)
        return out

    def _emit(self, frame: TrafficFrame) -> None:
        self.frames += 1
        self._history.append(frame)
        for listener in tuple(self._listeners):
            listener.offer(frame)

    # ------------------------------------------------------------------ reading

    def listen(self, maxsize: int = 64) -> TrafficListener:
        listener = TrafficListener(maxsize, self._detach)
        self._listeners.append(listener)
        return listener

    def _detach(self, listener: TrafficListener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    def since(self, second: int) -> list[TrafficFrame]:
        """The kept frames after `second`, oldest first."""
        return [f for f in self._history if f.second > second]

    def latest(self, seconds: int) -> list[TrafficFrame]:
        """The last `seconds` frames kept, oldest first."""
        frames = list(self._history)
        return frames[-seconds:] if seconds > 0 else []

    # ------------------------------------------------------------------ running

    async def start(self) -> None:
        """Start the transport's reader and the ticker (returns once Redis confirmed the
        subscription, or after a few seconds of trying: the reader keeps retrying)."""
        if self._tasks:
            return
        self._emitted_through = int(self._clock()) - 1
        self._listening_since = self._clock()
        reader = self._read_redis() if self._redis is not None else self._poll_store()
        self._tasks = [
            asyncio.create_task(reader, name="portcullis-live-traffic-reader"),
            asyncio.create_task(self._tick_forever(), name="portcullis-live-traffic-ticker"),
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.subscribed.wait(), timeout=4.0)

    async def stop(self) -> None:
        """Stop reading and ticking; every listener is closed."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for listener in tuple(self._listeners):
            listener.close()

    async def _tick_forever(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:
                log.exception("live_traffic.tick_failed")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), _TICK)

    async def _read_redis(self) -> None:
        assert self._redis is not None
        channel = self.settings.live_traffic_channel
        listener: Redis = self._redis.dedicated()
        delay = _RECONNECT_MIN
        try:
            while True:
                pubsub = listener.pubsub()
                try:
                    await pubsub.subscribe(channel)
                    while True:
                        message = await pubsub.get_message(timeout=2.0)
                        if message is not None and message.get("type") == "subscribe":
                            break
                    self.subscribed.set()
                    delay = _RECONNECT_MIN
                    while True:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=1.0
                        )
                        if message is not None and message.get("type") == "message":
                            await self.receive_text(message["data"])
                except (RedisError, OSError) as exc:
                    self.subscribed.clear()
                    log.warning("live_traffic.redis_failed", error=repr(exc), retry_in=delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _RECONNECT_MAX)
                finally:
                    with contextlib.suppress(RedisError, OSError):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]
        finally:
            await listener.aclose()
            await listener.connection_pool.disconnect()

    async def _poll_store(self) -> None:
        self.subscribed.set()
        interval = self.settings.live_traffic_poll_interval
        while True:
            try:
                await self.poll_store()
            except Exception as exc:
                log.warning("live_traffic.poll_failed", error=str(exc), kind=type(exc).__name__)
            await asyncio.sleep(interval)

    async def poll_store(self) -> int:
        """Read the reports stored since the last poll; how many were new.

        Ids of the last seconds are read again each time: on PostgreSQL rows commit
        out of id order, so "above the last id seen" could skip one."""
        low = self._emitted_through - _STORE_LOOKBACK
        table = LiveTrafficReportRow
        async with self._engine.connect() as conn:
            ids = (
                await conn.execute(select(table.id, table.second).where(table.second > low))
            ).all()
            new = [row_id for row_id, _ in ids if row_id not in self._seen_ids]
            payloads: list[str] = []
            if new:
                query = select(table.payload).where(table.id.in_(new)).order_by(table.id)
                payloads = list((await conn.execute(query)).scalars())
        for row_id, second in ids:
            self._seen_ids[row_id] = second
        for payload in payloads:
            await self.receive_text(payload)
        self._seen_ids = {i: s for i, s in self._seen_ids.items() if s > low}
        return len(payloads)


# ---------------------------------------------------------------------------- the REST view


class LiveQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: int = Field(
        60,
        ge=1,
        le=3600,
        description="How many of the last frames (at most the live_traffic_history_seconds kept)",
    )


class LiveEntryOut(BaseModel):
    requests: int
    errors_4xx: int
    errors_5xx: int
    p95_ms: float | None = Field(description="95th percentile latency (ms, within 1 %)")
    organization_id: str | None = Field(
        description="The organization of the route or consumer (null: gateway-wide)"
    )


class LiveFoldedOut(BaseModel):
    routes: int = Field(description="Distinct routes summed under _other (over the cap)")
    consumers: int = Field(description="Distinct consumers summed under _other")


class LiveFrameOut(BaseModel):
    second: int = Field(description="Epoch second (the frame's stream position)")
    totals: LiveEntryOut
    routes: dict[str, LiveEntryOut]
    consumers: dict[str, LiveEntryOut]
    workers: int = Field(description="Data-plane worker reports merged into this frame")
    dropped: int = Field(description="Requests the workers could not count (queues full)")
    folded: LiveFoldedOut


class LiveTrafficOut(BaseModel):
    enabled: bool = Field(description="False when live_traffic_enabled is off")
    history_seconds: int
    frames: list[LiveFrameOut] = Field(description="Oldest first, one per second")


def live_view(live: LiveTraffic | None, scope: OrgScope, seconds: int) -> dict[str, Any]:
    """The last `seconds` frames as `scope` may see them (`GET /analytics/live`)."""
    if live is None:
        return {"enabled": False, "history_seconds": 0, "frames": []}
    return {
        "enabled": True,
        "history_seconds": live.settings.live_traffic_history_seconds,
        "frames": [f.visible_to(scope.organization_id).as_json() for f in live.latest(seconds)],
    }
