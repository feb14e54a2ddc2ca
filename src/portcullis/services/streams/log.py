"""The persisted event log a live stream reads: the `events` table, by position.

An event's id is its stream position: ids ascend in commit order (events/bus.py
`record_events`), so `id > position` read after read never skips an event that
commits later. `horizon` is the highest id retention deleted (events/retention.py).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Protocol

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.events.bus import Event
from portcullis.events.retention import read_horizon
from portcullis.store.analytics_tables import EventRow


class EventLog(Protocol):
    async def read(
        self,
        *,
        after: int,
        until: int | None = None,
        limit: int,
        kinds: Collection[str] | None = None,
        organization_id: str | None = None,
    ) -> list[Event]:
        """Events with `after < id <= until` (no upper bound: None), oldest first, at most
        `limit`; only `kinds` (None: all) and only `organization_id`'s (None: all)."""
        ...

    async def head(self) -> int:
        """The newest event's id (0: none)."""
        ...

    async def horizon(self) -> int:
        """The highest id retention deleted (0: none)."""
        ...


class SqlEventLog:
    """`EventLog` on the store's `events` table."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def read(
        self,
        *,
        after: int,
        until: int | None = None,
        limit: int,
        kinds: Collection[str] | None = None,
        organization_id: str | None = None,
    ) -> list[Event]:
        query = select(EventRow).where(EventRow.id > after).order_by(EventRow.id).limit(limit)
        if until is not None:
            query = query.where(EventRow.id <= until)
        if kinds is not None:
            query = query.where(EventRow.kind.in_(sorted(kinds)))
        if organization_id is not None:
            query = query.where(EventRow.organization_id == organization_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            Event(r.id, r.occurred_at, r.kind, r.subject, json.loads(r.data), r.organization_id)
            for r in rows
        ]

    async def head(self) -> int:
        async with self._engine.connect() as conn:
            return int(await conn.scalar(select(func.max(EventRow.id))) or 0)

    async def horizon(self) -> int:
        async with self._engine.connect() as conn:
            return await read_horizon(conn)


class MemoryEventLog:
    """`EventLog` over a list (unit tests, and embedding without a store)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.deleted_upto = 0

    def append(self, event: Event) -> None:
        if self.events and event.id <= self.events[-1].id:
            raise ValueError("event ids must ascend")
        self.events.append(event)

    def forget_upto(self, position: int) -> None:
        """Retention: drop events up to `position` (raising the horizon)."""
        self.events = [e for e in self.events if e.id > position]
        self.deleted_upto = max(self.deleted_upto, position)

    async def read(
        self,
        *,
        after: int,
        until: int | None = None,
        limit: int,
        kinds: Collection[str] | None = None,
        organization_id: str | None = None,
    ) -> list[Event]:
        found = [
            e
            for e in self.events
            if e.id > after
            and (until is None or e.id <= until)
            and (kinds is None or e.kind in kinds)
            and (organization_id is None or e.organization_id == organization_id)
        ]
        return found[:limit]

    async def head(self) -> int:
        return self.events[-1].id if self.events else self.deleted_upto

    async def horizon(self) -> int:
        return self.deleted_upto
