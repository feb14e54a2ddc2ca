"""Organizations referenced by id: API keys and OAuth clients store `organization_id`
(converted from the organization name they held), audit events record the
organization they concern.

Keys and clients held the organization's *name*, so after a rename another
organization taking the old name inherited them. Each row gets the id of the
organization that has its name now (before any rename under the new scheme, that
is the organization it was created for); a name no organization has becomes NULL
(visible to unlimited admins only). Audit events written before this revision
get the organization of the admin user, API key, OAuth client or organization
they are about, where that is known; the rest stay NULL.

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("api_keys", "oauth_clients")
_orgs = sa.table("admin_organizations", sa.column("id"), sa.column("name"))
_users = sa.table("admin_users", sa.column("id"), sa.column("organization_id"))
_tokens = sa.table("admin_api_tokens", sa.column("id"), sa.column("user_id"))
_events = sa.table(
    "admin_audit_events",
    sa.column("resource_type"),
    sa.column("resource_id"),
    sa.column("organization_id"),
)


def _owned(table: str) -> sa.TableClause:
    key = "client_id" if table == "oauth_clients" else "id"
    return sa.table(table, sa.column(key), sa.column("organization"), sa.column("organization_id"))


def upgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("organization_id", sa.String(length=36), nullable=True))
        t = _owned(table)
        by_name = sa.select(_orgs.c.id).where(_orgs.c.name == t.c.organization).scalar_subquery()
        op.execute(t.update().values(organization_id=by_name))
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f"ix_{table}_organization"))
            batch_op.drop_column("organization")
            batch_op.create_index(
                batch_op.f(f"ix_{table}_organization_id"), ["organization_id"], unique=False
            )

    with op.batch_alter_table("admin_audit_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("organization_id", sa.String(length=36), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_admin_audit_events_organization_id"), ["organization_id"], unique=False
        )
    keys, clients = _owned("api_keys"), _owned("oauth_clients")
    rid = _events.c.resource_id
    owners = {
        "organization": sa.select(_orgs.c.id).where(_orgs.c.id == rid),
        "admin_user": sa.select(_users.c.organization_id).where(_users.c.id == rid),
        "api_key": sa.select(keys.c.organization_id).where(keys.c.id == rid),
        "oauth_client": sa.select(clients.c.organization_id).where(clients.c.client_id == rid),
        "api_token": sa.select(_users.c.organization_id)
        .select_from(_tokens.join(_users, _users.c.id == _tokens.c.user_id))
        .where(_tokens.c.id == rid),
    }
    for resource_type, owner in owners.items():
        op.execute(
            _events.update()
            .where(_events.c.resource_type == resource_type)
            .values(organization_id=owner.scalar_subquery())
        )


def downgrade() -> None:
    with op.batch_alter_table("admin_audit_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_admin_audit_events_organization_id"))
        batch_op.drop_column("organization_id")
    for table in _TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("organization", sa.String(length=128), nullable=True))
        t = _owned(table)
        by_id = sa.select(_orgs.c.name).where(_orgs.c.id == t.c.organization_id).scalar_subquery()
        op.execute(t.update().values(organization=by_id))
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f"ix_{table}_organization_id"))
            batch_op.drop_column("organization_id")
            batch_op.create_index(
                batch_op.f(f"ix_{table}_organization"), ["organization"], unique=False
            )
