"""Quota usage of a consumer or an API key: used, remaining and when each quota resets
(the operations behind `GET /consumers/{username}/usage` and `GET /keys/{key_id}/usage`).

With Redis (`PORTCULLIS_REDIS_URL`) the numbers are read from the same counters
the `plan-limits` plugin decides on, without changing them (`LimitBackend.peek`):
every gateway node shares them, the control plane reads them exactly, and the
response says `counters: "shared"`.

Without Redis each data-plane worker counts quotas in its own memory and enforces
each quota on its own (a consumer can get up to the limit *per worker*). Workers
publish their counts to the store every 2 s and when they stop
(`limits/quota_usage.py`); the response then says `counters: "per_worker"`:
`used` is the sum over workers (stopped ones included: their requests were served
this period), up to about 2 s behind; `remaining` is `limit - used`, what is left
of the plan's allowance (the gateway may still admit requests when it is 0, until
the worker they reach has counted `limit` itself); `busiest_worker_used` is the
highest count of one live worker (the one that will refuse first) and
`live_workers` how many live workers count this quota. For exact quotas across
workers and nodes, use Redis.

The limit shown is the one in force now: an active override or boost changes it.
The consumer's usage lists the plan's quotas counted per consumer (a quota counted
per credential is per key: see the key's usage); a key's usage lists both kinds.
Permission: `credentials:read`, as for the key metadata next to it (usage tells
who calls how much, like a key's `last_used_at`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.identity.consumers import ConsumerInfo
from portcullis.identity.key_repository import KeyNotFound, KeyRepository
from portcullis.identity.secrets import ServerSecret
from portcullis.limits.backend import BackendUnavailable, LimitBackend
from portcullis.limits.calendar import CalendarPeriod, to_us
from portcullis.limits.quota_usage import CounterUsage, read_quota_usage
from portcullis.limits.spec import MAX_LIMIT
from portcullis.model.config import GatewayConfig
from portcullis.model.plugins.plan_limits import PLAN_LIMITS_PLUGIN
from portcullis.model.traffic import TrafficRules
from portcullis.plugins.plan_limits import (
    Entry,
    Item,
    Periods,
    PlanBook,
    counter_request,
    effective_limit,
    slot_for,
)
from portcullis.problems import ProblemKind
from portcullis.services.config_editor import ConfigEditor
from portcullis.services.context import Operation
from portcullis.services.data_plane import FRESH_BEATS
from portcullis.services.errors import ServiceError, not_found
from portcullis.settings import Settings

# A quota no worker has counted in this period yet.
NO_USAGE = CounterUsage(used=0, busiest=0, workers=0)

USAGE_UNAVAILABLE = ProblemKind("usage-unavailable", "Usage counters cannot be read right now", 503)


class QuotaUse(BaseModel):
    """One quota of the plan in force, in its current period."""

    name: str
    route: str | None = Field(description="the route of a route override; null: plan-wide")
    key: Literal["consumer", "credential"] = Field(description="what the quota counts per")
    period: Literal["day", "month"]
    timezone: str
    period_id: str = Field(examples=["2026-11"])
    limit: int = Field(description="the limit in force now (an override or boost changes it)")
    plan_limit: int = Field(description="the limit the plan sets")
    used: int | None = Field(
        description="requests counted in the period; per_worker counters: summed over workers"
    )
    remaining: int | None = Field(description="max(0, limit - used)")
    busiest_worker_used: int | None = Field(
        None,
        description="per_worker counters only: the highest count of one live worker (each "
        "worker refuses once its own count reaches the limit); null with shared counters",
    )
    live_workers: int | None = Field(
        None, description="per_worker counters only: live workers that counted this quota"
    )
    period_start: datetime = Field(description="ISO 8601 with the time zone's offset")
    resets_at: datetime = Field(description="when the next period starts (ISO 8601 with offset)")


class QuotaUsageOut(BaseModel):
    consumer: str
    key_id: str | None
    plan: str | None = Field(description="the plan in force; null: none applies")
    plan_source: Literal["key", "consumer", "default"] | None
    adjustment: str | None = Field(
        description="`boost`, or `override:<name>`, when one changes the limits now"
    )
    counters: Literal["shared", "per_worker"] = Field(
        description="`shared`: Redis counters, exact across workers; `per_worker`: without "
        "Redis each worker enforces quotas on its own and `used` sums what they published"
    )
    at: datetime
    quotas: list[QuotaUse]


def _default_plan(config: GatewayConfig) -> str | None:
    """The default plan of the global plan-limits instance, if any."""
    for inst in config.plugins:
        if inst.name == PLAN_LIMITS_PLUGIN and inst.enabled and inst.scope[0] == "global":
            value = inst.config.get("default_plan")
            return value if isinstance(value, str) else None
    return None


@dataclass(frozen=True, slots=True, eq=False)
class _Row:
    """One quota counter of a usage: its plan entry and item, the limit in force, the
    current period and the counter's partition (`c=<consumer>` or `k=<key id>`)."""

    entry: Entry
    item: Item
    limit: int
    period: CalendarPeriod
    partition: str
    consumer: str


@dataclass(frozen=True, slots=True)
class _UsagePlan:
    name: str | None
    source: Any
    sources: set[str]
    rows: list[_Row]


class UsageService:
    """Quota usage read from the limit counters (Redis) or the workers' published counts."""

    def __init__(
        self, engine: AsyncEngine, secret: ServerSecret, editor: ConfigEditor, settings: Settings
    ) -> None:
        self._engine = engine
        self._secret = secret
        self._editor = editor
        self._settings = settings

    async def of_consumer(self, op: Operation, username: str) -> QuotaUsageOut:
        """A consumer's usage; not found also for one outside the caller's organization."""
        config = (await self._editor.state()).config
        for c in config.consumers:
            if c.username == username and op.scope.sees_named(c.organization):
                return await self._usage(op, config, ConsumerInfo.of(c), None, None)
        raise not_found(f"consumer {username!r} does not exist", target="username")

    async def of_key(self, op: Operation, key_id: str) -> QuotaUsageOut:
        """An API key's usage (its own quotas and its consumer's)."""
        missing = f"API key {key_id!r} does not exist"
        try:
            info = await KeyRepository(self._engine, self._secret).get(key_id)
        except KeyNotFound:
            raise not_found(missing, target="key_id") from None
        op.scope.require_owned(info.organization_id, missing)
        config = (await self._editor.state()).config
        consumer = next((c for c in config.consumers if c.username == info.consumer), None)
        if consumer is None:
            raise not_found(f"the key's consumer {info.consumer!r} no longer exists")
        return await self._usage(op, config, ConsumerInfo.of(consumer), info.id, info.plan)

    def _backend(self) -> LimitBackend | None:
        settings = self._settings
        if not settings.redis_url:
            return None
        from portcullis.limits.redis_backend import RedisBackend

        return RedisBackend.from_url(
            settings.redis_url,
            timeout=max(settings.limits_redis_timeout, 1.0),
            max_connections=2,
            prefix=settings.limits_key_prefix,
        )

    async def of_consumers(
        self, op: Operation, usernames: Sequence[str]
    ) -> dict[str, QuotaUsageOut]:
        """The usage of each named consumer the caller may see (others are left out), with
        one read of the counters for all of them (what a GraphQL loader asks for)."""
        config = (await self._editor.state()).config
        wanted = set(usernames)
        consumers = [
            ConsumerInfo.of(c)
            for c in config.consumers
            if c.username in wanted and op.scope.sees_named(c.organization)
        ]
        plans = [self._plan(op, config, consumer, None, None) for consumer in consumers]
        counts = await self._counts([row for plan in plans for row in plan.rows], consumers)
        out: dict[str, QuotaUsageOut] = {}
        for consumer, plan in zip(consumers, plans, strict=True):
            used = [counts[id(row)] for row in plan.rows]
            out[consumer.username] = self._shaped(op, plan, consumer, None, used)
        return out

    async def _usage(
        self,
        op: Operation,
        config: GatewayConfig,
        consumer: ConsumerInfo,
        key_id: str | None,
        key_plan: str | None,
    ) -> QuotaUsageOut:
        plan = self._plan(op, config, consumer, key_id, key_plan)
        counts = await self._counts(plan.rows, [consumer])
        used = [counts[id(row)] for row in plan.rows]
        return self._shaped(op, plan, consumer, key_id, used)

    def _plan(
        self,
        op: Operation,
        config: GatewayConfig,
        consumer: ConsumerInfo,
        key_id: str | None,
        key_plan: str | None,
    ) -> _UsagePlan:
        """Which counters make up the usage (no I/O)."""
        book = PlanBook(TrafficRules.of(config))
        plan, source = book.resolve(key_plan, consumer, _default_plan(config))
        now = to_us(op.now())
        rows: list[_Row] = []
        sources: set[str] = set()
        if plan is not None:
            periods = Periods()
            for entry in plan.entries():
                adjustment = book.adjustment(now, consumer, key_id, entry.route or "")
                if adjustment.source:
                    sources.add(adjustment.source)
                current = periods.at(entry, now)
                for item in entry.items:
                    if item.period is None or (item.quota_key == "credential" and key_id is None):
                        continue
                    partition = (
                        f"k={key_id}"
                        if item.quota_key == "credential"
                        else f"c={consumer.username}"
                    )
                    limit = effective_limit(item, adjustment)
                    rows.append(
                        _Row(
                            entry,
                            item,
                            limit,
                            current[item.period, item.timezone],
                            partition,
                            consumer.username,
                        )
                    )
        return _UsagePlan(plan.name if plan is not None else None, source, sources, rows)

    async def _counts(
        self, rows: Sequence[_Row], consumers: Sequence[ConsumerInfo]
    ) -> dict[int, tuple[int | None, CounterUsage | None]]:
        """What each row's counter says (by the row's id): one read of the published
        counters (or one peek at Redis) for every row of every consumer."""
        if not rows:
            return {}
        slots = {c.username: slot_for(c, "") for c in consumers}
        probes = [
            counter_request(r.item, MAX_LIMIT, r.period, r.partition, slots[r.consumer])
            for r in rows
        ]
        backend = self._backend()
        if backend is None:
            fresh_for = timedelta(seconds=FRESH_BEATS * self._settings.heartbeat_interval)
            try:
                published = await read_quota_usage(
                    self._engine, [p.key for p in probes], fresh_for=fresh_for
                )
            except SQLAlchemyError as exc:
                raise ServiceError(
                    USAGE_UNAVAILABLE, f"the published quota counters cannot be read: {exc}"
                ) from None
            spread = [published.get(p.key, NO_USAGE) for p in probes]
            return {
                id(r): (s.used if s is not None else None, s)
                for r, s in zip(rows, spread, strict=True)
            }
        # Peeked against the largest limit, so `remaining` is never clamped at 0 and
        # `used` comes out exact even when it exceeds the limit now in force.
        try:
            peeked = await backend.peek(probes)
        except BackendUnavailable as exc:
            raise ServiceError(
                USAGE_UNAVAILABLE, f"the limit counters are unreachable: {exc}"
            ) from None
        finally:
            await backend.aclose()
        return {id(r): (MAX_LIMIT - d.remaining, None) for r, d in zip(rows, peeked, strict=True)}

    def _shaped(
        self,
        op: Operation,
        plan: _UsagePlan,
        consumer: ConsumerInfo,
        key_id: str | None,
        counts: list[tuple[int | None, CounterUsage | None]],
    ) -> QuotaUsageOut:
        quotas = []
        for row, (count, spread) in zip(plan.rows, counts, strict=True):
            entry, item, limit, period = row.entry, row.item, row.limit, row.period
            quotas.append(
                QuotaUse(
                    name=item.name,
                    route=entry.route,
                    key="credential" if item.quota_key == "credential" else "consumer",
                    period=period.kind,
                    timezone=item.timezone,
                    period_id=period.id,
                    limit=limit,
                    plan_limit=item.limit,
                    used=count,
                    remaining=None if count is None else max(0, limit - count),
                    busiest_worker_used=spread.busiest if spread is not None else None,
                    live_workers=spread.workers if spread is not None else None,
                    period_start=period.starts_at(),
                    resets_at=period.ends_at(),
                )
            )
        return QuotaUsageOut(
            consumer=consumer.username,
            key_id=key_id,
            plan=plan.name,
            plan_source=plan.source,
            adjustment=", ".join(sorted(plan.sources)) or None,
            counters="shared" if self._settings.redis_url else "per_worker",
            at=op.now(),
            quotas=quotas,
        )
