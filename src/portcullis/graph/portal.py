"""The developer portal for operators in the graph: developers (list, suspend, resume),
applications, and access requests (list, approve, reject with a reason).

Every field calls `services.portal_admin.PortalAdmin` with the caller's operation, as
REST does (`/admin/v1/portal/…`): developers are deployment-wide, applications and
requests are scoped to the organization of the API they concern.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import strawberry
from strawberry.types import Info

from portcullis.graph.connections import Connection, page_connection, page_size
from portcullis.graph.context import GraphContext, context_of
from portcullis.graph.fields import mutation
from portcullis.graph.models import output_type, validated
from portcullis.services.pagination import paginate, parse_sort
from portcullis.services.portal_admin import (
    AccessRequestOut,
    ApplicationOut,
    ApproveIn,
    DeveloperOut,
    PortalAdmin,
    RejectIn,
)
from portcullis.services.rbac import Permission

PortalDeveloper: Any = output_type(DeveloperOut, "PortalDeveloper")
PortalApplication: Any = output_type(ApplicationOut, "PortalApplication")
PortalAccessRequest: Any = output_type(AccessRequestOut, "PortalAccessRequest")
NEWEST = parse_sort("-created_at", ("created_at",), "-created_at")
OLDEST = parse_sort("created_at", ("created_at",), "created_at")


@strawberry.type(description="A developer as the change left them")
class PortalDeveloperPayload:
    developer: PortalDeveloper


@strawberry.type(description="An access request as the decision left it")
class PortalAccessRequestPayload:
    request: PortalAccessRequest


StatusArg = Annotated[
    str | None,
    strawberry.argument(description="pending, approved or rejected (omitted: all)"),
]


def _admin(ctx: GraphContext) -> PortalAdmin:
    portal = ctx.state.portal
    assert portal is not None, "the portal's services are made when the control plane starts"
    return portal.admin


def _page(items: list[dict[str, Any]], keys: Any, first: int | None, after: str | None) -> Any:
    page = paginate(items, lambda item: str(item["id"]), keys, limit=page_size(first), cursor=after)
    return page_connection(page)


async def portal_developers(
    info: Info[Any, Any], first: int | None = None, after: str | None = None
) -> Any:
    ctx = context_of(info)
    op = await ctx.operation(Permission.PORTAL_READ)
    return _page(await _admin(ctx).developers(op, limit=500), NEWEST, first, after)


async def portal_applications(
    info: Info[Any, Any], first: int | None = None, after: str | None = None
) -> Any:
    ctx = context_of(info)
    op = await ctx.operation(Permission.PORTAL_READ)
    apps = await _admin(ctx).applications(op, limit=500)
    return _page([a.as_json() for a in apps], NEWEST, first, after)


async def portal_access_requests(
    info: Info[Any, Any],
    status: StatusArg = None,
    first: int | None = None,
    after: str | None = None,
) -> Any:
    ctx = context_of(info)
    op = await ctx.operation(Permission.PORTAL_READ)
    wanted: Literal["pending", "approved", "rejected"] | None = None
    if status in ("pending", "approved", "rejected"):
        wanted = status  # type: ignore[assignment]
    elif status is not None:
        from portcullis.services.errors import invalid

        raise invalid([("#/status", "must be pending, approved or rejected")])
    found = await _admin(ctx).access_requests(op, status=wanted, limit=500)
    return _page([r.as_json() for r in found], OLDEST, first, after)


async def _set_status(info: Info[Any, Any], id: strawberry.ID, suspended: bool) -> Any:
    ctx = context_of(info)
    op = await ctx.operation(Permission.PORTAL_WRITE)
    developer = await _admin(ctx).set_developer_status(op, str(id), suspended=suspended)
    return PortalDeveloperPayload(developer=developer)


async def suspend_portal_developer(info: Info[Any, Any], id: strawberry.ID) -> Any:
    return await _set_status(info, id, True)


async def resume_portal_developer(info: Info[Any, Any], id: strawberry.ID) -> Any:
    return await _set_status(info, id, False)


async def approve_portal_access_request(
    info: Info[Any, Any], id: strawberry.ID, reason: str | None = None
) -> Any:
    ctx = context_of(info)
    op = await ctx.operation(Permission.PORTAL_WRITE)
    body = validated(ApproveIn, {"reason": reason})
    decided = await _admin(ctx).approve(op, str(id), body.reason)
    return PortalAccessRequestPayload(request=decided.as_json())


async def reject_portal_access_request(info: Info[Any, Any], id: strawberry.ID, reason: str) -> Any:
    ctx = context_of(info)
    op = await ctx.operation(Permission.PORTAL_WRITE)
    body = validated(RejectIn, {"reason": reason})
    decided = await _admin(ctx).reject(op, str(id), body.reason)
    return PortalAccessRequestPayload(request=decided.as_json())


QUERIES: dict[str, Any] = {
    "portalDevelopers": strawberry.field(
        resolver=portal_developers,
        graphql_type=Connection[PortalDeveloper],
        description="The portal's developers, newest first",
    ),
    "portalApplications": strawberry.field(
        resolver=portal_applications,
        graphql_type=Connection[PortalApplication],
        description="The portal's applications, newest first",
    ),
    "portalAccessRequests": strawberry.field(
        resolver=portal_access_requests,
        graphql_type=Connection[PortalAccessRequest],
        description="Access requests, oldest first (the approval queue)",
    ),
}

MUTATIONS: dict[str, Any] = {
    "suspendPortalDeveloper": mutation(
        suspend_portal_developer,
        "SuspendPortalDeveloperResult",
        PortalDeveloperPayload,
        "Suspend a developer: no sign-in, no portal call",
    ),
    "resumePortalDeveloper": mutation(
        resume_portal_developer,
        "ResumePortalDeveloperResult",
        PortalDeveloperPayload,
        "Let a suspended developer in again",
    ),
    "approvePortalAccessRequest": mutation(
        approve_portal_access_request,
        "ApprovePortalAccessRequestResult",
        PortalAccessRequestPayload,
        "Approve an access request (the application's consumer gets the API and plan)",
    ),
    "rejectPortalAccessRequest": mutation(
        reject_portal_access_request,
        "RejectPortalAccessRequestResult",
        PortalAccessRequestPayload,
        "Reject an access request with a reason (the developer is told)",
    ),
}
