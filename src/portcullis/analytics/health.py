"""Upstream health as the data plane sees it, merged over every live worker.

Each data-plane worker judges its upstream targets on its own (passive checks on
its traffic, its own active probes, its own circuit breakers). With every
heartbeat a worker stores its view as JSON in `dataplane_nodes.health`
(`worker_health_json`); the control plane merges the fresh rows into one
summary (`merge_upstream_health`, `upstream_health_summary`) for the health and
admin APIs, the `/metrics` upstream series, and the "upstream down" alert rule.

A worker's view of one target: `healthy` (its health checks say up) and its
breaker state (`closed`, `open`, `half-open`). The merged status of a target is

- `up`: every reporting worker sees it healthy with a closed breaker;
- `down`: no reporting worker can send it traffic (each sees it unhealthy or
  its breaker open);
- `degraded`: anything in between (some workers avoid it, or a breaker is
  half-open and probing).

An upstream is `up` when all of its targets are up, `down` when all are down
(no worker can reach any target: requests get 503), else `degraded`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.runtime.heartbeat import DataPlaneNode, list_nodes

if TYPE_CHECKING:
    from portcullis.runtime.snapshot import Snapshot

Status = Literal["up", "degraded", "down"]
BREAKER_STATES = ("closed", "open", "half-open")
# A worker whose heartbeat is older than this many seconds is not counted (the
# admin readiness rule: three missed beats at the default 2 s interval).
DEFAULT_FRESH_FOR = 6.0
HEALTH_FORMAT = 1


def worker_health(snapshot: Snapshot) -> dict[str, Any]:
    """This worker's view of every upstream target of `snapshot` (JSON-ready)."""
    upstreams: dict[str, dict[str, list[Any]]] = {}
    for name, pool in snapshot.pools.items():
        upstreams[name] = {
            # `health.up` is read, not `healthy`: a health read must not trigger recovery.
            t.key: [t.health.up, t.breaker.state.value]
            for t in pool.targets
        }
    return {"v": HEALTH_FORMAT, "upstreams": upstreams}


def worker_health_json(snapshot: Snapshot) -> str:
    """`worker_health` serialized for the heartbeat row (compact, keys sorted)."""
    return json.dumps(worker_health(snapshot), separators=(",", ":"), sort_keys=True)


def _parse(text: str | None) -> dict[str, dict[str, tuple[bool, str]]] | None:
    """A heartbeat's health JSON as {upstream: {target: (healthy, breaker)}}; None if unusable.

    Malformed entries inside a well-formed report are skipped.
    """
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("v") != HEALTH_FORMAT:
        return None
    upstreams = data.get("upstreams")
    if not isinstance(upstreams, dict):
        return None
    out: dict[str, dict[str, tuple[bool, str]]] = {}
    for name, targets in upstreams.items():
        if not isinstance(targets, dict):
            continue
        parsed: dict[str, tuple[bool, str]] = {}
        for key, view in targets.items():
            if (
                isinstance(view, list)
                and len(view) == 2
                and isinstance(view[0], bool)
                and view[1] in BREAKER_STATES
            ):
                parsed[str(key)] = (view[0], view[1])
        out[str(name)] = parsed
    return out


def _target_status(reports: int, unhealthy: int, blocked: int, closed: int) -> Status:
    if unhealthy == 0 and closed == reports:
        return "up"
    # Blocked: the worker sees it unhealthy or its breaker open, so sends it nothing.
    if blocked >= reports:
        return "down"
    return "degraded"


def merge_upstream_health(
    nodes: Iterable[DataPlaneNode],
    *,
    now: datetime | None = None,
    fresh_for: float = DEFAULT_FRESH_FOR,
) -> dict[str, Any]:
    """Merge the fresh workers' health views into one summary (see the module docstring).

    Returns `{"workers": n, "upstreams": [{"name", "status", "targets": [{"target",
    "status", "workers", "unhealthy_workers", "breakers": {state: workers}}]}]}`,
    sorted by name; `workers` counts the fresh heartbeats with a readable health report.
    """
    moment = now if now is not None else datetime.now(UTC)
    horizon = moment - timedelta(seconds=fresh_for)
    parsed = (_parse(n.health) for n in nodes if n.heartbeat_at >= horizon)
    views = [v for v in parsed if v is not None]
    merged: dict[str, dict[str, list[Any]]] = {}
    for view in views:
        for name, targets in view.items():
            upstream = merged.setdefault(name, {})
            for key, (healthy, breaker) in targets.items():
                entry = upstream.setdefault(key, [0, 0, 0, dict.fromkeys(BREAKER_STATES, 0)])
                entry[0] += 1
                if not healthy:
                    entry[1] += 1
                if not healthy or breaker == "open":
                    entry[2] += 1
                entry[3][breaker] += 1
    upstreams = []
    for name in sorted(merged):
        rows: list[dict[str, Any]] = []
        for key in sorted(merged[name]):
            reports, unhealthy, blocked, breakers = merged[name][key]
            rows.append(
                {
                    "target": key,
                    "status": _target_status(reports, unhealthy, blocked, breakers["closed"]),
                    "workers": reports,
                    "unhealthy_workers": unhealthy,
                    "breakers": breakers,
                }
            )
        upstreams.append({"name": name, "status": _upstream_status(rows), "targets": rows})
    return {"workers": len(views), "upstreams": upstreams}


def _upstream_status(targets: Sequence[dict[str, Any]]) -> Status:
    statuses = {t["status"] for t in targets}
    if not statuses or statuses == {"up"}:
        return "up"
    if statuses == {"down"}:
        return "down"
    return "degraded"


async def upstream_health_summary(
    engine: AsyncEngine, *, fresh_for: float = DEFAULT_FRESH_FOR
) -> dict[str, Any]:
    """The merged upstream health of every live data-plane worker (see `merge_upstream_health`).

    For alert rules and APIs: an upstream whose `status` is `down` has no target
    any worker can send traffic to.
    """
    return merge_upstream_health(await list_nodes(engine), fresh_for=fresh_for)


def upstream_statuses(summary: dict[str, Any]) -> dict[str, Status]:
    """`{upstream: status}` from a summary: the short form `/health/ready` shows."""
    return {u["name"]: u["status"] for u in summary["upstreams"]}
