"""Approving developer portal applications' access requests in the dashboard.

The queue and the decisions are `PortalAdmin`'s (services/portal_admin.py, with the
session's `Operation`: an organization-limited operator sees and decides only the
requests for their organization's APIs). A rejection needs a reason, which the
developer is mailed; an approval may carry one.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from portcullis.services.context import Operation
from portcullis.services.errors import ServiceError
from portcullis.services.portal_admin import PortalAdmin, RequestStatus
from portcullis.services.rbac import Caller, Permission
from portcullis.web.dashboard.access import admin_state, operation
from portcullis.web.dashboard.editing import Outcome, refused
from portcullis.web.dashboard.manage import form_data, one
from portcullis.web.templating import render

router = APIRouter(include_in_schema=False)
STATUSES = ("pending", "approved", "rejected")
MAX_REASON = 500


def portal_admin(request: Request) -> PortalAdmin:
    portal = admin_state(request).portal
    if portal is None:
        raise HTTPException(503, "the developer portal is not running")
    return portal.admin


async def _queue(
    request: Request,
    op: Operation,
    status: str,
    *,
    outcome: Outcome | None = None,
    code: int = 200,
) -> Response:
    chosen: RequestStatus = (
        "approved" if status == "approved" else "rejected" if status == "rejected" else "pending"
    )
    admin = portal_admin(request)
    try:
        requests = await admin.access_requests(op, status=chosen)
        apps = {a.id: a for a in await admin.applications(op)}
    except ServiceError as exc:
        raise HTTPException(exc.kind.status, exc.detail) from None
    caller = getattr(request.state, "principal", None)
    context = {
        "title": "Access requests",
        "status": chosen,
        "statuses": STATUSES,
        "requests": requests,
        "apps": apps,
        "outcome": outcome,
        "decided": request.query_params.get("decided"),
        "can_write": isinstance(caller, Caller) and caller.can(Permission.PORTAL_WRITE),
    }
    return render(request, "dashboard/approvals.html", context, status_code=code)


@router.get("/approvals")
async def approvals_page(
    request: Request,
    status: str = "pending",
    op: Operation = Depends(operation(Permission.PORTAL_READ)),
) -> Response:
    return await _queue(request, op, status)


@router.post("/approvals/{request_id}/{decision}")
async def decide(
    request: Request,
    request_id: str,
    decision: Literal["approve", "reject"],
    op: Operation = Depends(operation(Permission.PORTAL_WRITE)),
) -> Response:
    data = form_data(await request.form())
    reason = (one(data, "reason") or "").strip() or None
    if decision == "reject" and reason is None:
        outcome = Outcome(None, 422, "Validation failed", "a rejection needs a reason")
        return await _queue(request, op, "pending", outcome=outcome, code=422)
    if reason is not None and len(reason) > MAX_REASON:
        outcome = Outcome(None, 422, "Validation failed", f"at most {MAX_REASON} characters")
        return await _queue(request, op, "pending", outcome=outcome, code=422)
    admin = portal_admin(request)
    try:
        if decision == "approve":
            await admin.approve(op, request_id, reason)
        else:
            await admin.reject(op, request_id, reason or "")
    except ServiceError as exc:
        failed = refused(exc)
        return await _queue(request, op, "pending", outcome=failed, code=failed.status)
    target = f"{request.scope.get('root_path', '')}/approvals?" + urlencode(
        {"decided": f"{request_id} {decision}d"}
    )
    return RedirectResponse(target, status_code=303)
