"""Organizations (tenants): admin users can be limited to one, gateway entities belong to one.

Gateway entities name their organization (`organization: <name>` in the config), so
a rename is also a config change: every entity of the organization is relabelled
in the same transaction that renames it and records the audit event. An
organization that still has admin users or gateway entities can't be deleted.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response
from pydantic import BaseModel

from portcullis.admin.operations import admin_state, operation, respond
from portcullis.admin.pagination import ListQuery, list_query
from portcullis.admin.problems import created_responses, problem_responses
from portcullis.services.context import Operation
from portcullis.services.organizations import (
    ORG_SORT,
    OrganizationIn,
    OrganizationOut,
    OrganizationService,
)
from portcullis.services.rbac import Permission

router = APIRouter(prefix="/organizations", tags=["Organizations"])
IfMatch = Annotated[
    str | None, Header(description="ETag from a previous read; 412 when it no longer matches")
]


class OrganizationPage(BaseModel):
    items: list[OrganizationOut]
    next: str | None


def _service(request: Request) -> OrganizationService:
    state = admin_state(request)
    return OrganizationService(state.engine, state.editor)


@router.get(
    "",
    summary="List organizations",
    response_model=OrganizationPage,
    responses=problem_responses(400, 401, 403, 422, 429),
    operation_id="list_organizations",
)
async def list_organizations(
    request: Request,
    query: ListQuery = Depends(list_query(ORG_SORT, "name")),
    op: Operation = Depends(operation(Permission.ORGS_READ)),
) -> Response:
    return query.respond(request, await _service(request).list(op))


@router.post(
    "",
    summary="Create an organization",
    status_code=201,
    response_model=OrganizationOut,
    responses=created_responses(400, 401, 403, 409, 422, 429),
    operation_id="create_organization",
)
async def create_organization(
    request: Request,
    body: OrganizationIn,
    op: Operation = Depends(operation(Permission.ORGS_WRITE)),
) -> Response:
    out = await _service(request).create(op, body.name)
    return respond(out, 201, Location=f"/admin/v1/organizations/{out['id']}")


@router.get(
    "/{org_id}",
    summary="Get an organization",
    response_model=OrganizationOut,
    responses=problem_responses(401, 403, 404, 429),
    operation_id="get_organization",
)
async def get_organization(
    request: Request, org_id: str, op: Operation = Depends(operation(Permission.ORGS_READ))
) -> Response:
    return respond(await _service(request).get(op, org_id))


@router.patch(
    "/{org_id}",
    summary="Rename an organization (and relabel its gateway entities)",
    response_model=OrganizationOut,
    responses=problem_responses(401, 403, 404, 409, 412, 422, 429),
    operation_id="update_organization",
)
async def update_organization(
    request: Request,
    org_id: str,
    body: OrganizationIn,
    if_match: IfMatch = None,
    op: Operation = Depends(operation(Permission.ORGS_WRITE)),
) -> Response:
    return respond(await _service(request).rename(op, org_id, body.name, if_match=if_match))


@router.delete(
    "/{org_id}",
    summary="Delete an organization that has no users and no gateway entities",
    status_code=204,
    response_class=Response,
    responses=problem_responses(401, 403, 404, 409, 412, 429),
    operation_id="delete_organization",
)
async def delete_organization(
    request: Request,
    org_id: str,
    if_match: IfMatch = None,
    op: Operation = Depends(operation(Permission.ORGS_WRITE)),
) -> Response:
    await _service(request).delete(op, org_id, if_match=if_match)
    return Response(status_code=204)
