"""The audit log in the graph: read only, newest first, with REST's filters, on
`services.audit_events.AuditEventService` (organization-limited admins read only the
events about their organization, as over REST).

REST's streamed CSV / JSON-lines export has no GraphQL equivalent on purpose: a
GraphQL response is one bounded JSON document; page through `auditEvents` instead.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from portcullis.graph.connections import Connection, connection, page_size
from portcullis.graph.context import context_of
from portcullis.graph.models import input_type
from portcullis.graph.support import Area, validated
from portcullis.services.audit_events import AuditEventService, AuditListQuery, AuditQuery
from portcullis.services.rbac import Permission

AuditFilter = input_type(AuditQuery)


@strawberry.type(description="One recorded change (secrets are never in its diff).")
class AuditEvent:
    id: strawberry.ID
    occurred_at: datetime
    actor: str
    action: str
    resource_type: str
    resource_id: str | None
    diff: JSON
    config_version: int | None
    request_id: str
    client_ip: str | None
    status: int
    organization_id: str | None


async def audit_events(
    info: Info[Any, Any],
    first: int | None = None,
    after: str | None = None,
    filter: AuditFilter | None = None,  # type: ignore[valid-type]
) -> Connection[AuditEvent]:
    ctx = context_of(info)
    op = await ctx.operation(Permission.AUDIT_READ)
    limit = page_size(first)
    query = validated(AuditListQuery, filter, limit=limit, cursor=after)
    rows = await AuditEventService(ctx.state.audit).page(op, query)
    following = str(rows[limit - 1].id) if len(rows) > limit else None
    return connection(rows[:limit], following, lambda e: str(e.id))


def build() -> Area:
    return Area(
        queries={
            "auditEvents": strawberry.field(
                resolver=audit_events,
                description="Audit events, newest first (an organization's admins: its own)",
            )
        }
    )
