"""`key.expiring` goes out once per expiry, for active keys inside the notice window."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.identity.key_admin import KeySettings, KeySpec
from portcullis.identity.key_expiry import ExpiryNotices
from portcullis.identity.key_repository import KeyRepository
from portcullis.identity.secrets import ServerSecret
from portcullis.store.engine import create_engine
from portcullis.store.migrations import upgrade_to_head

SERVER = ServerSecret.from_secret(b"key-expiry-test-secret-0123456789abcdef")
NOW = datetime(2026, 12, 7, 7, 0, tzinfo=UTC)
WEEK = timedelta(days=7)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await upgrade_to_head(database_url)
    engine = create_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def test_each_expiry_is_announced_once_and_a_new_expiry_again(engine: AsyncEngine) -> None:
    clock = [NOW]
    keys = KeyRepository(engine, SERVER, clock=lambda: clock[0])

    async def key(name: str, expires_in: timedelta | None) -> str:
        expires = None if expires_in is None else NOW + expires_in
        spec = KeySpec(name=name, expires_at=expires)
        created = await keys.create("alice", spec, created_by="t", organization=None)
        return created.info.id

    soon = await key("soon", timedelta(days=3))
    later = await key("later", timedelta(days=30))
    await key("never", None)
    revoked = await key("revoked", timedelta(days=2))
    await keys.revoke(revoked, "gone")
    notices = ExpiryNotices(engine, WEEK, clock=lambda: clock[0])

    first = await notices.round()
    assert [(e.data["key_id"], e.data["days_left"]) for e in first] == [(soon, 3.0)]
    assert first[0].kind == "key.expiring"
    assert await notices.round() == []  # announced once
    # Extending the expiry is a new expiry: announced again when it comes near.
    await keys.update(soon, lambda k: KeySettings(name=k.name, expires_at=NOW + timedelta(days=5)))
    assert [e.data["key_id"] for e in await notices.round()] == [soon]
    clock[0] = NOW + timedelta(days=24)
    assert [e.data["key_id"] for e in await notices.round()] == [later]


async def test_control_planes_announcing_together_announce_once(engine: AsyncEngine) -> None:
    keys = KeyRepository(engine, SERVER, clock=lambda: NOW)
    spec = KeySpec(name="ci", expires_at=NOW + timedelta(days=1))
    await keys.create("alice", spec, created_by="t", organization=None)
    rounds = [ExpiryNotices(engine, WEEK, clock=lambda: NOW).round() for _ in range(4)]
    results = await asyncio.gather(*rounds, return_exceptions=True)
    announced = [e for r in results if isinstance(r, list) for e in r]
    assert len(announced) == 1
