"""The alert state machine (with and without a `for` duration), rule validation and the
upstream-down measurement."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from portcullis.analytics.alerts import (
    AlertKind,
    AlertRule,
    AlertRuleSpec,
    AlertState,
    Step,
    measure_upstreams,
    next_state,
    rule_problems,
)
from portcullis.events.catalogue import EventType

T0 = datetime(2030, 1, 1, tzinfo=UTC)
OK, PENDING, FIRING, RESOLVING = (
    AlertState.OK,
    AlertState.PENDING,
    AlertState.FIRING,
    AlertState.RESOLVING,
)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def run(breaches: list[bool], for_seconds: float, step: float = 15) -> list[tuple[Any, ...]]:
    """Feed one evaluation per `step` seconds; the states and events seen."""
    state, since = OK, T0
    out = []
    for n, breached in enumerate(breaches):
        result = next_state(state, since, breached, at(n * step), for_seconds)
        state, since = result.state, result.since
        out.append((state, result.event))
    return out


def test_without_for_a_breach_fires_and_a_recovery_resolves_at_once() -> None:
    assert run([False, True, True, False, False], 0) == [
        (OK, None),
        (FIRING, EventType.ALERT_FIRING),
        (FIRING, None),
        (OK, EventType.ALERT_RESOLVED),
        (OK, None),
    ]


def test_with_for_a_breach_must_hold_before_firing() -> None:
    # for = 30 s, one evaluation every 15 s: pending at 0 s, still at 15 s, fires at 30 s.
    assert run([True, True, True, True], 30) == [
        (PENDING, None),
        (PENDING, None),
        (FIRING, EventType.ALERT_FIRING),
        (FIRING, None),
    ]


def test_the_flapping_guard_swallows_short_breaches_and_short_recoveries() -> None:
    flapping = [True, False, True, False, True, False]
    assert all(event is None for _, event in run(flapping, 30))
    # Once firing, a recovery that does not hold for 30 s does not resolve it.
    states = run([True, True, True, False, True, False, False, False], 30)
    events = [e for _, e in states if e is not None]
    assert events == [EventType.ALERT_FIRING, EventType.ALERT_RESOLVED]
    assert [s for s, _ in states] == [
        PENDING,
        PENDING,
        FIRING,
        RESOLVING,
        FIRING,
        RESOLVING,
        RESOLVING,
        OK,
    ]


def test_returning_from_resolving_keeps_the_original_firing_time() -> None:
    fired = next_state(OK, T0, True, at(10), 0)
    assert fired == Step(FIRING, at(10), EventType.ALERT_FIRING)
    resolving = next_state(FIRING, fired.since, False, at(20), 60)
    assert resolving == Step(RESOLVING, at(20), None)
    again = next_state(RESOLVING, resolving.since, True, at(30), 60)
    assert again.state is FIRING
    assert again.event is None


def spec(**fields: Any) -> AlertRuleSpec:
    return AlertRuleSpec.model_validate({"kind": "error_rate", "threshold": 0.1, **fields})


def test_rule_problems_name_the_field() -> None:
    assert rule_problems(spec()) == []
    assert rule_problems(spec(threshold=1.5)) == [
        ("#/threshold", "error_rate is a ratio: the threshold must be 0..1")
    ]
    assert rule_problems(spec(kind="p95_latency", threshold=1500)) == []
    assert [p for p, _ in rule_problems(spec(window_seconds=90))] == ["#/window_seconds"]
    assert [p for p, _ in rule_problems(spec(upstream="orders"))] == ["#/upstream"]
    down = spec(kind="upstream_down", threshold=0, route="r", consumer="c", upstream="orders")
    assert [p for p, _ in rule_problems(down)] == ["#/route", "#/consumer"]


def test_spec_types_reject_bad_values() -> None:
    for bad in (
        {"threshold": -1},
        {"threshold": float("nan")},
        {"window_seconds": 30},
        {"kind": "cpu"},
        {"route": "has space"},
        {"colour": "red"},
        {"for_seconds": -1},
        {"for_seconds": 86_401},
        {"for_seconds": 2.5},
    ):
        with pytest.raises(ValidationError):
            spec(**bad)


def rule(upstream: str | None = None, threshold: float = 0) -> AlertRule:
    return AlertRule(
        name="down",
        kind=AlertKind.UPSTREAM_DOWN,
        threshold=threshold,
        window_seconds=60,
        min_requests=1,
        for_seconds=0,
        route=None,
        service=None,
        consumer=None,
        upstream=upstream,
        enabled=True,
        description=None,
        created_at=T0,
        updated_at=T0,
    )


SUMMARY = {
    "workers": 2,
    "upstreams": [
        {"name": "billing", "status": "down", "targets": []},
        {"name": "orders", "status": "degraded", "targets": []},
        {"name": "search", "status": "down", "targets": []},
    ],
}


def test_upstream_down_counts_down_upstreams_or_checks_one() -> None:
    assert measure_upstreams(rule(), SUMMARY).value == 2.0
    assert measure_upstreams(rule("billing"), SUMMARY).value == 1.0
    assert measure_upstreams(rule("orders"), SUMMARY).value == 0.0
    # Unknown upstream, no workers reporting, or no summary at all: no data.
    assert measure_upstreams(rule("nope"), SUMMARY).value is None
    assert measure_upstreams(rule(), {"workers": 0, "upstreams": []}).value is None
    assert measure_upstreams(rule(), None).value is None
