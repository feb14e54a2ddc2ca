"""NodeHeartbeat against a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.runtime.heartbeat import NodeHeartbeat, list_nodes, node_id
from portcullis.store.engine import create_engine, write_transaction
from portcullis.store.identity_tables import DataPlaneNodeRow
from portcullis.store.migrations import upgrade_to_head


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await upgrade_to_head(database_url)
    eng = create_engine(database_url)
    yield eng
    await eng.dispose()


async def test_start_registers_beats_follow_the_version_and_stop_removes(
    engine: AsyncEngine,
) -> None:
    version = {"now": 3}
    hb = NodeHeartbeat(engine, node_name="edge-1", version=lambda: version["now"], interval=0.05)
    assert hb.id == node_id("edge-1", socket.gethostname(), os.getpid())
    await hb.start()
    try:
        [node] = await list_nodes(engine)
        assert (node.id, node.node_name, node.pid, node.config_version) == (
            hb.id,
            "edge-1",
            os.getpid(),
            3,
        )
        first_beat = node.heartbeat_at
        version["now"] = 4
        deadline = asyncio.get_running_loop().time() + 5
        while (await list_nodes(engine))[0].config_version != 4:
            assert asyncio.get_running_loop().time() < deadline, "the beat never followed"
            await asyncio.sleep(0.02)
        [later] = await list_nodes(engine)
        assert later.heartbeat_at > first_beat
        assert later.started_at == node.started_at
    finally:
        await hb.stop()
    assert await list_nodes(engine) == []


async def test_start_purges_long_dead_workers_but_keeps_recent_ones(engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    rows = [
        ("dead:host:1", now - timedelta(hours=2)),
        ("recent:host:2", now - timedelta(seconds=30)),
    ]
    async with write_transaction(engine) as conn:
        await conn.execute(
            insert(DataPlaneNodeRow),
            [
                {
                    "id": node,
                    "node_name": node.split(":")[0],
                    "pid": 1,
                    "config_version": 1,
                    "started_at": at,
                    "heartbeat_at": at,
                }
                for node, at in rows
            ],
        )
    hb = NodeHeartbeat(engine, node_name="edge", version=lambda: 1, interval=60)
    await hb.start()
    try:
        async with engine.connect() as conn:
            ids = set((await conn.execute(select(DataPlaneNodeRow.id))).scalars())
        assert ids == {"recent:host:2", hb.id}
    finally:
        await hb.stop()


async def test_store_errors_are_logged_not_raised(tmp_path: Path) -> None:
    # A store without the table (never migrated): every write fails, none raises.
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/empty.db")
    try:
        hb = NodeHeartbeat(engine, node_name="edge", version=lambda: 0, interval=0.01)
        assert await hb.beat() is False
        await hb.start()
        await asyncio.sleep(0.05)
        assert hb.running
        await hb.stop()
        assert not hb.running
    finally:
        await engine.dispose()
