"""Upstream health changes become events once: across rounds, restarts and two control
planes judging at the same moment."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.analytics.health_events import HealthTransitions
from portcullis.events.bus import Event, read_events
from portcullis.store.engine import create_engine, write_transaction
from portcullis.store.identity_tables import DataPlaneNodeRow
from portcullis.store.migrations import upgrade_to_head

NOW = datetime(2026, 12, 7, 7, 0, tzinfo=UTC)
A, B = "10.0.0.1:80", "10.0.0.2:80"


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await upgrade_to_head(database_url)
    engine = create_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def _report(engine: AsyncEngine, *workers: dict[str, tuple[bool, str]]) -> None:
    """Replace the heartbeats: one worker per mapping of target -> (healthy, breaker)."""
    async with write_transaction(engine) as conn:
        await conn.execute(delete(DataPlaneNodeRow))
        for n, targets in enumerate(workers):
            health = {"v": 1, "upstreams": {"pool": {t: list(v) for t, v in targets.items()}}}
            await conn.execute(
                insert(DataPlaneNodeRow).values(
                    id=f"w{n}",
                    node_name="test",
                    pid=n,
                    config_version=1,
                    started_at=NOW - timedelta(minutes=1),
                    heartbeat_at=NOW,
                    health=json.dumps(health),
                )
            )


def _judge(engine: AsyncEngine) -> HealthTransitions:
    return HealthTransitions(engine, clock=lambda: NOW)


def _summary(events: list[Event]) -> list[tuple[str, str, str | None]]:
    return [(e.kind, e.subject, e.data.get("status")) for e in events]


async def test_changes_are_announced_once_and_breakers_open_and_close(
    engine: AsyncEngine,
) -> None:
    healthy = {A: (True, "closed"), B: (True, "closed")}
    await _report(engine, healthy, healthy)
    assert await _judge(engine).round() == []  # first sight, all up: nothing to say
    assert await _judge(engine).round() == []
    await _report(engine, {A: (False, "open"), B: (True, "closed")}, healthy)
    changed = await _judge(engine).round()
    assert _summary(changed) == [
        ("upstream.health_changed", "upstream:pool", "degraded"),
        ("upstream.health_changed", f"upstream:pool/{A}", "degraded"),
        ("circuit.opened", f"upstream:pool/{A}", None),
    ]
    assert changed[2].data == {"upstream": "pool", "target": A, "open_workers": 1, "workers": 2}
    # A restarted control plane (a new judge) remembers what was announced.
    assert await _judge(engine).round() == []
    await _report(
        engine,
        {A: (False, "open"), B: (False, "closed")},
        {A: (False, "open"), B: (False, "closed")},
    )
    down = await _judge(engine).round()
    assert _summary(down) == [
        ("upstream.health_changed", "upstream:pool", "down"),
        ("upstream.health_changed", f"upstream:pool/{A}", "down"),
        ("upstream.health_changed", f"upstream:pool/{B}", "down"),
    ]
    assert down[0].data["previous"] == "degraded"
    await _report(engine, healthy, healthy)
    recovered = await _judge(engine).round()
    assert ("circuit.closed", f"upstream:pool/{A}", None) in _summary(recovered)
    assert [e.data["status"] for e in recovered if e.kind == "upstream.health_changed"] == [
        "up",
        "up",
        "up",
    ]
    stored = await read_events(engine, limit=100)
    assert len(stored) == len(changed) + len(down) + len(recovered)


async def test_a_new_upstream_already_down_is_news_and_no_reports_judge_nothing(
    engine: AsyncEngine,
) -> None:
    await _report(engine)
    assert await _judge(engine).round() == []
    await _report(engine, {A: (False, "closed")})
    assert _summary(await _judge(engine).round()) == [
        ("upstream.health_changed", "upstream:pool", "down"),
        ("upstream.health_changed", f"upstream:pool/{A}", "down"),
    ]


async def test_two_control_planes_judging_together_announce_a_change_once(
    engine: AsyncEngine,
) -> None:
    healthy = {A: (True, "closed")}
    await _report(engine, healthy)
    await _judge(engine).round()
    await _report(engine, {A: (False, "open")})
    results = await asyncio.gather(
        *(_judge(engine).round() for _ in range(4)), return_exceptions=True
    )
    announced = [e for r in results if isinstance(r, list) for e in r]
    assert sorted(e.kind for e in announced) == [
        "circuit.opened",
        "upstream.health_changed",
        "upstream.health_changed",
    ]
