"""The developer portal for operators: developers (list, suspend, resume), applications,
and access requests (list, approve, reject with a reason).

Developers are deployment-wide (admins limited to an organization get 403); applications
and access requests are scoped to the organization of the API they concern. Every change
is audited; nothing here carries a secret.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response

from portcullis.admin.operations import admin_state, operation, respond
from portcullis.admin.pagination import page_response
from portcullis.admin.problems import problem_responses
from portcullis.services.context import Operation
from portcullis.services.portal import PortalServices
from portcullis.services.portal_admin import (
    AccessRequestOut,
    AccessRequestPage,
    ApplicationPage,
    ApproveIn,
    DeveloperOut,
    DeveloperPage,
    RejectIn,
)
from portcullis.services.rbac import Permission

router = APIRouter(prefix="/portal", tags=["Developer portal"])
Limit = Annotated[int, Query(ge=1, le=500, description="At most this many items")]


def _portal(request: Request) -> PortalServices:
    portal = admin_state(request).portal
    assert portal is not None, "the portal's services are made when the app starts"
    return portal


@router.get(
    "/developers",
    summary="List the portal's developers (newest first)",
    response_model=DeveloperPage,
    responses=problem_responses(400, 401, 403, 422, 429),
    operation_id="list_portal_developers",
)
async def list_developers(
    request: Request,
    limit: Limit = 100,
    op: Operation = Depends(operation(Permission.PORTAL_READ)),
) -> Response:
    return page_response(request, await _portal(request).admin.developers(op, limit=limit), None)


async def _set_status(
    request: Request, op: Operation, developer_id: str, suspended: bool
) -> Response:
    return respond(
        await _portal(request).admin.set_developer_status(op, developer_id, suspended=suspended)
    )


@router.post(
    "/developers/{developer_id}/suspend",
    summary="Suspend a developer: no sign-in, no portal call (their keys keep working)",
    response_model=DeveloperOut,
    responses=problem_responses(401, 403, 404, 429),
    operation_id="suspend_portal_developer",
)
async def suspend_developer(
    request: Request,
    developer_id: str,
    op: Operation = Depends(operation(Permission.PORTAL_WRITE)),
) -> Response:
    return await _set_status(request, op, developer_id, True)


@router.post(
    "/developers/{developer_id}/resume",
    summary="Let a suspended developer in again",
    response_model=DeveloperOut,
    responses=problem_responses(401, 403, 404, 429),
    operation_id="resume_portal_developer",
)
async def resume_developer(
    request: Request,
    developer_id: str,
    op: Operation = Depends(operation(Permission.PORTAL_WRITE)),
) -> Response:
    return await _set_status(request, op, developer_id, False)


@router.get(
    "/applications",
    summary="List the portal's applications (newest first)",
    response_model=ApplicationPage,
    responses=problem_responses(400, 401, 403, 422, 429),
    operation_id="list_portal_applications",
)
async def list_applications(
    request: Request,
    limit: Limit = 100,
    op: Operation = Depends(operation(Permission.PORTAL_READ)),
) -> Response:
    apps = await _portal(request).admin.applications(op, limit=limit)
    return page_response(request, [a.as_json() for a in apps], None)


@router.get(
    "/access-requests",
    summary="List access requests (oldest first: the approval queue)",
    response_model=AccessRequestPage,
    responses=problem_responses(400, 401, 403, 422, 429),
    operation_id="list_portal_access_requests",
)
async def list_access_requests(
    request: Request,
    status: Literal["pending", "approved", "rejected"] | None = None,
    limit: Limit = 100,
    op: Operation = Depends(operation(Permission.PORTAL_READ)),
) -> Response:
    found = await _portal(request).admin.access_requests(op, status=status, limit=limit)
    return page_response(request, [r.as_json() for r in found], None)


@router.post(
    "/access-requests/{request_id}/approve",
    summary="Approve an access request (the application's consumer gets the API and plan)",
    response_model=AccessRequestOut,
    responses=problem_responses(400, 401, 403, 404, 409, 422, 429),
    operation_id="approve_portal_access_request",
)
async def approve_access_request(
    request: Request,
    request_id: str,
    body: ApproveIn | None = None,
    op: Operation = Depends(operation(Permission.PORTAL_WRITE)),
) -> Response:
    reason = None if body is None else body.reason
    decided = await _portal(request).admin.approve(op, request_id, reason)
    return respond(decided.as_json())


@router.post(
    "/access-requests/{request_id}/reject",
    summary="Reject an access request with a reason (the developer is told)",
    response_model=AccessRequestOut,
    responses=problem_responses(400, 401, 403, 404, 409, 422, 429),
    operation_id="reject_portal_access_request",
)
async def reject_access_request(
    request: Request,
    request_id: str,
    body: RejectIn,
    op: Operation = Depends(operation(Permission.PORTAL_WRITE)),
) -> Response:
    decided = await _portal(request).admin.reject(op, request_id, body.reason)
    return respond(decided.as_json())
