"""Alert rules (CRUD), current alerts, anomalies and the platform event log in the
graph, on `services.alerts.AlertService` as REST's `/admin/v1/alert-rules`,
`/alerts`, `/anomalies` and `/events`.

Rules and anomalies span every organization: organization-limited admins are refused
(ForbiddenProblem / a `forbidden` error), as over REST; the event log shows them
their organization's events only.
"""

from __future__ import annotations

from typing import Annotated, Any

import strawberry
from pydantic import TypeAdapter, ValidationError
from strawberry.scalars import JSON
from strawberry.types import Info

from portcullis.analytics.alerts import AlertRuleSpec, AlertState, render_rule
from portcullis.analytics.anomalies import Signal
from portcullis.graph.connections import Connection, connection, page_size
from portcullis.graph.context import context_of
from portcullis.graph.entities import Deleted
from portcullis.graph.models import input_document, input_type, output_type
from portcullis.graph.problems import result_union
from portcullis.graph.support import (
    Area,
    as_data,
    mutation,
    query,
    returning,
    sort_argument,
    sorted_connection,
    validated,
)
from portcullis.model.types import Name
from portcullis.services.alerts import (
    RULE_SORT,
    AlertService,
    AnomalyConditions,
    EventQuery,
    anomaly_json,
    etag_of_rendered_rule,
)
from portcullis.services.errors import (
    NOT_FOUND,
    ServiceError,
    errors_from_pydantic,
    invalid,
)
from portcullis.services.pagination import parse_int_cursor
from portcullis.services.rbac import Permission

AlertStateEnum = strawberry.enum(AlertState, name="AlertState")
SignalEnum = strawberry.enum(Signal, name="AnomalySignal")
_NAME = TypeAdapter(Name)
RuleSort = sort_argument(RULE_SORT)


@strawberry.type(description="A rule's state at its last evaluation.")
class AlertStatus:
    state: str = strawberry.field(description="ok, pending, firing or resolving")
    since: str = strawberry.field(description="RFC 3339")
    value: float | None = strawberry.field(description="The value evaluated (null: no data)")
    evaluated_at: str = strawberry.field(description="RFC 3339")


def _etag(self: Any) -> str:
    return etag_of_rendered_rule(self)


_etag.__annotations__ = {"self": Any, "return": str}

AlertRule = output_type(
    AlertRuleSpec,
    "AlertRule",
    {
        "name": (str, strawberry.field()),
        "etag": (str, strawberry.field(resolver=_etag, description="ETag (ifMatch)")),
        "created_at": (str, strawberry.field(description="RFC 3339")),
        "updated_at": (str, strawberry.field(description="RFC 3339")),
        "status": (
            AlertStatus | None,
            strawberry.field(description="Null until the first evaluation"),
        ),
    },
)
AlertRuleSpecInput = input_type(AlertRuleSpec)
AlertRuleSpecPatch = input_type(AlertRuleSpec, patch=True)


@strawberry.type(description="The alert rule as the change left it.")
class AlertRulePayload:
    alert_rule: AlertRule  # type: ignore[valid-type]


AlertRuleResult = result_union("AlertRuleResult", AlertRulePayload)
DeleteAlertRuleResult = result_union("DeleteAlertRuleResult", Deleted)


@strawberry.type(description="A rule's current alert.")
class Alert:
    rule: str
    kind: str
    state: str
    since: str | None
    value: float | None
    threshold: float
    evaluated_at: str | None
    scope: JSON
    enabled: bool


@strawberry.type(
    description="Every rule's alert (firing first) and how many rules are in each state."
)
class AlertList:
    items: list[Alert]
    counts: JSON = strawberry.field(description="Rules per state")


@strawberry.type(description="A detected anomaly.")
class Anomaly:
    id: strawberry.ID
    detected_at: str = strawberry.field(description="RFC 3339")
    credential_id: str | None = strawberry.field(description="The API key (null: client IP)")
    client_ip: str | None
    consumer: str | None
    signal: str
    observed: float
    baseline: float
    score: float = strawberry.field(description="z-score against the baseline")
    action: str = strawberry.field(description="none or suspended")
    details: JSON


AnomalyFilterInput = input_type(AnomalyConditions)


@strawberry.type(description="A platform event.")
class PlatformEvent:
    id: strawberry.ID
    occurred_at: str = strawberry.field(description="RFC 3339")
    kind: str
    subject: str
    data: JSON
    organization_id: str | None = strawberry.field(
        description="Null: a gateway-wide event (unlimited admins only)"
    )


def _service(info: Info[Any, Any]) -> AlertService:
    return AlertService(context_of(info).state.engine)


def _spec(value: Any) -> AlertRuleSpec:
    return validated(AlertRuleSpec, value)


def _name(name: str) -> str:
    try:
        return str(_NAME.validate_python(name))
    except ValidationError as exc:
        raise invalid(errors_from_pydantic(exc.errors())) from None


def _payload(rule: Any, status: Any) -> AlertRulePayload:
    return AlertRulePayload(alert_rule=render_rule(rule, status))


async def alert_rules(
    info: Info[Any, Any],
    first: int | None = None,
    after: str | None = None,
    sort: RuleSort = None,  # type: ignore[valid-type]
) -> Connection[AlertRule]:  # type: ignore[valid-type]
    op = await context_of(info).operation(Permission.ALERTS_READ)
    items = await _service(info).list_rules(op)
    return sorted_connection(
        items,
        lambda item: str(item["name"]),
        allowed=RULE_SORT,
        default="name",
        sort=sort,
        first=first,
        after=after,
    )


async def alert_rule(info: Info[Any, Any], name: str) -> AlertRule | None:  # type: ignore[valid-type]
    op = await context_of(info).operation(Permission.ALERTS_READ)
    try:
        rule, status = await _service(info).get(op, name)
    except ServiceError as exc:
        if exc.kind is NOT_FOUND:
            return None
        raise
    return render_rule(rule, status)


@returning(AlertRuleResult)
async def create_alert_rule(
    info: Info[Any, Any],
    name: str,
    input: AlertRuleSpecInput,  # type: ignore[valid-type]
) -> Any:
    async def run() -> AlertRulePayload:
        op = await context_of(info).operation(Permission.ALERTS_WRITE)
        rule = await _service(info).create(op, _name(name), _spec(input))
        return _payload(rule, None)

    return await as_data(run)


@returning(AlertRuleResult)
async def replace_alert_rule(
    info: Info[Any, Any],
    name: str,
    input: AlertRuleSpecInput,  # type: ignore[valid-type]
    if_match: str | None = None,
) -> Any:
    async def run() -> AlertRulePayload:
        op = await context_of(info).operation(Permission.ALERTS_WRITE)
        rule, status = await _service(info).replace(op, name, _spec(input), if_match=if_match)
        return _payload(rule, status)

    return await as_data(run)


@returning(AlertRuleResult)
async def update_alert_rule(
    info: Info[Any, Any],
    name: str,
    patch: AlertRuleSpecPatch,  # type: ignore[valid-type]
    if_match: str | None = None,
) -> Any:
    async def run() -> AlertRulePayload:
        op = await context_of(info).operation(Permission.ALERTS_WRITE)
        service = _service(info)
        rule, status = await service.patch(op, name, input_document(patch), if_match=if_match)
        return _payload(rule, status)

    return await as_data(run)


@returning(DeleteAlertRuleResult)
async def delete_alert_rule(info: Info[Any, Any], name: str, if_match: str | None = None) -> Any:
    async def run() -> Deleted:
        op = await context_of(info).operation(Permission.ALERTS_WRITE)
        await _service(info).delete(op, name, if_match=if_match)
        return Deleted(id=name)

    return await as_data(run)


async def alerts(
    info: Info[Any, Any],
    states: list[AlertStateEnum] | None = None,  # type: ignore[valid-type]
) -> AlertList:
    op = await context_of(info).operation(Permission.ALERTS_READ)
    items, counts = await _service(info).alerts(op, states or ())
    return AlertList(items=items, counts=counts)  # type: ignore[arg-type]  # dict-backed


async def anomalies(
    info: Info[Any, Any],
    first: int | None = None,
    after: str | None = None,
    filter: AnomalyFilterInput | None = None,  # type: ignore[valid-type]
) -> Connection[Anomaly]:
    op = await context_of(info).operation(Permission.ALERTS_READ)
    limit = page_size(first)
    where = validated(AnomalyConditions, filter).where()
    rows = await _service(info).anomalies(op, where, limit=limit, cursor=after)
    following = str(rows[limit - 1].id) if len(rows) > limit else None
    return connection(rows[:limit], following, lambda r: str(r.id), anomaly_json)


async def events(
    info: Info[Any, Any],
    first: int | None = None,
    after: Annotated[
        str | None, strawberry.argument(description="Only events after this one (a cursor)")
    ] = None,
    kind: Annotated[list[str] | None, strawberry.argument(description="Only these kinds")] = None,
    subject: str | None = None,
) -> Connection[PlatformEvent]:
    op = await context_of(info).operation(Permission.ALERTS_READ)
    limit = page_size(first)
    query = validated(
        EventQuery,
        None,
        after=0 if after is None else parse_int_cursor(after),
        kind=kind,
        subject=subject,
        limit=limit,
    )
    rows = await _service(info).events(
        op,
        after=query.after,
        kinds=[k.value for k in query.kind],
        subject=query.subject,
        limit=query.limit,
    )
    following = str(rows[limit - 1].id) if len(rows) > limit else None
    return connection(rows[:limit], following, lambda e: str(e.id), lambda e: e.as_json())


def build() -> Area:
    field = query
    return Area(
        queries={
            "alertRules": field(alert_rules, "Alert rules with their current state"),
            "alertRule": field(alert_rule, "One alert rule; null when absent"),
            "alerts": field(alerts, "Current alerts: every rule's state (firing first)"),
            "anomalies": field(anomalies, "Detected anomalies, newest first"),
            "events": field(
                events,
                "Platform events, oldest first after `after` (an organization's admins: its own)",
            ),
        },
        mutations={
            "createAlertRule": mutation(create_alert_rule, "Create an alert rule"),
            "replaceAlertRule": mutation(replace_alert_rule, "Replace an alert rule's settings"),
            "updateAlertRule": mutation(
                update_alert_rule, "Update an alert rule (JSON Merge Patch: null removes)"
            ),
            "deleteAlertRule": mutation(
                delete_alert_rule, "Delete an alert rule (a firing alert is resolved)"
            ),
        },
    )
