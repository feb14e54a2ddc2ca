"""`config.applied` and `consumer.created`: recorded by the config repository in the
transaction that stores a version, so every path that writes the config (declarative
apply, admin API, CLI, rollback) emits them once, with their webhook messages."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from portcullis.events.bus import Event, read_events
from portcullis.identity.secrets import ServerSecret
from portcullis.model.loader import load_config_data
from portcullis.store.admin_tables import OrganizationRow
from portcullis.store.config_repository import ConfigRepository
from portcullis.store.engine import write_transaction
from portcullis.store.webhook_tables import WebhookMessageRow
from portcullis.webhooks.endpoints import NewEndpoint, create_endpoint

SERVER = ServerSecret.from_secret(b"k" * 32)
KINDS = ["config.applied", "consumer.created"]


def config(consumers: list[dict[str, Any]], *, routes: int = 1) -> Any:
    return load_config_data(
        {
            "services": [{"name": "svc", "url": "http://127.0.0.1:9"}],
            "routes": [
                {"name": f"r{i}", "service": "svc", "paths": [f"/r{i}"]} for i in range(routes)
            ],
            "consumers": consumers,
        }
    )


async def _organization(engine: AsyncEngine, name: str) -> str:
    org_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    async with write_transaction(engine) as conn:
        await conn.execute(
            insert(OrganizationRow).values(id=org_id, name=name, created_at=now, updated_at=now)
        )
    return org_id


async def _events(engine: AsyncEngine, after: int = 0) -> list[Event]:
    return await read_events(engine, after=after, kinds=KINDS)


async def test_each_version_records_config_applied_and_its_new_consumers(
    engine: AsyncEngine,
) -> None:
    acme = await _organization(engine, "acme")
    repo = ConfigRepository(engine)
    first = await repo.apply(
        config(
            [
                {"username": "alice", "organization": "acme", "tags": ["beta"]},
                {"username": "bob", "metadata": {"api_token": "s3cret-value"}},
            ]
        ),
        author="cli:ops",
        comment="initial",
    )
    events = await _events(engine)
    assert [(e.kind, e.subject) for e in events] == [
        ("config.applied", "config:1"),
        ("consumer.created", "consumer:alice"),
        ("consumer.created", "consumer:bob"),
    ]
    applied, alice, bob = events
    assert applied.data == {
        "version": 1,
        "previous_version": 0,
        "author": "cli:ops",
        "comment": "initial",
        "source_version": None,
        "checksum": first.checksum,
        "changes": {
            "consumers": {"added": 2, "removed": 0, "changed": 0},
            "routes": {"added": 1, "removed": 0, "changed": 0},
            "services": {"added": 1, "removed": 0, "changed": 0},
        },
    }
    assert applied.organization_id is None
    assert alice.data == {
        "consumer": "alice",
        "organization": "acme",
        "plan": None,
        "status": "active",
        "tags": ["beta"],
        "config_version": 1,
    }
    assert alice.organization_id == acme
    assert bob.organization_id is None
    assert "s3cret" not in str(events)  # consumer metadata is never copied into events

    last = events[-1].id
    # v2: carol added, bob removed, alice changed, one route more.
    await repo.apply(
        config([{"username": "alice", "organization": "acme"}, {"username": "carol"}], routes=2),
        author="admin:root",
        comment=None,
    )
    events = await _events(engine, last)
    assert [(e.kind, e.subject) for e in events] == [
        ("config.applied", "config:2"),
        ("consumer.created", "consumer:carol"),
    ]
    assert events[0].data["changes"] == {
        "consumers": {"added": 1, "removed": 1, "changed": 1},
        "routes": {"added": 1, "removed": 0, "changed": 0},
    }
    assert events[0].data["previous_version"] == 1

    # The same config again stores nothing and says nothing.
    last = events[-1].id
    same = await repo.apply(
        config([{"username": "alice", "organization": "acme"}, {"username": "carol"}], routes=2),
        author="admin:root",
        comment=None,
    )
    assert not same.created
    assert await _events(engine, last) == []

    # A rollback is a version too: bob comes back as a new consumer.
    await repo.rollback(1, author="admin:root")
    events = await _events(engine, last)
    assert [(e.kind, e.subject) for e in events] == [
        ("config.applied", "config:3"),
        ("consumer.created", "consumer:bob"),
    ]
    assert events[0].data["source_version"] == 1


async def test_the_events_and_their_webhook_messages_commit_with_the_version(
    engine: AsyncEngine,
) -> None:
    now = datetime.now(UTC)
    async with write_transaction(engine) as conn:
        endpoint, _ = await create_endpoint(
            conn,
            SERVER,
            NewEndpoint(url="http://127.0.0.1:9/hook", event_types=["consumer.*", "config.*"]),
            now,
        )
    repo = ConfigRepository(engine)

    async def fail(conn: AsyncConnection, version: Any) -> None:
        raise RuntimeError("the audit record failed")

    with pytest.raises(RuntimeError):
        await repo.apply(config([{"username": "alice"}]), author="a", comment=None, on_write=fail)
    assert await _events(engine) == []
    async with engine.connect() as conn:
        assert (await conn.execute(select(WebhookMessageRow.id))).all() == []

    await repo.apply(config([{"username": "alice"}]), author="a", comment=None)
    events = await _events(engine)
    async with engine.connect() as conn:
        queued = (
            await conn.execute(
                select(WebhookMessageRow.endpoint_id, WebhookMessageRow.event_type).order_by(
                    WebhookMessageRow.event_id
                )
            )
        ).all()
    assert [(e.kind, e.subject) for e in events] == [
        ("config.applied", "config:1"),
        ("consumer.created", "consumer:alice"),
    ]
    assert [tuple(q) for q in queued] == [
        (endpoint, "config.applied"),
        (endpoint, "consumer.created"),
    ]


async def test_a_large_import_records_its_consumers_in_one_batch(engine: AsyncEngine) -> None:
    async with write_transaction(engine) as conn:
        await create_endpoint(
            conn,
            SERVER,
            NewEndpoint(url="http://127.0.0.1:9/hook", event_types=["consumer.*"]),
            datetime.now(UTC),
        )
    consumers = [{"username": f"c{i:05d}"} for i in range(3000)]
    repo = ConfigRepository(engine)
    await repo.apply(config(consumers), author="import", comment=None)
    events = await read_events(engine, kinds=["consumer.created"], limit=5000)
    assert [e.data["consumer"] for e in events] == [c["username"] for c in consumers]
    # Each queued message carries its own event (ids paired with rows in the batch).
    async with engine.connect() as conn:
        messages = (
            await conn.execute(select(WebhookMessageRow.event_id, WebhookMessageRow.payload))
        ).all()
    subjects = {e.id: e.subject for e in events}
    assert len(messages) == len(events)
    for event_id, body in messages:
        sent = json.loads(body)
        assert (sent["event_id"], sent["subject"]) == (event_id, subjects[event_id])
