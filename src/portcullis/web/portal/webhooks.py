"""The portal's webhook self-service: subscribe an endpoint to your applications'
events, see its deliveries, send a test, replay a delivery, disable or delete it
(services/portal_webhooks.py: through WebhookService, owned by the application's team;
decision 037). The signing secret is shown once, on the page that answers the POST that
created the endpoint."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from portcullis.services.errors import FieldError, ServiceError
from portcullis.services.portal import Developer
from portcullis.services.portal_webhooks import PORTAL_EVENT_TYPES, PortalWebhookIn
from portcullis.web.portal.access import current_developer
from portcullis.web.portal.api_support import access_of_request, developer_operation, portal_api
from portcullis.web.templating import render

router = APIRouter(include_in_schema=False)


async def _list_page(
    request: Request,
    who: Developer,
    *,
    created: dict[str, Any] | None = None,
    secret: str | None = None,
    errors: list[FieldError] | None = None,
    problem: str | None = None,
    form: dict[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    access = await access_of_request(request)
    op = developer_operation(request, who)
    endpoints = await portal_api(request).webhooks.endpoints(op, access)
    context = {
        "title": "Webhooks",
        "apps": access.apps,
        "endpoints": endpoints,
        "event_types": PORTAL_EVENT_TYPES,
        "created": created,
        "secret": secret,
        "errors": errors or [],
        "problem": problem,
        "form": form
        or {"app": "", "url": "", "description": "", "event_types": list(PORTAL_EVENT_TYPES)},
    }
    headers = {"Cache-Control": "no-store"} if secret else None
    return render(
        request, "portal/api/webhooks.html", context, status_code=status_code, headers=headers
    )


@router.get("/webhooks")
async def webhooks_page(request: Request, who: Developer = Depends(current_developer)) -> Response:
    return await _list_page(request, who)


@router.post("/webhooks")
async def subscribe(request: Request, who: Developer = Depends(current_developer)) -> Response:
    raw = await request.form()
    form = {
        "app": str(raw.get("app", "")),
        "url": str(raw.get("url", "")),
        "description": str(raw.get("description", "")),
        "event_types": [str(v) for v in raw.getlist("event_types")],
    }
    access = await access_of_request(request)
    op = developer_operation(request, who)
    try:
        created, secret = await portal_api(request).webhooks.create(
            op, access, PortalWebhookIn.parse(form)
        )
    except ServiceError as exc:
        return await _list_page(
            request,
            who,
            errors=list(exc.errors),
            problem=exc.detail or exc.kind.title,
            form=form,
            status_code=exc.kind.status,
        )
    return await _list_page(request, who, created=created, secret=secret, status_code=201)


@router.get("/webhooks/{endpoint_id}")
async def endpoint_page(
    request: Request, endpoint_id: str, who: Developer = Depends(current_developer)
) -> Response:
    access = await access_of_request(request)
    op = developer_operation(request, who)
    hooks = portal_api(request).webhooks
    try:
        endpoint = await hooks.get(op, access, endpoint_id)
        deliveries = await hooks.deliveries(op, access, endpoint_id)
    except ServiceError as exc:
        context = {"title": "Not found", "status": 404, "detail": exc.detail or ""}
        return render(request, "error.html", context, status_code=404)
    notice = request.query_params.get("done", "")
    return render(
        request,
        "portal/api/webhook.html",
        {"title": "Webhook", "endpoint": endpoint, "deliveries": deliveries, "notice": notice},
    )


@router.post("/webhooks/{endpoint_id}/{action}")
async def endpoint_action(
    request: Request, endpoint_id: str, action: str, who: Developer = Depends(current_developer)
) -> Response:
    access = await access_of_request(request)
    op = developer_operation(request, who)
    hooks = portal_api(request).webhooks
    raw = await request.form()
    root = request.scope.get("root_path", "")
    try:
        if action == "replay":
            await hooks.replay(op, access, endpoint_id, str(raw.get("message_id", "")))
        elif action == "test":
            await hooks.send_test(op, access, endpoint_id)
        elif action in ("enable", "disable"):
            await hooks.set_enabled(op, access, endpoint_id, action == "enable")
        elif action == "delete":
            await hooks.delete(op, access, endpoint_id)
            return RedirectResponse(f"{root}/webhooks", status_code=303)
        else:
            context = {"title": "Not found", "status": 404, "detail": f"no action {action!r}"}
            return render(request, "error.html", context, status_code=404)
    except ServiceError as exc:
        context = {"title": exc.kind.title, "status": exc.kind.status, "detail": exc.detail or ""}
        return render(request, "error.html", context, status_code=exc.kind.status)
    return RedirectResponse(f"{root}/webhooks/{endpoint_id}?done={action}", status_code=303)
