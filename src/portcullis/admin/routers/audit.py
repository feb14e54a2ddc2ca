"""The audit log: read and export only (there is no API to change or delete events).

Admins limited to an organization read only the events about their organization;
the listing and the export apply the same filter (services/audit_events.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from portcullis.admin.export import ExportFormat, streamed_export
from portcullis.admin.operations import admin_state, operation
from portcullis.admin.pagination import keyset_page
from portcullis.admin.problems import problem_responses
from portcullis.services.audit import AuditEvent
from portcullis.services.audit_events import AuditEventService, AuditListQuery, AuditQuery
from portcullis.services.context import Operation
from portcullis.services.rbac import Permission

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


class AuditExportQuery(AuditQuery):
    format: ExportFormat = Field("jsonl", description="Output format")


def _service(request: Request) -> AuditEventService:
    return AuditEventService(admin_state(request).audit)


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
    op: Operation = Depends(operation(Permission.AUDIT_READ)),
) -> Response:
    events = await _service(request).page(op, query)
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
    op: Operation = Depends(operation(Permission.AUDIT_READ)),
) -> Response:
    events = _service(request).stream(op, query)

    async def records() -> AsyncIterator[dict[str, Any]]:
        async for event in events:
            yield event.as_json()

    return streamed_export(
        records(), format=query.format, columns=CSV_COLUMNS, filename="audit-events"
    )
