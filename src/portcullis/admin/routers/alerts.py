"""Alert rules (CRUD), current alerts, detected anomalies and the internal event log.

Rules are deployment-wide, and anomalies concern every organization's consumers, so
these endpoints are for admins who are not limited to an organization (others get
403), except the event log: a limited admin reads its organization's events there.
Rule changes are audited (`alert_rule`). ETags cover a rule's settings, not its
evaluation state, so an alert changing state does not make an operator's `If-Match`
fail.

Events are listed oldest first from a position (`after`, an event id), the way a
consumer replays them; `next` continues after the last one returned.
Anomalies are listed newest first.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from portcullis.admin.operations import admin_state, operation, respond
from portcullis.admin.pagination import ListQuery, keyset_page, list_query
from portcullis.admin.problems import (
    problem_responses,
)
from portcullis.analytics.alerts import (
    AlertKind,
    AlertRule,
    AlertRuleSpec,
    AlertState,
    AlertStatus,
    render_rule,
)
from portcullis.analytics.anomalies import Signal
from portcullis.events.catalogue import EventType
from portcullis.model.types import Name
from portcullis.services.alerts import (
    RULE_SORT,
    AlertService,
    AnomalyQuery,
    EventQuery,
    anomaly_json,
    etag_of_rule,
)
from portcullis.services.context import Operation
from portcullis.services.rbac import Permission

router = APIRouter(tags=["Alerts and events"])

MERGE_PATCH = "application/merge-patch+json"
IfMatch = Annotated[
    str | None, Header(description="ETag from a previous read; 412 when it no longer matches")
]
_READ_ERRORS = problem_responses(401, 403, 404, 429)
_LIST_ERRORS = problem_responses(400, 401, 403, 422, 429)
_WRITE_ERRORS = problem_responses(401, 403, 404, 412, 422, 429)


# ---------------------------------------------------------------------------- schemas


class AlertStatusOut(BaseModel):
    state: AlertState = Field(
        description="ok; pending (breached, waiting out the rule's `for_seconds`); firing; "
        "resolving (recovered, waiting out `for_seconds`)"
    )
    since: datetime
    value: float | None = Field(description="The value at the last evaluation (null: no data)")
    evaluated_at: datetime


class AlertRuleOut(AlertRuleSpec):
    name: str
    created_at: datetime
    updated_at: datetime
    status: AlertStatusOut | None = Field(description="Null until the first evaluation")


class AlertRuleIn(AlertRuleSpec):
    name: Name = Field(examples=["checkout-errors"])


class AlertRulePage(BaseModel):
    items: list[AlertRuleOut]
    next: str | None


class AlertOut(BaseModel):
    """A rule's current alert."""

    rule: str
    kind: AlertKind
    state: AlertState
    since: datetime | None
    value: float | None
    threshold: float
    evaluated_at: datetime | None
    scope: dict[str, str]
    enabled: bool


class AlertList(BaseModel):
    items: list[AlertOut]
    counts: dict[str, int] = Field(description="Rules per state")


class AnomalyOut(BaseModel):
    id: int
    detected_at: datetime
    credential_id: str | None = Field(description="The API key (null for client-IP anomalies)")
    client_ip: str | None = Field(description="The client address (client-IP anomalies)")
    consumer: str | None
    signal: Signal
    observed: float
    baseline: float
    score: float = Field(description="z-score of the observation against the baseline")
    action: Literal["none", "suspended"]
    details: dict[str, Any]


class AnomalyPage(BaseModel):
    items: list[AnomalyOut]
    next: str | None


class EventOut(BaseModel):
    id: int
    occurred_at: datetime
    kind: EventType
    subject: str
    data: dict[str, Any]
    organization_id: str | None = Field(
        description="The organization the event belongs to; null: a gateway-wide event "
        "(only admins not limited to an organization see those)"
    )


class EventPage(BaseModel):
    items: list[EventOut]
    next: str | None = Field(description="URL of the events after the last one returned")


# ---------------------------------------------------------------------------- helpers


def _service(request: Request) -> AlertService:
    return AlertService(admin_state(request).engine)


def _respond(
    rule: AlertRule, status: AlertStatus | None, code: int = 200, **headers: str
) -> Response:
    return respond(render_rule(rule, status), code, etag=etag_of_rule(rule), **headers)


# ---------------------------------------------------------------------------- rules


@router.get(
    "/alert-rules",
    summary="List alert rules with their current state",
    response_model=AlertRulePage,
    responses=_LIST_ERRORS,
    operation_id="list_alert_rules",
)
async def list_rules(
    request: Request,
    query: ListQuery = Depends(list_query(RULE_SORT, "name")),
    op: Operation = Depends(operation(Permission.ALERTS_READ)),
) -> Response:
    items = await _service(request).list_rules(op)
    return query.respond(request, items, identity_of=lambda item: str(item["name"]))


@router.post(
    "/alert-rules",
    summary="Create an alert rule",
    status_code=201,
    response_model=AlertRuleOut,
    responses={
        201: {"headers": {"Location": {"schema": {"type": "string"}}}},
        **problem_responses(401, 403, 409, 422, 429),
    },
    operation_id="create_alert_rule",
)
async def create_rule(
    request: Request,
    body: Annotated[
        AlertRuleIn,
        Body(
            openapi_examples={
                "errors": {
                    "summary": "More than 5 % errors on a route over 5 minutes",
                    "value": {
                        "name": "checkout-errors",
                        "kind": "error_rate",
                        "threshold": 0.05,
                        "window_seconds": 300,
                        "min_requests": 50,
                        "route": "checkout",
                    },
                },
                "latency": {
                    "summary": "p95 above 800 ms over 10 minutes",
                    "value": {
                        "name": "slow",
                        "kind": "p95_latency",
                        "threshold": 800,
                        "window_seconds": 600,
                        "for_seconds": 120,
                    },
                },
                "down": {
                    "summary": "An upstream is down",
                    "value": {
                        "name": "orders-down",
                        "kind": "upstream_down",
                        "threshold": 0,
                        "upstream": "orders",
                    },
                },
            }
        ),
    ],
    op: Operation = Depends(operation(Permission.ALERTS_WRITE)),
) -> Response:
    spec = AlertRuleSpec.model_validate(body.model_dump(exclude={"name"}))
    rule = await _service(request).create(op, body.name, spec)
    return _respond(rule, None, 201, Location=f"/admin/v1/alert-rules/{rule.name}")


@router.get(
    "/alert-rules/{name}",
    summary="Get an alert rule and its current state",
    response_model=AlertRuleOut,
    responses=_READ_ERRORS,
    operation_id="get_alert_rule",
)
async def get_rule(
    request: Request,
    name: str,
    op: Operation = Depends(operation(Permission.ALERTS_READ)),
) -> Response:
    return _respond(*await _service(request).get(op, name))


@router.put(
    "/alert-rules/{name}",
    summary="Replace an alert rule's settings",
    response_model=AlertRuleOut,
    responses=_WRITE_ERRORS,
    operation_id="replace_alert_rule",
)
async def replace_rule(
    request: Request,
    name: str,
    body: AlertRuleSpec,
    if_match: IfMatch = None,
    op: Operation = Depends(operation(Permission.ALERTS_WRITE)),
) -> Response:
    return _respond(*await _service(request).replace(op, name, body, if_match=if_match))


@router.patch(
    "/alert-rules/{name}",
    summary="Update an alert rule (JSON Merge Patch)",
    response_model=AlertRuleOut,
    responses=_WRITE_ERRORS,
    operation_id="update_alert_rule",
)
async def update_rule(
    request: Request,
    name: str,
    patch: Annotated[
        dict[str, Any],
        Body(
            media_type=MERGE_PATCH,
            description="JSON Merge Patch (RFC 7396) of the rule's settings: members "
            "replace, null removes (back to the default)",
            openapi_examples={
                "threshold": {"summary": "Raise the threshold", "value": {"threshold": 0.1}},
                "disable": {"summary": "Switch the rule off", "value": {"enabled": False}},
            },
        ),
    ],
    if_match: IfMatch = None,
    op: Operation = Depends(operation(Permission.ALERTS_WRITE)),
) -> Response:
    return _respond(*await _service(request).patch(op, name, patch, if_match=if_match))


@router.delete(
    "/alert-rules/{name}",
    summary="Delete an alert rule (a firing alert is resolved)",
    status_code=204,
    response_class=Response,
    responses=_WRITE_ERRORS,
    operation_id="delete_alert_rule",
)
async def delete_rule(
    request: Request,
    name: str,
    if_match: IfMatch = None,
    op: Operation = Depends(operation(Permission.ALERTS_WRITE)),
) -> Response:
    await _service(request).delete(op, name, if_match=if_match)
    return Response(status_code=204)


# ---------------------------------------------------------------------------- alerts


@router.get(
    "/alerts",
    summary="Current alerts: every rule's state (firing first)",
    response_model=AlertList,
    responses=problem_responses(401, 403, 422, 429),
    operation_id="list_alerts",
)
async def list_alerts(
    request: Request,
    state: Annotated[
        list[AlertState] | None, Query(description="Only rules in these states")
    ] = None,
    op: Operation = Depends(operation(Permission.ALERTS_READ)),
) -> Response:
    items, counts = await _service(request).alerts(op, state or ())
    return JSONResponse({"items": items, "counts": counts})


# ---------------------------------------------------------------------------- anomalies


@router.get(
    "/anomalies",
    summary="Detected anomalies, newest first",
    response_model=AnomalyPage,
    responses=_LIST_ERRORS,
    operation_id="list_anomalies",
)
async def list_anomalies(
    request: Request,
    query: Annotated[AnomalyQuery, Query()],
    op: Operation = Depends(operation(Permission.ALERTS_READ)),
) -> Response:
    rows = await _service(request).anomalies(
        op, query.where(), limit=query.limit, cursor=query.cursor
    )
    return keyset_page(request, rows, query.limit, key=lambda r: r.id, render=anomaly_json)


# ---------------------------------------------------------------------------- events


@router.get(
    "/events",
    summary="Platform events (keys, consumers, config, quotas, alerts, anomalies), oldest "
    "first from `after`; an organization's admins see its events only",
    response_model=EventPage,
    responses=problem_responses(401, 403, 422, 429),
    operation_id="list_events",
)
async def list_events(
    request: Request,
    query: Annotated[EventQuery, Query()],
    op: Operation = Depends(operation(Permission.ALERTS_READ)),
) -> Response:
    events = await _service(request).events(
        op,
        after=query.after,
        kinds=[k.value for k in query.kind],
        subject=query.subject,
        limit=query.limit,
    )
    page = events[: query.limit]
    following = None
    headers: dict[str, str] = {}
    if len(events) > query.limit:
        following = (
            request.url.path + "?" + str(request.url.include_query_params(after=page[-1].id).query)
        )
        headers["Link"] = f'<{following}>; rel="next"'
    return JSONResponse({"items": [e.as_json() for e in page], "next": following}, headers=headers)
