"""Reading the audit log: a page of events newest first, or every matching event oldest
first for an export. There is no operation to change or delete events. Callers limited
to an organization read only the events about their organization.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from portcullis.services.audit import AuditEvent, AuditFilter, AuditLog
from portcullis.services.context import Operation
from portcullis.services.pagination import DEFAULT_LIMIT, MAX_LIMIT, parse_int_cursor
from portcullis.services.query import rfc3339_only
from portcullis.services.scoping import OrgScope


class AuditQuery(BaseModel):
    """Filters shared by the listing and the export."""

    model_config = ConfigDict(extra="forbid")

    actor: str | None = None
    action: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    _check_times = field_validator("since", "until", mode="before")(rfc3339_only)

    def as_filter(self, scope: OrgScope) -> AuditFilter:
        return AuditFilter(
            organization_id=scope.organization_id,
            actor=self.actor,
            action=self.action,
            resource_type=self.resource_type,
            resource_id=self.resource_id,
            since=self.since,
            until=self.until,
        )


class AuditListQuery(AuditQuery):
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Page size")
    cursor: str | None = Field(None, description="`next` cursor of the previous page")


class AuditEventService:
    """The audit log as the caller may read it."""

    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit

    async def page(self, op: Operation, query: AuditListQuery) -> list[AuditEvent]:
        """Events older than the cursor's, newest first: up to `query.limit` and one more
        when there is a next page."""
        before = None if query.cursor is None else parse_int_cursor(query.cursor)
        return await self._audit.page(
            query.as_filter(op.scope), limit=query.limit + 1, before_id=before
        )

    def stream(self, op: Operation, query: AuditQuery) -> AsyncIterator[AuditEvent]:
        """Every matching event, oldest first."""
        return self._audit.stream(query.as_filter(op.scope))
