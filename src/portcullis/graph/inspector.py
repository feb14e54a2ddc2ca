"""The request inspector in the graph: a route's captures, their exchanges, starting and
stopping a capture - on the services REST's `/admin/v1/routes/{route}/captures` and
`/admin/v1/inspector` routers call (services/inspector.py)."""

from __future__ import annotations

from typing import Any

from strawberry.types import Info

from portcullis.graph.context import context_of
from portcullis.graph.models import output_type
from portcullis.graph.problems import result_union
from portcullis.graph.support import Area, as_data, mutation, query, returning, validated
from portcullis.services.errors import NOT_FOUND, ServiceError
from portcullis.services.inspector import (
    CaptureIn,
    CaptureOut,
    ExchangeOut,
    ExchangeSummary,
    InspectorService,
)
from portcullis.services.rbac import Permission

Capture = output_type(CaptureOut, "Capture")
CapturedExchangeSummary = output_type(ExchangeSummary, "CapturedExchangeSummary")
CapturedExchange = output_type(ExchangeOut, "CapturedExchange")
CaptureResult = result_union("CaptureResult", Capture)


def _service(info: Info[Any, Any]) -> InspectorService:
    ctx = context_of(info)
    return InspectorService(ctx.state.engine, ctx.editor)


async def captures(info: Info[Any, Any], route: str) -> list[Capture]:  # type: ignore[valid-type]
    op = await context_of(info).operation(Permission.ANALYTICS_READ)
    return [c.model_dump() for c in await _service(info).list(op, route)]


async def capture(info: Info[Any, Any], route: str, id: str) -> Capture | None:  # type: ignore[valid-type]
    op = await context_of(info).operation(Permission.ANALYTICS_READ)
    try:
        return (await _service(info).get(op, route, id)).model_dump()
    except ServiceError as exc:
        if exc.kind is NOT_FOUND:
            return None
        raise


async def captured_exchanges(
    info: Info[Any, Any], route: str, capture_id: str, after: int | None = None, limit: int = 50
) -> list[CapturedExchangeSummary]:  # type: ignore[valid-type]
    op = await context_of(info).operation(Permission.ANALYTICS_READ)
    page = await _service(info).exchanges(op, route, capture_id, after=after, limit=limit)
    return [e.model_dump() for e in page.items]


async def captured_exchange(info: Info[Any, Any], id: int) -> CapturedExchange | None:  # type: ignore[valid-type]
    op = await context_of(info).operation(Permission.ANALYTICS_READ)
    try:
        return (await _service(info).exchange(op, id)).model_dump()
    except ServiceError as exc:
        if exc.kind is NOT_FOUND:
            return None
        raise


@returning(CaptureResult)
async def start_capture(
    info: Info[Any, Any],
    route: str,
    duration_seconds: int | None = None,
    sample_rate: float | None = None,
    max_count: int | None = None,
) -> Any:
    async def run() -> Any:
        op = await context_of(info).operation(Permission.CONFIG_WRITE)
        spec = validated(
            CaptureIn,
            None,
            duration_seconds=duration_seconds,
            sample_rate=sample_rate,
            max_count=max_count,
        )
        return Capture(**(await _service(info).start(op, route, spec)).model_dump())

    return await as_data(run)


@returning(CaptureResult)
async def stop_capture(info: Info[Any, Any], route: str, id: str) -> Any:
    async def run() -> Any:
        op = await context_of(info).operation(Permission.CONFIG_WRITE)
        return Capture(**(await _service(info).stop(op, route, id)).model_dump())

    return await as_data(run)


def build() -> Area:
    return Area(
        queries={
            "captures": query(captures, "A route's request-inspector captures, newest first"),
            "capture": query(capture, "One capture; null when unknown or not visible"),
            "capturedExchanges": query(
                captured_exchanges,
                "What a capture recorded (newest first; with `after`, newer ones, oldest first)",
            ),
            "capturedExchange": query(
                captured_exchange,
                "One captured exchange (credentials redacted, first 1 KiB of bodies)",
            ),
        },
        mutations={
            "startCapture": mutation(
                start_capture, "Start a capture of a route's traffic (time-boxed, sampled)"
            ),
            "stopCapture": mutation(stop_capture, "Stop a capture now"),
        },
    )
