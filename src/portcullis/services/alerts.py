"""Alerting: alert rules (create, list, get, replace, patch, delete), the current alerts,
detected anomalies and the internal event log.

Alerting spans every organization's traffic, so every operation here but the event log
is for callers who are not limited to an organization (403 otherwise); the event log
shows a limited caller its organization's events. Rule changes are checked
against the rule's rules (`analytics.alerts.rule_problems`, a 422 naming the
field; `notify.webhooks` must name existing operator endpoints, checked in the write
transaction), If-Match is compared on the rule the store locked, and every change is
audited as `alert_rule`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.analytics.alerts import (
    AlertRule,
    AlertRuleExists,
    AlertRuleInvalid,
    AlertRuleNotFound,
    AlertRules,
    AlertRuleSpec,
    AlertState,
    AlertStatus,
    render_rule,
    rule_problems,
)
from portcullis.analytics.anomalies import Signal
from portcullis.events.bus import Event, read_events
from portcullis.events.catalogue import EventType
from portcullis.services.context import Operation
from portcullis.services.errors import ALREADY_EXISTS, ServiceError, invalid, not_found
from portcullis.services.pagination import DEFAULT_LIMIT, MAX_LIMIT, parse_int_cursor
from portcullis.services.preconditions import (
    Precondition,
    apply_merge_patch,
    etag_of,
    etag_without,
)
from portcullis.services.query import rfc3339_only
from portcullis.store.analytics_tables import AnomalyRow, EventRow

RESOURCE_TYPE = "alert_rule"
# The fields a list of rules may be sorted by, and the default (every face offers the same).
RULE_SORT = ("name", "kind", "created_at")
_RANK = {AlertState.FIRING: 0, AlertState.RESOLVING: 1, AlertState.PENDING: 2, AlertState.OK: 3}


def etag_of_rule(rule: AlertRule) -> str:
    return etag_of({"name": rule.name, **rule.settings()})


# Members of a rendered rule (`render_rule`) that are not its settings.
RENDERED_STATE = ("created_at", "updated_at", "status")


def etag_of_rendered_rule(rendered: dict[str, Any]) -> str:
    """`etag_of_rule` of a rule as `render_rule` showed it (for listed rules)."""
    return etag_without(rendered, RENDERED_STATE)


@dataclass(frozen=True, slots=True)
class AnomalyFilter:
    """Conditions on listed anomalies; None means any."""

    credential_id: str | None = None
    client_ip: str | None = None
    consumer: str | None = None
    signal: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class AnomalyConditions(BaseModel):
    """Conditions on listed anomalies, as every face reads them."""

    model_config = ConfigDict(extra="forbid")

    credential_id: str | None = Field(None, max_length=64, description="Only this API key")
    client_ip: str | None = Field(None, max_length=60, description="Only this client address")
    consumer: str | None = Field(None, max_length=128)
    signal: Signal | None = None
    action: Literal["none", "suspended"] | None = None
    since: datetime | None = Field(None, description="Detected at or after (RFC 3339)")
    until: datetime | None = Field(None, description="Detected before (RFC 3339)")

    _check_times = field_validator("since", "until", mode="before")(rfc3339_only)

    def where(self) -> AnomalyFilter:
        return AnomalyFilter(
            credential_id=self.credential_id,
            client_ip=self.client_ip,
            consumer=self.consumer,
            signal=None if self.signal is None else str(self.signal),
            action=self.action,
            since=self.since,
            until=self.until,
        )


class AnomalyQuery(AnomalyConditions):
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Page size")
    cursor: str | None = Field(None, description="`next` cursor of the previous page")


class EventQuery(BaseModel):
    """A read of the event log, as every face reads it."""

    model_config = ConfigDict(extra="forbid")

    after: int = Field(0, ge=0, le=2**62, description="Only events with a higher id")
    kind: list[EventType] = Field(default_factory=list, description="Only these kinds")
    subject: str | None = Field(None, max_length=256)
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Page size")


def anomaly_json(row: Any) -> dict[str, Any]:
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


def _checked(spec: AlertRuleSpec) -> AlertRuleSpec:
    problems = rule_problems(spec)
    if problems:
        raise invalid(problems)
    return spec


def _missing(exc: AlertRuleNotFound) -> ServiceError:
    return not_found(str(exc), target="name")


class AlertService:
    """The alerting operations on one store (`engine`)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._rules = AlertRules(engine)

    # ------------------------------------------------------------------ rules

    async def list_rules(self, op: Operation) -> list[dict[str, Any]]:
        """Every rule with its current state, as JSON (the caller pages them)."""
        op.scope.require_unlimited("alerting")
        return [render_rule(r, s) for r, s in await self._rules.list_rules()]

    async def get(self, op: Operation, name: str) -> tuple[AlertRule, AlertStatus | None]:
        op.scope.require_unlimited("alerting")
        try:
            return await self._rules.get(name)
        except AlertRuleNotFound as exc:
            raise _missing(exc) from None

    async def create(self, op: Operation, name: str, spec: AlertRuleSpec) -> AlertRule:
        op.scope.require_unlimited("alerting")
        try:
            rule = await self._rules.create(name, _checked(spec))
        except AlertRuleExists as exc:
            raise ServiceError(ALREADY_EXISTS, str(exc)) from None
        except AlertRuleInvalid as exc:
            raise invalid(exc.problems) from None
        await op.record(
            "create", RESOURCE_TYPE, rule.name, after=render_rule(rule, None), status=201
        )
        return rule

    async def replace(
        self, op: Operation, name: str, spec: AlertRuleSpec, *, if_match: str | None = None
    ) -> tuple[AlertRule, AlertStatus | None]:
        """Replace a rule's settings."""
        await self.get(op, name)
        checked = _checked(spec)
        return await self._store(op, name, if_match, lambda _: checked)

    async def patch(
        self, op: Operation, name: str, patch: Mapping[str, Any], *, if_match: str | None = None
    ) -> tuple[AlertRule, AlertStatus | None]:
        """Apply a JSON Merge Patch to a rule's settings as stored when it is written."""
        await self.get(op, name)

        def patched(current: AlertRule) -> AlertRuleSpec:
            return _checked(apply_merge_patch(AlertRuleSpec, current.settings(), patch))

        return await self._store(op, name, if_match, patched)

    async def _store(
        self,
        op: Operation,
        name: str,
        if_match: str | None,
        spec: Callable[[AlertRule], AlertRuleSpec],
    ) -> tuple[AlertRule, AlertStatus | None]:
        """Replace the rule with `spec` of its stored state, If-Match checked on that state."""
        precondition = Precondition(if_match, etag_of_rule)
        try:
            stored = await self._rules.replace(name, spec, check=precondition)
            _, status = await self._rules.get(name)
        except AlertRuleNotFound as exc:
            raise _missing(exc) from None
        except AlertRuleInvalid as exc:
            raise invalid(exc.problems) from None
        assert precondition.seen is not None  # the rule was there to be replaced
        before, after = render_rule(precondition.seen, None), render_rule(stored, None)
        await op.record("update", RESOURCE_TYPE, name, before=before, after=after)
        return stored, status

    async def delete(self, op: Operation, name: str, *, if_match: str | None = None) -> None:
        """Delete a rule (a firing alert is resolved)."""
        await self.get(op, name)
        precondition = Precondition(if_match, etag_of_rule)
        try:
            await self._rules.delete(name, check=precondition)
        except AlertRuleNotFound as exc:
            raise _missing(exc) from None
        assert precondition.seen is not None  # the rule was there to be deleted
        before = render_rule(precondition.seen, None)
        await op.record("delete", RESOURCE_TYPE, name, before=before, status=204)

    # ------------------------------------------------------------------ alerts, anomalies, events

    async def alerts(
        self, op: Operation, states: Sequence[AlertState] = ()
    ) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """Every rule's alert (firing first; only `states` when given) and rules per state."""
        op.scope.require_unlimited("alerting")
        items = []
        counts = {str(s): 0 for s in AlertState}
        for rule, status in await self._rules.list_rules():
            current = status.state if status else AlertState.OK
            counts[str(current)] += 1
            if states and current not in states:
                continue
            shown = None if status is None else status.as_json()
            items.append(
                (
                    _RANK[current],
                    rule.name,
                    {
                        "rule": rule.name,
                        "kind": str(rule.kind),
                        "state": str(current),
                        "since": None if shown is None else shown["since"],
                        "value": None if status is None else status.value,
                        "threshold": rule.threshold,
                        "evaluated_at": None if shown is None else shown["evaluated_at"],
                        "scope": rule.scope(),
                        "enabled": rule.enabled,
                    },
                )
            )
        items.sort(key=lambda item: (item[0], item[1]))
        return [i[2] for i in items], counts

    async def anomalies(
        self, op: Operation, where: AnomalyFilter, *, limit: int, cursor: str | None
    ) -> list[Any]:
        """Anomaly rows, newest first, at most `limit + 1` (the extra one: there is more)."""
        op.scope.require_unlimited("alerting")
        t = AnomalyRow
        statement = select(t).order_by(t.id.desc()).limit(limit + 1)
        if cursor is not None:
            statement = statement.where(t.id < parse_int_cursor(cursor))
        if where.credential_id is not None:
            statement = statement.where(t.credential_id == where.credential_id)
        if where.client_ip is not None:
            statement = statement.where(t.client_ip == where.client_ip)
        if where.consumer is not None:
            statement = statement.where(t.consumer == where.consumer)
        if where.signal is not None:
            statement = statement.where(t.signal == where.signal)
        if where.action is not None:
            statement = statement.where(t.action == where.action)
        if where.since is not None:
            statement = statement.where(t.detected_at >= where.since)
        if where.until is not None:
            statement = statement.where(t.detected_at < where.until)
        async with self._engine.connect() as conn:
            return list((await conn.execute(statement)).all())

    async def events(
        self,
        op: Operation,
        *,
        after: int,
        kinds: Sequence[str],
        subject: str | None,
        limit: int,
    ) -> list[Event]:
        """Internal events after id `after`, oldest first, at most `limit + 1`.

        An admin limited to an organization reads that organization's events only (its
        keys', consumers', quotas'); gateway-wide events (alerts, config versions,
        upstream health) have no organization and are for unlimited admins.
        """
        return await read_events(
            self._engine,
            after=after,
            kinds=list(kinds),
            subject=subject,
            limit=limit + 1,
            organization_id=op.scope.organization_id,
        )

    async def recent_events(self, op: Operation, *, limit: int) -> list[Event]:
        """The newest `limit` events the caller may see, newest first (the dashboard's
        feed opens with them; the live stream brings the ones after)."""
        t = EventRow
        query = select(t).order_by(t.id.desc()).limit(limit)
        if op.scope.organization_id is not None:
            query = query.where(t.organization_id == op.scope.organization_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            Event(r.id, r.occurred_at, r.kind, r.subject, json.loads(r.data), r.organization_id)
            for r in rows
        ]
