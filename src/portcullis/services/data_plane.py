"""Is the data plane up and serving the current config? Judged from worker heartbeats.

Each data-plane worker writes a heartbeat row every `heartbeat_interval` seconds
with the config version its snapshot holds (runtime/heartbeat.py). A worker is

- `stale` when its last heartbeat is older than three intervals (dead or cut off);
- `current` when it serves the store's current version (or a newer one, if a change
  landed between the two reads);
- `propagating` when it is behind but cannot have reported the change yet: its last
  heartbeat is from before the change plus the time a worker needs to notice and
  load it (two config polls and a second of slack);
- `lagging` otherwise: it heard of the change and still serves an older version
  (the new config failed to build there, or its watcher is stuck).

`/health/ready` needs at least one live worker and no lagging one.

`DataPlaneService` holds the operations of the data-plane endpoints: the workers
with their state, and upstream health merged over live workers (an
organization-limited caller sees only its organization's upstreams and those of
its services given by URL).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.analytics.health import DEFAULT_FRESH_FOR, merge_upstream_health
from portcullis.runtime.heartbeat import DataPlaneNode, list_nodes
from portcullis.runtime.snapshot import implicit_upstream_name
from portcullis.services.config_editor import ConfigEditor
from portcullis.services.context import Operation
from portcullis.store.config_repository import ConfigHead

# A worker missing this many heartbeats in a row counts as gone.
FRESH_BEATS = 3
# Time a worker may need, beyond its config poll, to build and swap a snapshot.
SETTLE_SLACK = timedelta(seconds=1)


# The fields a list of workers may be sorted by (every face offers the same).
NODE_SORT = ("node_name", "config_version", "heartbeat_at", "started_at", "state")


class NodeState(StrEnum):
    CURRENT = "current"
    PROPAGATING = "propagating"
    LAGGING = "lagging"
    STALE = "stale"


@dataclass(frozen=True, slots=True)
class NodeStatus:
    node: DataPlaneNode
    state: NodeState
    heartbeat_age: float

    def as_json(self) -> dict[str, Any]:
        n = self.node
        return {
            "id": n.id,
            "node_name": n.node_name,
            "pid": n.pid,
            "config_version": n.config_version,
            "started_at": _iso(n.started_at),
            "heartbeat_at": _iso(n.heartbeat_at),
            "heartbeat_age": round(self.heartbeat_age, 3),
            "state": self.state.value,
        }


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def classify(
    nodes: Sequence[DataPlaneNode],
    head: ConfigHead,
    *,
    now: datetime,
    heartbeat_interval: float,
    poll_interval: float,
) -> list[NodeStatus]:
    """Each node's state relative to the store's head at `now` (see the module docstring)."""
    fresh_for = timedelta(seconds=FRESH_BEATS * heartbeat_interval)
    settled_at = (
        head.updated_at + timedelta(seconds=2 * poll_interval) + SETTLE_SLACK
        if head.updated_at is not None
        else None
    )
    out = []
    for node in nodes:
        age = now - node.heartbeat_at
        if age > fresh_for:
            state = NodeState.STALE
        elif node.config_version >= head.version:
            state = NodeState.CURRENT
        elif settled_at is None or node.heartbeat_at < settled_at:
            state = NodeState.PROPAGATING
        else:
            state = NodeState.LAGGING
        out.append(NodeStatus(node, state, max(age.total_seconds(), 0.0)))
    return out


def data_plane_problem(
    statuses: Sequence[NodeStatus], head: ConfigHead, fresh_for: float
) -> str | None:
    """Why the data plane is not ready (a sentence naming the workers), or None when it is."""
    live = [s for s in statuses if s.state is not NodeState.STALE]
    if not live:
        return f"no data-plane worker has sent a heartbeat in the last {fresh_for:g} s"
    lagging = [s for s in live if s.state is NodeState.LAGGING]
    if lagging:
        named = ", ".join(f"{s.node.id} serves version {s.node.config_version}" for s in lagging)
        return (
            f"{len(lagging)} data-plane worker(s) have not loaded config version "
            f"{head.version}: {named}"
        )
    return None


class DataPlaneService:
    """The data-plane workers and the upstream health they report (read only)."""

    def __init__(
        self,
        engine: AsyncEngine,
        editor: ConfigEditor,
        *,
        heartbeat_interval: float,
        poll_interval: float,
    ) -> None:
        self._engine = engine
        self._editor = editor
        self._heartbeat_interval = heartbeat_interval
        self._poll_interval = poll_interval

    async def nodes(
        self, op: Operation, *, state: NodeState | None = None, node_name: str | None = None
    ) -> list[dict[str, Any]]:
        """Every worker with its state (workers serve every organization: no scoping)."""
        statuses = classify(
            await list_nodes(self._engine),
            await self._editor.repository.head(),
            now=op.now(),
            heartbeat_interval=self._heartbeat_interval,
            poll_interval=self._poll_interval,
        )
        return [
            s.as_json()
            for s in statuses
            if (state is None or s.state is state)
            and (node_name is None or s.node.node_name == node_name)
        ]

    async def upstream_health(self, op: Operation) -> dict[str, Any]:
        """Target health and breaker states merged over live workers, limited to the
        upstreams the caller's organization may see."""
        fresh_for = max(DEFAULT_FRESH_FOR, FRESH_BEATS * self._heartbeat_interval)
        summary = merge_upstream_health(
            await list_nodes(self._engine), now=op.now(), fresh_for=fresh_for
        )
        scope = op.scope
        if scope.limited:
            config = (await self._editor.state()).config
            visible = {u.name for u in config.upstreams if scope.sees_named(u.organization)} | {
                implicit_upstream_name(s)
                for s in config.services
                if scope.sees_named(s.organization)
            }
            summary["upstreams"] = [u for u in summary["upstreams"] if u["name"] in visible]
        return summary
