"""Alert rules evaluated on real minute rollups (SQLite and PostgreSQL): firing, resolving,
events persisted and fanned out, the `for` guard, two evaluators racing, upstream health."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.analytics.alerts import (
    AlertEvaluator,
    AlertRules,
    AlertRuleSpec,
    AlertState,
)
from portcullis.analytics.sketch import LatencySketch
from portcullis.events.bus import Event, InProcessBus, read_events
from portcullis.store.analytics_tables import AlertStateRow, RollupRow
from portcullis.store.engine import create_engine, write_transaction
from portcullis.store.migrations import upgrade_to_head

N = 1_900_000_020 // 60 * 60  # a minute boundary (2030)


def at(offset: float) -> datetime:
    return datetime.fromtimestamp(N + offset, UTC)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await upgrade_to_head(database_url)
    eng = create_engine(database_url)
    yield eng
    await eng.dispose()


def rollup(
    minute: int,
    requests: int,
    *,
    errors: int = 0,
    limited: int = 0,
    route: str = "checkout",
    latency_ms: float = 20.0,
    slow: int = 0,
    slow_ms: float = 0.0,
) -> dict[str, Any]:
    """One minute rollup starting at N + minute*60: `requests - slow` at `latency_ms`,
    `slow` at `slow_ms`."""
    sketch = LatencySketch()
    sketch.add_many([latency_ms] * (requests - slow) + [slow_ms] * slow)
    return {
        "granularity": "minute",
        "bucket_start": N + minute * 60,
        "route": route,
        "service": "shop",
        "consumer": "",
        "status_class": 2,
        "requests": requests,
        "errors": errors,
        "rate_limited": limited,
        "bytes_in": 0,
        "bytes_out": 0,
        "latency_sum_ms": latency_ms * (requests - slow) + slow_ms * slow,
        "sketch": sketch.to_bytes(),
    }


async def add_rollups(engine: AsyncEngine, *rows: dict[str, Any]) -> None:
    async with write_transaction(engine) as conn:
        await conn.execute(insert(RollupRow), list(rows))


def rule(kind: str, threshold: float, **fields: Any) -> AlertRuleSpec:
    return AlertRuleSpec.model_validate({"kind": kind, "threshold": threshold, **fields})


async def state_of(engine: AsyncEngine, name: str) -> Any:
    async with engine.connect() as conn:
        row = (await conn.execute(select(AlertStateRow).where(AlertStateRow.rule == name))).first()
    assert row is not None
    return row


async def test_error_rate_rule_fires_then_resolves_with_events_stored_and_delivered(
    engine: AsyncEngine,
) -> None:
    bus = InProcessBus(engine)
    subscription = bus.subscribe()
    rules = AlertRules(engine)
    await rules.create(
        "checkout-errors",
        rule("error_rate", 0.1, window_seconds=300, min_requests=50, route="checkout"),
    )
    evaluator = AlertEvaluator(engine, bus)
    # Five healthy minutes (1 % errors), and another route failing completely (out of scope).
    await add_rollups(
        engine,
        *(rollup(m, 100, errors=1) for m in range(-5, 0)),
        *(rollup(m, 100, errors=100, route="search") for m in range(-5, 0)),
    )
    assert await evaluator.run_once(at(0)) == []
    state = await state_of(engine, "checkout-errors")
    assert state.state == "ok"
    assert state.value == pytest.approx(0.01)

    # A bad minute: 80 % errors. The window at +90 s overlaps minutes -4..0: 84 / 500.
    await add_rollups(engine, rollup(0, 100, errors=80))
    fired = await evaluator.run_once(at(90))
    assert [e.kind for e in fired] == ["alert.firing"]
    assert fired[0].subject == "checkout-errors"
    assert fired[0].data["value"] == pytest.approx(84 / 500)
    assert fired[0].data["scope"] == {"route": "checkout"}
    assert fired[0].data["threshold"] == 0.1
    assert (await state_of(engine, "checkout-errors")).state == "firing"
    # Still bad 15 s later: no second event.
    assert await evaluator.run_once(at(105)) == []

    # Healthy minutes push the bad one out of the window: resolved.
    await add_rollups(engine, *(rollup(m, 100) for m in range(1, 7)))
    resolved = await evaluator.run_once(at(420))
    assert [e.kind for e in resolved] == ["alert.resolved"]
    assert resolved[0].data["reason"] == "recovered"
    assert resolved[0].data["value"] == 0.0

    stored = await read_events(engine)
    assert [(e.kind, e.subject) for e in stored] == [
        ("alert.firing", "checkout-errors"),
        ("alert.resolved", "checkout-errors"),
    ]
    assert stored == [*fired, *resolved]
    delivered = [await asyncio.wait_for(subscription.get(), 1) for _ in range(2)]
    assert delivered == stored
    ((_, status),) = await rules.list_rules()
    assert status is not None
    assert status.state is AlertState.OK
    assert status.since == at(420)


async def test_min_requests_keeps_a_quiet_route_quiet(engine: AsyncEngine) -> None:
    await AlertRules(engine).create("errors", rule("error_rate", 0.1, min_requests=50))
    await add_rollups(engine, rollup(-1, 3, errors=3))
    assert await AlertEvaluator(engine, InProcessBus(engine)).run_once(at(30)) == []
    state = await state_of(engine, "errors")
    assert (state.state, state.value) == ("ok", None)


async def test_p95_latency_comes_from_the_merged_sketches(engine: AsyncEngine) -> None:
    await AlertRules(engine).create("slow", rule("p95_latency", 500, window_seconds=120))
    # Each minute alone has 4 % slow requests (p95 fast); together still 4 %: no alert.
    await add_rollups(engine, rollup(-2, 100, slow=4, slow_ms=2000))
    await add_rollups(engine, rollup(-1, 100, slow=4, slow_ms=2000))
    evaluator = AlertEvaluator(engine, InProcessBus(engine))
    assert await evaluator.run_once(at(0)) == []
    assert (await state_of(engine, "slow")).value == pytest.approx(20, rel=0.02)
    # A minute with 30 % slow: merged, 38 of 300 (12.7 %) are slow, so p95 is ~2000 ms.
    await add_rollups(engine, rollup(0, 100, slow=30, slow_ms=2000))
    fired = await evaluator.run_once(at(30))
    assert [e.kind for e in fired] == ["alert.firing"]
    assert fired[0].data["value"] == pytest.approx(2000, rel=0.02)


async def test_rate_429_counts_rate_limited_requests(engine: AsyncEngine) -> None:
    await AlertRules(engine).create("throttled", rule("rate_429", 0.25, window_seconds=60))
    await add_rollups(engine, rollup(-1, 200, limited=60))
    fired = await AlertEvaluator(engine, InProcessBus(engine)).run_once(at(0))
    assert [e.kind for e in fired] == ["alert.firing"]
    assert fired[0].data["value"] == pytest.approx(0.3)


async def test_each_rules_for_seconds_delays_its_firing_and_resolving(
    engine: AsyncEngine,
) -> None:
    rules = AlertRules(engine)
    await rules.create("errors", rule("error_rate", 0.1, window_seconds=60, for_seconds=45))
    # Same breach, no `for`: fires and resolves at once, next to the delayed one.
    await rules.create("instant", rule("error_rate", 0.1, window_seconds=60))
    await add_rollups(engine, rollup(-1, 100, errors=50))
    evaluator = AlertEvaluator(engine, InProcessBus(engine))
    assert [e.subject for e in await evaluator.run_once(at(0))] == ["instant"]
    assert (await state_of(engine, "errors")).state == "pending"
    assert await evaluator.run_once(at(30)) == []
    fired = await evaluator.run_once(at(45))
    assert [(e.kind, e.subject) for e in fired] == [("alert.firing", "errors")]
    # The bad minute leaves the window at +60: resolving, then resolved 45 s later.
    assert [(e.kind, e.subject) for e in await evaluator.run_once(at(61))] == [
        ("alert.resolved", "instant")
    ]
    assert (await state_of(engine, "errors")).state == "resolving"
    assert [e.kind for e in await evaluator.run_once(at(106))] == ["alert.resolved"]
    # A rule's `for_seconds` is stored, read back and changed like its other settings.
    stored, _ = await rules.get("errors")
    assert stored.for_seconds == 45
    assert stored.settings()["for_seconds"] == 45
    replaced = await rules.replace("errors", rule("error_rate", 0.1, window_seconds=60))
    assert replaced.for_seconds == 0


async def test_two_evaluators_racing_record_each_transition_once(
    database_url: str, engine: AsyncEngine
) -> None:
    await AlertRules(engine).create("errors", rule("error_rate", 0.1, window_seconds=60))
    await add_rollups(engine, rollup(-1, 100, errors=50))
    other = create_engine(database_url)
    try:
        first = AlertEvaluator(engine, InProcessBus(engine))
        second = AlertEvaluator(other, InProcessBus(other))
        # Both see no state row, both create it, both try ok -> firing.
        a, b = await asyncio.gather(first.run_once(at(0)), second.run_once(at(0)))
        assert len(a) + len(b) == 1
        a, b = await asyncio.gather(first.run_once(at(120)), second.run_once(at(120)))
        assert len(a) + len(b) == 1
    finally:
        await other.dispose()
    assert [e.kind for e in await read_events(engine)] == ["alert.firing", "alert.resolved"]


async def test_upstream_down_reads_the_health_summary(engine: AsyncEngine) -> None:
    summary: dict[str, Any] = {
        "workers": 2,
        "upstreams": [{"name": "orders", "status": "up", "targets": []}],
    }

    async def health(_: AsyncEngine) -> dict[str, Any]:
        return summary

    await AlertRules(engine).create("orders-down", rule("upstream_down", 0, upstream="orders"))
    evaluator = AlertEvaluator(engine, InProcessBus(engine), health=health)
    assert await evaluator.run_once(at(0)) == []
    summary["upstreams"][0]["status"] = "down"
    fired = await evaluator.run_once(at(15))
    assert [(e.kind, e.data["value"], e.data["scope"]) for e in fired] == [
        ("alert.firing", 1.0, {"upstream": "orders"})
    ]
    summary["upstreams"][0]["status"] = "degraded"
    assert [e.kind for e in await evaluator.run_once(at(30))] == ["alert.resolved"]


async def test_a_failing_health_source_does_not_stop_other_rules(engine: AsyncEngine) -> None:
    async def broken(_: AsyncEngine) -> dict[str, Any]:
        raise ConnectionError("store away")

    rules = AlertRules(engine)
    await rules.create("down", rule("upstream_down", 0))
    await rules.create("errors", rule("error_rate", 0.1, window_seconds=60))
    await add_rollups(engine, rollup(-1, 100, errors=50))
    fired = await AlertEvaluator(engine, InProcessBus(engine), health=broken).run_once(at(0))
    assert [e.subject for e in fired] == ["errors"]
    assert (await state_of(engine, "down")).value is None


async def test_the_real_health_summary_without_workers_is_no_data(engine: AsyncEngine) -> None:
    await AlertRules(engine).create("down", rule("upstream_down", 0))
    assert await AlertEvaluator(engine, InProcessBus(engine)).run_once(at(0)) == []
    assert (await state_of(engine, "down")).state == "ok"


async def test_disabling_or_deleting_a_firing_rule_resolves_it(engine: AsyncEngine) -> None:
    rules = AlertRules(engine)
    bus = InProcessBus(engine)
    evaluator = AlertEvaluator(engine, bus)
    for name in ("a", "b"):
        await rules.create(name, rule("error_rate", 0.1, window_seconds=3600, for_seconds=300))
    await add_rollups(engine, rollup(-1, 100, errors=50))
    await evaluator.run_once(at(0))
    fired = await evaluator.run_once(at(300))
    assert sorted(e.subject for e in fired) == ["a", "b"]
    disabled = rule("error_rate", 0.1, window_seconds=3600, for_seconds=300, enabled=False)
    await rules.replace("a", disabled)
    resolved: list[Event] = await evaluator.run_once(at(301))  # no `for` wait when disabled
    assert [(e.subject, e.data["reason"]) for e in resolved] == [("a", "disabled")]
    deleted = await rules.delete("b")
    assert [(e.kind, e.subject, e.data["reason"]) for e in deleted] == [
        ("alert.resolved", "b", "deleted")
    ]
    assert [e.id for e in await read_events(engine)][-1] == deleted[0].id
    assert [r.name for r, _ in await rules.list_rules()] == ["a"]
    assert (await state_of(engine, "a")).state == "ok"


async def test_rule_crud_and_timestamps(engine: AsyncEngine) -> None:
    clock_now = [at(0)]
    rules = AlertRules(engine, clock=lambda: clock_now[0])
    created = await rules.create("r", rule("p95_latency", 800, description="slow checkout"))
    assert (created.created_at, created.updated_at) == (at(0), at(0))
    clock_now[0] = at(60) + timedelta(microseconds=5)
    replaced = await rules.replace("r", rule("p95_latency", 900))
    assert (replaced.threshold, replaced.description, replaced.updated_at) == (
        900,
        None,
        at(60) + timedelta(microseconds=5),
    )
    assert replaced.created_at == at(0)
    from portcullis.analytics.alerts import AlertRuleExists, AlertRuleNotFound

    with pytest.raises(AlertRuleExists):
        await rules.create("r", rule("p95_latency", 1))
    with pytest.raises(AlertRuleNotFound):
        await rules.replace("nope", rule("p95_latency", 1))
    with pytest.raises(AlertRuleNotFound):
        await rules.delete("nope")
    with pytest.raises(AlertRuleNotFound):
        await rules.get("nope")
