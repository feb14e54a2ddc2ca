"""Set-ups the service-layer tests share (tests/unit/services): a migrated SQLite store
with organizations, the operation of a caller (limited to one organization or not),
and the audit trail it left. No HTTP anywhere."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.model.loader import load_config_data
from portcullis.services.audit import AuditEvent, AuditFilter, AuditLog
from portcullis.services.context import Clock, Operation, RequestFacts, utc_now
from portcullis.services.rbac import ROLE_PERMISSIONS, Caller, Role
from portcullis.services.scoping import OrgScope
from portcullis.store.admin_tables import OrganizationRow
from portcullis.store.config_repository import ConfigRepository
from portcullis.store.engine import create_engine, write_transaction
from portcullis.store.migrations import upgrade_to_head

# Organization `<name>` gets the id `id-<name>`.
ORGANIZATIONS = ("org-a", "org-b")
CREATED = datetime(2030, 1, 1, tzinfo=UTC)
# Two consumers, one per organization.
CONSUMERS: dict[str, Any] = {
    "consumers": [
        {"username": "alice", "organization": "org-a"},
        {"username": "bob", "organization": "org-b"},
    ]
}


async def migrated_store(
    directory: Path, *, organizations: Sequence[str] = ORGANIZATIONS
) -> AsyncEngine:
    """A SQLite store at head in `directory` holding `organizations` (dispose it after)."""
    url = f"sqlite+aiosqlite:///{directory / 'store.db'}"
    await upgrade_to_head(url)
    engine = create_engine(url)
    if organizations:
        async with write_transaction(engine) as conn:
            for name in organizations:
                await conn.execute(
                    insert(OrganizationRow).values(
                        id=f"id-{name}", name=name, created_at=CREATED, updated_at=CREATED
                    )
                )
    return engine


async def apply_config(engine: AsyncEngine, document: dict[str, Any]) -> None:
    """Store `document` as the current config version."""
    await ConfigRepository(engine).apply(load_config_data(document), author="test", comment=None)


def operation(
    engine: AsyncEngine,
    organization: str | tuple[str, str] | None = None,
    *,
    role: Role = Role.ADMIN,
    actor: str = "user:test@example.com",
    user_id: str | None = None,
    request_id: str = "req-1",
    client_ip: str | None = None,
    clock: Clock = utc_now,
) -> Operation:
    """The operation of a `role` caller, limited to `organization` (a name whose id is
    `id-<name>`, or a `(name, id)` pair) or to none, audited into `engine`."""
    if isinstance(organization, str):
        organization = (organization, f"id-{organization}")
    caller = Caller(
        actor=actor,
        role=role,
        permissions=ROLE_PERMISSIONS[role],
        organization_id=None if organization is None else organization[1],
        user_id=user_id,
    )
    scope = OrgScope() if organization is None else OrgScope(*organization)
    facts = RequestFacts(request_id, client_ip)
    return Operation.for_caller(caller, facts, AuditLog(engine), scope, clock)


async def audit_events(engine: AsyncEngine) -> list[AuditEvent]:
    """Every audit event, oldest first."""
    return list(reversed(await AuditLog(engine).page(AuditFilter(), limit=100, before_id=None)))
