"""Who calls an API version: the `api_callers` day rows (see `analytics.rollups`), read
per consumer and API key over a window of whole UTC days.

The rows are written by the minute rollup round, so callers of the last seconds (not
rolled up yet) are not in them; a caller's `last_seen` is its last request's exact time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from portcullis.store.analytics_tables import ApiCallerRow as C

DAY = 86400


@dataclass(slots=True)
class KeyCalls:
    """One API key's (or, with `credential_id` '', keyless) calls of a version."""

    credential_id: str
    requests: int = 0
    sandbox_requests: int = 0
    last_seen_ms: int = 0


@dataclass(slots=True)
class Caller:
    """One consumer's (or, with `consumer` '', anonymous) calls of a version."""

    consumer: str
    requests: int = 0
    sandbox_requests: int = 0
    last_seen_ms: int = 0
    keys: dict[str, KeyCalls] = field(default_factory=dict)

    def add(self, credential_id: str, sandbox: bool, requests: int, last_seen_ms: int) -> None:
        key = self.keys.get(credential_id)
        if key is None:
            key = self.keys[credential_id] = KeyCalls(credential_id)
        for target in (self, key):
            target.requests += requests
            if sandbox:
                target.sandbox_requests += requests
            target.last_seen_ms = max(target.last_seen_ms, last_seen_ms)


def day_window(now: float, days: int) -> tuple[int, int]:
    """[start, end) of the last `days` UTC days, today included (epoch seconds)."""
    end = int(now) - int(now) % DAY + DAY
    return end - days * DAY, end


async def version_callers(
    engine: AsyncEngine,
    api: str,
    version: str,
    start: int,
    end: int,
    *,
    sandbox: bool | None = None,
) -> list[Caller]:
    """The callers of `api` `version` on the days in [start, end), most recent first."""
    async with engine.connect() as conn:
        return await callers_in(conn, api, [version], start, end, sandbox=sandbox)


def _per_consumer_key() -> Select[str, str, bool, int, int]:
    """Requests and last request per consumer, key and sandbox (add `where`s)."""
    return select(
        C.consumer,
        C.credential_id,
        C.sandbox,
        func.sum(C.requests),
        func.max(C.last_seen_ms),
    ).group_by(C.consumer, C.credential_id, C.sandbox)


async def _callers(
    conn: AsyncConnection, query: Select[str, str, bool, int, int]
) -> dict[str, Caller]:
    by_consumer: dict[str, Caller] = {}
    for consumer, credential_id, is_sandbox, requests, last in await conn.execute(query):
        caller = by_consumer.get(consumer)
        if caller is None:
            caller = by_consumer[consumer] = Caller(consumer)
        caller.add(credential_id, bool(is_sandbox), int(requests), int(last))
    return by_consumer


async def callers_in(
    conn: AsyncConnection,
    api: str,
    versions: Sequence[str],
    start: int,
    end: int,
    *,
    sandbox: bool | None = None,
) -> list[Caller]:
    """`version_callers` of several versions at once (added up), on `conn`."""
    query = _per_consumer_key().where(
        C.api == api, C.api_version.in_(list(versions)), C.day >= start, C.day < end
    )
    if sandbox is not None:
        query = query.where(C.sandbox.is_(sandbox))
    found = await _callers(conn, query)
    return sorted(found.values(), key=lambda c: (-c.last_seen_ms, c.consumer))


async def key_calls(
    engine: AsyncEngine, consumers: Sequence[str], start: int, end: int
) -> dict[str, Caller]:
    """The calls of each of `consumers` to any API version on the days in [start, end),
    per API key (`Caller.keys`), added up over APIs and versions: what a developer's
    usage page shows per key (the rollups have no key dimension)."""
    if not consumers:
        return {}
    query = _per_consumer_key().where(C.consumer.in_(list(consumers)), C.day >= start, C.day < end)
    async with engine.connect() as conn:
        return await _callers(conn, query)
