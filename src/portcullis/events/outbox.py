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
from collections.abc import Collection, Mapping
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
    """Queue the event for every enabled endpoint that wants it; returns how many.

    `notify` names endpoints that get the event whatever their event-type and payload
    filters say (an alert rule's `notify` list); they still hear only events of their
    own organization (or are the operator's). A test event is queued only for the
    endpoint it was sent to (`webhooks.queue.enqueue_test`).
    """
    if kind == TEST_KIND:
        return 0
    query = select(
        WebhookEndpointRow.id,
        WebhookEndpointRow.organization_id,
        WebhookEndpointRow.event_types,
        WebhookEndpointRow.filters,
        WebhookEndpointRow.consumer,
    ).where(WebhookEndpointRow.enabled.is_(True))
    if organization_id is None:
        query = query.where(WebhookEndpointRow.organization_id.is_(None))
    else:
        query = query.where(
            WebhookEndpointRow.organization_id.is_(None)
            | (WebhookEndpointRow.organization_id == organization_id)
        )
    rows = (await conn.execute(query)).all()
    wanted = [
        s
        for s in map(Subscription.of, rows)
        if (s.id in notify and s.hears(organization_id)) or s.wants(kind, organization_id, data)
    ]
    if not wanted:
        return 0
    body = payload(event_id, kind, subject, data, occurred_at)
    await conn.execute(
        insert(WebhookMessageRow),
        [
            {
                "id": message_id(),
                "endpoint_id": s.id,
                "event_id": event_id,
                "event_type": kind,
                "payload": body,
                "status": PENDING,
                "attempts": 0,
                "next_attempt_at": occurred_at,
                "created_at": occurred_at,
            }
            for s in wanted
        ],
    )
    return len(wanted)
