"""`quota.threshold_reached`: a consumer's (or an API key's) quota reached 80 % or 100 %
of its limit in the current period, announced once (docs/decisions/013-quota-events.md).

A control-plane job, not the data plane: every `quota_events_interval` seconds it reads
the quota counters that changed since its last run, the same numbers the usage API
reports (`admin/routers/usage.py`):

- without Redis, the counts data-plane workers publish to `quota_usage` every 2 s
  (summed over workers, as `used` in the usage API);
- with Redis, the shared counters themselves, found by a SCAN of the plan-limits quota
  keys and read with `LimitBackend.peek` (nothing is counted).

Each counter key (`pq[@route]:<quota>:<period id>:<c=username | k=key id>`) is matched
to its plan's quota in the current config, the limit in force now (boosts and overrides
change it) is computed as the plugin does, and a threshold the count has reached is
announced by inserting a `quota_thresholds` row (subject, quota, period, threshold) with
ON CONFLICT DO NOTHING: only the transaction whose insert took the row records the event
(with its webhook messages), so several control planes announce it once per period.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from portcullis.analytics.jobs import control_job
from portcullis.events.bus import Event, EventBus, NewEvent, collecting, record_events, rfc3339
from portcullis.events.catalogue import EventType
from portcullis.identity.consumers import ConsumerInfo
from portcullis.limits.backend import LimitRequest
from portcullis.limits.calendar import to_us
from portcullis.limits.quota_usage import QUOTA_PREFIX
from portcullis.limits.spec import MAX_LIMIT, LimitSpec
from portcullis.model.config import GatewayConfig
from portcullis.model.traffic import TrafficRules
from portcullis.periodic import Periodic
from portcullis.plugins.plan_limits import (
    CompiledPlan,
    Entry,
    Item,
    Periods,
    PlanBook,
    effective_limit,
)
from portcullis.settings import Settings
from portcullis.store.analytics_tables import QuotaThresholdRow, QuotaUsageRow
from portcullis.store.engine import dialect_insert, write_transaction
from portcullis.store.identity_tables import ApiKeyRow
from portcullis.store.organizations import organization_ids_of

if TYPE_CHECKING:
    from portcullis.limits.redis_backend import RedisBackend

log = structlog.get_logger(__name__)

THRESHOLDS = (80, 100)
# A counter seen changed this long before the last run is looked at again (clock skew
# between the workers that publish and the control plane that reads).
_OVERLAP = timedelta(seconds=10)


@dataclass(frozen=True, slots=True)
class Counter:
    """One quota counter's key and its count now."""

    key: str
    used: int


# A quota counter key's current period bounds (epoch µs), None for a key of no quota
# of the config or of an ended period.
Bounds = Callable[[str], tuple[int, int] | None]


class CounterSource(Protocol):
    """Where the quota counters are read (published by workers, or shared in Redis)."""

    async def changed(self, since: datetime | None, now: datetime, bounds: Bounds) -> list[Counter]:
        """Counters of periods not yet ended that changed since `since` (None: all)."""


class PublishedCounters:
    """The counts workers publish to `quota_usage` (memory limit backend), summed."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def changed(self, since: datetime | None, now: datetime, bounds: Bounds) -> list[Counter]:
        t = QuotaUsageRow
        query = (
            select(t.counter_key, func.sum(t.used))
            .where(t.period_end_us > to_us(now))
            .group_by(t.counter_key)
        )
        if since is not None:
            query = query.having(func.max(t.updated_at) >= since - _OVERLAP)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [Counter(key, int(used)) for key, used in rows]


class SharedCounters:
    """The counters in Redis (every node shares them), read without counting. Redis does
    not say what changed: every quota key is scanned each round."""

    def __init__(self, backend: RedisBackend) -> None:
        self._backend = backend

    async def changed(self, since: datetime | None, now: datetime, bounds: Bounds) -> list[Counter]:
        backend = self._backend
        client = backend.redis.client
        pattern = f"{backend.prefix}{{*}}:{QUOTA_PREFIX}*"
        requests: list[LimitRequest] = []
        async for raw in client.scan_iter(match=pattern, count=1000):
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            tag_end = name.find("}:")
            if not name.startswith(backend.prefix + "{") or tag_end < 0:
                continue
            slot = name[len(backend.prefix) + 1 : tag_end]
            key = name[tag_end + 2 :].rsplit(":", 1)[0]  # without the algorithm suffix
            window = bounds(key)
            if window is None:
                continue
            spec = LimitSpec.calendar(MAX_LIMIT, *window)
            requests.append(LimitRequest(key, spec, 0, slot))
        if not requests:
            return []
        peeked = await backend.peek(requests)
        return [
            Counter(r.key, MAX_LIMIT - d.remaining)
            for r, d in zip(requests, peeked, strict=True)
            if d.remaining < MAX_LIMIT
        ]


@dataclass(frozen=True, slots=True)
class Quota:
    """What a counter key counts: a plan's quota (on a route or plan-wide)."""

    plan: CompiledPlan
    entry: Entry
    item: Item


def quota_index(book: PlanBook) -> dict[str, Quota]:
    """Every quota of the config's plans by its counter prefix (`pq[@route]:<quota>:`)."""
    return {
        item.prefix: Quota(plan, entry, item)
        for plan in book.plans.values()
        for entry in plan.entries()
        for item in entry.items
        if item.is_quota
    }


def split_key(key: str) -> tuple[str, str, str] | None:
    """(quota prefix, period id, partition) of a quota counter key; None for another key."""
    parts = key.split(":", 3)
    if len(parts) != 4 or not parts[0].startswith(QUOTA_PREFIX):
        return None
    return f"{parts[0]}:{parts[1]}:", parts[2], parts[3]


@dataclass(frozen=True, slots=True)
class Reached:
    subject: str
    quota: Quota
    period_id: str
    period_end_us: int
    resets_at: datetime
    threshold: int
    limit: int
    used: int
    consumer: ConsumerInfo
    key_id: str | None


def _insert(conn: AsyncConnection) -> Any:
    return dialect_insert(conn)


class QuotaThresholds:
    """One round: read the changed counters, find thresholds reached, announce each once."""

    def __init__(
        self,
        engine: AsyncEngine,
        bus: EventBus,
        source: CounterSource,
        config: Callable[[], Awaitable[GatewayConfig | None]],
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._engine = engine
        self._bus = bus
        self._source = source
        self._config = config
        self._clock = clock or (lambda: datetime.now(UTC))
        self._since: datetime | None = None

    async def run_once(self) -> list[Event]:
        now = self._clock()
        config = await self._config()
        if config is None:
            return []
        book = PlanBook(TrafficRules.of(config))
        index = quota_index(book)
        periods = Periods()
        now_us = to_us(now)

        def bounds(key: str) -> tuple[int, int] | None:
            split = split_key(key)
            quota = None if split is None else index.get(split[0])
            if split is None or quota is None or quota.item.period is None:
                return None
            period = periods.at(quota.entry, now_us)[quota.item.period, quota.item.timezone]
            return (period.starts_us, period.ends_us) if period.id == split[1] else None

        counters = await self._source.changed(self._since, now, bounds)
        reached = await self._reached(config, book, index, counters, now)
        events = await self._announce(reached, now)
        self._since = now
        if events:
            await self._bus.deliver(events)
        return events

    async def _reached(
        self,
        config: GatewayConfig,
        book: PlanBook,
        index: dict[str, Quota],
        counters: Sequence[Counter],
        now: datetime,
    ) -> list[Reached]:
        consumers = {c.username: c for c in config.consumers}
        parsed: list[tuple[Counter, Quota, str, str]] = []
        for counter in counters:
            split = split_key(counter.key)
            quota = None if split is None else index.get(split[0])
            if split is None or quota is None:
                continue
            parsed.append((counter, quota, split[1], split[2]))
        keys = await self._keys([p[3][2:] for p in parsed if p[3].startswith("k=")])
        periods = Periods()
        now_us = to_us(now)
        found: list[Reached] = []
        for counter, quota, period_id, partition in parsed:
            key_id: str | None = None
            if partition.startswith("c="):
                username = partition[2:]
            elif partition.startswith("k=") and partition[2:] in keys:
                key_id = partition[2:]
                username = keys[key_id]
            else:
                continue  # counted per client address: no consumer to tell
            consumer = consumers.get(username)
            if consumer is None:
                continue
            info = ConsumerInfo.of(consumer)
            item = quota.item
            assert item.period is not None
            period = periods.at(quota.entry, now_us)[item.period, item.timezone]
            if period.id != period_id:
                continue  # a period that has ended
            adjustment = book.adjustment(now_us, info, key_id, quota.entry.route or "")
            limit = effective_limit(item, adjustment)
            if limit <= 0:
                continue
            subject = f"key:{key_id}" if key_id is not None else f"consumer:{username}"
            for threshold in THRESHOLDS:
                if counter.used * 100 >= threshold * limit:
                    found.append(
                        Reached(
                            subject,
                            quota,
                            period_id,
                            period.ends_us,
                            period.ends_at(),
                            threshold,
                            limit,
                            counter.used,
                            info,
                            key_id,
                        )
                    )
        return found

    async def _keys(self, ids: Iterable[str]) -> dict[str, str]:
        """API key id → its consumer, for the keys given."""
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(ApiKeyRow.id, ApiKeyRow.consumer).where(ApiKeyRow.id.in_(wanted))
            )
            return {str(i): str(c) for i, c in rows.all()}

    async def _announce(self, reached: Sequence[Reached], now: datetime) -> list[Event]:
        if not reached:
            return []
        async with write_transaction(self._engine) as conn:
            with collecting(conn) as events:
                organizations = await organization_ids_of(
                    conn, (r.consumer.organization for r in reached)
                )
                insert = _insert(conn)
                new: list[NewEvent] = []
                for r in reached:
                    result = await conn.execute(
                        insert(QuotaThresholdRow)
                        .values(
                            subject=r.subject,
                            quota=r.quota.item.prefix,
                            period_id=r.period_id,
                            threshold=r.threshold,
                            period_end_us=r.period_end_us,
                            reached_at=now,
                        )
                        .on_conflict_do_nothing()
                    )
                    if result.rowcount != 1:
                        continue  # announced already (by this or another control plane)
                    new.append(_event(r, organizations))
                await record_events(conn, new, now=now)
                await conn.execute(
                    delete(QuotaThresholdRow).where(QuotaThresholdRow.period_end_us < to_us(now))
                )
        return list(events)


def _event(r: Reached, organizations: dict[str, str]) -> NewEvent:
    item = r.quota.item
    return NewEvent(
        EventType.QUOTA_THRESHOLD_REACHED,
        r.subject,
        {
            "consumer": r.consumer.username,
            "key_id": r.key_id,
            "plan": r.quota.plan.name,
            "quota": item.name,
            "route": r.quota.entry.route,
            "period": item.period,
            "period_id": r.period_id,
            "resets_at": rfc3339(r.resets_at),
            "threshold": r.threshold,
            "limit": r.limit,
            "used": r.used,
        },
        organization_id=organizations.get(r.consumer.organization or ""),
    )


def quota_events_job(
    engine: AsyncEngine,
    settings: Settings,
    bus: EventBus,
    config: Callable[[], Awaitable[GatewayConfig | None]],
    shared: RedisBackend | None = None,
) -> Periodic:
    """The background job (see the module docstring); `shared`: the Redis limit backend
    when the data plane counts there."""
    source: CounterSource = PublishedCounters(engine) if shared is None else SharedCounters(shared)
    job = QuotaThresholds(engine, bus, source, config)
    return control_job("quota-events", job.run_once, settings.quota_events_interval)
