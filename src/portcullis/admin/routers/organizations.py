"""Organizations (tenants): admin users can be limited to one."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from portcullis.admin.conditional import check_if_match, etag_of
from portcullis.admin.dependencies import RequestFacts, request_facts, require
from portcullis.admin.pagination import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    paginate,
    parse_sort,
    sort_pattern,
)
from portcullis.admin.problems import (
    ALREADY_EXISTS,
    FORBIDDEN,
    HAS_DEPENDENTS,
    NOT_FOUND,
    ApiProblem,
    problem_responses,
)
from portcullis.admin.rbac import Caller, Permission
from portcullis.admin.state import AdminState
from portcullis.store.admin_tables import AdminUserRow, OrganizationRow
from portcullis.store.engine import write_transaction

router = APIRouter(prefix="/organizations", tags=["Organizations"])
ORG_SORT = ("name", "created_at")
OrgName = Annotated[
    str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._~ -]*$")
]
IfMatch = Annotated[
    str | None, Header(description="ETag from a previous read; 412 when it no longer matches")
]


class OrganizationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: OrgName


class OrganizationOut(BaseModel):
    id: str
    name: str
    created_at: datetime
    updated_at: datetime


class OrganizationPage(BaseModel):
    items: list[OrganizationOut]
    next: str | None


def _state(request: Request) -> AdminState:
    state: AdminState = request.app.state.admin
    return state


def _json(row: Any) -> dict[str, Any]:
    return OrganizationOut(
        id=row.id, name=row.name, created_at=row.created_at, updated_at=row.updated_at
    ).model_dump(mode="json")


async def _get(request: Request, org_id: str, caller: Caller) -> dict[str, Any]:
    if caller.organization_id is not None and caller.organization_id != org_id:
        raise ApiProblem(NOT_FOUND, f"organization {org_id!r} does not exist")
    async with _state(request).engine.connect() as conn:
        row = (
            await conn.execute(select(OrganizationRow).where(OrganizationRow.id == org_id))
        ).first()
    if row is None:
        raise ApiProblem(NOT_FOUND, f"organization {org_id!r} does not exist")
    return _json(row)


def _respond(body: dict[str, Any], status: int = 200, **headers: str) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers={"ETag": etag_of(body), **headers})


def _name_taken(name: str) -> ApiProblem:
    return ApiProblem(
        ALREADY_EXISTS,
        f"organization {name!r} already exists",
        errors=[{"pointer": "#/name", "detail": "already in use"}],
    )


@router.get(
    "",
    summary="List organizations",
    response_model=OrganizationPage,
    responses=problem_responses(400, 401, 403, 422, 429),
    operation_id="list_organizations",
)
async def list_organizations(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: str | None = None,
    sort: Annotated[
        str | None,
        Query(description="name, created_at; `-` descending", pattern=sort_pattern(ORG_SORT)),
    ] = None,
    caller: Caller = Depends(require(Permission.ORGS_READ)),
) -> Response:
    keys = parse_sort(sort, ORG_SORT, "name")
    query = select(OrganizationRow)
    if caller.organization_id is not None:
        query = query.where(OrganizationRow.id == caller.organization_id)
    async with _state(request).engine.connect() as conn:
        rows = [_json(r) for r in (await conn.execute(query)).all()]
    page = paginate(rows, lambda o: str(o["id"]), keys, limit=limit, cursor=cursor)
    url = None
    headers = {}
    if page.next_cursor is not None:
        url = (
            request.url.path
            + "?"
            + str(request.url.include_query_params(cursor=page.next_cursor).query)
        )
        headers["Link"] = f'<{url}>; rel="next"'
    return JSONResponse({"items": page.items, "next": url}, headers=headers)


@router.post(
    "",
    summary="Create an organization",
    status_code=201,
    response_model=OrganizationOut,
    responses={
        201: {"headers": {"Location": {"schema": {"type": "string"}}}},
        **problem_responses(400, 401, 403, 409, 422, 429),
    },
    operation_id="create_organization",
)
async def create_organization(
    request: Request,
    body: OrganizationIn,
    caller: Caller = Depends(require(Permission.ORGS_WRITE)),
    facts: RequestFacts = Depends(request_facts),
) -> Response:
    if caller.organization_id is not None:
        raise ApiProblem(FORBIDDEN, "organization-limited users can't create organizations")
    now = datetime.now(UTC)
    row = {"id": str(uuid.uuid4()), "name": body.name, "created_at": now, "updated_at": now}
    try:
        async with write_transaction(_state(request).engine) as conn:
            await conn.execute(insert(OrganizationRow).values(**row))
    except IntegrityError:
        raise _name_taken(body.name) from None
    out = _json(OrganizationRow(**row))
    await _state(request).audit.record(
        caller=caller,
        facts=facts,
        action="create",
        resource_type="organization",
        resource_id=out["id"],
        after=out,
        status=201,
    )
    return _respond(out, 201, Location=f"/admin/v1/organizations/{out['id']}")


@router.get(
    "/{org_id}",
    summary="Get an organization",
    response_model=OrganizationOut,
    responses=problem_responses(401, 403, 404, 429),
    operation_id="get_organization",
)
async def get_organization(
    request: Request, org_id: str, caller: Caller = Depends(require(Permission.ORGS_READ))
) -> Response:
    return _respond(await _get(request, org_id, caller))


@router.patch(
    "/{org_id}",
    summary="Rename an organization",
    response_model=OrganizationOut,
    responses=problem_responses(401, 403, 404, 409, 412, 422, 429),
    operation_id="update_organization",
)
async def update_organization(
    request: Request,
    org_id: str,
    body: OrganizationIn,
    if_match: IfMatch = None,
    caller: Caller = Depends(require(Permission.ORGS_WRITE)),
    facts: RequestFacts = Depends(request_facts),
) -> Response:
    before = await _get(request, org_id, caller)
    check_if_match(if_match, etag_of(before))
    try:
        async with write_transaction(_state(request).engine) as conn:
            await conn.execute(
                update(OrganizationRow)
                .where(OrganizationRow.id == org_id)
                .values(name=body.name, updated_at=datetime.now(UTC))
            )
    except IntegrityError:
        raise _name_taken(body.name) from None
    after = await _get(request, org_id, caller)
    await _state(request).audit.record(
        caller=caller,
        facts=facts,
        action="update",
        resource_type="organization",
        resource_id=org_id,
        before=before,
        after=after,
    )
    return _respond(after)


@router.delete(
    "/{org_id}",
    summary="Delete an organization that has no users",
    status_code=204,
    response_class=Response,
    responses=problem_responses(401, 403, 404, 409, 412, 429),
    operation_id="delete_organization",
)
async def delete_organization(
    request: Request,
    org_id: str,
    if_match: IfMatch = None,
    caller: Caller = Depends(require(Permission.ORGS_WRITE)),
    facts: RequestFacts = Depends(request_facts),
) -> Response:
    before = await _get(request, org_id, caller)
    check_if_match(if_match, etag_of(before))
    async with write_transaction(_state(request).engine) as conn:
        users = await conn.scalar(
            select(func.count())
            .select_from(AdminUserRow)
            .where(AdminUserRow.organization_id == org_id)
        )
        if users:
            raise ApiProblem(
                HAS_DEPENDENTS,
                f"organization {before['name']!r} still has {users} admin user(s)",
                dependents=[{"kind": "admin_users", "count": users}],
            )
        await conn.execute(delete(OrganizationRow).where(OrganizationRow.id == org_id))
    await _state(request).audit.record(
        caller=caller,
        facts=facts,
        action="delete",
        resource_type="organization",
        resource_id=org_id,
        before=before,
        status=204,
    )
    return Response(status_code=204)
