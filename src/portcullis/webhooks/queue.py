"""Claiming due webhook messages with leases, and recording how each attempt ended.

Several control-plane processes may deliver from one PostgreSQL store: a claim marks
messages with the worker's name and a lease expiry in one statement whose inner select
skips rows another worker holds (`FOR UPDATE SKIP LOCKED`). On SQLite the statement runs
under `BEGIN IMMEDIATE`, which serialises claimers. A lease that expires (its worker
died mid-attempt) makes the message claimable again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, exists, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import aliased

from portcullis.events.bus import record_event
from portcullis.events.catalogue import EventType
from portcullis.store.engine import write_transaction
from portcullis.store.webhook_tables import (
    WebhookAttemptRow,
    WebhookEndpointRow,
    WebhookMessageRow,
)
from portcullis.webhooks import outbox
from portcullis.webhooks.outbox import PENDING
from portcullis.webhooks.retry import AttemptResult, Decision, Next
from portcullis.webhooks.signing import message_id

DELIVERED = "delivered"
FAILED = "failed"

M = WebhookMessageRow
E = WebhookEndpointRow


@dataclass(frozen=True, slots=True)
class Claimed:
    """A message this worker holds the lease on, with what sending it needs."""

    id: str
    endpoint_id: str
    organization_id: str | None
    event_type: str
    payload: str
    attempts: int
    url: str
    secrets_sealed: bytes
    headers_sealed: bytes | None
    max_concurrency: int


def _due(now: datetime) -> list[ColumnElement[bool]]:
    earlier = aliased(M)
    return [
        M.status == PENDING,
        M.next_attempt_at <= now,
        or_(M.lease_expires_at.is_(None), M.lease_expires_at < now),
        E.enabled.is_(True),
        # An ordered endpoint gets its messages one at a time, oldest event first.
        or_(
            E.ordered.is_(False),
            ~exists().where(
                earlier.endpoint_id == M.endpoint_id,
                earlier.status == PENDING,
                earlier.event_id < M.event_id,
            ),
        ),
    ]


async def claim(
    engine: AsyncEngine,
    owner: str,
    now: datetime,
    *,
    limit: int,
    lease: timedelta,
    exclude: Sequence[str] = (),
) -> list[Claimed]:
    """Lease up to `limit` due messages to `owner`, oldest due first, skipping the
    endpoints in `exclude` (saturated or resting in this worker)."""
    conditions = _due(now)
    if exclude:
        conditions.append(M.endpoint_id.notin_(list(exclude)))
    candidates = (
        select(M.id)
        .join(E, E.id == M.endpoint_id)
        .where(*conditions)
        .order_by(M.next_attempt_at)
        .limit(limit)
        .with_for_update(of=M, skip_locked=True)
        .scalar_subquery()
    )
    async with write_transaction(engine) as conn:
        leased = (
            (
                await conn.execute(
                    update(M)
                    .where(M.id.in_(candidates))
                    .values(lease_owner=owner, lease_expires_at=now + lease)
                    .returning(M.id)
                )
            )
            .scalars()
            .all()
        )
        if not leased:
            return []
        rows = (
            await conn.execute(
                select(
                    M.id,
                    M.endpoint_id,
                    E.organization_id,
                    M.event_type,
                    M.payload,
                    M.attempts,
                    E.url,
                    E.secrets_sealed,
                    E.headers_sealed,
                    E.max_concurrency,
                )
                .join(E, E.id == M.endpoint_id)
                .where(M.id.in_(list(leased)))
                .order_by(M.next_attempt_at, M.event_id)
            )
        ).all()
    return [Claimed(**row._asdict()) for row in rows]


@dataclass(frozen=True, slots=True)
class Finished:
    decision: Decision
    # The lease was still this worker's (False: it expired and another worker took over;
    # the attempt is recorded, the message's state is left to the new holder).
    held: bool
    # The endpoint was disabled by this attempt (410, or failing for too long).
    disabled: str | None


async def finish(
    engine: AsyncEngine,
    message: Claimed,
    owner: str,
    result: AttemptResult,
    decision: Decision,
    now: datetime,
    *,
    disable_after: timedelta,
    trigger: str = "scheduled",
) -> Finished:
    """Record the attempt and move the message on, in one transaction."""
    attempt = message.attempts + 1
    async with write_transaction(engine) as conn:
        await conn.execute(
            insert(WebhookAttemptRow).values(
                message_id=message.id,
                endpoint_id=message.endpoint_id,
                attempt=attempt,
                trigger=trigger,
                attempted_at=now,
                status_code=result.status,
                error=result.error.value if result.error else None,
                latency_ms=result.latency * 1000.0,
                response_excerpt=result.excerpt,
                detail=result.detail,
            )
        )
        values: dict[str, object] = {
            "attempts": attempt,
            "lease_owner": None,
            "lease_expires_at": None,
            "last_status": result.status,
            "last_error": result.error.value if result.error else None,
        }
        if decision.next is Next.DELIVERED:
            values.update(status=DELIVERED, finished_at=now, next_attempt_at=None)
        elif decision.next is Next.RETRY:
            values.update(next_attempt_at=now + timedelta(seconds=decision.delay))
        else:
            values.update(status=FAILED, finished_at=now, next_attempt_at=None)
        held = (
            await conn.execute(
                update(M)
                .where(M.id == message.id, M.lease_owner == owner, M.status == PENDING)
                .values(**values)
            )
        ).rowcount == 1
        disabled = await _endpoint_health(conn, message, decision, now, disable_after)
    return Finished(decision, held, disabled)


async def _endpoint_health(
    conn: AsyncConnection,
    message: Claimed,
    decision: Decision,
    now: datetime,
    disable_after: timedelta,
) -> str | None:
    """Track the endpoint's run of failures; disable it on 410 or after `disable_after`."""
    if decision.next is Next.DELIVERED:
        await conn.execute(update(E).where(E.id == message.endpoint_id).values(failing_since=None))
        return None
    reason: str | None = "gone" if decision.next is Next.GONE else None
    if reason is None:
        since = (
            await conn.execute(select(E.failing_since).where(E.id == message.endpoint_id))
        ).scalar_one_or_none()
        if since is None:
            await conn.execute(
                update(E).where(E.id == message.endpoint_id).values(failing_since=now)
            )
            return None
        if now - since < disable_after:
            return None
        reason = "failing"
    changed = (
        await conn.execute(
            update(E)
            .where(and_(E.id == message.endpoint_id, E.enabled.is_(True)))
            .values(enabled=False, disabled_reason=reason, version=E.version + 1, updated_at=now)
        )
    ).rowcount
    if changed:
        await record_event(
            conn,
            EventType.WEBHOOK_ENDPOINT_DISABLED,
            message.endpoint_id,
            {"endpoint_id": message.endpoint_id, "reason": reason},
            now=now,
            organization_id=message.organization_id,
        )
        return reason
    return None


def _replayed(now: datetime) -> dict[str, object]:
    # A replay starts the schedule over: a fresh run of attempts from now.
    return {
        "status": PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "finished_at": None,
        "lease_owner": None,
        "lease_expires_at": None,
    }


async def replay(conn: AsyncConnection, message_id: str, now: datetime) -> bool:
    """Queue a finished message (delivered or dead-lettered) again; False when it is
    still pending (nothing to do) or does not exist."""
    changed = await conn.execute(
        update(M).where(M.id == message_id, M.status != PENDING).values(**_replayed(now))
    )
    return changed.rowcount == 1


async def replay_failed(
    conn: AsyncConnection,
    endpoint_id: str,
    now: datetime,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> int:
    """Queue again every dead-lettered message of an endpoint created in [since, until)."""
    query = update(M).where(M.endpoint_id == endpoint_id, M.status == FAILED)
    if since is not None:
        query = query.where(M.created_at >= since)
    if until is not None:
        query = query.where(M.created_at < until)
    return (await conn.execute(query.values(**_replayed(now)))).rowcount


async def enqueue_test(conn: AsyncConnection, endpoint_id: str, now: datetime) -> str:
    """Record a `webhook.test` event and queue it for `endpoint_id` alone; its message id."""
    data = {"endpoint_id": endpoint_id, "message": "a test event sent on request"}
    event = await record_event(conn, outbox.TEST_KIND, endpoint_id, data, now=now)
    ident = message_id()
    await conn.execute(
        insert(WebhookMessageRow).values(
            id=ident,
            endpoint_id=endpoint_id,
            event_id=event.id,
            event_type=outbox.TEST_KIND,
            payload=outbox.payload(event.id, outbox.TEST_KIND, endpoint_id, data, now),
            status=PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )
    return ident
