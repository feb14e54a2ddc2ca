"""Alert rules on the traffic rollups and on upstream health, and their state machine.

A rule (`alert_rules`) watches one value over a window and fires while it is above
the rule's threshold:

- `error_rate`: errors / requests (errors as the rollups count them: 5xx plus
  requests the gateway refused with a problem), a ratio 0..1;
- `rate_429`: rate-limited / requests (refused by a rate limit or quota), 0..1;
- `p95_latency`: the 95th percentile of total latency in ms, from the merged
  latency sketches of the window's minute rollups (never an average of percentiles);
- `upstream_down`: how many upstreams are down (no data-plane worker can send them
  traffic, `analytics.health`); with `upstream` set, 1 when that one is down.
  It fires when the count is above the threshold (0 by default: any).

Rollup rules read the minute rollups that overlap the last `window_seconds`
(optionally narrowed to a route, service and/or consumer); a minute is rolled up a
little after it ends (`analytics_rollup_lateness`), so the newest ~minute of
traffic is not in the window yet. With fewer than
`min_requests` requests in the window a rollup rule does not fire (a quiet route
with one failed request is not a 100 % error rate worth waking anyone for).

State machine, per rule (`alert_states`): `ok` → `firing` → `ok`, with the rule's
`for_seconds` duration against flapping: a breach first makes the rule `pending`
and it fires only if the breach still holds `for_seconds` later; a firing rule whose
value drops back becomes `resolving` and resolves only if that still holds
`for_seconds` later (a breach meanwhile returns it to `firing` without a new event).
With `for_seconds` = 0 (the default) both steps are immediate. Each rule sets its
own: a noisy p95 rule may want minutes while an upstream-down rule wants none.
Firing and resolving publish `alert.firing` and `alert.resolved` on the event bus;
disabling or deleting a firing rule resolves it. A rule's `notify.webhooks` endpoints
get those events through the webhook outbox, in the transaction of the transition,
whatever their own event-type filters say.

Several control planes may evaluate at once: every state change is a conditional
UPDATE of the state row (from the state and `since` that were read), and only the
writer whose UPDATE matched records the event, in the same transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

import structlog
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from portcullis.analytics.jobs import control_job
from portcullis.events.bus import Event, EventBus, record_event
from portcullis.events.catalogue import EventType
from portcullis.events.outbox import unknown_endpoints
from portcullis.model.types import Name
from portcullis.periodic import Periodic
from portcullis.settings import Settings
from portcullis.store.analytics_tables import AlertRuleRow, AlertStateRow, RollupRow
from portcullis.store.engine import Check, write_transaction

log = structlog.get_logger(__name__)

P95 = 0.95
MAX_WINDOW_SECONDS = 7 * 86400
DEFAULT_INTERVAL = 15.0


class AlertKind(StrEnum):
    ERROR_RATE = "error_rate"
    P95_LATENCY = "p95_latency"
    RATE_429 = "rate_429"
    UPSTREAM_DOWN = "upstream_down"


RATIO_KINDS = frozenset({AlertKind.ERROR_RATE, AlertKind.RATE_429})
TRAFFIC_KINDS = frozenset({AlertKind.ERROR_RATE, AlertKind.RATE_429, AlertKind.P95_LATENCY})


class AlertState(StrEnum):
    OK = "ok"
    PENDING = "pending"  # breached, waiting out the `for` duration before firing
    FIRING = "firing"
    RESOLVING = "resolving"  # firing, recovered, waiting out `for` before resolving


ACTIVE_STATES = frozenset({AlertState.FIRING, AlertState.RESOLVING})


# ---------------------------------------------------------------------------- rules


class AlertNotify(BaseModel):
    """Webhook endpoints a rule notifies (the operator's: alert rules span every
    organization, so their events have none)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    webhooks: list[Annotated[str, Field(min_length=1, max_length=40)]] = Field(
        default_factory=list,
        max_length=20,
        description="Webhook endpoint ids (`ep_…`)",
        examples=[["ep_01hzy3v5k8m2n4p6q8r0s2t4v6"]],
    )


class AlertRuleSpec(BaseModel):
    """What an operator sets on a rule (its name is the resource's identity).

    Strict: JSON `false` is not a number and `0` is not a boolean here."""

    model_config = ConfigDict(extra="forbid", strict=True)

    kind: Annotated[AlertKind, Field(strict=False)]
    threshold: float = Field(
        ge=0,
        allow_inf_nan=False,
        description="Fires above this value: a ratio 0..1 for error_rate and rate_429, "
        "milliseconds for p95_latency, a number of down upstreams for upstream_down",
        examples=[0.05],
    )
    window_seconds: int = Field(
        300,
        ge=60,
        le=MAX_WINDOW_SECONDS,
        description="Range of minute rollups looked at (whole minutes)",
    )
    min_requests: int = Field(
        1, ge=0, le=2**31 - 1, description="Rollup rules stay quiet below this many requests"
    )
    for_seconds: int = Field(
        0,
        ge=0,
        le=86_400,
        description="A breach fires, and a recovery resolves, only once it has held this "
        "long (seconds; 0: at the first evaluation that sees it)",
    )
    route: Name | None = Field(None, description="Only this route's traffic")
    service: Name | None = Field(None, description="Only this service's traffic")
    consumer: Name | None = Field(None, description="Only this consumer's traffic")
    upstream: Name | None = Field(None, description="upstream_down: only this upstream")
    enabled: bool = True
    description: Annotated[str, Field(max_length=2000)] | None = None
    notify: AlertNotify | None = Field(
        None,
        description="Where the rule's alert.firing and alert.resolved are also sent, "
        "whatever the endpoints' event-type filters say",
    )


def rule_problems(spec: AlertRuleSpec) -> list[tuple[str, str]]:
    """Rule-level checks a field type can't express, as (JSON pointer, detail) pairs."""
    problems: list[tuple[str, str]] = []
    if spec.kind in RATIO_KINDS and spec.threshold > 1:
        problems.append(("#/threshold", f"{spec.kind} is a ratio: the threshold must be 0..1"))
    if spec.window_seconds % 60:
        problems.append(("#/window_seconds", "must be a whole number of minutes (60, 120, …)"))
    if spec.notify is not None:
        for i, endpoint in enumerate(spec.notify.webhooks):
            if endpoint in spec.notify.webhooks[:i]:
                problems.append((f"#/notify/webhooks/{i}", f"{endpoint!r} is listed twice"))
    if spec.kind is AlertKind.UPSTREAM_DOWN:
        for field in ("route", "service", "consumer"):
            if getattr(spec, field) is not None:
                problems.append((f"#/{field}", "upstream_down rules are scoped by upstream only"))
    elif spec.upstream is not None:
        problems.append(
            ("#/upstream", f"only upstream_down rules take an upstream, not {spec.kind}")
        )
    return problems


@dataclass(frozen=True, slots=True)
class AlertRule:
    """A stored rule."""

    name: str
    kind: AlertKind
    threshold: float
    window_seconds: int
    min_requests: int
    for_seconds: int
    route: str | None
    service: str | None
    consumer: str | None
    upstream: str | None
    enabled: bool
    description: str | None
    created_at: datetime
    updated_at: datetime
    # Webhook endpoints that get this rule's alert events (`AlertRuleSpec.notify`).
    notify_webhooks: tuple[str, ...] = ()

    def scope(self) -> dict[str, str]:
        scope = {
            "route": self.route,
            "service": self.service,
            "consumer": self.consumer,
            "upstream": self.upstream,
        }
        return {k: v for k, v in scope.items() if v is not None}

    def settings(self) -> dict[str, Any]:
        """The editable fields as JSON (the target of a merge patch)."""
        return {
            "kind": str(self.kind),
            "threshold": self.threshold,
            "window_seconds": self.window_seconds,
            "min_requests": self.min_requests,
            "for_seconds": self.for_seconds,
            "route": self.route,
            "service": self.service,
            "consumer": self.consumer,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "description": self.description,
            "notify": {"webhooks": list(self.notify_webhooks)} if self.notify_webhooks else None,
        }


@dataclass(frozen=True, slots=True)
class AlertStatus:
    """A rule's current state."""

    rule: str
    state: AlertState
    since: datetime
    value: float | None
    evaluated_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "state": str(self.state),
            "since": _iso(self.since),
            "value": self.value,
            "evaluated_at": _iso(self.evaluated_at),
        }


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _rule(row: Any) -> AlertRule:
    """A rule from an `alert_rules` row."""
    return AlertRule(
        name=row.name,
        kind=AlertKind(row.kind),
        threshold=row.threshold,
        window_seconds=row.window_seconds,
        min_requests=row.min_requests,
        for_seconds=row.for_seconds,
        route=row.route,
        service=row.service,
        consumer=row.consumer,
        upstream=row.upstream,
        enabled=row.enabled,
        description=row.description,
        created_at=row.created_at,
        updated_at=row.updated_at,
        notify_webhooks=tuple(json.loads(row.notify)["webhooks"]) if row.notify else (),
    )


def _row_values(spec: AlertRuleSpec) -> dict[str, Any]:
    """A spec as `alert_rules` columns."""
    webhooks = spec.notify.webhooks if spec.notify is not None else []
    return {
        **spec.model_dump(exclude={"notify"}),
        "kind": str(spec.kind),
        "notify": json.dumps({"webhooks": webhooks}) if webhooks else None,
    }


async def _check_notify(conn: AsyncConnection, spec: AlertRuleSpec) -> None:
    """`AlertRuleInvalid` naming each `notify` endpoint that does not exist among the
    operator's endpoints (read in the rule's write transaction)."""
    if spec.notify is None:
        return
    webhooks = spec.notify.webhooks
    unknown = set(await unknown_endpoints(conn, webhooks, None))
    if unknown:
        raise AlertRuleInvalid(
            [
                (
                    f"#/notify/webhooks/{i}",
                    f"no webhook endpoint {endpoint!r} (of the operator: alert events "
                    "belong to no organization)",
                )
                for i, endpoint in enumerate(webhooks)
                if endpoint in unknown
            ]
        )


def _status(row: Any) -> AlertStatus:
    """A state from an `alert_states` row."""
    return AlertStatus(row.rule, AlertState(row.state), row.since, row.value, row.evaluated_at)


class AlertRuleNotFound(LookupError):
    """No alert rule has that name."""


class AlertRuleExists(ValueError):
    """An alert rule with that name exists already."""


class AlertRuleInvalid(ValueError):
    """A rule's settings refer to what is not there: (JSON pointer, detail) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{where}: {detail}" for where, detail in problems))
        self.problems = problems


class AlertRules:
    """Alert rules and states in the store: what the admin API reads and changes."""

    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], datetime] | None = None) -> None:
        self._engine = engine
        self._clock = clock or (lambda: datetime.now(UTC))

    async def list_rules(self) -> list[tuple[AlertRule, AlertStatus | None]]:
        """Every rule (by name) with its state (None before its first evaluation)."""
        async with self._engine.connect() as conn:
            rules = (await conn.execute(select(AlertRuleRow).order_by(AlertRuleRow.name))).all()
            out = [_rule(r) for r in rules]
            states = {s.rule: _status(s) for s in (await conn.execute(select(AlertStateRow))).all()}
        return [(r, states.get(r.name)) for r in out]

    async def get(self, name: str) -> tuple[AlertRule, AlertStatus | None]:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(AlertRuleRow).where(AlertRuleRow.name == name))
            ).first()
            state = (
                await conn.execute(select(AlertStateRow).where(AlertStateRow.rule == name))
            ).first()
        if row is None:
            raise AlertRuleNotFound(f"alert rule {name!r} does not exist")
        return _rule(row), None if state is None else _status(state)

    async def create(self, name: str, spec: AlertRuleSpec) -> AlertRule:
        now = self._clock()
        values = _row_values(spec)
        try:
            async with write_transaction(self._engine) as conn:
                await _check_notify(conn, spec)
                await conn.execute(
                    insert(AlertRuleRow).values(name=name, created_at=now, updated_at=now, **values)
                )
        except IntegrityError:
            raise AlertRuleExists(f"alert rule {name!r} already exists") from None
        return (await self.get(name))[0]

    async def replace(
        self,
        name: str,
        spec: AlertRuleSpec | Callable[[AlertRule], AlertRuleSpec],
        *,
        check: Check[AlertRule] | None = None,
    ) -> AlertRule:
        """Replace a rule's settings; `spec` may be a function of the rule as stored (a
        merge patch). It and `check` run on the rule locked in the write transaction."""
        async with write_transaction(self._engine) as conn:
            current = await self._lock(conn, name, check)
            if callable(spec):
                spec = spec(current)
            await _check_notify(conn, spec)
            values = _row_values(spec)
            await conn.execute(
                update(AlertRuleRow)
                .where(AlertRuleRow.name == name)
                .values(updated_at=self._clock(), **values)
            )
        return (await self.get(name))[0]

    async def _lock(
        self, conn: AsyncConnection, name: str, check: Check[AlertRule] | None
    ) -> AlertRule:
        """The rule, locked for the rest of the write transaction, after `check` passed on it."""
        row = (
            await conn.execute(
                select(AlertRuleRow).where(AlertRuleRow.name == name).with_for_update()
            )
        ).first()
        rule = None if row is None else _rule(row)
        if check is not None:
            check(rule)
        if rule is None:
            raise AlertRuleNotFound(f"alert rule {name!r} does not exist")
        return rule

    async def delete(self, name: str, *, check: Check[AlertRule] | None = None) -> list[Event]:
        """Delete a rule and its state; a firing rule is resolved (the event is returned,
        stored but not yet fanned out). `check` runs on the rule locked for the delete."""
        async with write_transaction(self._engine) as conn:
            rule = await self._lock(conn, name, check)
            state = (
                await conn.execute(select(AlertStateRow).where(AlertStateRow.rule == name))
            ).first()
            events = []
            if state is not None and state.state in ACTIVE_STATES:
                events.append(
                    await record_event(
                        conn,
                        EventType.ALERT_RESOLVED,
                        name,
                        _event_data(rule, state.value, reason="deleted"),
                        notify=rule.notify_webhooks,
                    )
                )
            await conn.execute(delete(AlertStateRow).where(AlertStateRow.rule == name))
            await conn.execute(delete(AlertRuleRow).where(AlertRuleRow.name == name))
        return events


# ---------------------------------------------------------------------------- state machine


@dataclass(frozen=True, slots=True)
class Step:
    """The outcome of one evaluation: the new state, since when, and the event to publish."""

    state: AlertState
    since: datetime
    event: EventType | None


def next_state(
    state: AlertState, since: datetime, breached: bool, now: datetime, for_seconds: float
) -> Step:
    """The state machine of the module docstring (pure: no I/O, for any `now`)."""
    held = timedelta(seconds=for_seconds)
    if state is AlertState.OK:
        if not breached:
            return Step(state, since, None)
        if for_seconds <= 0:
            return Step(AlertState.FIRING, now, EventType.ALERT_FIRING)
        return Step(AlertState.PENDING, now, None)
    if state is AlertState.PENDING:
        if not breached:
            return Step(AlertState.OK, now, None)
        if now - since >= held:
            return Step(AlertState.FIRING, now, EventType.ALERT_FIRING)
        return Step(state, since, None)
    if state is AlertState.FIRING:
        if breached:
            return Step(state, since, None)
        if for_seconds <= 0:
            return Step(AlertState.OK, now, EventType.ALERT_RESOLVED)
        return Step(AlertState.RESOLVING, now, None)
    # RESOLVING
    if breached:
        return Step(AlertState.FIRING, since, None)
    if now - since >= held:
        return Step(AlertState.OK, now, EventType.ALERT_RESOLVED)
    return Step(state, since, None)


# ---------------------------------------------------------------------------- measuring

HealthSource = Callable[[AsyncEngine], Awaitable[dict[str, Any] | None]]


async def default_health(engine: AsyncEngine) -> dict[str, Any] | None:
    """The merged upstream health of the data plane (None when it can't be read)."""
    from portcullis.analytics.health import upstream_health_summary

    return await upstream_health_summary(engine)


@dataclass(frozen=True, slots=True)
class Measurement:
    """A rule's value now (None: no data to judge, e.g. too few requests) and the
    request count it is based on (rollup rules)."""

    value: float | None
    requests: int = 0


def _scoped(query: Any, rule: AlertRule) -> Any:
    for column, value in (
        (RollupRow.route, rule.route),
        (RollupRow.service, rule.service),
        (RollupRow.consumer, rule.consumer),
    ):
        if value is not None:
            query = query.where(column == value)
    return query


async def measure_traffic(conn: AsyncConnection, rule: AlertRule, now: datetime) -> Measurement:
    """A rollup rule's value over its window (see the module docstring)."""
    # Every minute bucket that overlaps [now - window, now).
    start = int(now.timestamp()) - rule.window_seconds
    window = (RollupRow.granularity == "minute", RollupRow.bucket_start > start - 60)
    totals = _scoped(
        select(
            func.coalesce(func.sum(RollupRow.requests), 0),
            func.coalesce(func.sum(RollupRow.errors), 0),
            func.coalesce(func.sum(RollupRow.rate_limited), 0),
        ).where(*window),
        rule,
    )
    requests, errors, limited = (await conn.execute(totals)).one()
    requests = int(requests)
    if requests == 0 or requests < rule.min_requests:
        return Measurement(None, requests)
    if rule.kind is AlertKind.ERROR_RATE:
        return Measurement(int(errors) / requests, requests)
    if rule.kind is AlertKind.RATE_429:
        return Measurement(int(limited) / requests, requests)
    from portcullis.analytics.sketch import LatencySketch, SketchError

    merged = LatencySketch()
    for (blob,) in await conn.execute(_scoped(select(RollupRow.sketch).where(*window), rule)):
        try:
            merged.merge(LatencySketch.from_bytes(blob))
        except SketchError:
            log.warning("alerts.bad_sketch", rule=rule.name)
    return Measurement(merged.quantile(P95), requests)


def measure_upstreams(rule: AlertRule, summary: dict[str, Any] | None) -> Measurement:
    """An upstream_down rule's value from the merged health summary."""
    if not summary or not summary.get("workers"):
        return Measurement(None)
    statuses = {u["name"]: u["status"] for u in summary.get("upstreams", ())}
    if rule.upstream is not None:
        if rule.upstream not in statuses:
            return Measurement(None)
        return Measurement(1.0 if statuses[rule.upstream] == "down" else 0.0)
    return Measurement(float(sum(1 for s in statuses.values() if s == "down")))


def _event_data(
    rule: AlertRule,
    value: float | None,
    *,
    since: datetime | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "rule": rule.name,
        "kind": str(rule.kind),
        "value": value,
        "threshold": rule.threshold,
        "window_seconds": rule.window_seconds,
        "scope": rule.scope(),
    }
    if since is not None:
        data["since"] = _iso(since)
    if reason is not None:
        data["reason"] = reason
    return data


# ---------------------------------------------------------------------------- evaluation


class AlertEvaluator:
    """One evaluation round over every rule: measure, step the state machine, record
    transitions (conditionally, see the module docstring), then fan out their events."""

    def __init__(
        self,
        engine: AsyncEngine,
        bus: EventBus,
        *,
        health: HealthSource = default_health,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._engine = engine
        self._bus = bus
        self._health = health
        self._clock = clock or (lambda: datetime.now(UTC))

    async def run_once(self, now: datetime | None = None) -> list[Event]:
        """Evaluate every rule once; returns the events this round published."""
        moment = now if now is not None else self._clock()
        async with self._engine.connect() as conn:
            rules = [_rule(r) for r in (await conn.execute(select(AlertRuleRow))).all()]
            states = {s.rule: _status(s) for s in (await conn.execute(select(AlertStateRow))).all()}
        summary: dict[str, Any] | None = None
        if any(r.enabled and r.kind is AlertKind.UPSTREAM_DOWN for r in rules):
            try:
                summary = await self._health(self._engine)
            except Exception as exc:  # the health summary is optional input, never fatal
                log.warning("alerts.health_unavailable", error=repr(exc))
        events: list[Event] = []
        for rule in sorted(rules, key=lambda r: r.name):
            try:
                events += await self._evaluate(rule, states.get(rule.name), summary, moment)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("alerts.rule_failed", rule=rule.name, error=repr(exc))
        if events:
            await self._bus.deliver(events)
        return events

    async def _measure(
        self, rule: AlertRule, summary: dict[str, Any] | None, now: datetime
    ) -> Measurement:
        if not rule.enabled:
            return Measurement(None)
        if rule.kind is AlertKind.UPSTREAM_DOWN:
            return measure_upstreams(rule, summary)
        async with self._engine.connect() as conn:
            return await measure_traffic(conn, rule, now)

    async def _evaluate(
        self,
        rule: AlertRule,
        status: AlertStatus | None,
        summary: dict[str, Any] | None,
        now: datetime,
    ) -> list[Event]:
        measured = await self._measure(rule, summary, now)
        value = measured.value
        stored_value = value if value is None or math.isfinite(value) else None
        breached = value is not None and value > rule.threshold
        if status is None:
            status = await self._initial_state(rule.name, now)
        for_seconds = rule.for_seconds if rule.enabled else 0
        step = next_state(status.state, status.since, breached, now, for_seconds)
        async with write_transaction(self._engine) as conn:
            if step.state is status.state and step.since == status.since:
                await conn.execute(
                    update(AlertStateRow)
                    .where(AlertStateRow.rule == rule.name)
                    .values(value=stored_value, evaluated_at=now)
                )
                return []
            result = await conn.execute(
                update(AlertStateRow)
                .where(
                    AlertStateRow.rule == rule.name,
                    AlertStateRow.state == str(status.state),
                    AlertStateRow.since == status.since,
                )
                .values(
                    state=str(step.state), since=step.since, value=stored_value, evaluated_at=now
                )
            )
            if result.rowcount != 1:
                return []  # another control plane moved this rule first
            if step.event is None:
                return []
            if step.event is EventType.ALERT_FIRING:
                data = _event_data(rule, stored_value, since=step.since)
            else:
                data = _event_data(
                    rule, stored_value, reason="recovered" if rule.enabled else "disabled"
                )
            event = await record_event(
                conn, step.event, rule.name, data, now=now, notify=rule.notify_webhooks
            )
        log.info("alerts.transition", rule=rule.name, kind=event.kind, value=stored_value)
        return [event]

    async def _initial_state(self, rule: str, now: datetime) -> AlertStatus:
        """The rule's state row, created `ok` if it has none yet."""
        # Another control plane may have created it first: that row is as good.
        with contextlib.suppress(IntegrityError):
            async with write_transaction(self._engine) as conn:
                await conn.execute(
                    insert(AlertStateRow).values(
                        rule=rule, state=str(AlertState.OK), since=now, value=None, evaluated_at=now
                    )
                )
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(AlertStateRow).where(AlertStateRow.rule == rule))
            ).one()
        return _status(row)


def alert_job(engine: AsyncEngine, settings: Settings, bus: EventBus) -> Periodic:
    """The background job: an evaluation round every `alerts_interval` seconds."""
    return control_job("alerts", AlertEvaluator(engine, bus).run_once, settings.alerts_interval)


def render_rule(rule: AlertRule, status: AlertStatus | None) -> dict[str, Any]:
    """A rule as the admin API shows it: its settings, times and current state."""
    return {
        "name": rule.name,
        **rule.settings(),
        "created_at": _iso(rule.created_at),
        "updated_at": _iso(rule.updated_at),
        "status": None if status is None else status.as_json(),
    }


def states_of(items: Sequence[tuple[AlertRule, AlertStatus | None]]) -> dict[str, int]:
    """How many rules are in each state (rules never evaluated count as ok)."""
    counts = {str(s): 0 for s in AlertState}
    for _, status in items:
        counts[str(status.state if status else AlertState.OK)] += 1
    return counts
