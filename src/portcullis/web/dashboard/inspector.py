"""The request inspector in the dashboard: start a capture on a route (duration, sample
rate, count), watch its exchanges arrive, open one. Every action is a call to
`services.inspector.InspectorService` with the session's `Operation` (the same rules,
scoping and audit as `POST /admin/v1/routes/{route}/captures`); the page parses the
form and renders. The exchange list is an htmx partial polled every 2 s while the
capture records (captured exchanges are rows, not events on the live streams).
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Path
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from portcullis.services.context import Operation
from portcullis.services.errors import ServiceError, errors_from_pydantic
from portcullis.services.inspector import CaptureIn, InspectorService
from portcullis.services.rbac import Permission
from portcullis.web.dashboard.access import admin_state, operation
from portcullis.web.errors import page_error
from portcullis.web.templating import render

router = APIRouter(include_in_schema=False, prefix="/inspector")
_ROUTE = Path(min_length=1, max_length=128)
_CAPTURE = Path(min_length=1, max_length=40)
# The form's fields as the service's model names them (for errors next to each field).
FIELDS = ("route", "duration_seconds", "sample_rate", "max_count")


def _service(request: Request) -> InspectorService:
    state = admin_state(request)
    return InspectorService(state.engine, state.editor)


def capture_path(request: Request, route: str, capture_id: str) -> str:
    root = str(request.app.state.web.root)
    return f"{root}/inspector/routes/{quote(route, safe='')}/captures/{capture_id}"


async def _index(
    request: Request,
    op: Operation,
    form: dict[str, str],
    errors: dict[str, str],
    problem: str | None,
    status: int,
) -> Response:
    config = (await admin_state(request).editor.state()).config
    routes = sorted(r.name for r in op.scope.filter_config(config).routes)
    context: dict[str, Any] = {
        "title": "Request inspector",
        "routes": routes,
        "form": form,
        "errors": errors,
        "problem": problem,
        "can_start": op.caller is not None and op.caller.can(Permission.CONFIG_WRITE),
    }
    return render(request, "inspector/dashboard_index.html", context, status_code=status)


@router.get("")
async def index(
    request: Request, op: Operation = Depends(operation(Permission.ANALYTICS_READ))
) -> Response:
    defaults = {"route": "", "duration_seconds": "300", "sample_rate": "1", "max_count": "100"}
    return await _index(request, op, defaults, {}, None, 200)


@router.post("/captures")
async def start(
    request: Request,
    route: Annotated[str, Form(max_length=128)] = "",
    duration_seconds: Annotated[str, Form(max_length=16)] = "",
    sample_rate: Annotated[str, Form(max_length=16)] = "",
    max_count: Annotated[str, Form(max_length=16)] = "",
    op: Operation = Depends(operation(Permission.CONFIG_WRITE)),
) -> Response:
    form = {
        "route": route,
        "duration_seconds": duration_seconds,
        "sample_rate": sample_rate,
        "max_count": max_count,
    }
    values = {k: v for k, v in form.items() if k != "route" and v != ""}
    try:
        spec = CaptureIn.model_validate(values)
    except ValidationError as exc:
        errors = {p.removeprefix("#/"): d for p, d in errors_from_pydantic(exc.errors())}
        return await _index(request, op, form, errors, "Check the fields below.", 422)
    if not route:
        return await _index(request, op, form, {"route": "Pick a route"}, None, 422)
    try:
        out = await _service(request).start(op, route, spec)
    except ServiceError as exc:
        errors = {"route": exc.detail or exc.kind.title} if exc.kind.status in (404, 409) else {}
        return await _index(request, op, form, errors, exc.detail, exc.kind.status)
    return RedirectResponse(capture_path(request, route, out.id), status_code=303)


@router.get("/routes/{route}")
async def route_captures(
    request: Request,
    route: Annotated[str, _ROUTE],
    op: Operation = Depends(operation(Permission.ANALYTICS_READ)),
) -> Response:
    try:
        captures = await _service(request).list(op, route)
    except ServiceError as exc:
        raise page_error(exc) from None
    context = {"title": f"Captures of {route}", "route": route, "captures": captures}
    return render(request, "inspector/dashboard_route.html", context)


async def _capture_context(
    request: Request, op: Operation, route: str, capture_id: str
) -> dict[str, Any]:
    service = _service(request)
    try:
        capture = await service.get(op, route, capture_id)
        page = await service.exchanges(op, route, capture_id, limit=100)
    except ServiceError as exc:
        raise page_error(exc) from None
    return {
        "title": f"Capture {capture_id} of {route}",
        "capture": capture,
        "exchanges": page.items,
        "rows_url": capture_path(request, route, capture_id) + "/rows",
        "can_stop": op.caller is not None and op.caller.can(Permission.CONFIG_WRITE),
        "here": capture_path(request, route, capture_id),
    }


@router.get("/routes/{route}/captures/{capture_id}")
async def capture_page(
    request: Request,
    route: Annotated[str, _ROUTE],
    capture_id: Annotated[str, _CAPTURE],
    op: Operation = Depends(operation(Permission.ANALYTICS_READ)),
) -> Response:
    context = await _capture_context(request, op, route, capture_id)
    return render(request, "inspector/dashboard_capture.html", context)


@router.get("/routes/{route}/captures/{capture_id}/rows")
async def capture_rows(
    request: Request,
    route: Annotated[str, _ROUTE],
    capture_id: Annotated[str, _CAPTURE],
    op: Operation = Depends(operation(Permission.ANALYTICS_READ)),
) -> Response:
    context = await _capture_context(request, op, route, capture_id)
    return render(request, "inspector/_dashboard_rows.html", context)


@router.post("/routes/{route}/captures/{capture_id}/stop")
async def stop(
    request: Request,
    route: Annotated[str, _ROUTE],
    capture_id: Annotated[str, _CAPTURE],
    op: Operation = Depends(operation(Permission.CONFIG_WRITE)),
) -> Response:
    try:
        await _service(request).stop(op, route, capture_id)
    except ServiceError as exc:
        raise page_error(exc) from None
    return RedirectResponse(capture_path(request, route, capture_id), status_code=303)


@router.get("/exchanges/{exchange_id}")
async def exchange_page(
    request: Request,
    exchange_id: Annotated[int, Path(ge=1)],
    op: Operation = Depends(operation(Permission.ANALYTICS_READ)),
) -> Response:
    try:
        exchange = await _service(request).exchange(op, exchange_id)
    except ServiceError as exc:
        raise page_error(exc) from None
    context = {
        "title": f"Exchange {exchange_id}",
        "exchange": exchange,
        "back": capture_path(request, exchange.route, exchange.capture_id),
    }
    return render(request, "inspector/dashboard_exchange.html", context)
