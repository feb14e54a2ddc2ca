"""Organizations (tenants): admin users can be limited to one, gateway entities belong to one.

Gateway entities name their organization (`organization: <name>` in the config), so
a rename is also a config change: every entity of the organization is relabelled
in the same transaction that renames it and records the audit event. An
organization that still has admin users or gateway entities can't be deleted.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from portcullis.admin.conditional import Precondition, check_if_match, etag_of
from portcullis.admin.config_editor import CONCURRENT_CHANGE, ConfigState, Edit
from portcullis.admin.dependencies import RequestFacts, request_facts, require
from portcullis.admin.operations import admin_state, respond
from portcullis.admin.pagination import ListQuery, list_query
from portcullis.admin.problems import (
    ALREADY_EXISTS,
    FORBIDDEN,
    HAS_DEPENDENTS,
    NOT_FOUND,
    ApiProblem,
    created_responses,
    problem_responses,
)
from portcullis.admin.rbac import Caller, Permission
from portcullis.admin.scoping import SCOPED_COLLECTIONS, scope_of
from portcullis.admin.state import AdminState
from portcullis.store.admin_tables import AdminUserRow, OrganizationRow
from portcullis.store.config_repository import ConfigVersion
from portcullis.store.engine import write_transaction

router = APIRouter(prefix="/organizations", tags=["Organizations"])
ORG_SORT = ("name", "created_at")
OrgName = Annotated[
    str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._~-]*$")
]
IfMatch = Annotated[
    str | None, Header(description="ETag from a previous read; 412 when it no longer matches")
]


class OrganizationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: OrgName = Field(
        description="Also the value gateway entities put in their `organization` field"
    )


class OrganizationOut(BaseModel):
    id: str
    name: str
    created_at: datetime
    updated_at: datetime


class OrganizationPage(BaseModel):
    items: list[OrganizationOut]
    next: str | None


def _json(row: Any) -> dict[str, Any]:
    return OrganizationOut(
        id=row.id, name=row.name, created_at=row.created_at, updated_at=row.updated_at
    ).model_dump(mode="json")


async def _get(request: Request, org_id: str, caller: Caller) -> dict[str, Any]:
    (await scope_of(request, caller)).require_owned(
        org_id, f"organization {org_id!r} does not exist"
    )
    async with admin_state(request).engine.connect() as conn:
        row = (
            await conn.execute(select(OrganizationRow).where(OrganizationRow.id == org_id))
        ).first()
    if row is None:
        raise ApiProblem(NOT_FOUND, f"organization {org_id!r} does not exist")
    return _json(row)


async def _locked(conn: AsyncConnection, org_id: str) -> dict[str, Any] | None:
    """The organization as JSON, locked for the rest of the write transaction (None: gone)."""
    query = select(OrganizationRow).where(OrganizationRow.id == org_id).with_for_update()
    row = (await conn.execute(query)).first()
    return None if row is None else _json(row)


def _renamed_meanwhile(org_id: str) -> ApiProblem:
    return ApiProblem(
        CONCURRENT_CHANGE,
        f"organization {org_id!r} was renamed meanwhile; retry the request",
        headers={"Retry-After": "1"},
    )


def _name_taken(name: str) -> ApiProblem:
    return ApiProblem(
        ALREADY_EXISTS,
        f"organization {name!r} already exists",
        errors=[{"pointer": "#/name", "detail": "already in use"}],
    )


def _owned_entities(document: dict[str, Any], name: str) -> dict[str, list[dict[str, Any]]]:
    """The gateway entities (config document entries) of organization `name`, by collection."""
    return {
        collection: [d for d in document[collection] if d.get("organization") == name]
        for collection in SCOPED_COLLECTIONS
    }


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
    caller: Caller = Depends(require(Permission.ORGS_READ)),
) -> Response:
    select_orgs = select(OrganizationRow)
    scope = await scope_of(request, caller)
    if scope.limited:
        select_orgs = select_orgs.where(OrganizationRow.id == scope.organization_id)
    async with admin_state(request).engine.connect() as conn:
        rows = [_json(r) for r in (await conn.execute(select_orgs)).all()]
    return query.respond(request, rows)


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
    caller: Caller = Depends(require(Permission.ORGS_WRITE)),
    facts: RequestFacts = Depends(request_facts),
) -> Response:
    if caller.organization_id is not None:
        raise ApiProblem(FORBIDDEN, "organization-limited users can't create organizations")
    state: AdminState = admin_state(request)
    now = datetime.now(UTC)
    row = {"id": str(uuid.uuid4()), "name": body.name, "created_at": now, "updated_at": now}
    out = _json(OrganizationRow(**row))
    try:
        async with write_transaction(state.engine) as conn:
            await conn.execute(insert(OrganizationRow).values(**row))
            await state.audit.record(
                caller=caller,
                facts=facts,
                action="create",
                resource_type="organization",
                resource_id=out["id"],
                after=out,
                status=201,
                conn=conn,
            )
    except IntegrityError:
        raise _name_taken(body.name) from None
    return respond(out, 201, Location=f"/admin/v1/organizations/{out['id']}")


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
    return respond(await _get(request, org_id, caller))


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
    caller: Caller = Depends(require(Permission.ORGS_WRITE)),
    facts: RequestFacts = Depends(request_facts),
) -> Response:
    state: AdminState = admin_state(request)
    before = await _get(request, org_id, caller)
    precondition = Precondition(if_match, etag_of)
    old_name, new_name = before["name"], body.name
    renamed_at = datetime.now(UTC)
    after = _json(
        OrganizationRow(
            id=org_id,
            name=new_name,
            created_at=datetime.fromisoformat(before["created_at"]),
            updated_at=renamed_at,
        )
    )

    async def rename(conn: AsyncConnection, stored: ConfigVersion | None) -> None:
        current = await _locked(conn, org_id)
        precondition(current)
        if current is None:
            raise ApiProblem(NOT_FOUND, f"organization {org_id!r} does not exist")
        if current["name"] != old_name:
            # Renamed since it was read: the entities relabelled were the old name's.
            raise _renamed_meanwhile(org_id)
        await conn.execute(
            update(OrganizationRow)
            .where(OrganizationRow.id == org_id)
            .values(name=new_name, updated_at=renamed_at)
        )
        await state.audit.record(
            caller=caller,
            facts=facts,
            action="update",
            resource_type="organization",
            resource_id=org_id,
            before=current,
            after=after,
            config_version=None if stored is None else stored.version,
            conn=conn,
        )

    def relabel(current: ConfigState) -> Edit[int]:
        document = current.config.canonical()
        owned = [e for docs in _owned_entities(document, old_name).values() for e in docs]
        for entity in owned:
            entity["organization"] = new_name
        return Edit(
            document if owned and new_name != old_name else None,
            len(owned),
            comment=f"admin API: rename organization {old_name!r} to {new_name!r}",
            on_write=rename,
        )

    try:
        applied = await state.editor.mutate(relabel, author=caller.actor)
        if applied.stored is None:
            async with write_transaction(state.engine) as conn:
                await rename(conn, None)
    except IntegrityError:
        raise _name_taken(new_name) from None
    return respond(after)


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
    caller: Caller = Depends(require(Permission.ORGS_WRITE)),
    facts: RequestFacts = Depends(request_facts),
) -> Response:
    state: AdminState = admin_state(request)
    before = await _get(request, org_id, caller)
    check_if_match(if_match, etag_of(before))  # early answer; the check that counts is below
    owned = _owned_entities((await state.editor.state()).config.canonical(), before["name"])
    if any(owned.values()):
        counts = {kind: len(docs) for kind, docs in owned.items() if docs}
        raise ApiProblem(
            HAS_DEPENDENTS,
            f"organization {before['name']!r} still owns gateway entities ("
            + ", ".join(f"{n} {kind}" for kind, n in counts.items())
            + "); delete them or move them to another organization first",
            dependents=[{"kind": kind, "count": n} for kind, n in counts.items()],
        )
    async with write_transaction(state.engine) as conn:
        current = await _locked(conn, org_id)
        Precondition(if_match, etag_of)(current)
        if current is None:
            raise ApiProblem(NOT_FOUND, f"organization {org_id!r} does not exist")
        if current["name"] != before["name"]:
            # Renamed since it was read: the entities counted above were the old name's.
            raise _renamed_meanwhile(org_id)
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
        await state.audit.record(
            caller=caller,
            facts=facts,
            action="delete",
            resource_type="organization",
            resource_id=org_id,
            before=current,
            status=204,
            conn=conn,
        )
    return Response(status_code=204)
