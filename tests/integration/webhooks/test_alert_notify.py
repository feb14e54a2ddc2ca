"""An alert rule's `notify` option, end to end: the evaluator's transition queues the
alert for the rule's endpoints in its own transaction, the delivery worker sends it,
and a real receiver verifies the signature; endpoints the rule does not name and that
do not subscribe to alerts get nothing."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.analytics.alerts import (
    AlertEvaluator,
    AlertRuleInvalid,
    AlertRules,
    AlertRuleSpec,
)
from portcullis.events.bus import InProcessBus
from portcullis.identity.secrets import ServerSecret
from portcullis.settings import Settings
from portcullis.store.admin_tables import OrganizationRow
from portcullis.store.engine import write_transaction
from portcullis.store.webhook_tables import WebhookMessageRow
from portcullis.webhooks.endpoints import NewEndpoint, create_endpoint
from portcullis.webhooks.runner import WebhookDelivery
from support.rollups import failing_minute
from support.webhook_receiver import WebhookReceiver, webhook_receiver

SERVER = ServerSecret.from_secret(b"alert-notify-test-secret-0123456789abcdef")


async def _endpoint(
    engine: AsyncEngine, receiver: WebhookReceiver, types: list[str], org: str | None = None
) -> str:
    async with write_transaction(engine) as conn:
        endpoint, receiver.secret = await create_endpoint(
            conn,
            SERVER,
            NewEndpoint(receiver.url, types, organization_id=org),
            datetime.now(UTC),
        )
    return endpoint


async def _arrivals(receiver: WebhookReceiver, count: int) -> list[dict[str, object]]:
    while len(receiver.deliveries) < count:
        receiver.arrived.clear()
        if len(receiver.deliveries) >= count:
            break
        await asyncio.wait_for(receiver.arrived.wait(), 20)
    assert all(d.verified for d in receiver.deliveries)
    return [json.loads(d.body) for d in receiver.deliveries]


async def _queued(engine: AsyncEngine, endpoint: str) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(WebhookMessageRow.event_type)
            .where(WebhookMessageRow.endpoint_id == endpoint)
            .order_by(WebhookMessageRow.event_id)
        )
        return [r.event_type for r in rows]


async def test_an_alert_reaches_the_rules_notify_endpoint_and_no_other(
    engine: AsyncEngine,
) -> None:
    settings = Settings(webhook_allowed_networks=["127.0.0.0/8"], webhook_poll_interval=60)
    bus = InProcessBus(engine)
    delivery = WebhookDelivery(engine, settings, SERVER, bus)
    try:
        async with (
            webhook_receiver() as notified,
            webhook_receiver() as bystander,
            webhook_receiver() as subscriber,
        ):
            # Neither the notified endpoint nor the bystander subscribes to alerts.
            notify = await _endpoint(engine, notified, ["key.*"])
            other = await _endpoint(engine, bystander, ["key.*"])
            listening = await _endpoint(engine, subscriber, ["alert.*"])
            rules = AlertRules(engine)
            spec = AlertRuleSpec.model_validate(
                {
                    "kind": "error_rate",
                    "threshold": 0.5,
                    "window_seconds": 300,
                    "route": "checkout",
                    "notify": {"webhooks": [notify]},
                }
            )
            created = await rules.create("checkout-errors", spec)
            assert created.notify_webhooks == (notify,)
            assert created.settings()["notify"] == {"webhooks": [notify]}
            delivery.start()

            await failing_minute(engine)
            fired = await AlertEvaluator(engine, bus).run_once()
            assert [e.kind for e in fired] == ["alert.firing"]
            (body,) = await _arrivals(notified, 1)
            assert (body["type"], body["event_id"]) == ("alert.firing", fired[0].id)
            assert body["data"]["rule"] == "checkout-errors"  # type: ignore[index]

            # Deleting the firing rule resolves it: that reaches the endpoint too.
            resolved = await rules.delete("checkout-errors")
            await bus.deliver(resolved)  # wakes the worker, as a published event does
            bodies = await _arrivals(notified, 2)
            assert [(b["type"], b["event_id"]) for b in bodies] == [
                ("alert.firing", fired[0].id),
                ("alert.resolved", resolved[0].id),
            ]
            # An endpoint that subscribes to alerts gets them as before.
            assert [b["type"] for b in await _arrivals(subscriber, 2)] == [
                "alert.firing",
                "alert.resolved",
            ]
            # The bystander had nothing queued, so nothing can ever reach it.
            assert await _queued(engine, other) == []
            assert bystander.deliveries == []
            assert await _queued(engine, notify) == ["alert.firing", "alert.resolved"]
            assert await _queued(engine, listening) == ["alert.firing", "alert.resolved"]
    finally:
        await delivery.stop()
        await bus.close()


async def test_notify_names_existing_operator_endpoints_only(engine: AsyncEngine) -> None:
    async with webhook_receiver() as receiver:
        operator = await _endpoint(engine, receiver, ["key.*"])
    now = datetime.now(UTC)
    async with write_transaction(engine) as conn:
        await conn.execute(
            insert(OrganizationRow).values(id="org-1", name="acme", created_at=now, updated_at=now)
        )
    async with webhook_receiver() as receiver:
        tenant = await _endpoint(engine, receiver, ["key.*"], org="org-1")
    rules = AlertRules(engine)

    def spec(webhooks: list[str]) -> AlertRuleSpec:
        return AlertRuleSpec.model_validate(
            {"kind": "error_rate", "threshold": 0.5, "notify": {"webhooks": webhooks}}
        )

    with pytest.raises(AlertRuleInvalid) as caught:
        await rules.create("r", spec([operator, "ep_missing", tenant]))
    assert [where for where, _ in caught.value.problems] == [
        "#/notify/webhooks/1",
        "#/notify/webhooks/2",
    ]
    assert "ep_missing" in caught.value.problems[0][1]
    await rules.create("r", spec([operator]))
    with pytest.raises(AlertRuleInvalid):
        await rules.replace("r", spec(["ep_gone"]))
    rule, _ = await rules.get("r")
    assert rule.notify_webhooks == (operator,)
