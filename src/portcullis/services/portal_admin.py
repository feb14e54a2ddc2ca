"""What operators do with the developer portal: list and suspend developers, list
applications, and decide access requests (approve, or reject with a reason).

Developers are deployment-wide, so managing them needs an admin who is not limited to
an organization; applications and access requests are scoped to the organization of
the API they concern (an organization-limited operator sees and decides only theirs;
anything else is "not found").
"""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.services.context import AuditSink, Operation
from portcullis.services.errors import not_found
from portcullis.services.portal_accounts import ACTIVE, SUSPENDED, developer_json
from portcullis.services.portal_apps import (
    AccessRequest,
    Application,
    PortalApps,
    access_request_of,
    application_of,
)
from portcullis.store.engine import write_transaction
from portcullis.store.portal_tables import AccessRequestRow, ApplicationRow, DeveloperRow

RequestStatus = Literal["pending", "approved", "rejected"]
MAX_ROWS = 500


class PortalAdmin:
    """The operators' side of the portal."""

    def __init__(self, engine: AsyncEngine, audit: AuditSink, apps: PortalApps) -> None:
        self._engine = engine
        self._audit = audit
        self._apps = apps

    async def developers(self, op: Operation, *, limit: int = 100) -> list[dict[str, Any]]:
        """Developers, newest first (unlimited admins only)."""
        op.scope.require_unlimited("the developer list")
        query = (
            select(DeveloperRow)
            .order_by(DeveloperRow.created_at.desc(), DeveloperRow.id)
            .limit(min(limit, MAX_ROWS))
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [developer_json(r) for r in rows]

    async def set_developer_status(
        self, op: Operation, developer_id: str, *, suspended: bool
    ) -> dict[str, Any]:
        """Suspend a developer (no sign-in, no portal call) or let them in again."""
        op.scope.require_unlimited("a developer account")
        status = SUSPENDED if suspended else ACTIVE
        async with write_transaction(self._engine) as conn:
            before = (
                await conn.execute(select(DeveloperRow).where(DeveloperRow.id == developer_id))
            ).first()
            if before is None:
                raise not_found(f"developer {developer_id!r} does not exist", target="developer_id")
            await conn.execute(
                update(DeveloperRow)
                .where(DeveloperRow.id == developer_id)
                .values(status=status, updated_at=op.now())
            )
            after = (
                await conn.execute(select(DeveloperRow).where(DeveloperRow.id == developer_id))
            ).one()
            await op.record(
                "suspend" if suspended else "resume",
                "portal_developer",
                developer_id,
                before=developer_json(before),
                after=developer_json(after),
                conn=conn,
            )
        return developer_json(after)

    async def applications(self, op: Operation, *, limit: int = 100) -> list[Application]:
        """Applications, newest first; a limited operator sees their organization's."""
        query = (
            select(ApplicationRow)
            .order_by(ApplicationRow.created_at.desc(), ApplicationRow.id)
            .limit(min(limit, MAX_ROWS))
        )
        if op.scope.limited:
            query = query.where(ApplicationRow.organization_id == op.scope.organization_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [application_of(r) for r in rows]

    async def access_requests(
        self, op: Operation, *, status: RequestStatus | None = None, limit: int = 100
    ) -> list[AccessRequest]:
        """Access requests, oldest first (the queue); a limited operator sees those for
        their organization's APIs."""
        query = (
            select(AccessRequestRow)
            .order_by(AccessRequestRow.created_at, AccessRequestRow.id)
            .limit(min(limit, MAX_ROWS))
        )
        if status is not None:
            query = query.where(AccessRequestRow.status == status)
        if op.scope.limited:
            query = query.where(AccessRequestRow.organization_id == op.scope.organization_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [access_request_of(r) for r in rows]

    async def approve(
        self, op: Operation, request_id: str, reason: str | None = None
    ) -> AccessRequest:
        return await self._apps.decide(op, request_id, approve=True, reason=reason)

    async def reject(self, op: Operation, request_id: str, reason: str) -> AccessRequest:
        return await self._apps.decide(op, request_id, approve=False, reason=reason)
