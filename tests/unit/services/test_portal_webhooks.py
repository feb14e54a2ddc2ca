"""Portal webhook self-service: a team manages the endpoints it made for its own
applications, and nothing else (another team's and an operator's are not found)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.identity.secrets import ServerSecret
from portcullis.services.config_editor import ConfigEditor
from portcullis.services.context import Operation
from portcullis.services.errors import NOT_FOUND, VALIDATION_FAILED, ServiceError
from portcullis.services.portal_catalogue import AppRef, access_of
from portcullis.services.portal_webhooks import PortalWebhookIn, PortalWebhooks
from portcullis.services.webhooks import WebhookCreate, WebhookService
from portcullis.store.engine import write_transaction
from portcullis.store.webhook_tables import WebhookMessageRow
from portcullis.webhooks.destinations import DestinationPolicy
from support.services import operation

pytestmark = pytest.mark.usefixtures("with_consumers")  # alice (org-a), bob (org-b)
T0 = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
URL = "https://93.184.216.34/hooks"


async def _no_dns(host: str, port: int) -> list[str]:
    return []


@pytest.fixture
def webhooks(engine: AsyncEngine, editor: ConfigEditor) -> WebhookService:
    return WebhookService(
        engine, ServerSecret.from_secret(b"w" * 32), editor, DestinationPolicy(), resolver=_no_dns
    )


def _op(engine: AsyncEngine) -> Operation:
    return operation(engine, actor="developer:dev-1", clock=lambda: T0)


async def test_a_team_manages_its_own_endpoints_only(
    engine: AsyncEngine, editor: ConfigEditor, webhooks: WebhookService
) -> None:
    portal = PortalWebhooks(webhooks, editor)
    config = (await editor.state()).config
    team_a = access_of(config, [AppRef("alice", "Alice's app", "team-a")])
    team_b = access_of(config, [AppRef("bob", "Bob's app", "team-b")])
    op = _op(engine)
    made, secret = await portal.create(
        op,
        team_a,
        PortalWebhookIn.parse({"app": "alice", "url": URL, "event_types": ["key.*"]}),
    )
    assert secret.startswith("whsec_")
    assert secret not in str(made)
    assert (made["consumer"], made["organization"]) == ("alice", "org-a")
    assert [e["id"] for e in await portal.endpoints(op, team_a)] == [made["id"]]
    assert await portal.endpoints(op, team_b) == []
    assert await portal.deliveries(op, team_a, made["id"]) == []
    # An operator's endpoint on alice's events is not the team's.
    operators, _ = await webhooks.create(
        operation(engine), WebhookCreate(url=URL, event_types=["*"], consumer="alice")
    )
    for team, endpoint in ((team_b, made["id"]), (team_a, operators["id"])):
        for call in (
            portal.get(op, team, endpoint),
            portal.deliveries(op, team, endpoint),
            portal.replay(op, team, endpoint, "msg_00000000000000000000000000"),
            portal.send_test(op, team, endpoint),
            portal.set_enabled(op, team, endpoint, False),
            portal.delete(op, team, endpoint),
        ):
            with pytest.raises(ServiceError) as hidden:
                await call
            assert hidden.value.kind is NOT_FOUND
    # Another team's application, and event kinds outside the portal's list, are refused.
    for body, pointer in (
        ({"app": "bob", "url": URL, "event_types": ["key.*"]}, "#/app"),
        ({"app": "alice", "url": URL, "event_types": ["key.*", "config.*"]}, "#/event_types/1"),
        ({"app": "alice", "url": "ftp://x", "event_types": ["key.*"]}, "#/url"),
    ):
        with pytest.raises(ServiceError) as refused:
            await portal.create(op, team_a, PortalWebhookIn.parse(body))
        assert refused.value.kind is VALIDATION_FAILED
        assert [e.pointer for e in refused.value.errors] == [pointer]
    with pytest.raises(ServiceError):
        await portal.create(
            op,
            team_b,
            PortalWebhookIn.parse(
                {"app": "bob", "url": "https://127.0.0.1/x", "event_types": ["key.*"]}
            ),
        )
    message = await portal.send_test(op, team_a, made["id"])
    [delivery] = await portal.deliveries(op, team_a, made["id"])
    assert delivery["id"] == message
    # A dead-lettered delivery is replayed with the same webhook-id.
    async with write_transaction(engine) as conn:
        await conn.execute(
            update(WebhookMessageRow).where(WebhookMessageRow.id == message).values(status="failed")
        )
    replayed = await portal.replay(op, team_a, made["id"], message)
    assert (replayed["id"], replayed["status"]) == (message, "pending")
    await portal.delete(op, team_a, made["id"])
    assert await portal.endpoints(op, team_a) == []
