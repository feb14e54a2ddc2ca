"""Data-plane worker heartbeats: which config version each worker serves, and that it is alive.

Every data-plane worker upserts one row in `dataplane_nodes` when it starts and
then every `interval` seconds, and deletes it when it stops. The control plane
reads the table for `/health/ready` ("a data plane is up and has loaded the
current config") and for `GET /admin/v1/data-plane/nodes`. A worker that dies
without stopping leaves a row whose heartbeat goes stale; readers ignore stale
rows and a starting worker purges long-dead ones.

A heartbeat is bookkeeping, never a reason to stop serving traffic: every store
error is logged and retried on the next tick.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.periodic import Periodic
from portcullis.store.engine import dialect_insert, write_transaction
from portcullis.store.identity_tables import DataPlaneNodeRow

log = structlog.get_logger(__name__)

# Rows whose heartbeat is older than this are deleted when a worker starts: their
# process is long gone (crashed, killed, or its host vanished).
PURGE_AFTER = timedelta(hours=1)


def node_id(node_name: str, hostname: str, pid: int) -> str:
    """The row key of one worker process: unique per node, host and process."""
    return f"{node_name}:{hostname}:{pid}"[:160]


class NodeHeartbeat:
    """Keeps this worker's `dataplane_nodes` row up to date while it runs.

    `version` is read on every beat (it is the snapshot holder's current version),
    so the row follows config swaps within one interval. `health`, when given, is
    called on every beat too: the worker's upstream health as JSON text
    (`portcullis.analytics.health.worker_health_json`), stored in the row.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        node_name: str,
        version: Callable[[], int],
        interval: float,
        health: Callable[[], str | None] | None = None,
    ) -> None:
        self._engine = engine
        self._version = version
        self._health = health
        self.interval = interval
        self.node_name = node_name[:128]
        self.pid = os.getpid()
        self.id = node_id(node_name, socket.gethostname(), self.pid)
        self.started_at = datetime.now(UTC)
        # `beat` logs its own store errors (a missed beat is not fatal), so no round raises.
        self._loop = Periodic("heartbeat", self.beat, interval=interval)

    @property
    def running(self) -> bool:
        """True between `start` and `stop` while the beat loop is alive."""
        return self._loop.running

    async def beat(self) -> bool:
        """Upsert this worker's row now; True on success, False (logged) on a store error."""
        now = datetime.now(UTC)
        values: dict[str, Any] = {
            "id": self.id,
            "node_name": self.node_name,
            "pid": self.pid,
            "config_version": self._version(),
            "started_at": self.started_at,
            "heartbeat_at": now,
            "health": self._read_health(),
        }
        # Both supported backends speak INSERT … ON CONFLICT DO UPDATE.
        insert = dialect_insert(self._engine)
        stmt = insert(DataPlaneNodeRow).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[DataPlaneNodeRow.id],
            set_={
                "config_version": stmt.excluded.config_version,
                "heartbeat_at": stmt.excluded.heartbeat_at,
                "health": stmt.excluded.health,
            },
        )
        try:
            async with write_transaction(self._engine) as conn:
                await conn.execute(stmt)
        except Exception as exc:
            log.warning("heartbeat.failed", node=self.id, error=str(exc), kind=type(exc).__name__)
            return False
        return True

    def _read_health(self) -> str | None:
        if self._health is None:
            return None
        try:
            return self._health()
        except Exception as exc:
            log.warning("heartbeat.health_failed", node=self.id, error=repr(exc))
            return None

    async def start(self) -> None:
        """Purge long-dead rows, beat once, and keep beating every `interval` seconds."""
        try:
            async with write_transaction(self._engine) as conn:
                await conn.execute(
                    delete(DataPlaneNodeRow).where(
                        DataPlaneNodeRow.heartbeat_at < datetime.now(UTC) - PURGE_AFTER
                    )
                )
        except Exception as exc:
            log.warning("heartbeat.purge_failed", error=str(exc), kind=type(exc).__name__)
        await self.beat()
        self._loop.start()

    async def stop(self) -> None:
        """Stop beating and delete this worker's row (so readiness no longer counts it)."""
        await self._loop.stop()
        try:
            async with write_transaction(self._engine) as conn:
                await conn.execute(delete(DataPlaneNodeRow).where(DataPlaneNodeRow.id == self.id))
        except Exception as exc:
            log.warning("heartbeat.remove_failed", node=self.id, error=str(exc))


@dataclass(frozen=True, slots=True)
class DataPlaneNode:
    """One data-plane worker as its last heartbeat described it."""

    id: str
    node_name: str
    pid: int
    config_version: int
    started_at: datetime
    heartbeat_at: datetime
    # The worker's upstream health JSON (see NodeHeartbeat), None if it sent none.
    health: str | None = None


async def list_nodes(engine: AsyncEngine) -> list[DataPlaneNode]:
    """Every registered worker, freshest heartbeat first (stale ones included)."""
    query = select(
        DataPlaneNodeRow.id,
        DataPlaneNodeRow.node_name,
        DataPlaneNodeRow.pid,
        DataPlaneNodeRow.config_version,
        DataPlaneNodeRow.started_at,
        DataPlaneNodeRow.heartbeat_at,
        DataPlaneNodeRow.health,
    ).order_by(DataPlaneNodeRow.heartbeat_at.desc(), DataPlaneNodeRow.id)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [
        DataPlaneNode(
            id=row.id,
            node_name=row.node_name,
            pid=row.pid,
            config_version=row.config_version,
            started_at=row.started_at,
            heartbeat_at=row.heartbeat_at,
            health=row.health,
        )
        for row in rows
    ]
