"""Web sessions in the store (services/web_sessions.py), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.services.web_sessions import SESSION_PREFIX, WebSessions, token_digest
from portcullis.store.engine import create_engine
from portcullis.store.migrations import upgrade_to_head
from portcullis.store.web_tables import WebSessionRow


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[AsyncEngine]:
    await upgrade_to_head(database_url)
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sessions(store: AsyncEngine, clock: Clock) -> WebSessions:
    return WebSessions(store, lifetime=3600, idle=600, touch_every=60, clock=clock)


async def test_the_store_keeps_a_digest_never_the_token(
    sessions: WebSessions, store: AsyncEngine
) -> None:
    new = await sessions.create("admin", "user-1", client_ip="203.0.113.9")
    assert new.token.startswith(SESSION_PREFIX)
    assert len(new.token) > 40
    async with store.connect() as conn:
        row = (await conn.execute(select(WebSessionRow))).one()
    assert row.token_hash == token_digest(new.token)
    assert new.token not in row
    found = await sessions.lookup(new.token, "admin")
    assert found is not None
    assert (found.id, found.subject_id, found.csrf_token) == (
        new.session.id,
        "user-1",
        new.session.csrf_token,
    )
    # Another kind's application, a forged or a too-long token: nobody.
    assert await sessions.lookup(new.token, "developer") is None
    assert await sessions.lookup(SESSION_PREFIX + "forged", "admin") is None
    assert await sessions.lookup(new.token + "x" * 200, "admin") is None
    assert await sessions.lookup(None, "admin") is None


async def test_idle_and_absolute_expiry(sessions: WebSessions, clock: Clock) -> None:
    idle = await sessions.create("admin", "user-1")
    busy = await sessions.create("admin", "user-2")
    for _ in range(5):  # busy: a request every 5 minutes keeps it alive past the idle end
        clock.advance(300)
        assert await sessions.lookup(busy.token, "admin") is not None
    assert await sessions.lookup(idle.token, "admin") is None  # 25 min > 10 min idle
    clock.advance(3600)  # beyond the absolute lifetime, however busy
    assert await sessions.lookup(busy.token, "admin") is None


async def test_touch_is_throttled(sessions: WebSessions, clock: Clock) -> None:
    new = await sessions.create("developer", "dev-1")
    clock.advance(30)
    first = await sessions.lookup(new.token, "developer")
    assert first is not None
    assert first.last_seen_at == new.session.created_at
    clock.advance(40)
    second = await sessions.lookup(new.token, "developer")
    assert second is not None
    assert second.last_seen_at == clock.now


async def test_sign_out_and_ending_a_subjects_sessions(sessions: WebSessions, clock: Clock) -> None:
    a = await sessions.create("admin", "user-1")
    b = await sessions.create("admin", "user-1")
    c = await sessions.create("admin", "user-1")
    other = await sessions.create("developer", "user-1")
    await sessions.delete(a.token)
    assert await sessions.lookup(a.token, "admin") is None
    assert await sessions.delete_subject("admin", "user-1", keep=b.session.id) == 1
    assert await sessions.lookup(b.token, "admin") is not None
    assert await sessions.lookup(c.token, "admin") is None
    assert await sessions.lookup(other.token, "developer") is not None
    clock.advance(700)
    assert await sessions.purge() == 2
