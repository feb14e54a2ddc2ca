"""The invalidation feed: the change log that keeps every worker's caches honest.

A change that makes something cached stale appends one row (a kind and a subject)
in the same transaction as the change: revoking, suspending or rotating a key,
revoking a token, rotating a signing key, changing an OAuth client, purging the
response cache. Data-plane workers poll the highest sequence number (one indexed
read) and, when it moved, read the new rows and hand each subscriber the kinds it
asked for. Polling works on SQLite and PostgreSQL, across workers and nodes, with no
extra infrastructure; at the 0.25 s poll interval a change is seen everywhere well
within 1 s.

The feed knows nothing of its subscribers: identity caches, the response cache and
whatever comes next subscribe to their kinds, so no subsystem's events ride on
another's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from portcullis.periodic import Periodic
from portcullis.store.identity_tables import IdentityEventRow


class InvalidationKind(StrEnum):
    """What an invalidation's `subject` names."""

    KEY = "key"  # subject: the key's hash; its cached record is stale
    TOKEN = "token"  # noqa: S105 (an event kind, not a secret). subject: a revoked access token's jti
    SIGNING_KEY = "signing-key"  # subject: a kid that was added, retired or removed
    OAUTH_CLIENT = "oauth-client"  # subject: a client id whose record changed
    CACHE_PURGE = "cache-purge"  # subject: a response-cache purge scope (cache/purge.py)
    # subject: `<kind>:<identifier>` of a basic/hmac/mtls credential that changed or went
    # (identity/credential_store.py)
    CREDENTIAL = "credential"
    # subject: a route whose request-inspector capture started, stopped or filled up
    # (proxy/inspector.py reloads the active sessions)
    CAPTURE = "capture"


@dataclass(frozen=True, slots=True)
class Invalidation:
    seq: int
    kind: InvalidationKind
    subject: str
    created_at: datetime


async def append_invalidations(
    conn: AsyncConnection, events: Sequence[tuple[InvalidationKind, str]]
) -> None:
    """Record invalidations inside the caller's transaction (so they commit with the change)."""
    if not events:
        return
    now = datetime.now(UTC)
    await conn.execute(
        insert(IdentityEventRow),
        [{"kind": str(kind), "subject": subject, "created_at": now} for kind, subject in events],
    )


class InvalidationFeed:
    """Reads the feed from a given position."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def latest(self) -> int:
        """The newest sequence number (0 when the feed is empty)."""
        async with self._engine.connect() as conn:
            value = await conn.scalar(select(func.max(IdentityEventRow.seq)))
        return int(value or 0)

    async def since(self, seq: int, limit: int = 10_000) -> list[Invalidation]:
        """Invalidations after `seq`, oldest first."""
        query = (
            select(
                IdentityEventRow.seq,
                IdentityEventRow.kind,
                IdentityEventRow.subject,
                IdentityEventRow.created_at,
            )
            .where(IdentityEventRow.seq > seq)
            .order_by(IdentityEventRow.seq)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [Invalidation(r[0], InvalidationKind(r[1]), r[2], r[3]) for r in rows]


Listener = Callable[[list[Invalidation]], None]


class InvalidationPoller:
    """One poll loop per worker that hands new invalidations to their subscribers.

    It starts at the feed's current end (a fresh worker has no stale caches to
    invalidate) and, when the feed is unreachable, keeps the caches it has and tries
    again next tick.
    """

    def __init__(self, feed: InvalidationFeed, interval: float = 0.25) -> None:
        self.feed = feed
        self.interval = interval
        self.position = 0
        self._subscribers: list[tuple[Listener, frozenset[InvalidationKind] | None]] = []
        self._loop = Periodic(
            "invalidations",
            self.poll,
            interval=interval,
            failure_event="invalidations.poll_failed",
        )

    def subscribe(
        self, listener: Listener, kinds: Iterable[InvalidationKind] | None = None
    ) -> None:
        """Call `listener` with each batch's invalidations of `kinds` (None: every kind)."""
        self._subscribers.append((listener, None if kinds is None else frozenset(kinds)))

    async def prime(self) -> None:
        """Start from the newest invalidation."""
        self.position = await self.feed.latest()

    async def poll(self) -> int:
        """Deliver invalidations newer than the position; returns how many were read."""
        if await self.feed.latest() <= self.position:
            return 0
        delivered = 0
        while True:
            events = await self.feed.since(self.position)
            if not events:
                return delivered
            self.position = events[-1].seq
            delivered += len(events)
            for listener, kinds in self._subscribers:
                wanted = events if kinds is None else [e for e in events if e.kind in kinds]
                if wanted:
                    listener(wanted)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
