"""The audit log in the dashboard: newest first, filtered by actor, action, resource
type and id, and a time range, through `AuditEventService` (the REST listing's service:
an organization-limited admin reads only their organization's events)."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from portcullis.services.audit_events import AuditEventService, AuditListQuery
from portcullis.services.context import Operation
from portcullis.services.errors import ServiceError
from portcullis.services.rbac import Permission
from portcullis.web.dashboard.access import admin_state, operation
from portcullis.web.templating import render

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 50
FILTERS = ("actor", "action", "resource_type", "resource_id", "since", "until")
# What a `datetime-local` input sends (no zone): read as UTC.
_LOCAL_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?$")


SHOWN_CHANGES = 20


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _instant(text: str) -> str:
    if _LOCAL_TIME.match(text):
        return text + (":00Z" if text.count(":") == 1 else "Z")
    return text


@router.get("/audit")
async def audit_page(
    request: Request, op: Operation = Depends(operation(Permission.AUDIT_READ))
) -> Response:
    params = request.query_params
    given = {f: params.get(f, "").strip() for f in FILTERS}
    query_input: dict[str, Any] = {
        f: (_instant(v) if f in ("since", "until") else v) for f, v in given.items() if v
    }
    cursor = params.get("cursor")
    errors: dict[str, str] = {}
    events: list[Any] = []
    next_url = None
    try:
        query = AuditListQuery(limit=PAGE_SIZE, cursor=cursor, **query_input)
        rows = await AuditEventService(admin_state(request).audit).page(op, query)
    except ValidationError as exc:
        for e in exc.errors():
            field = str(e["loc"][0]) if e.get("loc") else "filters"
            errors[field] = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        rows = []
    except ServiceError as exc:
        errors["cursor"] = exc.detail or exc.kind.title
        rows = []
    if len(rows) > PAGE_SIZE:
        rows = rows[:PAGE_SIZE]
        next_url = "?" + urlencode({**{k: v for k, v in given.items() if v}, "cursor": rows[-1].id})
    for event in rows:
        changes = event.diff.get("changes", []) if isinstance(event.diff, dict) else []
        events.append(
            {
                "event": event,
                "count": len(changes),
                "changes": [
                    (c.get("path", ""), _json(c.get("old")), _json(c.get("new")))
                    for c in changes[:SHOWN_CHANGES]
                ],
            }
        )
    context = {
        "title": "Audit log",
        "filters": given,
        "errors": errors,
        "events": events,
        "next_url": next_url,
    }
    return render(request, "dashboard/audit.html", context, status_code=422 if errors else 200)
