"""Traffic analytics operations: usage series, top endpoints and consumers, errors,
latency, realtime, per-consumer reports and exports, and a consumer's own usage
(the REST faces are admin/routers/analytics.py).

Everything but the realtime view and the error-kind breakdown reads the rollups
(see `analytics.queries`): ranges are widened to whole minutes (series: to whole
buckets of their granularity), days are UTC, and the minutes of the last few
seconds are not rolled up yet (`complete_until` says up to when data is in).
Latency percentiles come from merged sketches, within 1 % of the exact value.
Ranges without an end end at the operation's clock.

Callers limited to an organization see the traffic of their organization's routes
and consumers only. A consumer's own usage is reached with a working API key of
theirs: revoked, suspended, expired and rotated-out keys, and keys of suspended or
deleted consumers, are refused.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.analytics import api_callers, queries
from portcullis.analytics.queries import Scope
from portcullis.analytics.rollups import Counters
from portcullis.analytics.sketch import RELATIVE_ACCURACY
from portcullis.identity.credential_cache import MAX_CREDENTIAL_LENGTH
from portcullis.identity.key_records import KeyStatus
from portcullis.identity.key_repository import KeyRepository
from portcullis.identity.secrets import ServerSecret
from portcullis.model.apis import VERSION_PATTERN, Api
from portcullis.model.config import ConsumerStatus, GatewayConfig
from portcullis.services.config_editor import ConfigEditor
from portcullis.services.context import Operation
from portcullis.services.errors import invalid, not_found
from portcullis.services.query import rfc3339_only
from portcullis.settings import Settings

Granularity = Literal["minute", "hour", "day"]
DEFAULT_RANGE = timedelta(hours=24)
# Most buckets one series may have (a day of minutes, five years of days).
MAX_SERIES_BUCKETS = 2000
# Most buckets one export may span (a month of minutes).
MAX_EXPORT_BUCKETS = 50_000
MAX_TOP = 100
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,127}$"
EXPORT_COLUMNS = (
    "bucket_start",
    "granularity",
    "route",
    "service",
    "consumer",
    "status_class",
    "api",
    "api_version",
    "sandbox",
    "requests",
    "errors",
    "error_rate",
    "rate_limited",
    "bytes_in",
    "bytes_out",
    "latency_avg_ms",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
)
# ---------------------------------------------------------------------------- schemas


class TrafficStats(BaseModel):
    """Counts, bytes and latency of some traffic (percentiles within 1 %; null: no requests)."""

    requests: int
    errors: int = Field(description="5xx responses plus requests the gateway refused")
    error_rate: float = Field(description="errors / requests (0 without requests)")
    rate_limited: int = Field(description="Requests refused by a rate limit or quota")
    bytes_in: int
    bytes_out: int
    latency_avg_ms: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None


class UsageBucket(TrafficStats):
    bucket_start: datetime


class RangeOut(BaseModel):
    start: datetime = Field(description="Start of the range answered (aligned)")
    end: datetime = Field(description="End of the range answered (exclusive, aligned)")
    complete_until: datetime = Field(
        description="Traffic before this instant is in the rollups; later minutes are not yet"
    )


class UsageOut(RangeOut):
    granularity: Granularity
    totals: TrafficStats
    series: list[UsageBucket]


class EndpointStats(TrafficStats):
    route: str | None = Field(description="Route name (null: requests that matched no route)")
    service: str | None
    paths: list[str] = Field(description="The route's paths in the current config")


class TopEndpointsOut(RangeOut):
    items: list[EndpointStats]


class ConsumerStats(TrafficStats):
    consumer: str


class TopConsumersOut(RangeOut):
    items: list[ConsumerStats]


class StatusClassStats(BaseModel):
    status_class: Literal["1xx", "2xx", "3xx", "4xx", "5xx"]
    requests: int
    errors: int


class ErrorKindStats(BaseModel):
    error_kind: str | None = Field(description="Problem type slug; null for upstream 5xx")
    status: int
    requests: int


class ErrorsOut(RangeOut):
    requests: int
    errors: int
    error_rate: float
    by_status_class: list[StatusClassStats]
    by_kind: list[ErrorKindStats] | None = Field(
        description="Errors by kind and status from the raw request log (top 50); null when"
        " the range is longer than the raw-log query limit"
    )


class LatencyOut(RangeOut):
    count: int
    min_ms: float | None
    max_ms: float | None
    mean_ms: float | None
    percentiles: dict[str, float | None] = Field(
        description="p50, p75, p90, p95, p99, p999 (null without requests)"
    )
    relative_accuracy: float = Field(description="Percentiles are within this relative error")


class RealtimeSecond(BaseModel):
    at: datetime
    requests: int
    errors: int
    rate_limited: int


class RealtimeOut(BaseModel):
    start: datetime
    end: datetime
    window_seconds: int
    requests: int
    errors: int
    rate_limited: int
    requests_per_second: float
    error_rate: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    latency_sample: int = Field(
        description=f"Latest requests the percentiles are computed from (at most "
        f"{queries.REALTIME_LATENCY_SAMPLE})"
    )
    series: list[RealtimeSecond]


class ConsumerUsageOut(UsageOut):
    consumer: str
    by_route: list[EndpointStats]


# ---------------------------------------------------------------------------- queries


class RangeQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: datetime | None = Field(
        None, description="Start (RFC 3339 with offset); default: `end` minus 24 hours"
    )
    end: datetime | None = Field(
        None, description="End, exclusive (RFC 3339 with offset); default: now"
    )

    _check_times = field_validator("start", "end", mode="before")(rfc3339_only)

    @field_validator("start", "end")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.utcoffset() is None:
            raise ValueError("the date-time needs a time zone offset (e.g. Z)")
        return value

    def epoch_range(self, now: datetime) -> tuple[int, int]:
        """(start, end) in epoch seconds (`end` defaults to `now`); 422 naming `start`
        unless start < end."""
        end = self.end or now
        start = self.start or end - DEFAULT_RANGE
        first, stop = int(start.timestamp()), int(end.timestamp())
        if not 0 <= first < stop:
            raise invalid([("#", "query parameter 'start': must be before 'end' (and after 1970)")])
        return first, stop


class SeriesQuery(RangeQuery):
    granularity: Granularity = Field("hour", description="Bucket size of the series")

    def checked_range(self, max_buckets: int, now: datetime) -> tuple[int, int]:
        start, end = self.epoch_range(now)
        if queries.bucket_count(start, end, self.granularity) > max_buckets:
            raise invalid(
                [
                    (
                        "#",
                        f"query parameter 'granularity': a {self.granularity} series of this"
                        f" range has more than {max_buckets} buckets; pick a coarser"
                        " granularity or a shorter range",
                    )
                ]
            )
        return start, end


Name = Annotated[str | None, Field(None, pattern=NAME_PATTERN, max_length=128)]
VersionFilter = Annotated[
    str | None,
    Field(None, pattern=VERSION_PATTERN, max_length=64, description="An API version's name"),
]
SandboxFilter = Annotated[
    bool | None,
    Field(
        None,
        description="true: only requests a version's sandbox answered; false: only live "
        "traffic; unset: both",
    ),
]


class UsageQuery(SeriesQuery):
    route: Name = None
    service: Name = None
    consumer: Name = None
    api: Name = None
    api_version: VersionFilter = None
    sandbox: SandboxFilter = None


class TopEndpointsQuery(RangeQuery):
    service: Name = None
    consumer: Name = None
    limit: int = Field(10, ge=1, le=MAX_TOP)
    sort: Literal[
        "requests", "errors", "error_rate", "rate_limited", "bytes_out", "latency_p95"
    ] = "requests"


class TopConsumersQuery(RangeQuery):
    route: Name = None
    service: Name = None
    limit: int = Field(10, ge=1, le=MAX_TOP)
    sort: Literal[
        "requests", "errors", "error_rate", "rate_limited", "bytes_out", "latency_p95"
    ] = "requests"


class FilteredRangeQuery(RangeQuery):
    route: Name = None
    service: Name = None
    consumer: Name = None
    api: Name = None
    api_version: VersionFilter = None
    sandbox: SandboxFilter = None


class RealtimeQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window: int = Field(60, ge=5, le=300, description="Seconds to look back")
    route: Name = None
    service: Name = None
    consumer: Name = None


class VersionTraffic(BaseModel):
    """One version's traffic over the range, live and sandbox apart."""

    version: str
    status: str | None = Field(
        description="beta, stable, deprecated or retired (null: no longer in the config)"
    )
    sunset_at: datetime | None
    live: TrafficStats = Field(description="Requests answered by the version's own service")
    sandbox: TrafficStats = Field(description="Requests a sandbox (service or mock) answered")
    consumers: int = Field(description="Distinct consumers that called it (either kind)")


class ApiUsageOut(RangeOut):
    api: str
    versions: list[VersionTraffic] = Field(
        description="The API's versions in config order, then versions with traffic that"
        " are no longer configured"
    )


class KeyCallsOut(BaseModel):
    key_id: str | None = Field(description="The API key (credential) id; null: no credential")
    requests: int
    sandbox_requests: int
    last_seen: datetime


class CallerOut(BaseModel):
    consumer: str | None = Field(description="null: anonymous requests")
    requests: int
    sandbox_requests: int = Field(description="Of `requests`, those a sandbox answered")
    last_seen: datetime = Field(description="The caller's last request of the version")
    keys: list[KeyCallsOut]


class VersionCallersOut(BaseModel):
    api: str
    version: str
    status: str | None = Field(description="null: the version is no longer in the config")
    sunset_at: datetime | None
    successor: str | None
    start: datetime = Field(description="Start of the window (a UTC midnight)")
    end: datetime = Field(description="End of the window, exclusive (the next UTC midnight)")
    requests: int
    callers: list[CallerOut] = Field(description="Most recent caller first")


class ApiUsageQuery(RangeQuery):
    pass


class CallersQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    days: int = Field(
        30, ge=1, le=3650, description="The window: this many UTC days, today included"
    )
    sandbox: SandboxFilter = None
    limit: int = Field(100, ge=1, le=1000, description="Most callers listed")


# ---------------------------------------------------------------------------- helpers


def _at(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _at_ms(epoch_ms: int) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC)


def _caller(caller: api_callers.Caller) -> dict[str, Any]:
    keys = sorted(caller.keys.values(), key=lambda k: (-k.last_seen_ms, k.credential_id))
    return {
        "consumer": caller.consumer or None,
        "requests": caller.requests,
        "sandbox_requests": caller.sandbox_requests,
        "last_seen": _at_ms(caller.last_seen_ms),
        "keys": [
            {
                "key_id": k.credential_id or None,
                "requests": k.requests,
                "sandbox_requests": k.sandbox_requests,
                "last_seen": _at_ms(k.last_seen_ms),
            }
            for k in keys
        ],
    }


def _series(series: queries.Series) -> dict[str, Any]:
    return {
        "start": _at(series.start),
        "end": _at(series.end),
        "complete_until": _at(series.complete_until),
        "granularity": series.granularity,
        "totals": queries.stats(series.totals),
        "series": [{"bucket_start": _at(b), **queries.stats(c)} for b, c in series.buckets],
    }


def _range(start: int, end: int, cover: queries.Coverage) -> dict[str, Any]:
    first, stop = queries.minute_range(start, end)
    return {
        "start": _at(first),
        "end": _at(stop),
        "complete_until": _at(min(stop, cover.complete_until)),
    }


def _endpoints(
    groups: list[tuple[tuple[str, str], Counters]], config: GatewayConfig
) -> list[dict[str, Any]]:
    paths = {r.name: list(r.paths) for r in config.routes}
    return [
        {
            "route": route or None,
            "service": service or None,
            "paths": paths.get(route, []),
            **queries.stats(counters),
        }
        for (route, service), counters in groups
    ]


class AnalyticsService:
    """Traffic reports over the analytics rollups and the raw request log."""

    def __init__(
        self, engine: AsyncEngine, editor: ConfigEditor, secret: ServerSecret, settings: Settings
    ) -> None:
        self._engine = engine
        self._editor = editor
        self._secret = secret
        self._settings = settings

    async def _config(self) -> GatewayConfig:
        return (await self._editor.state()).config

    async def _scope(
        self,
        op: Operation,
        *,
        route: str | None = None,
        service: str | None = None,
        consumer: str | None = None,
        api: str | None = None,
        api_version: str | None = None,
        sandbox: bool | None = None,
    ) -> Scope:
        """The caller's filters, confined to their organization's routes and consumers."""
        org = op.scope
        filters = Scope(route, service, consumer, api=api, api_version=api_version, sandbox=sandbox)
        if not org.limited:
            return filters
        config = await self._config()
        return dataclasses.replace(
            filters,
            visible_routes=frozenset(
                r.name for r in config.routes if r.organization == org.organization
            ),
            visible_consumers=frozenset(
                c.username for c in config.consumers if c.organization == org.organization
            ),
        )

    async def _filtered(self, op: Operation, query: UsageQuery | FilteredRangeQuery) -> Scope:
        return await self._scope(
            op,
            route=query.route,
            service=query.service,
            consumer=query.consumer,
            api=query.api,
            api_version=query.api_version,
            sandbox=query.sandbox,
        )

    async def usage(self, op: Operation, query: UsageQuery) -> dict[str, Any]:
        """Traffic over a range, per minute, hour or day."""
        start, end = query.checked_range(MAX_SERIES_BUCKETS, op.now())
        scope = await self._filtered(op, query)
        return _series(await queries.usage(self._engine, start, end, query.granularity, scope))

    async def export(self, op: Operation, query: UsageQuery) -> AsyncIterator[dict[str, Any]]:
        """The records of an export (checked before the first one is asked for)."""
        start, end = query.checked_range(MAX_EXPORT_BUCKETS, op.now())
        scope = await self._filtered(op, query)
        engine = self._engine
        granularity = query.granularity

        async def records() -> AsyncIterator[dict[str, Any]]:
            async for key, counters in queries.export_rows(engine, start, end, granularity, scope):
                yield {
                    "bucket_start": _at(key.bucket_start).isoformat().replace("+00:00", "Z"),
                    "granularity": granularity,
                    "route": key.route or None,
                    "service": key.service or None,
                    "consumer": key.consumer or None,
                    "status_class": f"{key.status_class}xx",
                    "api": key.api or None,
                    "api_version": key.api_version or None,
                    "sandbox": key.sandbox,
                    **queries.stats(counters),
                }

        return records()

    async def top_endpoints(self, op: Operation, query: TopEndpointsQuery) -> dict[str, Any]:
        start, end = query.epoch_range(op.now())
        scope = await self._scope(op, service=query.service, consumer=query.consumer)
        groups, cover = await queries.totals_by(
            self._engine, start, end, scope, lambda k: (k.route, k.service)
        )
        ranked = queries.top(groups, query.sort, query.limit)
        return {
            **_range(start, end, cover),
            "items": _endpoints(ranked, await self._config()),
        }

    async def totals_per(
        self, op: Operation, query: RangeQuery, by: Literal["route", "service", "consumer"]
    ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """The range answered and the traffic totals over it of every route, service or
        consumer with traffic (the caller's organization's only), in one read: what a
        face showing each entity's usage batches its lookups into."""
        start, end = query.epoch_range(op.now())
        scope = await self._scope(op)
        groups, cover = await queries.totals_by(
            self._engine, start, end, scope, lambda k: str(getattr(k, by))
        )
        groups.pop("", None)  # traffic that matched no route / had no consumer
        return _range(start, end, cover), {name: queries.stats(c) for name, c in groups.items()}

    @staticmethod
    def no_traffic() -> dict[str, Any]:
        """The totals of an entity without traffic in the range."""
        return queries.stats(Counters())

    async def top_consumers(self, op: Operation, query: TopConsumersQuery) -> dict[str, Any]:
        start, end = query.epoch_range(op.now())
        scope = await self._scope(op, route=query.route, service=query.service)
        groups, cover = await queries.totals_by(
            self._engine, start, end, scope, lambda k: k.consumer
        )
        groups.pop("", None)  # anonymous traffic has no consumer to rank
        ranked = queries.top(groups, query.sort, query.limit)
        return {
            **_range(start, end, cover),
            "items": [{"consumer": name, **queries.stats(c)} for name, c in ranked],
        }

    async def errors(self, op: Operation, query: FilteredRangeQuery) -> dict[str, Any]:
        """Errors by status class (rollups) and, for short ranges, by kind (raw log)."""
        start, end = query.epoch_range(op.now())
        scope = await self._filtered(op, query)
        groups, cover = await queries.totals_by(
            self._engine, start, end, scope, lambda k: k.status_class
        )
        all_traffic = queries.total(groups)
        by_kind = None
        if end - start <= self._settings.analytics_raw_query_max_seconds:
            kinds = await queries.error_kinds(self._engine, start, end, scope)
            by_kind = [
                {"error_kind": k.error_kind, "status": k.status, "requests": k.requests}
                for k in kinds
            ]
        return {
            **_range(start, end, cover),
            "requests": all_traffic.requests,
            "errors": all_traffic.errors,
            "error_rate": queries.stats(all_traffic)["error_rate"],
            "by_status_class": [
                {"status_class": f"{cls}xx", "requests": c.requests, "errors": c.errors}
                for cls, c in sorted(groups.items())
            ],
            "by_kind": by_kind,
        }

    async def latency(self, op: Operation, query: FilteredRangeQuery) -> dict[str, Any]:
        start, end = query.epoch_range(op.now())
        scope = await self._filtered(op, query)
        groups, cover = await queries.totals_by(self._engine, start, end, scope, lambda k: 0)
        merged = queries.total(groups)
        return {
            **_range(start, end, cover),
            **queries.latency_stats(merged.sketch, merged.latency_sum_ms),
            "relative_accuracy": RELATIVE_ACCURACY,
        }

    async def realtime(self, op: Operation, query: RealtimeQuery) -> dict[str, Any]:
        """The last seconds of traffic from the raw request log."""
        scope = await self._scope(
            op, route=query.route, service=query.service, consumer=query.consumer
        )
        now = op.now().timestamp()
        view = await queries.realtime(self._engine, now, query.window, scope)
        p50, p95, p99 = view.sketch.quantiles([0.5, 0.95, 0.99])
        requests = view.requests
        return {
            "start": _at(view.start),
            "end": _at(view.end),
            "window_seconds": query.window,
            "requests": requests,
            "errors": view.errors,
            "rate_limited": view.rate_limited,
            "requests_per_second": round(requests / query.window, 3),
            "error_rate": round(view.errors / requests, 6) if requests else 0.0,
            "latency_p50_ms": None if p50 is None else round(p50, 3),
            "latency_p95_ms": None if p95 is None else round(p95, 3),
            "latency_p99_ms": None if p99 is None else round(p99, 3),
            "latency_sample": view.sampled,
            "series": [
                {"at": _at(s), "requests": n, "errors": e, "rate_limited": r}
                for s, n, e, r in view.seconds
            ],
        }

    async def _api(self, op: Operation, name: str) -> Api:
        """The API called `name`; not found when it does not exist or, for a caller limited
        to an organization, is another organization's."""
        if len(name) > 128 or not re.match(NAME_PATTERN, name):
            raise invalid([("#/api", f"must match {NAME_PATTERN}")])
        api = next((a for a in (await self._config()).apis if a.name == name), None)
        if api is None or (op.scope.limited and api.organization != op.scope.organization):
            raise not_found(f"api {name!r} does not exist", target="api")
        return api

    async def api_usage(self, op: Operation, name: str, query: RangeQuery) -> dict[str, Any]:
        """An API's traffic per version over a range, live and sandbox apart."""
        api = await self._api(op, name)
        start, end = query.epoch_range(op.now())
        groups, cover = await queries.totals_by(
            self._engine,
            start,
            end,
            Scope(api=api.name),
            lambda k: (k.api_version, k.sandbox, k.consumer),
        )
        traffic: dict[str, tuple[Counters, Counters, set[str]]] = {}
        for (version, sandbox, consumer), counters in groups.items():
            live, boxed, consumers = traffic.setdefault(version, (Counters(), Counters(), set()))
            (boxed if sandbox else live).merge(counters)
            if consumer:
                consumers.add(consumer)
        configured = {v.name: v for v in api.versions}
        names = [v.name for v in api.versions] + sorted(set(traffic) - set(configured))
        versions = []
        for version in names:
            live, boxed, consumers = traffic.get(version) or (Counters(), Counters(), set())
            spec = configured.get(version)
            versions.append(
                {
                    "version": version,
                    "status": spec.status.value if spec is not None else None,
                    "sunset_at": spec.sunset_at if spec is not None else None,
                    "live": queries.stats(live),
                    "sandbox": queries.stats(boxed),
                    "consumers": len(consumers),
                }
            )
        return {**_range(start, end, cover), "api": api.name, "versions": versions}

    async def version_callers(
        self, op: Operation, name: str, version: str, query: CallersQuery
    ) -> dict[str, Any]:
        """Who still calls a version: consumers and their API keys, requests and last seen
        over the last `days` UTC days (from `api_callers`)."""
        api = await self._api(op, name)
        if len(version) > 64 or not re.match(VERSION_PATTERN, version):
            raise invalid([("#/version", f"must match {VERSION_PATTERN}")])
        spec = api.version(version)
        start, end = api_callers.day_window(op.now().timestamp(), query.days)
        callers = await api_callers.version_callers(
            self._engine, api.name, version, start, end, sandbox=query.sandbox
        )
        return {
            "api": api.name,
            "version": version,
            "status": spec.status.value if spec is not None else None,
            "sunset_at": spec.sunset_at if spec is not None else None,
            "successor": spec.successor if spec is not None else None,
            "start": _at(start),
            "end": _at(end),
            "requests": sum(c.requests for c in callers),
            "callers": [_caller(c) for c in callers[: query.limit]],
        }

    async def consumer_report(
        self, op: Operation, consumer: str, query: SeriesQuery
    ) -> dict[str, Any]:
        """One consumer's report; not found for a consumer outside a limited caller's
        organization."""
        if len(consumer) > 128 or not re.match(NAME_PATTERN, consumer):
            raise invalid([("#/consumer", f"must match {NAME_PATTERN}")])
        scope = await self._scope(op, consumer=consumer)
        if scope.visible_consumers is not None and consumer not in scope.visible_consumers:
            raise not_found(f"consumer {consumer!r} does not exist", target="consumer")
        if scope.visible_consumers is not None:
            # The consumer is theirs: all of its traffic, whichever route it took.
            scope = Scope(consumer=consumer)
        return await self._report(consumer, query, scope, op.now())

    async def own_usage(self, consumer: str, query: SeriesQuery, now: datetime) -> dict[str, Any]:
        """The report of `consumer` (from `key_consumer`) on its own traffic."""
        return await self._report(consumer, query, Scope(consumer=consumer), now)

    async def key_consumer(self, presented: str, now: datetime) -> str | None:
        """The username of the consumer whose working API key `presented` is; None when
        the key is unknown, not active, expired, rotated out, or its consumer is gone or
        suspended."""
        if not presented or len(presented) > MAX_CREDENTIAL_LENGTH:
            return None
        record = await KeyRepository(self._engine, self._secret).find_by_hash(
            self._secret.hash_credential(presented)
        )
        if record is None or record.status is not KeyStatus.active:
            return None
        at = now.timestamp()
        if record.expires_at is not None and at >= record.expires_at:
            return None
        if record.grace_until is not None and at >= record.grace_until:
            return None
        config = await self._config()
        consumer = next((c for c in config.consumers if c.username == record.consumer), None)
        if consumer is None or consumer.status is not ConsumerStatus.active:
            return None
        return consumer.username

    async def _report(
        self, consumer: str, query: SeriesQuery, scope: Scope, now: datetime
    ) -> dict[str, Any]:
        start, end = query.checked_range(MAX_SERIES_BUCKETS, now)
        series = await queries.usage(self._engine, start, end, query.granularity, scope)
        groups, _ = await queries.totals_by(
            self._engine, series.start, series.end, scope, lambda k: (k.route, k.service)
        )
        ranked = queries.top(groups, "requests", MAX_TOP)
        return {
            "consumer": consumer,
            **_series(series),
            "by_route": _endpoints(ranked, await self._config()),
        }
