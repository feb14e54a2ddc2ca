"""Classifying data-plane workers from their heartbeats, and the readiness verdict."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from portcullis.runtime.heartbeat import DataPlaneNode
from portcullis.services.data_plane import NodeState, classify, data_plane_problem
from portcullis.store.config_repository import ConfigHead

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def node(version: int, beat_ago: float, name: str = "n:h:1") -> DataPlaneNode:
    at = NOW - timedelta(seconds=beat_ago)
    return DataPlaneNode(name, name.split(":")[0], 1, version, at - timedelta(hours=1), at)


@pytest.mark.parametrize(
    ("version", "beat_ago", "changed_ago", "expected"),
    [
        (5, 0.1, 60.0, NodeState.CURRENT),
        (6, 0.1, 60.0, NodeState.CURRENT),  # a newer version landed between the reads
        (5, 6.1, 60.0, NodeState.STALE),  # three 2 s intervals without a beat
        (4, 6.1, 60.0, NodeState.STALE),
        (4, 2.0, 1.0, NodeState.PROPAGATING),  # last beat before the change
        (4, 0.1, 1.0, NodeState.PROPAGATING),  # beat after it, but within poll + slack
        (4, 0.1, 1.6, NodeState.LAGGING),  # two 0.25 s polls + 1 s slack have passed
        (4, 0.1, 60.0, NodeState.LAGGING),
    ],
)
def test_classify(version: int, beat_ago: float, changed_ago: float, expected: NodeState) -> None:
    head = ConfigHead(5, NOW - timedelta(seconds=changed_ago))
    [status] = classify(
        [node(version, beat_ago)], head, now=NOW, heartbeat_interval=2.0, poll_interval=0.25
    )
    assert status.state is expected
    assert status.heartbeat_age == pytest.approx(beat_ago)


def test_an_empty_store_has_nothing_to_lag_behind() -> None:
    [status] = classify(
        [node(0, 0.5)], ConfigHead(0, None), now=NOW, heartbeat_interval=2.0, poll_interval=0.25
    )
    assert status.state is NodeState.CURRENT


def test_verdict_names_the_lagging_workers() -> None:
    head = ConfigHead(7, NOW - timedelta(minutes=1))
    statuses = classify(
        [node(7, 0.1, "a:h:1"), node(6, 0.1, "b:h:2"), node(3, 30, "c:h:3")],
        head,
        now=NOW,
        heartbeat_interval=2.0,
        poll_interval=0.25,
    )
    problem = data_plane_problem(statuses, head, 6.0)
    assert (
        problem == "1 data-plane worker(s) have not loaded config version 7: b:h:2 serves version 6"
    )
    assert data_plane_problem(statuses[:1], head, 6.0) is None
    assert data_plane_problem(statuses[2:], head, 6.0) == (
        "no data-plane worker has sent a heartbeat in the last 6 s"
    )
    assert statuses[0].as_json()["heartbeat_at"] == "2026-01-01T11:59:59.900000Z"
