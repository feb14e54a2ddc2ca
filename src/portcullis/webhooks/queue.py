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
    # Deliveries per second this endpoint accepts (None: no limit).
    rate_limit: int | None


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
    # A read first: an idle queue costs no write transaction (on SQLite, no write lock
    # taken from the writers that have work).
    async with engine.connect() as conn:
        due = (
            await conn.execute(
                select(M.id).join(E, E.id == M.endpoint_id).where(*conditions).limit(1)
            )
        ).first()
    if due is None:
        return []
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
                    E.rate_limit,
                )
                .join(E, E.id == M.endpoint_id)
                .where(M.id.in_(list(leased)))
                .order_by(M.next_attempt_at, M.event_id)
            )
        ).all()
    return [Claimed(**row._asdict()) for row in rows]


async def release(engine: AsyncEngine, owner: str, ids: Sequence[str]) -> int:
    """Give back leases `owner` took but will not use now (the endpoint is at its
    concurrency or rate limit): the messages stay due, untouched (no attempt is counted),
    and the next claim takes them in their turn. Returns how many were released."""
    if not ids:
        return 0
    async with write_transaction(engine) as conn:
        released = await conn.execute(
            update(M)
            .where(M.id.in_(list(ids)), M.lease_owner == owner, M.status == PENDING)
            .values(lease_owner=None, lease_expires_at=None)
        )
    return released.rowcount


@dataclass(frozen=True, slots=True)
class Finished:
    decision: Decision
    # The lease was still this worker's (False: it expired and another worker took over;
    # the attempt is recorded, the message's state is left to the new holder).
    held: bool
    # The endpoint was disabled by this attempt (410, or failing for too long).
    disabled: str | None


@dataclass(frozen=True, slots=True)
class Outcome:
    """One attempt to record: the message, what came back, and what follows."""

    message: Claimed
    result: AttemptResult
    decision: Decision
    now: datetime
    trigger: str = "scheduled"


async def finish(
    engine: AsyncEngine,
    owner: str,
    outcomes: Sequence[Outcome],
    *,
    disable_after: timedelta,
) -> list[Finished]:
    """Record attempts and move their messages on, all in one transaction (the worker
    commits the attempts that ended together as a group: one commit, not one each).

    A message moves on only while `owner` still holds its lease; every attempt is kept.
    """
    if not outcomes:
        return []
    # Every worker updates the endpoints of a group in id order: two workers recording
    # attempts for the same endpoints then never wait on each other in a cycle
    # (PostgreSQL would abort one with "deadlock detected", and its whole group of
    # attempts would go unrecorded until their leases expired). Messages are each
    # leased to one worker; they are updated in id order too.
    async with write_transaction(engine) as conn:
        # A message whose endpoint was deleted during its attempt is gone (with its
        # history): its attempt is not recorded, and the others still commit. The rows
        # are locked so a delete can't slip in before the insert.
        ids = list({o.message.id for o in outcomes})
        present = set(
            (await conn.execute(select(M.id).where(M.id.in_(ids)).with_for_update())).scalars()
        )
        recorded = [_attempt_row(o) for o in outcomes if o.message.id in present]
        if recorded:
            await conn.execute(insert(WebhookAttemptRow), recorded)
        held = await _move_messages(conn, owner, outcomes)
        disabled = await _track_endpoints(conn, outcomes, disable_after)
    return [
        Finished(o.decision, o.message.id in held, disabled.get(i)) for i, o in enumerate(outcomes)
    ]


def _attempt_row(outcome: Outcome) -> dict[str, object]:
    result = outcome.result
    return {
        "message_id": outcome.message.id,
        "endpoint_id": outcome.message.endpoint_id,
        "attempt": outcome.message.attempts + 1,
        "trigger": outcome.trigger,
        "attempted_at": outcome.now,
        "status_code": result.status,
        "error": result.error.value if result.error else None,
        "latency_ms": result.latency * 1000.0,
        "response_excerpt": result.excerpt,
        "detail": result.detail,
    }


async def _move_messages(
    conn: AsyncConnection, owner: str, outcomes: Sequence[Outcome]
) -> set[str]:
    """Apply each decision to its message; the ids whose lease `owner` still held."""
    held: set[str] = set()
    # Finished messages with the same answer move in one statement.
    finished: dict[tuple[str, int | None, str | None, datetime], list[str]] = {}
    for o in sorted(outcomes, key=lambda o: o.message.id):
        error = o.result.error.value if o.result.error else None
        if o.decision.next is Next.RETRY:
            moved = await conn.execute(
                update(M)
                .where(M.id == o.message.id, M.lease_owner == owner, M.status == PENDING)
                .values(
                    attempts=M.attempts + 1,
                    lease_owner=None,
                    lease_expires_at=None,
                    last_status=o.result.status,
                    last_error=error,
                    next_attempt_at=o.now + timedelta(seconds=o.decision.delay),
                )
            )
            if moved.rowcount == 1:
                held.add(o.message.id)
            continue
        status = DELIVERED if o.decision.next is Next.DELIVERED else FAILED
        finished.setdefault((status, o.result.status, error, o.now), []).append(o.message.id)
    for (status, code, error, now), ids in finished.items():
        moved_ids = (
            await conn.execute(
                update(M)
                .where(M.id.in_(ids), M.lease_owner == owner, M.status == PENDING)
                .values(
                    attempts=M.attempts + 1,
                    lease_owner=None,
                    lease_expires_at=None,
                    last_status=code,
                    last_error=error,
                    status=status,
                    finished_at=now,
                    next_attempt_at=None,
                )
                .returning(M.id)
            )
        ).scalars()
        held.update(moved_ids)
    return held


async def _track_endpoints(
    conn: AsyncConnection, outcomes: Sequence[Outcome], disable_after: timedelta
) -> dict[int, str]:
    """Each endpoint's run of failures, once per group: a 410 disables it, and so does
    failing for `disable_after`; a success ends the run. Returns {outcome index: reason}
    for the outcomes that disabled an endpoint."""
    by_endpoint: dict[str, list[int]] = {}
    for i, o in enumerate(outcomes):
        by_endpoint.setdefault(o.message.endpoint_id, []).append(i)
    disabled: dict[int, str] = {}
    for endpoint, indexes in sorted(by_endpoint.items()):
        gone = [i for i in indexes if outcomes[i].decision.next is Next.GONE]
        if gone:
            if await _disable(conn, outcomes[gone[0]], "gone"):
                disabled[gone[0]] = "gone"
            continue
        last = outcomes[indexes[-1]]
        if last.decision.next is Next.DELIVERED:
            await conn.execute(
                update(E)
                .where(E.id == endpoint, E.failing_since.is_not(None))
                .values(failing_since=None)
            )
            continue
        since = (
            await conn.execute(select(E.failing_since).where(E.id == endpoint))
        ).scalar_one_or_none()
        if since is None:
            # The run starts at the first failure after the group's last success.
            successes = [i for i in indexes if outcomes[i].decision.next is Next.DELIVERED]
            first = outcomes[next(i for i in indexes if not successes or i > successes[-1])]
            await conn.execute(update(E).where(E.id == endpoint).values(failing_since=first.now))
        elif last.now - since >= disable_after and await _disable(conn, last, "failing"):
            disabled[indexes[-1]] = "failing"
    return disabled


async def _disable(conn: AsyncConnection, outcome: Outcome, reason: str) -> bool:
    """Disable the outcome's endpoint (once) with a `webhook.endpoint_disabled` event."""
    message = outcome.message
    changed = (
        await conn.execute(
            update(E)
            .where(and_(E.id == message.endpoint_id, E.enabled.is_(True)))
            .values(
                enabled=False, disabled_reason=reason, version=E.version + 1, updated_at=outcome.now
            )
        )
    ).rowcount
    if changed:
        await record_event(
            conn,
            EventType.WEBHOOK_ENDPOINT_DISABLED,
            message.endpoint_id,
            {"endpoint_id": message.endpoint_id, "reason": reason},
            now=outcome.now,
            organization_id=message.organization_id,
        )
    return bool(changed)


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


async def enqueue_test(
    conn: AsyncConnection, endpoint_id: str, now: datetime, *, organization_id: str | None = None
) -> str:
    """Record a `webhook.test` event (of the endpoint's organization) and queue it for
    `endpoint_id` alone; its message id."""
    data = {"endpoint_id": endpoint_id, "message": "a test event sent on request"}
    event = await record_event(
        conn, outbox.TEST_KIND, endpoint_id, data, now=now, organization_id=organization_id
    )
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
