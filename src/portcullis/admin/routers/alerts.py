"""Alert rules (CRUD), current alerts, detected anomalies and the internal event log.

Rules are deployment-wide, and anomalies and events concern every organization's
consumers, so these endpoints are for admins who are not limited to an
organization (others get 403). Rule changes are audited (`alert_rule`). ETags
cover a rule's settings, not its evaluation state, so an alert changing state does
not make an operator's `If-Match` fail.

Events are listed oldest first from a position (`after`, an event id), the way a
consumer replays them; `next` continues after the last one returned.
Anomalies are listed newest first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select

from portcullis.admin.conditional import Precondition, apply_merge_patch, etag_of
from portcullis.admin.dependencies import RequestFacts, request_facts, require
from portcullis.admin.operations import admin_state
from portcullis.admin.pagination import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    ListQuery,
    keyset_page,
    list_query,
    parse_int_cursor,
)
from portcullis.admin.problems import (
    ALREADY_EXISTS,
    NOT_FOUND,
    ApiProblem,
    problem_responses,
    validation_problem,
)
from portcullis.admin.rbac import Caller, Permission
from portcullis.admin.scoping import scope_of
from portcullis.analytics.alerts import (
    AlertKind,
    AlertRule,
    AlertRuleExists,
    AlertRuleNotFound,
    AlertRules,
    AlertRuleSpec,
    AlertState,
    AlertStatus,
    render_rule,
    rule_problems,
)
from portcullis.analytics.anomalies import Signal
from portcullis.events.bus import read_events
from portcullis.events.catalogue import EventType
from portcullis.model.config import Name
from portcullis.store.analytics_tables import AnomalyRow

router = APIRouter(tags=["Alerts and events"])
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")

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


class EventPage(BaseModel):
    items: list[EventOut]
    next: str | None = Field(description="URL of the events after the last one returned")


class AnomalyQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    credential_id: str | None = Field(None, max_length=64, description="Only this API key")
    client_ip: str | None = Field(None, max_length=60, description="Only this client address")
    consumer: str | None = Field(None, max_length=128)
    signal: Signal | None = None
    action: Literal["none", "suspended"] | None = None
    since: datetime | None = Field(None, description="Detected at or after (RFC 3339)")
    until: datetime | None = Field(None, description="Detected before (RFC 3339)")
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Page size")
    cursor: str | None = Field(None, description="`next` cursor of the previous page")

    @field_validator("since", "until", mode="before")
    @classmethod
    def _rfc3339(cls, value: Any) -> Any:
        # pydantic would read a bare number as a Unix time; the API documents RFC 3339.
        numeric_or_text = isinstance(value, str | int | float) and not isinstance(value, bool)
        if numeric_or_text and not _DATE_TIME.match(str(value)):
            raise ValueError("expected an RFC 3339 date-time, e.g. 2026-01-31T12:00:00Z")
        return value


class EventQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    after: int = Field(0, ge=0, le=2**62, description="Only events with a higher id")
    kind: list[EventType] = Field(default_factory=list, description="Only these kinds")
    subject: str | None = Field(None, max_length=256)
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Page size")


# ---------------------------------------------------------------------------- helpers


def _rules(request: Request) -> AlertRules:
    return AlertRules(admin_state(request).engine)


async def _deployment_wide(request: Request, caller: Caller) -> None:
    (await scope_of(request, caller)).require_unlimited("alerting")


def _etag(rule: AlertRule) -> str:
    return etag_of({"name": rule.name, **rule.settings()})


def _respond(
    rule: AlertRule, status: AlertStatus | None, code: int = 200, **headers: str
) -> Response:
    return JSONResponse(
        render_rule(rule, status), status_code=code, headers={"ETag": _etag(rule), **headers}
    )


async def _existing(request: Request, name: str) -> tuple[AlertRule, AlertStatus | None]:
    try:
        return await _rules(request).get(name)
    except AlertRuleNotFound as exc:
        raise ApiProblem(NOT_FOUND, str(exc)) from None


def _checked(spec: AlertRuleSpec) -> AlertRuleSpec:
    problems = rule_problems(spec)
    if problems:
        raise validation_problem(problems)
    return spec


async def _audit(
    request: Request,
    caller: Caller,
    facts: RequestFacts,
    action: str,
    name: str,
    *,
    before: Any = None,
    after: Any = None,
    status: int = 200,
) -> None:
    await admin_state(request).audit.record(
        caller=caller,
        facts=facts,
        action=action,
        resource_type="alert_rule",
        resource_id=name,
        before=before,
        after=after,
        status=status,
    )


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
    query: ListQuery = Depends(list_query(("name", "kind", "created_at"), "name")),
    caller: Caller = Depends(require(Permission.ALERTS_READ)),
) -> Response:
    await _deployment_wide(request, caller)
    items = [render_rule(r, s) for r, s in await _rules(request).list_rules()]
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
    caller: Caller = Depends(require(Permission.ALERTS_WRITE)),
    facts: RequestFacts = Depends(request_facts),
) -> Response:
    await _deployment_wide(request, caller)
    spec = _checked(AlertRuleSpec.model_validate(body.model_dump(exclude={"name"})))
    try:
        rule = await _rules(request).create(body.name, spec)
    except AlertRuleExists as exc:
        raise ApiProblem(ALREADY_EXISTS, str(exc)) from None
    out = render_rule(rule, None)
    await _audit(request, caller, facts, "create", rule.name, after=out, status=201)
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
    caller: Caller = Depends(require(Permission.ALERTS_READ)),
) -> Response:
    await _deployment_wide(request, caller)
    rule, status = await _existing(request, name)
    return _respond(rule, status)


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
    caller: Caller = Depends(require(Permission.ALERTS_WRITE)),
    facts: RequestFacts = Depends(request_facts),
) -> Response:
    await _deployment_wide(request, caller)
    await _existing(request, name)
    spec = _checked(body)
    return await _store(request, caller, facts, name, if_match, lambda _: spec)


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
    caller: Caller = Depends(require(Permission.ALERTS_WRITE)),
    facts: RequestFacts = Depends(request_facts),
) -> Response:
    await _deployment_wide(request, caller)
    await _existing(request, name)

    def patched(current: AlertRule) -> AlertRuleSpec:
        return _checked(apply_merge_patch(AlertRuleSpec, current.settings(), patch))

    return await _store(request, caller, facts, name, if_match, patched)


async def _store(
    request: Request,
    caller: Caller,
    facts: RequestFacts,
    name: str,
    if_match: str | None,
    spec: Callable[[AlertRule], AlertRuleSpec],
) -> Response:
    """Replace the rule with `spec` of its stored state, If-Match checked on that state."""
    precondition = Precondition(if_match, _etag)
    try:
        stored = await _rules(request).replace(name, spec, check=precondition)
        _, status = await _rules(request).get(name)
    except AlertRuleNotFound as exc:
        raise ApiProblem(NOT_FOUND, str(exc)) from None
    assert precondition.seen is not None  # the rule was there to be replaced
    before, after = render_rule(precondition.seen, None), render_rule(stored, None)
    await _audit(request, caller, facts, "update", name, before=before, after=after)
    return _respond(stored, status)


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
    caller: Caller = Depends(require(Permission.ALERTS_WRITE)),
    facts: RequestFacts = Depends(request_facts),
) -> Response:
    await _deployment_wide(request, caller)
    await _existing(request, name)
    precondition = Precondition(if_match, _etag)
    try:
        await _rules(request).delete(name, check=precondition)
    except AlertRuleNotFound as exc:
        raise ApiProblem(NOT_FOUND, str(exc)) from None
    assert precondition.seen is not None  # the rule was there to be deleted
    before = render_rule(precondition.seen, None)
    await _audit(request, caller, facts, "delete", name, before=before, status=204)
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
    caller: Caller = Depends(require(Permission.ALERTS_READ)),
) -> Response:
    await _deployment_wide(request, caller)
    rank = {
        AlertState.FIRING: 0,
        AlertState.RESOLVING: 1,
        AlertState.PENDING: 2,
        AlertState.OK: 3,
    }
    items = []
    counts = {str(s): 0 for s in AlertState}
    for rule, status in await _rules(request).list_rules():
        current = status.state if status else AlertState.OK
        counts[str(current)] += 1
        if state and current not in state:
            continue
        items.append(
            (
                rank[current],
                rule.name,
                {
                    "rule": rule.name,
                    "kind": str(rule.kind),
                    "state": str(current),
                    "since": None if status is None else status.as_json()["since"],
                    "value": None if status is None else status.value,
                    "threshold": rule.threshold,
                    "evaluated_at": None if status is None else status.as_json()["evaluated_at"],
                    "scope": rule.scope(),
                    "enabled": rule.enabled,
                },
            )
        )
    items.sort(key=lambda item: (item[0], item[1]))
    return JSONResponse({"items": [i[2] for i in items], "counts": counts})


# ---------------------------------------------------------------------------- anomalies


def _anomaly(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "detected_at": row.detected_at.isoformat().replace("+00:00", "Z"),
        "credential_id": row.credential_id,
        "client_ip": row.client_ip,
        "consumer": row.consumer,
        "signal": row.signal,
        "observed": row.observed,
        "baseline": row.baseline,
        "score": row.score,
        "action": row.action,
        "details": json.loads(row.details or "{}"),
    }


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
    caller: Caller = Depends(require(Permission.ALERTS_READ)),
) -> Response:
    await _deployment_wide(request, caller)
    t = AnomalyRow
    statement = select(t).order_by(t.id.desc()).limit(query.limit + 1)
    if query.cursor is not None:
        statement = statement.where(t.id < parse_int_cursor(query.cursor))
    if query.credential_id is not None:
        statement = statement.where(t.credential_id == query.credential_id)
    if query.client_ip is not None:
        statement = statement.where(t.client_ip == query.client_ip)
    if query.consumer is not None:
        statement = statement.where(t.consumer == query.consumer)
    if query.signal is not None:
        statement = statement.where(t.signal == str(query.signal))
    if query.action is not None:
        statement = statement.where(t.action == query.action)
    if query.since is not None:
        statement = statement.where(t.detected_at >= query.since)
    if query.until is not None:
        statement = statement.where(t.detected_at < query.until)
    async with admin_state(request).engine.connect() as conn:
        rows = list((await conn.execute(statement)).all())
    return keyset_page(request, rows, query.limit, key=lambda r: r.id, render=_anomaly)


# ---------------------------------------------------------------------------- events


@router.get(
    "/events",
    summary="Internal events (alerts, anomalies, auto-suspensions), oldest first from `after`",
    response_model=EventPage,
    responses=problem_responses(401, 403, 422, 429),
    operation_id="list_events",
)
async def list_events(
    request: Request,
    query: Annotated[EventQuery, Query()],
    caller: Caller = Depends(require(Permission.ALERTS_READ)),
) -> Response:
    await _deployment_wide(request, caller)
    events = await read_events(
        admin_state(request).engine,
        after=query.after,
        kinds=[k.value for k in query.kind],
        subject=query.subject,
        limit=query.limit + 1,
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
