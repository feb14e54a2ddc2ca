"""Data-plane views without HTTP: worker states judged at the operation's clock, and the
upstream health an organization-limited caller may see."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.services.config_editor import ConfigEditor
from portcullis.services.data_plane import DataPlaneService, NodeState
from portcullis.store.engine import write_transaction
from portcullis.store.identity_tables import DataPlaneNodeRow
from support.services import apply_config, operation

T0 = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
HEALTH = {
    "v": 1,
    "upstreams": {
        "pool-a": {"10.0.0.1:80": [True, "closed"]},
        "pool-b": {"10.0.0.2:80": [False, "open"]},
        "b@url": {"10.0.0.3:80": [True, "closed"]},
    },
}
CONFIG = {
    "upstreams": [
        {"name": "pool-a", "targets": [{"target": "10.0.0.1:80"}], "organization": "org-a"},
        {"name": "pool-b", "targets": [{"target": "10.0.0.2:80"}], "organization": "org-b"},
    ],
    "services": [
        {"name": "a", "url": "http://pool-a", "organization": "org-a"},
        {"name": "b", "url": "http://10.0.0.3:80", "organization": "org-b"},
    ],
}


@pytest.fixture
async def data_plane(engine: AsyncEngine, editor: ConfigEditor) -> DataPlaneService:
    await apply_config(engine, CONFIG)
    async with write_transaction(engine) as conn:
        for name, beat in (("edge-1", T0), ("edge-2", T0 - timedelta(minutes=5))):
            await conn.execute(
                insert(DataPlaneNodeRow).values(
                    id=f"{name}:host:1",
                    node_name=name,
                    pid=1,
                    config_version=1,
                    started_at=T0 - timedelta(hours=1),
                    heartbeat_at=beat,
                    health=json.dumps(HEALTH),
                )
            )
    return DataPlaneService(engine, editor, heartbeat_interval=2.0, poll_interval=1.0)


async def test_workers_are_judged_at_the_operations_clock(
    engine: AsyncEngine, data_plane: DataPlaneService
) -> None:
    op = operation(engine, clock=lambda: T0 + timedelta(seconds=1))
    states = {n["node_name"]: n["state"] for n in await data_plane.nodes(op)}
    assert states == {"edge-1": NodeState.CURRENT.value, "edge-2": NodeState.STALE.value}
    stale = await data_plane.nodes(op, state=NodeState.STALE)
    assert [n["node_name"] for n in stale] == ["edge-2"]
    assert await data_plane.nodes(op, node_name="edge-9") == []
    later = operation(engine, clock=lambda: T0 + timedelta(minutes=1))
    assert {n["state"] for n in await data_plane.nodes(later)} == {NodeState.STALE.value}


async def test_upstream_health_shows_a_limited_caller_only_its_organizations(
    engine: AsyncEngine, data_plane: DataPlaneService
) -> None:
    at = T0 + timedelta(seconds=1)
    everyone = await data_plane.upstream_health(operation(engine, clock=lambda: at))
    assert [u["name"] for u in everyone["upstreams"]] == ["b@url", "pool-a", "pool-b"]
    assert everyone["workers"] == 1
    org_b = await data_plane.upstream_health(operation(engine, "org-b", clock=lambda: at))
    assert [(u["name"], u["status"]) for u in org_b["upstreams"]] == [
        ("b@url", "up"),
        ("pool-b", "down"),
    ]
