"""Workers' upstream health travels with their heartbeats and merges in the store
(SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.analytics.health import upstream_health_summary, worker_health_json
from portcullis.model.config import GatewayConfig, Service, Target, Upstream
from portcullis.runtime.heartbeat import NodeHeartbeat, list_nodes
from portcullis.runtime.snapshot import build_snapshot
from portcullis.store.engine import create_engine
from portcullis.store.migrations import upgrade_to_head


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await upgrade_to_head(database_url)
    eng = create_engine(database_url)
    yield eng
    await eng.dispose()


async def test_health_is_stored_with_every_beat_and_merged(engine: AsyncEngine) -> None:
    config = GatewayConfig(
        upstreams=[Upstream(name="pool", targets=[Target(target="a:80"), Target(target="b:80")])],
        services=[Service(name="svc", upstream="pool")],
    )
    snapshot = build_snapshot(config, 1)
    beats = [
        NodeHeartbeat(
            engine,
            node_name=f"edge-{i}",
            version=lambda: 1,
            interval=0.05,
            health=lambda: worker_health_json(snapshot),
        )
        for i in range(2)
    ]
    # Two workers of one process stand in for two processes: give them distinct ids.
    beats[1].id = beats[1].id + "-second"
    for hb in beats:
        await hb.start()
    try:
        summary = await upstream_health_summary(engine)
        assert summary["workers"] == 2
        [pool] = summary["upstreams"]
        assert pool["status"] == "up"
        snapshot.pools["pool"].targets[1].health.up = False
        deadline = asyncio.get_running_loop().time() + 5
        # A target going down shows at each worker's next beat.
        while (await upstream_health_summary(engine))["upstreams"][0]["targets"][1][
            "unhealthy_workers"
        ] < 2:
            assert asyncio.get_running_loop().time() < deadline, "health never followed"
            await asyncio.sleep(0.02)
        [pool] = (await upstream_health_summary(engine))["upstreams"]
        assert [(t["target"], t["status"]) for t in pool["targets"]] == [
            ("a:80", "up"),
            ("b:80", "down"),
        ]
        assert pool["status"] == "degraded"
    finally:
        for hb in beats:
            await hb.stop()


async def test_a_failing_health_source_never_stops_the_heartbeat(engine: AsyncEngine) -> None:
    def broken() -> str:
        raise RuntimeError("no snapshot")

    hb = NodeHeartbeat(engine, node_name="edge", version=lambda: 1, interval=10, health=broken)
    assert await hb.beat()
    [node] = await list_nodes(engine)
    assert node.health is None
    plain = NodeHeartbeat(engine, node_name="plain", version=lambda: 1, interval=10)
    assert await plain.beat()
    assert {n.node_name: n.health for n in await list_nodes(engine)} == {
        "edge": None,
        "plain": None,
    }
