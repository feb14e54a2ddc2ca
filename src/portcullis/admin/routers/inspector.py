"""The request inspector: captures on a route and the exchanges they recorded.

`POST /admin/v1/routes/{route}/captures` starts a time-boxed, sampled capture;
`GET` lists a route's captures; `POST .../{capture_id}/stop` ends one;
`GET .../{capture_id}/exchanges` lists what it recorded (newest first, or with
`after` the newer ones, oldest first, to follow it live) and
`GET /admin/v1/inspector/exchanges/{id}` shows one in full. Starting and stopping
need `config:write`; reading needs `analytics:read`. The rules are
`services.inspector`'s.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from fastapi.responses import JSONResponse

from portcullis.admin.operations import admin_state, operation
from portcullis.admin.problems import problem_responses
from portcullis.services.context import Operation
from portcullis.services.inspector import (
    PAGE_LIMIT,
    CaptureIn,
    CaptureOut,
    ExchangeOut,
    ExchangePage,
    InspectorService,
)
from portcullis.services.rbac import Permission

router = APIRouter(tags=["Request inspector"])
_ROUTE = Path(min_length=1, max_length=128, description="A route name")
_CAPTURE = Path(min_length=1, max_length=40, description="A capture id")


def _service(request: Request) -> InspectorService:
    state = admin_state(request)
    return InspectorService(state.engine, state.editor)


@router.post(
    "/routes/{route}/captures",
    summary="Start a capture of the route's traffic (time-boxed, sampled, redacted)",
    status_code=201,
    response_model=CaptureOut,
    responses=problem_responses(400, 401, 403, 404, 409, 415, 422, 429),
    operation_id="start_capture",
)
async def start_capture(
    request: Request,
    route: Annotated[str, _ROUTE],
    body: Annotated[
        CaptureIn,
        Body(
            openapi_examples={
                "five-minutes": {
                    "summary": "Every request for 5 minutes, at most 50",
                    "value": {"duration_seconds": 300, "sample_rate": 1.0, "max_count": 50},
                }
            }
        ),
    ],
    op: Operation = Depends(operation(Permission.CONFIG_WRITE)),
) -> JSONResponse:
    out = await _service(request).start(op, route, body)
    return JSONResponse(out.model_dump(mode="json"), status_code=201)


@router.get(
    "/routes/{route}/captures",
    summary="The route's captures, newest first",
    response_model=list[CaptureOut],
    responses=problem_responses(401, 403, 404, 422, 429),
    operation_id="list_captures",
)
async def list_captures(
    request: Request,
    route: Annotated[str, _ROUTE],
    op: Operation = Depends(operation(Permission.ANALYTICS_READ)),
) -> list[CaptureOut]:
    return await _service(request).list(op, route)


@router.get(
    "/routes/{route}/captures/{capture_id}",
    summary="One capture",
    response_model=CaptureOut,
    responses=problem_responses(401, 403, 404, 422, 429),
    operation_id="get_capture",
)
async def get_capture(
    request: Request,
    route: Annotated[str, _ROUTE],
    capture_id: Annotated[str, _CAPTURE],
    op: Operation = Depends(operation(Permission.ANALYTICS_READ)),
) -> CaptureOut:
    return await _service(request).get(op, route, capture_id)


@router.post(
    "/routes/{route}/captures/{capture_id}/stop",
    summary="Stop a capture now",
    response_model=CaptureOut,
    responses=problem_responses(401, 403, 404, 422, 429),
    operation_id="stop_capture",
)
async def stop_capture(
    request: Request,
    route: Annotated[str, _ROUTE],
    capture_id: Annotated[str, _CAPTURE],
    op: Operation = Depends(operation(Permission.CONFIG_WRITE)),
) -> CaptureOut:
    return await _service(request).stop(op, route, capture_id)


@router.get(
    "/routes/{route}/captures/{capture_id}/exchanges",
    summary="The exchanges a capture recorded (newest first; with `after`, newer ones)",
    response_model=ExchangePage,
    responses=problem_responses(401, 403, 404, 422, 429),
    operation_id="list_captured_exchanges",
)
async def list_exchanges(
    request: Request,
    route: Annotated[str, _ROUTE],
    capture_id: Annotated[str, _CAPTURE],
    after: Annotated[
        int | None, Query(ge=0, description="Only exchanges with a larger id, oldest first")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=PAGE_LIMIT)] = 50,
    op: Operation = Depends(operation(Permission.ANALYTICS_READ)),
) -> ExchangePage:
    return await _service(request).exchanges(op, route, capture_id, after=after, limit=limit)


@router.get(
    "/inspector/exchanges/{exchange_id}",
    summary="One captured exchange: headers (credentials redacted), first 1 KiB of bodies",
    response_model=ExchangeOut,
    responses=problem_responses(401, 403, 404, 422, 429),
    operation_id="get_captured_exchange",
)
async def get_exchange(
    request: Request,
    exchange_id: Annotated[int, Path(ge=1)],
    op: Operation = Depends(operation(Permission.ANALYTICS_READ)),
) -> ExchangeOut:
    return await _service(request).exchange(op, exchange_id)
