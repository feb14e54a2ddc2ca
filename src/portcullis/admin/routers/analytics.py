"""Traffic analytics: usage series, top endpoints and consumers, errors, latency,
realtime, per-consumer reports and exports — and consumers' own usage.

Everything but the realtime view and the error-kind breakdown reads the rollups
(see `analytics.queries`): ranges are widened to whole minutes (series: to whole
buckets of their granularity), days are UTC, and the minutes of the last few
seconds are not rolled up yet (`complete_until` says up to when data is in).
Latency percentiles come from merged sketches, within 1 % of the exact value.

Admins limited to an organization see the traffic of their organization's routes
and consumers only.

`GET /consumer/v1/usage` is for consumers, not admins: it is authenticated with
the consumer's own API key (`Authorization: Bearer <key>`) and reports only the
usage of the consumer that key belongs to. Revoked, suspended, expired and
rotated-out keys, and keys of suspended or deleted consumers, get 401.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, field_validator

from portcullis.admin.dependencies import require
from portcullis.admin.export import ExportFormat, streamed_export
from portcullis.admin.operations import admin_state
from portcullis.admin.problems import (
    NOT_FOUND,
    UNAUTHORIZED,
    ApiProblem,
    problem_responses,
    validation_problem,
)
from portcullis.admin.scoping import scope_of
from portcullis.analytics import queries
from portcullis.analytics.queries import Scope
from portcullis.analytics.rollups import Counters
from portcullis.analytics.sketch import RELATIVE_ACCURACY
from portcullis.identity.credential_cache import MAX_CREDENTIAL_LENGTH
from portcullis.identity.key_records import KeyStatus
from portcullis.identity.key_repository import KeyRepository
from portcullis.model.config import ConsumerStatus, GatewayConfig
from portcullis.services.rbac import Caller, Permission

router = APIRouter(prefix="/analytics", tags=["Analytics"])
consumer_router = APIRouter(prefix="/consumer/v1", tags=["Consumer self-service"])

Granularity = Literal["minute", "hour", "day"]
DEFAULT_RANGE = timedelta(hours=24)
# Most buckets one series may have (a day of minutes, five years of days).
MAX_SERIES_BUCKETS = 2000
# Most buckets one export may span (a month of minutes).
MAX_EXPORT_BUCKETS = 50_000
MAX_TOP = 100
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._~-]{0,127}$"
EXPORT_COLUMNS = (
    "bucket_start",
    "granularity",
    "route",
    "service",
    "consumer",
    "status_class",
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
_READ_ERRORS = problem_responses(401, 403, 422, 429)


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


def _rfc3339(value: Any) -> Any:
    # pydantic would read a bare number as a Unix time; the API documents RFC 3339.
    if (
        isinstance(value, str | int | float)
        and not isinstance(value, bool)
        and not _DATE_TIME.match(str(value))
    ):
        raise ValueError("expected an RFC 3339 date-time, e.g. 2026-01-31T12:00:00Z")
    return value


class RangeQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: datetime | None = Field(
        None, description="Start (RFC 3339 with offset); default: `end` minus 24 hours"
    )
    end: datetime | None = Field(
        None, description="End, exclusive (RFC 3339 with offset); default: now"
    )

    _check_times = field_validator("start", "end", mode="before")(_rfc3339)

    @field_validator("start", "end")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.utcoffset() is None:
            raise ValueError("the date-time needs a time zone offset (e.g. Z)")
        return value

    def epoch_range(self) -> tuple[int, int]:
        """(start, end) in epoch seconds; 422 naming `start` unless start < end."""
        end = self.end or datetime.now(UTC)
        start = self.start or end - DEFAULT_RANGE
        first, stop = int(start.timestamp()), int(end.timestamp())
        if not 0 <= first < stop:
            raise validation_problem(
                [("#", "query parameter 'start': must be before 'end' (and after 1970)")]
            )
        return first, stop


class SeriesQuery(RangeQuery):
    granularity: Granularity = Field("hour", description="Bucket size of the series")

    def checked_range(self, max_buckets: int) -> tuple[int, int]:
        start, end = self.epoch_range()
        if queries.bucket_count(start, end, self.granularity) > max_buckets:
            raise validation_problem(
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


Name = Annotated[str | None, Field(None, pattern=_NAME, max_length=128)]


class UsageQuery(SeriesQuery):
    route: Name = None
    service: Name = None
    consumer: Name = None


class ExportQuery(UsageQuery):
    format: ExportFormat = Field("csv", description="Output format")


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


class RealtimeQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window: int = Field(60, ge=5, le=300, description="Seconds to look back")
    route: Name = None
    service: Name = None
    consumer: Name = None


# ---------------------------------------------------------------------------- helpers


def _at(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


async def _config(request: Request) -> GatewayConfig:
    return (await admin_state(request).editor.state()).config


async def _scope(
    request: Request,
    caller: Caller,
    *,
    route: str | None = None,
    service: str | None = None,
    consumer: str | None = None,
) -> Scope:
    """The caller's filters, confined to their organization's routes and consumers."""
    org = await scope_of(request, caller)
    if not org.limited:
        return Scope(route, service, consumer)
    config = await _config(request)
    return Scope(
        route,
        service,
        consumer,
        visible_routes=frozenset(
            r.name for r in config.routes if r.organization == org.organization
        ),
        visible_consumers=frozenset(
            c.username for c in config.consumers if c.organization == org.organization
        ),
    )


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


async def _consumer_report(
    request: Request, consumer: str, query: SeriesQuery, scope: Scope
) -> dict[str, Any]:
    start, end = query.checked_range(MAX_SERIES_BUCKETS)
    engine = admin_state(request).engine
    series = await queries.usage(engine, start, end, query.granularity, scope)
    groups, _ = await queries.totals_by(
        engine, series.start, series.end, scope, lambda k: (k.route, k.service)
    )
    ranked = queries.top(groups, "requests", MAX_TOP)
    return {
        "consumer": consumer,
        **_series(series),
        "by_route": _endpoints(ranked, await _config(request)),
    }


# ---------------------------------------------------------------------------- admin endpoints


@router.get(
    "/usage",
    summary="Traffic over a time range, per minute, hour or day",
    response_model=UsageOut,
    responses=_READ_ERRORS,
    operation_id="get_analytics_usage",
)
async def get_usage(
    request: Request,
    query: Annotated[UsageQuery, Query()],
    caller: Caller = Depends(require(Permission.ANALYTICS_READ)),
) -> dict[str, Any]:
    start, end = query.checked_range(MAX_SERIES_BUCKETS)
    scope = await _scope(
        request, caller, route=query.route, service=query.service, consumer=query.consumer
    )
    return _series(
        await queries.usage(admin_state(request).engine, start, end, query.granularity, scope)
    )


@router.get(
    "/usage/export",
    summary="Export traffic per bucket, route, service, consumer and status class"
    " (streamed CSV or JSON lines)",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "One record per bucket and (route, service, consumer, status class)"
            " with traffic, in time order",
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/jsonl": {"schema": {"type": "string"}},
            },
        },
        **_READ_ERRORS,
    },
    operation_id="export_analytics_usage",
)
async def export_usage(
    request: Request,
    query: Annotated[ExportQuery, Query()],
    caller: Caller = Depends(require(Permission.ANALYTICS_READ)),
) -> Response:
    start, end = query.checked_range(MAX_EXPORT_BUCKETS)
    scope = await _scope(
        request, caller, route=query.route, service=query.service, consumer=query.consumer
    )
    engine = admin_state(request).engine
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
                **queries.stats(counters),
            }

    return streamed_export(records(), format=query.format, columns=EXPORT_COLUMNS, filename="usage")


@router.get(
    "/top/endpoints",
    summary="The routes with the most traffic (or errors, latency…) over a range",
    response_model=TopEndpointsOut,
    responses=_READ_ERRORS,
    operation_id="get_analytics_top_endpoints",
)
async def top_endpoints(
    request: Request,
    query: Annotated[TopEndpointsQuery, Query()],
    caller: Caller = Depends(require(Permission.ANALYTICS_READ)),
) -> dict[str, Any]:
    start, end = query.epoch_range()
    scope = await _scope(request, caller, service=query.service, consumer=query.consumer)
    groups, cover = await queries.totals_by(
        admin_state(request).engine, start, end, scope, lambda k: (k.route, k.service)
    )
    ranked = queries.top(groups, query.sort, query.limit)
    return {
        **_range(start, end, cover),
        "items": _endpoints(ranked, await _config(request)),
    }


@router.get(
    "/top/consumers",
    summary="The consumers with the most traffic (or errors, latency…) over a range",
    response_model=TopConsumersOut,
    responses=_READ_ERRORS,
    operation_id="get_analytics_top_consumers",
)
async def top_consumers(
    request: Request,
    query: Annotated[TopConsumersQuery, Query()],
    caller: Caller = Depends(require(Permission.ANALYTICS_READ)),
) -> dict[str, Any]:
    start, end = query.epoch_range()
    scope = await _scope(request, caller, route=query.route, service=query.service)
    groups, cover = await queries.totals_by(
        admin_state(request).engine, start, end, scope, lambda k: k.consumer
    )
    groups.pop("", None)  # anonymous traffic has no consumer to rank
    ranked = queries.top(groups, query.sort, query.limit)
    return {
        **_range(start, end, cover),
        "items": [{"consumer": name, **queries.stats(c)} for name, c in ranked],
    }


@router.get(
    "/errors",
    summary="Errors over a range by status class and by error kind",
    response_model=ErrorsOut,
    responses=_READ_ERRORS,
    operation_id="get_analytics_errors",
)
async def error_breakdown(
    request: Request,
    query: Annotated[FilteredRangeQuery, Query()],
    caller: Caller = Depends(require(Permission.ANALYTICS_READ)),
) -> dict[str, Any]:
    start, end = query.epoch_range()
    scope = await _scope(
        request, caller, route=query.route, service=query.service, consumer=query.consumer
    )
    state = admin_state(request)
    groups, cover = await queries.totals_by(
        state.engine, start, end, scope, lambda k: k.status_class
    )
    all_traffic = queries.total(groups)
    by_kind = None
    if end - start <= state.settings.analytics_raw_query_max_seconds:
        kinds = await queries.error_kinds(state.engine, start, end, scope)
        by_kind = [
            {"error_kind": k.error_kind, "status": k.status, "requests": k.requests} for k in kinds
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


@router.get(
    "/latency",
    summary="Latency percentiles over a range (merged sketches, within 1 %)",
    response_model=LatencyOut,
    responses=_READ_ERRORS,
    operation_id="get_analytics_latency",
)
async def latency(
    request: Request,
    query: Annotated[FilteredRangeQuery, Query()],
    caller: Caller = Depends(require(Permission.ANALYTICS_READ)),
) -> dict[str, Any]:
    start, end = query.epoch_range()
    scope = await _scope(
        request, caller, route=query.route, service=query.service, consumer=query.consumer
    )
    groups, cover = await queries.totals_by(
        admin_state(request).engine, start, end, scope, lambda k: 0
    )
    merged = queries.total(groups)
    return {
        **_range(start, end, cover),
        **queries.latency_stats(merged.sketch, merged.latency_sum_ms),
        "relative_accuracy": RELATIVE_ACCURACY,
    }


@router.get(
    "/realtime",
    summary="The last seconds of traffic from the raw request log: req/s, errors, p95",
    response_model=RealtimeOut,
    responses=_READ_ERRORS,
    operation_id="get_analytics_realtime",
)
async def realtime(
    request: Request,
    query: Annotated[RealtimeQuery, Query()],
    caller: Caller = Depends(require(Permission.ANALYTICS_READ)),
) -> dict[str, Any]:
    scope = await _scope(
        request, caller, route=query.route, service=query.service, consumer=query.consumer
    )
    view = await queries.realtime(admin_state(request).engine, time.time(), query.window, scope)
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


@router.get(
    "/consumers/{consumer}/usage",
    summary="One consumer's usage report: totals, a series and its routes",
    response_model=ConsumerUsageOut,
    responses=problem_responses(401, 403, 404, 422, 429),
    operation_id="get_analytics_consumer_report",
)
async def consumer_usage(
    request: Request,
    consumer: Annotated[str, Path(pattern=_NAME, max_length=128)],
    query: Annotated[SeriesQuery, Query()],
    caller: Caller = Depends(require(Permission.ANALYTICS_READ)),
) -> dict[str, Any]:
    scope = await _scope(request, caller, consumer=consumer)
    if scope.visible_consumers is not None and consumer not in scope.visible_consumers:
        raise ApiProblem(NOT_FOUND, f"consumer {consumer!r} does not exist")
    if scope.visible_consumers is not None:
        # The consumer is theirs: all of its traffic, whichever route it took.
        scope = Scope(consumer=consumer)
    return await _consumer_report(request, consumer, query, scope)


# ---------------------------------------------------------------------------- consumers


api_key_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="consumerApiKey",
    description="The consumer's own API key, as sent to the gateway",
)
_CHALLENGE = 'Bearer realm="portcullis-consumer"'


async def key_consumer(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(api_key_bearer),
) -> str:
    """The username of the consumer whose working API key is presented; 401 otherwise."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ApiProblem(
            UNAUTHORIZED,
            "send 'Authorization: Bearer <your API key>'",
            headers={"www-authenticate": _CHALLENGE},
        )
    presented = credentials.credentials
    invalid = ApiProblem(
        UNAUTHORIZED,
        "the API key is not valid, or no longer works",
        headers={"www-authenticate": _CHALLENGE + ', error="invalid_token"'},
    )
    if not presented or len(presented) > MAX_CREDENTIAL_LENGTH:
        raise invalid
    state = admin_state(request)
    record = await KeyRepository(state.engine, state.secret).find_by_hash(
        state.secret.hash_credential(presented)
    )
    if record is None or record.status is not KeyStatus.active:
        raise invalid
    now = time.time()
    if record.expires_at is not None and now >= record.expires_at:
        raise invalid
    if record.grace_until is not None and now >= record.grace_until:
        raise invalid
    config = await _config(request)
    consumer = next((c for c in config.consumers if c.username == record.consumer), None)
    if consumer is None or consumer.status is not ConsumerStatus.active:
        raise invalid
    return consumer.username


@consumer_router.get(
    "/usage",
    summary="Your own usage (authenticated with your API key)",
    description="Totals, a series and your routes for the consumer that owns the API key."
    " Revoked, suspended, expired or rotated-out keys get 401.",
    response_model=ConsumerUsageOut,
    responses={
        200: {"headers": {"Cache-Control": {"schema": {"type": "string"}}}},
        **problem_responses(401, 422, 429),
    },
    operation_id="get_own_usage_report",
)
async def own_usage(
    request: Request,
    response: Response,
    query: Annotated[SeriesQuery, Query()],
    consumer: str = Depends(key_consumer),
) -> dict[str, Any]:
    response.headers["Cache-Control"] = "private, no-store"
    return await _consumer_report(request, consumer, query, Scope(consumer=consumer))
