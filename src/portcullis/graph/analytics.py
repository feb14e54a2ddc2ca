"""Traffic analytics in the graph, on `services.analytics.AnalyticsService` as REST's
`/admin/v1/analytics/*`: usage series, top endpoints and consumers, errors, latency
percentiles, realtime and a consumer's report — and, on the entities they describe,
`usage(range: LAST_HOUR) { requests p95 }` on routes, services and consumers.

An entity's usage is read once per request for every entity of its kind (one
grouped read of the rollups, shared through the request's loaders), so a page of a
thousand routes with their usage costs one analytics read, not a thousand.

REST's streamed usage export (CSV / JSON lines) is a deliberate exception: a GraphQL
response is one bounded JSON document; `analyticsUsage` answers the same series.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Literal

import strawberry
from strawberry.types import Info

from portcullis.graph.context import context_of
from portcullis.graph.models import input_type, output_type
from portcullis.graph.support import Area, query, validated
from portcullis.services.analytics import (
    AnalyticsService,
    ApiUsageOut,
    CallersQuery,
    ConsumerUsageOut,
    ErrorsOut,
    FilteredRangeQuery,
    LatencyOut,
    RangeQuery,
    RealtimeOut,
    RealtimeQuery,
    SeriesQuery,
    TopConsumersOut,
    TopConsumersQuery,
    TopEndpointsOut,
    TopEndpointsQuery,
    UsageOut,
    UsageQuery,
    VersionCallersOut,
)
from portcullis.services.rbac import Permission

Usage = output_type(UsageOut, "Usage")
TopEndpoints = output_type(TopEndpointsOut, "TopEndpoints")
TopConsumers = output_type(TopConsumersOut, "TopConsumers")
Errors = output_type(ErrorsOut, "ErrorBreakdown")
Latency = output_type(LatencyOut, "LatencyPercentiles")
Realtime = output_type(RealtimeOut, "Realtime")
ConsumerReport = output_type(ConsumerUsageOut, "ConsumerUsageReport")
UsageQueryInput = input_type(UsageQuery)
TopEndpointsQueryInput = input_type(TopEndpointsQuery)
TopConsumersQueryInput = input_type(TopConsumersQuery)
FilteredRangeQueryInput = input_type(FilteredRangeQuery)
RealtimeQueryInput = input_type(RealtimeQuery)
SeriesQueryInput = input_type(SeriesQuery)
ApiUsage = output_type(ApiUsageOut, "ApiVersionsUsage")
VersionCallers = output_type(VersionCallersOut, "ApiVersionCallers")
RangeQueryInput = input_type(RangeQuery)
CallersQueryInput = input_type(CallersQuery)


@strawberry.enum(description="A range ending now")
class AnalyticsRange(Enum):
    LAST_5_MINUTES = 300
    LAST_15_MINUTES = 900
    LAST_HOUR = 3600
    LAST_6_HOURS = 6 * 3600
    LAST_DAY = 86400
    LAST_WEEK = 7 * 86400


@strawberry.type(description="An entity's traffic over a range (percentiles within 1 %).")
class EntityUsage:
    start: datetime
    end: datetime
    complete_until: datetime
    requests: int
    errors: int
    error_rate: float
    rate_limited: int
    bytes_in: int
    bytes_out: int
    latency_avg_ms: float | None
    p50: float | None = strawberry.field(description="Latency p50 in ms (null: no requests)")
    p95: float | None = strawberry.field(description="Latency p95 in ms (null: no requests)")
    p99: float | None = strawberry.field(description="Latency p99 in ms (null: no requests)")


def analytics_service(info: Info[Any, Any]) -> AnalyticsService:
    ctx = context_of(info)
    state = ctx.state
    return AnalyticsService(state.engine, ctx.editor, state.secret, state.settings)


async def analytics_usage(
    info: Info[Any, Any],
    query: UsageQueryInput | None = None,  # type: ignore[valid-type]
) -> Usage:  # type: ignore[valid-type]
    op = await context_of(info).operation(Permission.ANALYTICS_READ)
    return await analytics_service(info).usage(op, validated(UsageQuery, query))


async def analytics_top_endpoints(
    info: Info[Any, Any],
    query: TopEndpointsQueryInput | None = None,  # type: ignore[valid-type]
) -> TopEndpoints:  # type: ignore[valid-type]
    op = await context_of(info).operation(Permission.ANALYTICS_READ)
    return await analytics_service(info).top_endpoints(op, validated(TopEndpointsQuery, query))


async def analytics_top_consumers(
    info: Info[Any, Any],
    query: TopConsumersQueryInput | None = None,  # type: ignore[valid-type]
) -> TopConsumers:  # type: ignore[valid-type]
    op = await context_of(info).operation(Permission.ANALYTICS_READ)
    return await analytics_service(info).top_consumers(op, validated(TopConsumersQuery, query))


async def analytics_errors(
    info: Info[Any, Any],
    query: FilteredRangeQueryInput | None = None,  # type: ignore[valid-type]
) -> Errors:  # type: ignore[valid-type]
    op = await context_of(info).operation(Permission.ANALYTICS_READ)
    return await analytics_service(info).errors(op, validated(FilteredRangeQuery, query))


async def analytics_latency(
    info: Info[Any, Any],
    query: FilteredRangeQueryInput | None = None,  # type: ignore[valid-type]
) -> Latency:  # type: ignore[valid-type]
    op = await context_of(info).operation(Permission.ANALYTICS_READ)
    return await analytics_service(info).latency(op, validated(FilteredRangeQuery, query))


async def analytics_realtime(
    info: Info[Any, Any],
    query: RealtimeQueryInput | None = None,  # type: ignore[valid-type]
) -> Realtime:  # type: ignore[valid-type]
    op = await context_of(info).operation(Permission.ANALYTICS_READ)
    return await analytics_service(info).realtime(op, validated(RealtimeQuery, query))


async def consumer_usage_report(
    info: Info[Any, Any],
    consumer: str,
    query: SeriesQueryInput | None = None,  # type: ignore[valid-type]
) -> ConsumerReport:  # type: ignore[valid-type]
    op = await context_of(info).operation(Permission.ANALYTICS_READ)
    service = analytics_service(info)
    return await service.consumer_report(op, consumer, validated(SeriesQuery, query))


async def api_versions_usage(
    info: Info[Any, Any],
    api: str,
    query: RangeQueryInput | None = None,  # type: ignore[valid-type]
) -> ApiUsage:  # type: ignore[valid-type]
    op = await context_of(info).operation(Permission.ANALYTICS_READ)
    return await analytics_service(info).api_usage(op, api, validated(RangeQuery, query))


async def api_version_callers(
    info: Info[Any, Any],
    api: str,
    version: str,
    query: CallersQueryInput | None = None,  # type: ignore[valid-type]
) -> VersionCallers:  # type: ignore[valid-type]
    op = await context_of(info).operation(Permission.ANALYTICS_READ)
    service = analytics_service(info)
    return await service.version_callers(op, api, version, validated(CallersQuery, query))


Dimension = Literal["route", "service", "consumer"]


async def _totals(
    info: Info[Any, Any], by: Dimension, seconds: int
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Every `by`'s totals over the last `seconds`, read once per request (shared by
    every entity of the request asking for the same range)."""
    ctx = context_of(info)

    async def read() -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        op = await ctx.operation(Permission.ANALYTICS_READ)
        end = op.now()
        query = RangeQuery(start=end - timedelta(seconds=seconds), end=end)
        return await analytics_service(info).totals_per(op, query, by)

    task: asyncio.Future[Any] = ctx.loader(
        f"analytics.totals:{by}:{seconds}", lambda: asyncio.ensure_future(read())
    )
    return await asyncio.shield(task)


def usage_field(by: Dimension, identity: str) -> tuple[Any, Any]:
    """An entity node's `usage(range:)` field: `(annotation, strawberry field)` for
    `output_type`'s extra fields; `identity` is the member naming the entity."""

    async def usage(
        self: Any, info: Info[Any, Any], range: AnalyticsRange = AnalyticsRange.LAST_HOUR
    ) -> EntityUsage:
        window, per = await _totals(info, by, range.value)
        stats = per.get(str(self[identity])) or AnalyticsService.no_traffic()
        return EntityUsage(
            start=window["start"],
            end=window["end"],
            complete_until=window["complete_until"],
            requests=stats["requests"],
            errors=stats["errors"],
            error_rate=stats["error_rate"],
            rate_limited=stats["rate_limited"],
            bytes_in=stats["bytes_in"],
            bytes_out=stats["bytes_out"],
            latency_avg_ms=stats["latency_avg_ms"],
            p50=stats["latency_p50_ms"],
            p95=stats["latency_p95_ms"],
            p99=stats["latency_p99_ms"],
        )

    usage.__annotations__ = {
        "self": Any,
        "info": Info,
        "range": AnalyticsRange,
        "return": EntityUsage | None,
    }
    return (
        EntityUsage | None,
        strawberry.field(
            resolver=usage,
            description=f"This {by}'s traffic over a range ending now (analytics:read)",
        ),
    )


def build() -> Area:
    field = query
    return Area(
        queries={
            "analyticsUsage": field(
                analytics_usage, "Traffic over a time range, per minute, hour or day"
            ),
            "analyticsTopEndpoints": field(
                analytics_top_endpoints, "The routes with the most traffic (or errors...)"
            ),
            "analyticsTopConsumers": field(
                analytics_top_consumers, "The consumers with the most traffic (or errors...)"
            ),
            "analyticsErrors": field(
                analytics_errors, "Errors over a range by status class and by error kind"
            ),
            "analyticsLatency": field(
                analytics_latency, "Latency percentiles over a range (merged sketches)"
            ),
            "analyticsRealtime": field(
                analytics_realtime, "The last seconds of traffic: req/s, errors, p95"
            ),
            "consumerUsageReport": field(
                consumer_usage_report, "One consumer's usage report: totals, series, routes"
            ),
            "apiVersionsUsage": field(
                api_versions_usage, "An API's traffic per version, live and sandbox apart"
            ),
            "apiVersionCallers": field(
                api_version_callers,
                "Who still calls an API version: consumers and keys, requests, last seen",
            ),
        }
    )
