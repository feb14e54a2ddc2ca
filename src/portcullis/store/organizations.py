"""Organizations as the store references them: by their stable id, never by name.

Rows that belong to a tenant (API keys, OAuth clients, admin users, audit events)
hold `organization_id`. A name is only a label: it is looked up when a row is
written (`organization_id_of`) and joined back when one is read
(`organization_name`), so renaming an organization relabels its rows and a later
organization taking the old name gets nothing of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import InstrumentedAttribute

from portcullis.store.admin_tables import OrganizationRow


def organization_name(id_column: InstrumentedAttribute[Any]) -> ColumnElement[Any]:
    """A column (labelled `organization`) with the current name of the row's organization.

    A correlated subquery rather than a join, so the selecting query can still lock its
    own rows (PostgreSQL refuses FOR UPDATE on the nullable side of an outer join).
    """
    return (
        select(OrganizationRow.name)
        .where(OrganizationRow.id == id_column)
        .scalar_subquery()
        .label("organization")
    )


def in_organization_named(id_column: InstrumentedAttribute[Any], name: str) -> ColumnElement[bool]:
    """A condition: the row belongs to the organization called `name` now."""
    return id_column.in_(select(OrganizationRow.id).where(OrganizationRow.name == name))


async def organization_id_of(conn: AsyncConnection, name: str | None) -> str | None:
    """The id of the organization named `name` now (None: no name, or no such organization)."""
    if name is None:
        return None
    found = await conn.scalar(select(OrganizationRow.id).where(OrganizationRow.name == name))
    return None if found is None else str(found)


async def organization_ids_of(conn: AsyncConnection, names: Iterable[str | None]) -> dict[str, str]:
    """Name → id for those of `names` that name an organization now."""
    wanted = {n for n in names if n is not None}
    if not wanted:
        return {}
    rows = await conn.execute(
        select(OrganizationRow.name, OrganizationRow.id).where(OrganizationRow.name.in_(wanted))
    )
    return {str(name): str(org_id) for name, org_id in rows.all()}
