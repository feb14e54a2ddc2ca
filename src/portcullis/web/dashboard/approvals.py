"""Dashboard: the portal's access requests, approved or rejected (with a reason) by an
operator. The page calls `services.portal_admin.PortalAdmin`, scoped like the REST
endpoints (`/admin/v1/portal/access-requests`): an organization-limited operator sees and
decides the requests for their organization's APIs only."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from portcullis.services.context import Operation
from portcullis.services.errors import ServiceError
from portcullis.services.portal import PortalServices
from portcullis.services.rbac import Permission
from portcullis.web.dashboard.access import admin_state, operation
from portcullis.web.sessions import web_app_of
from portcullis.web.templating import render

router = APIRouter(include_in_schema=False)


def _portal(request: Request) -> PortalServices:
    portal = admin_state(request).portal
    assert portal is not None, "the portal's services are made when the control plane starts"
    return portal


async def _page(request: Request, op: Operation, status: int = 200, **extra: Any) -> Response:
    admin = _portal(request).admin
    context = {
        "title": "Approvals",
        "pending": await admin.access_requests(op, status="pending"),
        "decided": [r for r in await admin.access_requests(op) if r.status != "pending"][-20:],
        "can_decide": op.caller is not None and op.caller.can(Permission.PORTAL_WRITE),
        "error": None,
        **extra,
    }
    return render(request, "dashboard/approvals.html", context, status_code=status)


@router.get("/approvals")
async def approvals(
    request: Request, op: Operation = Depends(operation(Permission.PORTAL_READ))
) -> Response:
    return await _page(request, op)


@router.post("/approvals/{request_id}")
async def decide(
    request: Request,
    request_id: str,
    decision: Annotated[str, Form(max_length=16)] = "",
    reason: Annotated[str, Form(max_length=500)] = "",
    op: Operation = Depends(operation(Permission.PORTAL_WRITE)),
) -> Response:
    admin = _portal(request).admin
    try:
        if decision == "approve":
            await admin.approve(op, request_id, reason.strip() or None)
        elif decision == "reject" and reason.strip():
            await admin.reject(op, request_id, reason.strip())
        else:
            return await _page(request, op, 422, error="A rejection needs a reason.")
    except ServiceError as exc:
        return await _page(request, op, exc.kind.status, error=exc.detail)
    return RedirectResponse(web_app_of(request).root + "/approvals", status_code=303)
