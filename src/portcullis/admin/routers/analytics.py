"""Traffic analytics: usage series, top endpoints and consumers, errors, latency,
realtime, per-consumer reports and exports — and consumers' own usage. The operations
and what they answer are `services.analytics.AnalyticsService`.

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

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import Field

from portcullis.admin.export import ExportFormat, streamed_export
from portcullis.admin.operations import admin_state, operation
from portcullis.admin.problems import UNAUTHORIZED, ApiProblem, problem_responses
from portcullis.model.apis import VERSION_PATTERN
from portcullis.services.analytics import (
    EXPORT_COLUMNS,
    NAME_PATTERN,
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
from portcullis.services.context import Operation, utc_now
from portcullis.services.rbac import Permission
from portcullis.services.streams.traffic import LiveQuery, LiveTrafficOut, live_view

router = APIRouter(prefix="/analytics", tags=["Analytics"])
consumer_router = APIRouter(prefix="/consumer/v1", tags=["Consumer self-service"])
_READ_ERRORS = problem_responses(401, 403, 422, 429)
read = Depends(operation(Permission.ANALYTICS_READ))


class ExportQuery(UsageQuery):
    format: ExportFormat = Field("csv", description="Output format")


def _service(request: Request) -> AnalyticsService:
    state = admin_state(request)
    return AnalyticsService(state.engine, state.editor, state.secret, state.settings)


# ---------------------------------------------------------------------------- admin endpoints


@router.get(
    "/usage",
    summary="Traffic over a time range, per minute, hour or day",
    response_model=UsageOut,
    responses=_READ_ERRORS,
    operation_id="get_analytics_usage",
)
async def get_usage(
    request: Request, query: Annotated[UsageQuery, Query()], op: Operation = read
) -> dict[str, Any]:
    return await _service(request).usage(op, query)


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
    request: Request, query: Annotated[ExportQuery, Query()], op: Operation = read
) -> Response:
    records = await _service(request).export(op, query)
    return streamed_export(records, format=query.format, columns=EXPORT_COLUMNS, filename="usage")


@router.get(
    "/top/endpoints",
    summary="The routes with the most traffic (or errors, latency…) over a range",
    response_model=TopEndpointsOut,
    responses=_READ_ERRORS,
    operation_id="get_analytics_top_endpoints",
)
async def top_endpoints(
    request: Request, query: Annotated[TopEndpointsQuery, Query()], op: Operation = read
) -> dict[str, Any]:
    return await _service(request).top_endpoints(op, query)


@router.get(
    "/top/consumers",
    summary="The consumers with the most traffic (or errors, latency…) over a range",
    response_model=TopConsumersOut,
    responses=_READ_ERRORS,
    operation_id="get_analytics_top_consumers",
)
async def top_consumers(
    request: Request, query: Annotated[TopConsumersQuery, Query()], op: Operation = read
) -> dict[str, Any]:
    return await _service(request).top_consumers(op, query)


@router.get(
    "/errors",
    summary="Errors over a range by status class and by error kind",
    response_model=ErrorsOut,
    responses=_READ_ERRORS,
    operation_id="get_analytics_errors",
)
async def error_breakdown(
    request: Request, query: Annotated[FilteredRangeQuery, Query()], op: Operation = read
) -> dict[str, Any]:
    return await _service(request).errors(op, query)


@router.get(
    "/latency",
    summary="Latency percentiles over a range (merged sketches, within 1 %)",
    response_model=LatencyOut,
    responses=_READ_ERRORS,
    operation_id="get_analytics_latency",
)
async def latency(
    request: Request, query: Annotated[FilteredRangeQuery, Query()], op: Operation = read
) -> dict[str, Any]:
    return await _service(request).latency(op, query)


@router.get(
    "/realtime",
    summary="The last seconds of traffic from the raw request log: req/s, errors, p95",
    response_model=RealtimeOut,
    responses=_READ_ERRORS,
    operation_id="get_analytics_realtime",
)
async def realtime(
    request: Request, query: Annotated[RealtimeQuery, Query()], op: Operation = read
) -> dict[str, Any]:
    return await _service(request).realtime(op, query)


@router.get(
    "/live",
    summary="Live traffic: the last seconds merged from every data-plane worker, one frame"
    " per second (requests, 4xx, 5xx, p95 in total, per route and per consumer)",
    response_model=LiveTrafficOut,
    responses=_READ_ERRORS,
    operation_id="get_analytics_live",
)
async def live(
    request: Request, query: Annotated[LiveQuery, Query()], op: Operation = read
) -> dict[str, Any]:
    return live_view(admin_state(request).live_traffic, op.scope, query.seconds)


@router.get(
    "/consumers/{consumer}/usage",
    summary="One consumer's usage report: totals, a series and its routes",
    response_model=ConsumerUsageOut,
    responses=problem_responses(401, 403, 404, 422, 429),
    operation_id="get_analytics_consumer_report",
)
async def consumer_usage(
    request: Request,
    consumer: Annotated[str, Path(pattern=NAME_PATTERN, max_length=128)],
    query: Annotated[SeriesQuery, Query()],
    op: Operation = read,
) -> dict[str, Any]:
    return await _service(request).consumer_report(op, consumer, query)


@router.get(
    "/apis/{api}/versions",
    summary="An API's traffic per version over a range, live and sandbox apart",
    response_model=ApiUsageOut,
    responses=problem_responses(401, 403, 404, 422, 429),
    operation_id="get_analytics_api_versions",
)
async def api_versions_usage(
    request: Request,
    api: Annotated[str, Path(pattern=NAME_PATTERN, max_length=128)],
    query: Annotated[RangeQuery, Query()],
    op: Operation = read,
) -> dict[str, Any]:
    return await _service(request).api_usage(op, api, query)


@router.get(
    "/apis/{api}/versions/{version}/callers",
    summary="Who still calls an API version: consumers and API keys, requests, last seen",
    description="Over the last `days` UTC days (today included), from the rolled-up request"
    " log: the requests of the last few seconds are not counted yet.",
    response_model=VersionCallersOut,
    responses=problem_responses(401, 403, 404, 422, 429),
    operation_id="get_analytics_version_callers",
)
async def version_callers(
    request: Request,
    api: Annotated[str, Path(pattern=NAME_PATTERN, max_length=128)],
    version: Annotated[str, Path(pattern=VERSION_PATTERN, max_length=64)],
    query: Annotated[CallersQuery, Query()],
    op: Operation = read,
) -> dict[str, Any]:
    return await _service(request).version_callers(op, api, version, query)


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
    consumer = await _service(request).key_consumer(credentials.credentials, utc_now())
    if consumer is None:
        raise ApiProblem(
            UNAUTHORIZED,
            "the API key is not valid, or no longer works",
            headers={"www-authenticate": _CHALLENGE + ', error="invalid_token"'},
        )
    return consumer


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
    return await _service(request).own_usage(consumer, query, utc_now())
