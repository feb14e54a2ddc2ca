"""The transactional outbox: an event's webhook messages are written in the transaction
that records the event (`events.bus.record_event`), so they commit or vanish with the
change that caused them.

It lives beside the event log, below the delivery machinery (`portcullis.webhooks`):
recording an event needs only the endpoints' subscriptions and the message table, and
the delivery side imports this module, never the other way round (an import-linter
contract keeps it so).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from portcullis.events.ids import message_id
from portcullis.store.webhook_tables import WebhookEndpointRow, WebhookMessageRow

PENDING = "pending"
TEST_KIND = "webhook.test"


@dataclass(frozen=True, slots=True)
class Subscription:
    """What an endpoint hears: the part of a row the outbox matches events against."""

    id: str
    organization_id: str | None
    event_types: tuple[str, ...]
    filters: Mapping[str, str]
    consumer: str | None

    @classmethod
    def of(cls, row: Any) -> Subscription:
        return cls(
            row.id,
            row.organization_id,
            tuple(json.loads(row.event_types)),
            json.loads(row.filters),
            row.consumer,
        )

    def hears(self, organization_id: str | None) -> bool:
        """An organization's endpoint hears only its organization's events; an operator's
        (organization-less) endpoint hears every event."""
        return self.organization_id is None or organization_id == self.organization_id

    def wants(self, kind: str, organization_id: str | None, data: Mapping[str, Any]) -> bool:
        if not self.hears(organization_id):
            return False
        if not any(fnmatchcase(kind, pattern) for pattern in self.event_types):
            return False
        if self.consumer is not None and data.get("consumer") != self.consumer:
            return False
        return all(str(data.get(key)) == value for key, value in self.filters.items())


def payload(
    event_id: int, kind: str, subject: str, data: Mapping[str, Any], occurred_at: datetime
) -> str:
    """The body every attempt sends: Standard Webhooks' `type`/`timestamp`/`data`, plus
    the event's id and subject so receivers can order and deduplicate by event."""
    return json.dumps(
        {
            "type": kind,
            "timestamp": occurred_at.isoformat().replace("+00:00", "Z"),
            "event_id": event_id,
            "subject": subject,
            "data": dict(data),
        },
        separators=(",", ":"),
        ensure_ascii=False,
        sort_keys=True,
    )


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One recorded event as the outbox fans it out."""

    event_id: int
    kind: str
    subject: str
    data: Mapping[str, Any]
    occurred_at: datetime
    organization_id: str | None
    # Endpoints that get the event whatever their filters say (an alert rule's `notify`).
    notify: Collection[str] = ()


async def enqueue(
    conn: AsyncConnection,
    *,
    event_id: int,
    kind: str,
    subject: str,
    data: Mapping[str, Any],
    occurred_at: datetime,
    organization_id: str | None,
    notify: Collection[str] = (),
) -> int:
    """Queue one event for every enabled endpoint that wants it; returns how many.

    `notify` names endpoints that get the event whatever their event-type and payload
    filters say (an alert rule's `notify` list); they still hear only events of their
    own organization (or are the operator's). A test event is queued only for the
    endpoint it was sent to (`webhooks.queue.enqueue_test`).
    """
    event = Outgoing(event_id, kind, subject, data, occurred_at, organization_id, notify)
    return await enqueue_many(conn, [event])


async def enqueue_many(conn: AsyncConnection, events: Sequence[Outgoing]) -> int:
    """`enqueue` for several events with one read of the endpoints (a config apply that
    creates thousands of consumers records thousands of events)."""
    events = [e for e in events if e.kind != TEST_KIND]
    if not events:
        return 0
    organizations = {e.organization_id for e in events} - {None}
    query = select(
        WebhookEndpointRow.id,
        WebhookEndpointRow.organization_id,
        WebhookEndpointRow.event_types,
        WebhookEndpointRow.filters,
        WebhookEndpointRow.consumer,
    ).where(WebhookEndpointRow.enabled.is_(True))
    if organizations:
        query = query.where(
            WebhookEndpointRow.organization_id.is_(None)
            | WebhookEndpointRow.organization_id.in_(sorted(organizations))
        )
    else:
        query = query.where(WebhookEndpointRow.organization_id.is_(None))
    subscriptions = [Subscription.of(row) for row in (await conn.execute(query)).all()]
    if not subscriptions:
        return 0
    rows: list[dict[str, Any]] = []
    for e in events:
        wanted = [
            s
            for s in subscriptions
            if (s.id in e.notify and s.hears(e.organization_id))
            or s.wants(e.kind, e.organization_id, e.data)
        ]
        if not wanted:
            continue
        body = payload(e.event_id, e.kind, e.subject, e.data, e.occurred_at)
        rows += [
            {
                "id": message_id(),
                "endpoint_id": s.id,
                "event_id": e.event_id,
                "event_type": e.kind,
                "payload": body,
                "status": PENDING,
                "attempts": 0,
                "next_attempt_at": e.occurred_at,
                "created_at": e.occurred_at,
            }
            for s in wanted
        ]
    if rows:
        await conn.execute(insert(WebhookMessageRow), rows)
    return len(rows)


async def unknown_endpoints(
    conn: AsyncConnection, ids: Sequence[str], organization_id: str | None
) -> list[str]:
    """Those of `ids` that name no webhook endpoint able to hear events of
    `organization_id` (an endpoint of that organization, or the operator's): what an
    alert rule's `notify` list may not name."""
    if not ids:
        return []
    rows = (
        await conn.execute(
            select(WebhookEndpointRow.id, WebhookEndpointRow.organization_id).where(
                WebhookEndpointRow.id.in_(sorted(set(ids)))
            )
        )
    ).all()
    audible = {row.id for row in rows if row.organization_id in (None, organization_id)}
    return [i for i in ids if i not in audible]
