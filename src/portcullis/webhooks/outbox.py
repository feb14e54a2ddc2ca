"""The transactional outbox: an event's webhook messages are written in the transaction
that records the event (`events.bus.record_event`), so they commit or vanish with the
change that caused them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from portcullis.store.webhook_tables import WebhookEndpointRow, WebhookMessageRow
from portcullis.webhooks.endpoints import Subscription
from portcullis.webhooks.signing import message_id

PENDING = "pending"
TEST_KIND = "webhook.test"


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
) -> int:
    """Queue the event for every enabled endpoint that wants it; returns how many.

    A test event is queued only for the endpoint it was sent to (`enqueue_test`)."""
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
    wanted = [s for s in map(Subscription.of, rows) if s.wants(kind, organization_id, data)]
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
