"""Organizations (tenants): admin users can be limited to one, gateway entities belong to one.

Gateway entities name their organization (`organization: <name>` in the config), so
a rename is also a config change: every entity of the organization is relabelled
in the same transaction that renames it and records the audit event. An
organization that still has admin users or gateway entities can't be deleted.
Organization-limited callers see only their own and can't create any.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from portcullis.services.config_editor import CONCURRENT_CHANGE, ConfigEditor, ConfigState, Edit
from portcullis.services.context import Operation
from portcullis.services.errors import (
    ALREADY_EXISTS,
    FORBIDDEN,
    HAS_DEPENDENTS,
    NOT_FOUND,
    ServiceError,
)
from portcullis.services.preconditions import Precondition, check_if_match, etag_of
from portcullis.services.scoping import SCOPED_COLLECTIONS
from portcullis.store.admin_tables import AdminUserRow, OrganizationRow
from portcullis.store.config_repository import ConfigVersion
from portcullis.store.engine import write_transaction

RESOURCE_TYPE = "organization"
ORG_SORT = ("name", "created_at")


class OrganizationOut(BaseModel):
    id: str
    name: str
    created_at: datetime
    updated_at: datetime


OrgName = Annotated[
    str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._~-]*$")
]


class OrganizationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: OrgName = Field(
        description="Also the value gateway entities put in their `organization` field"
    )


def _json(row: Any) -> dict[str, Any]:
    return OrganizationOut(
        id=row.id, name=row.name, created_at=row.created_at, updated_at=row.updated_at
    ).model_dump(mode="json")


async def _locked(conn: AsyncConnection, org_id: str) -> dict[str, Any] | None:
    """The organization as JSON, locked for the rest of the write transaction (None: gone)."""
    query = select(OrganizationRow).where(OrganizationRow.id == org_id).with_for_update()
    row = (await conn.execute(query)).first()
    return None if row is None else _json(row)


def _renamed_meanwhile(org_id: str) -> ServiceError:
    return ServiceError(
        CONCURRENT_CHANGE,
        f"organization {org_id!r} was renamed meanwhile; retry the request",
        headers={"Retry-After": "1"},
    )


def _name_taken(name: str) -> ServiceError:
    return ServiceError(
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


def _missing(org_id: str) -> ServiceError:
    return ServiceError(NOT_FOUND, f"organization {org_id!r} does not exist", target="org_id")


class OrganizationService:
    """The organization operations on one store (`engine`) and its config (`editor`)."""

    def __init__(self, engine: AsyncEngine, editor: ConfigEditor) -> None:
        self._engine = engine
        self._editor = editor

    async def list(self, op: Operation) -> list[dict[str, Any]]:
        """Every organization the caller may see (as JSON; the caller pages them)."""
        select_orgs = select(OrganizationRow)
        if op.scope.limited:
            select_orgs = select_orgs.where(OrganizationRow.id == op.scope.organization_id)
        async with self._engine.connect() as conn:
            return [_json(r) for r in (await conn.execute(select_orgs)).all()]

    async def get(self, op: Operation, org_id: str) -> dict[str, Any]:
        """One organization; not found also for another than a limited caller's own."""
        if not op.scope.owns(org_id):
            raise _missing(org_id)
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(OrganizationRow).where(OrganizationRow.id == org_id))
            ).first()
        if row is None:
            raise _missing(org_id)
        return _json(row)

    async def create(self, op: Operation, name: str) -> dict[str, Any]:
        """A new organization (unlimited callers only); 409 when the name is taken."""
        if op.scope.limited:
            raise ServiceError(FORBIDDEN, "organization-limited users can't create organizations")
        now = op.now()
        row = {"id": str(uuid.uuid4()), "name": name, "created_at": now, "updated_at": now}
        out = _json(OrganizationRow(**row))
        try:
            async with write_transaction(self._engine) as conn:
                await conn.execute(insert(OrganizationRow).values(**row))
                await op.record(
                    "create", RESOURCE_TYPE, out["id"], after=out, status=201, conn=conn
                )
        except IntegrityError:
            raise _name_taken(name) from None
        return out

    async def rename(
        self, op: Operation, org_id: str, new_name: str, *, if_match: str | None = None
    ) -> dict[str, Any]:
        """Rename an organization and relabel its gateway entities, in one transaction."""
        before = await self.get(op, org_id)
        precondition = Precondition(if_match, etag_of)
        old_name = before["name"]
        renamed_at = op.now()
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
                raise _missing(org_id)
            if current["name"] != old_name:
                # Renamed since it was read: the entities relabelled were the old name's.
                raise _renamed_meanwhile(org_id)
            await conn.execute(
                update(OrganizationRow)
                .where(OrganizationRow.id == org_id)
                .values(name=new_name, updated_at=renamed_at)
            )
            await op.record(
                "update",
                RESOURCE_TYPE,
                org_id,
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
            applied = await self._editor.mutate(relabel, author=op.actor)
            if applied.stored is None:
                async with write_transaction(self._engine) as conn:
                    await rename(conn, None)
        except IntegrityError:
            raise _name_taken(new_name) from None
        return after

    async def delete(self, op: Operation, org_id: str, *, if_match: str | None = None) -> None:
        """Delete an organization that has no admin users and no gateway entities."""
        before = await self.get(op, org_id)
        check_if_match(if_match, etag_of(before))  # early answer; the check that counts is below
        owned = _owned_entities((await self._editor.state()).config.canonical(), before["name"])
        if any(owned.values()):
            counts = {kind: len(docs) for kind, docs in owned.items() if docs}
            raise ServiceError(
                HAS_DEPENDENTS,
                f"organization {before['name']!r} still owns gateway entities ("
                + ", ".join(f"{n} {kind}" for kind, n in counts.items())
                + "); delete them or move them to another organization first",
                dependents=[{"kind": kind, "count": n} for kind, n in counts.items()],
            )
        async with write_transaction(self._engine) as conn:
            current = await _locked(conn, org_id)
            Precondition(if_match, etag_of)(current)
            if current is None:
                raise _missing(org_id)
            if current["name"] != before["name"]:
                # Renamed since it was read: the entities counted above were the old name's.
                raise _renamed_meanwhile(org_id)
            users = await conn.scalar(
                select(func.count())
                .select_from(AdminUserRow)
                .where(AdminUserRow.organization_id == org_id)
            )
            if users:
                raise ServiceError(
                    HAS_DEPENDENTS,
                    f"organization {before['name']!r} still has {users} admin user(s)",
                    dependents=[{"kind": "admin_users", "count": users}],
                )
            await conn.execute(delete(OrganizationRow).where(OrganizationRow.id == org_id))
            await op.record("delete", RESOURCE_TYPE, org_id, before=current, status=204, conn=conn)
