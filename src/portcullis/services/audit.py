"""The audit log: one append-only row per mutating admin call.

Each event records who (actor), what (action on a resource type and id), the
before/after state with the changed fields, the config version it produced, the
request id, the client IP, the time, and the organization it concerns.

Secrets are redacted before anything is written, by schema: a document recorded
with its model (`schema=`: gateway entities, the whole config) has every value the
model marks secret replaced by `"[redacted]"` (model/secrets.py: `SecretStr`,
`Secret[...]`, plugin configs by their plugin's model), whatever its key is called.
Documents recorded without a model (admin users, tokens, keys, clients: metadata
that holds no secret by construction) get the older net of secret-looking key names.
The list of changes is computed on the real values, so a changed secret still shows
as a change, with both sides redacted.

The organization an event concerns is the resource's (its `organization_id`, or
its `organization` name looked up in the same transaction, or the organization
itself), else the caller's; organization-limited admins read only their
organization's events (admin/scoping.py). Deployment-wide events (whole-config
imports, alerting, signing keys by unlimited admins) have none.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Select, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from portcullis.model import secrets
from portcullis.model.secrets import REDACTED
from portcullis.services.context import RequestFacts
from portcullis.services.rbac import Caller
from portcullis.store.admin_tables import AuditEventRow
from portcullis.store.config_repository import ConfigVersion, OnWrite
from portcullis.store.engine import single_statement_engine
from portcullis.store.organizations import organization_id_of

_SECRET_KEY = re.compile(
    r"(secret|passw|token|api[_-]?key|^key$|private|credential|signing)", re.IGNORECASE
)


def redact(value: Any, schema: type[BaseModel] | None = None) -> Any:
    """A copy of a JSON value with its secrets redacted: those `schema` marks, or (no
    schema) every value under a secret-looking key."""
    if schema is not None:
        return secrets.redact(value, schema)
    if isinstance(value, dict):
        return {
            k: (REDACTED if _SECRET_KEY.search(str(k)) and v is not None else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def _at(document: Any, pointer: str) -> Any:
    """The value at a JSON pointer (`changes` paths); REDACTED inside a redacted value."""
    if pointer == "/":  # how `changes` names the whole document
        return document
    for token in pointer.split("/")[1:]:
        if document == REDACTED:
            return REDACTED
        key = token.replace("~1", "/").replace("~0", "~")
        document = document.get(key) if isinstance(document, dict) else None
    return document


def redacted_changes(
    before: Any, after: Any, safe_before: Any, safe_after: Any
) -> list[dict[str, Any]]:
    """`changes` of the real values, each side shown as in the redacted documents."""
    return [
        {"path": c["path"], "old": _at(safe_before, c["path"]), "new": _at(safe_after, c["path"])}
        for c in changes(before, after)
    ]


async def _organization_of(
    conn: AsyncConnection,
    caller: Caller | None,
    resource_type: str,
    resource_id: str | None,
    documents: tuple[Any, ...],
) -> str | None:
    """The organization an event concerns (see the module docstring)."""
    if resource_type == "organization":
        return resource_id
    for document in documents:
        if not isinstance(document, dict):
            continue
        if "organization_id" in document:
            owner = document["organization_id"]
            return None if owner is None else str(owner)
        if "organization" in document:
            name = document["organization"]
            return await organization_id_of(conn, None if name is None else str(name))
    return caller.organization_id if caller is not None else None


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
    organization_id: str | None

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
            "organization_id": self.organization_id,
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
    # An organization-limited reader's scope: only that organization's events.
    organization_id: str | None = None


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
        schema: type[BaseModel] | None = None,
    ) -> None:
        """Append one event; `before`/`after` are redacted (by `schema`, the model they
        are documents of, when given) and diffed here.

        With `conn`, the event is written in that connection's transaction, so it
        commits (or rolls back) together with the change it records.
        """
        safe_before, safe_after = redact(before, schema), redact(after, schema)
        diff = {
            "before": safe_before,
            "after": safe_after,
            "changes": redacted_changes(before, after, safe_before, safe_after),
        }
        who = actor if actor is not None else (caller.actor if caller else "anonymous")

        async def write(conn: AsyncConnection, organization_id: str | None) -> None:
            await conn.execute(
                insert(AuditEventRow).values(
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
                    organization_id=organization_id,
                )
            )

        documents = (after, before)
        if conn is not None:
            await write(
                conn, await _organization_of(conn, caller, resource_type, resource_id, documents)
            )
            return
        # Read first, then one INSERT that commits on its own: no transaction holds
        # SQLite's write lock across event-loop turns (each failed login writes one).
        async with self._single.connect() as reader:
            organization_id = await _organization_of(
                reader, caller, resource_type, resource_id, documents
            )
        async with self._single.begin() as own:
            await write(own, organization_id)

    def on_config_write(
        self,
        *,
        caller: Caller | None,
        actor: str | None = None,
        facts: RequestFacts,
        action: str,
        resource_type: str,
        resource_id: str | Callable[[ConfigVersion], str] | None,
        before: Any = None,
        after: Any = None,
        status: int = 200,
        only_if_created: bool = False,
        schema: type[BaseModel] | None = None,
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
                actor=actor,
                facts=facts,
                action=action,
                resource_type=resource_type,
                resource_id=resource_id(stored) if callable(resource_id) else resource_id,
                before=before,
                after=after(stored) if callable(after) else after,
                config_version=stored.version,
                status=status,
                conn=conn,
                schema=schema,
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
        if where.organization_id is not None:
            query = query.where(t.organization_id == where.organization_id)
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
        organization_id=r.organization_id,
    )
