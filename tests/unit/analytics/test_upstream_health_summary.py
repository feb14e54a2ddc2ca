"""A worker's upstream health view, and the merge of several workers' views."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from portcullis.analytics.health import (
    merge_upstream_health,
    upstream_statuses,
    worker_health,
    worker_health_json,
)
from portcullis.model.config import GatewayConfig, Service, Target, Upstream
from portcullis.runtime.heartbeat import DataPlaneNode
from portcullis.runtime.snapshot import build_snapshot

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def config() -> GatewayConfig:
    return GatewayConfig(
        upstreams=[
            Upstream(
                name="pool",
                targets=[Target(target="10.0.0.1:80"), Target(target="10.0.0.2:80")],
            )
        ],
        services=[
            Service(name="pooled", upstream="pool"),
            Service(name="single", url="http://127.0.0.1:9000/api"),
        ],
    )


def node(pid: int, health: dict[str, object] | None, age: float = 1.0) -> DataPlaneNode:
    return DataPlaneNode(
        id=f"n:h:{pid}",
        node_name="n",
        pid=pid,
        config_version=1,
        started_at=NOW - timedelta(minutes=5),
        heartbeat_at=NOW - timedelta(seconds=age),
        health=json.dumps(health) if health is not None else None,
    )


def view(**targets: tuple[bool, str]) -> dict[str, object]:
    return {"v": 1, "upstreams": {"pool": {k: list(v) for k, v in targets.items()}}}


def test_worker_health_reports_every_pool_and_target() -> None:
    snapshot = build_snapshot(config(), 3)
    pool = snapshot.pools["pool"]
    pool.targets[1].health.up = False
    for _ in range(50):
        pool.targets[0].breaker.record(False)
    health = worker_health(snapshot)
    assert health == {
        "v": 1,
        "upstreams": {
            "pool": {"10.0.0.1:80": [True, "open"], "10.0.0.2:80": [False, "closed"]},
            "single@url": {"127.0.0.1:9000": [True, "closed"]},
        },
    }
    assert json.loads(worker_health_json(snapshot)) == health


def test_one_worker_down_is_degraded_all_down_is_down() -> None:
    nodes = [
        node(1, view(a=(True, "closed"), b=(False, "closed"))),
        node(2, view(a=(True, "closed"), b=(True, "open"))),
    ]
    summary = merge_upstream_health(nodes, now=NOW)
    assert summary["workers"] == 2
    [pool] = summary["upstreams"]
    targets = {t["target"]: t for t in pool["targets"]}
    assert targets["a"]["status"] == "up"
    # b: unhealthy in one worker, breaker open in the other: nobody sends it traffic.
    assert targets["b"] == {
        "target": "b",
        "status": "down",
        "workers": 2,
        "unhealthy_workers": 1,
        "breakers": {"closed": 1, "open": 1, "half-open": 0},
    }
    assert pool["status"] == "degraded"
    nodes = [node(1, view(a=(False, "closed"), b=(False, "open")))]
    assert upstream_statuses(merge_upstream_health(nodes, now=NOW)) == {"pool": "down"}


def test_partial_and_half_open_targets_are_degraded() -> None:
    nodes = [
        node(1, view(a=(False, "closed"))),
        node(2, view(a=(True, "closed"))),
    ]
    summary = merge_upstream_health(nodes, now=NOW)
    assert summary["upstreams"][0]["targets"][0]["status"] == "degraded"
    nodes = [node(1, view(a=(True, "half-open")))]
    summary = merge_upstream_health(nodes, now=NOW)
    assert summary["upstreams"][0]["targets"][0]["status"] == "degraded"


def test_stale_silent_and_unreadable_workers_are_ignored() -> None:
    nodes = [
        node(1, view(a=(True, "closed"))),
        node(2, view(a=(False, "open")), age=60),  # stale: its view no longer counts
        node(3, None),  # sent no health
        DataPlaneNode("x", "n", 4, 1, NOW, NOW, health="{not json"),
        DataPlaneNode("y", "n", 5, 1, NOW, NOW, health='{"v": 99}'),
        node(6, {"v": 1, "upstreams": {"pool": {"a": ["yes", "closed"], "c": [True, "odd"]}}}),
    ]
    summary = merge_upstream_health(nodes, now=NOW)
    assert summary["workers"] == 2  # 1 and 6 (a readable report, its bad entries skipped)
    [pool] = summary["upstreams"]
    assert [(t["target"], t["status"], t["workers"]) for t in pool["targets"]] == [("a", "up", 1)]


def test_no_workers_no_upstreams() -> None:
    assert merge_upstream_health([], now=NOW) == {"workers": 0, "upstreams": []}
