"""The audit log: read and export only (there is no API to change or delete events).

Admins limited to an organization read only the events about their organization
(admin/scoping.py); the listing and the export apply the same filter.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from portcullis.admin.dependencies import require
from portcullis.admin.export import ExportFormat, streamed_export
from portcullis.admin.operations import admin_state
from portcullis.admin.pagination import keyset_page
from portcullis.admin.problems import problem_responses
from portcullis.admin.scoping import scope_of
from portcullis.services.audit import AuditEvent, AuditFilter
from portcullis.services.pagination import DEFAULT_LIMIT, MAX_LIMIT, parse_int_cursor
from portcullis.services.rbac import Caller, Permission
from portcullis.services.scoping import OrgScope

_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")
router = APIRouter(prefix="/audit-events", tags=["Audit log"])
CSV_COLUMNS = (
    "id",
    "occurred_at",
    "actor",
    "action",
    "resource_type",
    "resource_id",
    "config_version",
    "request_id",
    "client_ip",
    "status",
    "organization_id",
    "diff",
)


class AuditEventPage(BaseModel):
    items: list[AuditEvent]
    next: str | None


class AuditQuery(BaseModel):
    """Filters shared by the listing and the export."""

    model_config = ConfigDict(extra="forbid")

    actor: str | None = None
    action: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    @field_validator("since", "until", mode="before")
    @classmethod
    def _rfc3339(cls, value: Any) -> Any:
        # pydantic would read a bare number as a Unix time; the API documents RFC 3339.
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            text = str(value)
            if not _DATE_TIME.match(text):
                raise ValueError("expected an RFC 3339 date-time, e.g. 2026-01-31T12:00:00Z")
        return value

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


class AuditExportQuery(AuditQuery):
    format: ExportFormat = Field("jsonl", description="Output format")


@router.get(
    "",
    summary="List audit events, newest first",
    response_model=AuditEventPage,
    responses=problem_responses(400, 401, 403, 422, 429),
    operation_id="list_audit_events",
)
async def list_events(
    request: Request,
    query: Annotated[AuditListQuery, Query()],
    caller: Caller = Depends(require(Permission.AUDIT_READ)),
) -> Response:
    before = None if query.cursor is None else parse_int_cursor(query.cursor)
    events = await admin_state(request).audit.page(
        query.as_filter(await scope_of(request, caller)), limit=query.limit + 1, before_id=before
    )
    return keyset_page(
        request, events, query.limit, key=lambda e: e.id, render=lambda e: e.as_json()
    )


@router.get(
    "/export",
    summary="Export matching audit events, oldest first, streamed as CSV or JSON lines",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The events",
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/jsonl": {"schema": {"type": "string"}},
            },
        },
        **problem_responses(401, 403, 422, 429),
    },
    operation_id="export_audit_events",
)
async def export_events(
    request: Request,
    query: Annotated[AuditExportQuery, Query()],
    caller: Caller = Depends(require(Permission.AUDIT_READ)),
) -> Response:
    events = admin_state(request).audit.stream(query.as_filter(await scope_of(request, caller)))

    async def records() -> AsyncIterator[dict[str, Any]]:
        async for event in events:
            yield event.as_json()

    return streamed_export(
        records(), format=query.format, columns=CSV_COLUMNS, filename="audit-events"
    )
