"""The audit log: one append-only row per mutating admin call.

Each event records who (actor), what (action on a resource type and id), the
before/after state with the changed fields, the config version it produced, the
request id, the client IP and the time. Values under secret-looking keys are
replaced by `"[redacted]"` before anything is written, so neither passwords nor
tokens nor plugin secrets can reach the log.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from portcullis.admin.dependencies import RequestFacts
from portcullis.admin.rbac import Caller
from portcullis.store.admin_tables import AuditEventRow
from portcullis.store.config_repository import ConfigVersion, OnWrite
from portcullis.store.engine import single_statement_engine

REDACTED = "[redacted]"
_SECRET_KEY = re.compile(
    r"(secret|passw|token|api[_-]?key|^key$|private|credential|signing)", re.IGNORECASE
)


def redact(value: Any) -> Any:
    """A copy of a JSON value with every value under a secret-looking key redacted."""
    if isinstance(value, dict):
        return {
            k: (REDACTED if _SECRET_KEY.search(str(k)) and v is not None else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def changes(before: Any, after: Any, path: str = "") -> Iterator[dict[str, Any]]:
    """Changed leaves between two JSON values as `{"path", "old", "new"}` (pointer paths)."""
    if before == after:
        return
    if isinstance(before, dict) and isinstance(after, dict):
        for key in [*before, *(k for k in after if k not in before)]:
            escaped = str(key).replace("~", "~0").replace("/", "~1")
            yield from changes(before.get(key), after.get(key), f"{path}/{escaped}")
        return
    yield {"path": path or "/", "old": before, "new": after}


@dataclass(frozen=True, slots=True)
class AuditEvent:
    id: int
    occurred_at: datetime
    actor: str
    action: str
    resource_type: str
    resource_id: str | None
    diff: dict[str, Any]
    config_version: int | None
    request_id: str
    client_ip: str | None
    status: int

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "occurred_at": self.occurred_at.isoformat().replace("+00:00", "Z"),
            "actor": self.actor,
            "action": self.action,
            "resource_type": self.resource_type,
            "resource_id": self.resource_id,
            "diff": self.diff,
            "config_version": self.config_version,
            "request_id": self.request_id,
            "client_ip": self.client_ip,
            "status": self.status,
        }


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Conditions on events; None means any."""

    actor: str | None = None
    action: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class AuditLog:
    """Writes and reads audit events in the store."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._single = single_statement_engine(engine)

    async def record(
        self,
        *,
        caller: Caller | None,
        actor: str | None = None,
        facts: RequestFacts,
        action: str,
        resource_type: str,
        resource_id: str | None,
        before: Any = None,
        after: Any = None,
        config_version: int | None = None,
        status: int = 200,
        conn: AsyncConnection | None = None,
    ) -> None:
        """Append one event; `before`/`after` are redacted and diffed here.

        With `conn`, the event is written in that connection's transaction, so it
        commits (or rolls back) together with the change it records.
        """
        safe_before, safe_after = redact(before), redact(after)
        diff = {
            "before": safe_before,
            "after": safe_after,
            "changes": list(changes(safe_before, safe_after)),
        }
        who = actor if actor is not None else (caller.actor if caller else "anonymous")
        statement = insert(AuditEventRow).values(
            occurred_at=datetime.now(UTC),
            actor=who,
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            diff=json.dumps(diff, separators=(",", ":"), ensure_ascii=False),
            config_version=config_version,
            request_id=facts.request_id,
            client_ip=facts.client_ip,
            status=status,
        )
        if conn is not None:
            await conn.execute(statement)
            return
        # One INSERT commits on its own; no transaction holding SQLite's write lock
        # across event-loop turns (failed logins write one of these each).
        async with self._single.begin() as own:
            await own.execute(statement)

    def on_config_write(
        self,
        *,
        caller: Caller,
        facts: RequestFacts,
        action: str,
        resource_type: str,
        resource_id: str | Callable[[ConfigVersion], str] | None,
        before: Any = None,
        after: Any = None,
        status: int = 200,
        only_if_created: bool = False,
    ) -> OnWrite:
        """A `ConfigRepository` write hook recording this event in the config change's
        own transaction, with the version it produced (a crash can't keep one without
        the other). `resource_id` and `after` may be functions of the stored version;
        with `only_if_created`, an apply that stored nothing records nothing."""

        async def write(conn: AsyncConnection, stored: ConfigVersion) -> None:
            if only_if_created and not stored.created:
                return
            await self.record(
                caller=caller,
                facts=facts,
                action=action,
                resource_type=resource_type,
                resource_id=resource_id(stored) if callable(resource_id) else resource_id,
                before=before,
                after=after(stored) if callable(after) else after,
                config_version=stored.version,
                status=status,
                conn=conn,
            )

        return write

    def _query(self, where: AuditFilter) -> Select[Any]:
        query = select(AuditEventRow)
        t = AuditEventRow
        if where.actor is not None:
            query = query.where(t.actor == where.actor)
        if where.action is not None:
            query = query.where(t.action == where.action)
        if where.resource_type is not None:
            query = query.where(t.resource_type == where.resource_type)
        if where.resource_id is not None:
            query = query.where(t.resource_id == where.resource_id)
        if where.since is not None:
            query = query.where(t.occurred_at >= where.since)
        if where.until is not None:
            query = query.where(t.occurred_at < where.until)
        return query

    async def page(
        self, where: AuditFilter, *, limit: int, before_id: int | None
    ) -> list[AuditEvent]:
        """Newest first, at most `limit`, only ids below `before_id` when given."""
        query = self._query(where).order_by(AuditEventRow.id.desc()).limit(limit)
        if before_id is not None:
            query = query.where(AuditEventRow.id < before_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_event(r) for r in rows]

    async def stream(self, where: AuditFilter, *, batch: int = 500) -> AsyncIterator[AuditEvent]:
        """Every matching event, oldest first, fetched in batches (for streamed exports)."""
        after = 0
        while True:
            query = (
                self._query(where)
                .where(AuditEventRow.id > after)
                .order_by(AuditEventRow.id)
                .limit(batch)
            )
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
            for r in rows:
                yield _event(r)
            if len(rows) < batch:
                return
            after = rows[-1].id


def _event(r: Any) -> AuditEvent:
    return AuditEvent(
        id=r.id,
        occurred_at=r.occurred_at,
        actor=r.actor,
        action=r.action,
        resource_type=r.resource_type,
        resource_id=r.resource_id,
        diff=json.loads(r.diff),
        config_version=r.config_version,
        request_id=r.request_id,
        client_ip=r.client_ip,
        status=r.status,
    )
