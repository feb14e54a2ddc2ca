"""Session-wide fixtures: a real PostgreSQL server and a store URL for each backend."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.store.engine import create_engine
from portcullis.store.migrations import upgrade_to_head
from support.postgres import PostgresServer, running_postgres
from support.redis import RedisServer, running_redis

# One deployment secret for every process the suite starts (they inherit the
# environment), so tests never create var/portcullis.secret in the work tree.
TEST_SECRET_KEY = base64.b64encode(b"portcullis-test-secret-0123456789abcdef").decode()
os.environ.setdefault("PORTCULLIS_SECRET_KEY", TEST_SECRET_KEY)
# The gateways tests start serve no TLS port unless a test asks for one: gateways run side
# by side, and one more process per worker is cost the suite does not need.
os.environ.setdefault("PORTCULLIS_PROXY_TLS", "off")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole session, started on first use."""
    with running_postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a temp SQLite file, or a fresh database on the session's server."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database()


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on `database_url`, migrated to head (modules may define their own)."""
    await upgrade_to_head(database_url)
    eng = create_engine(database_url)
    yield eng
    await eng.dispose()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the whole session, started on first use.

    Tests share it: give each test its own key prefix. Tests that stop or pause
    Redis start their own with `support.redis.running_redis()`.
    """
    with running_redis() as server:
        yield server
