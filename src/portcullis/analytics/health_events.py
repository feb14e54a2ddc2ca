"""Upstream health changes as platform events: `upstream.health_changed` when an
upstream's or a target's merged status moves between up, degraded and down, and
`circuit.opened` / `circuit.closed` when the first worker opens a target's breaker and
when the last one closes it.

Each round reads the merged health of the live data-plane workers and compares it with
what was last announced (`upstream_health_states`), in one write transaction that locks
those rows: with several control planes, a change is announced once; after a restart,
nothing is announced twice. With no worker reporting, nothing is judged (a stopped data
plane is not an outage of every upstream). Something seen for the first time counts as
having been up with its breakers closed, so a new upstream that is already down is news.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from portcullis.analytics.health import DEFAULT_FRESH_FOR, merge_upstream_health
from portcullis.analytics.jobs import event_job
from portcullis.events.bus import Event, EventBus, record_event
from portcullis.events.catalogue import EventType
from portcullis.periodic import Periodic
from portcullis.runtime.heartbeat import list_nodes
from portcullis.settings import Settings
from portcullis.store.analytics_tables import UpstreamHealthStateRow as State
from portcullis.store.engine import write_transaction


@dataclass(frozen=True, slots=True)
class Observed:
    status: str
    circuit_open: bool
    open_workers: int


def _observations(summary: dict[str, Any]) -> dict[tuple[str, str], Observed]:
    seen: dict[tuple[str, str], Observed] = {}
    for upstream in summary["upstreams"]:
        seen[(upstream["name"], "")] = Observed(upstream["status"], False, 0)
        for target in upstream["targets"]:
            opened = int(target["breakers"]["open"])
            seen[(upstream["name"], target["target"])] = Observed(
                target["status"], opened > 0, opened
            )
    return seen


class HealthTransitions:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        fresh_for: float = DEFAULT_FRESH_FOR,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.engine = engine
        self.fresh_for = fresh_for
        self.clock = clock

    async def round(self) -> list[Event]:
        """Announce what changed since the last round; the events recorded."""
        now = self.clock()
        summary = merge_upstream_health(
            await list_nodes(self.engine), now=now, fresh_for=self.fresh_for
        )
        if summary["workers"] == 0:
            return []
        observed = _observations(summary)
        async with write_transaction(self.engine) as conn:
            rows = (await conn.execute(select(State).with_for_update())).all()
            stored = {(r.upstream, r.target): r for r in rows}
            events: list[Event] = []
            for key, seen in sorted(observed.items()):
                events.extend(
                    await self._compare(conn, key, seen, stored.get(key), summary["workers"], now)
                )
            for upstream, target in set(stored) - set(observed):
                # Gone from the config (or from every report): forget it quietly.
                await conn.execute(
                    delete(State).where(State.upstream == upstream, State.target == target)
                )
        return events

    async def _compare(
        self,
        conn: AsyncConnection,
        key: tuple[str, str],
        seen: Observed,
        before: Any,
        workers: int,
        now: datetime,
    ) -> list[Event]:
        upstream, target = key
        previous = before.status if before is not None else "up"
        was_open = bool(before.circuit_open) if before is not None else False
        if before is None:
            await conn.execute(
                insert(State).values(
                    upstream=upstream,
                    target=target,
                    status=seen.status,
                    circuit_open=seen.circuit_open,
                    changed_at=now,
                )
            )
        elif (previous, was_open) != (seen.status, seen.circuit_open):
            await conn.execute(
                update(State)
                .where(State.upstream == upstream, State.target == target)
                .values(status=seen.status, circuit_open=seen.circuit_open, changed_at=now)
            )
        subject = f"upstream:{upstream}" + (f"/{target}" if target else "")
        events = []
        if seen.status != previous:
            data = {
                "upstream": upstream,
                "target": target or None,
                "status": seen.status,
                "previous": previous,
                "workers": workers,
            }
            events.append(
                await record_event(conn, EventType.UPSTREAM_HEALTH_CHANGED, subject, data, now=now)
            )
        if seen.circuit_open != was_open:
            kind = EventType.CIRCUIT_OPENED if seen.circuit_open else EventType.CIRCUIT_CLOSED
            data = {
                "upstream": upstream,
                "target": target,
                "open_workers": seen.open_workers,
                "workers": workers,
            }
            events.append(await record_event(conn, kind, subject, data, now=now))
        return events


def health_events_job(engine: AsyncEngine, settings: Settings, bus: EventBus) -> Periodic:
    """Announce upstream health changes every heartbeat interval."""
    transitions = HealthTransitions(
        engine, fresh_for=max(DEFAULT_FRESH_FOR, 3 * settings.heartbeat_interval)
    )

    return event_job("health_events", transitions.round, bus, settings.heartbeat_interval)
