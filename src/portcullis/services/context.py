"""One operation of the control plane: who asks, within which organization, when, and
where it is recorded.

Every face builds an `Operation` and passes it to the service it calls: the REST
API from the authenticated request (admin/operations.py), the CLI for the OS user
(`Operation.for_cli`), tests directly. Services read the caller's scope, the clock
and the audit trail from it and never from a web request.
"""

from __future__ import annotations

import getpass
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from portcullis.services.rbac import Caller
from portcullis.services.scoping import UNLIMITED, OrgScope
from portcullis.store.config_repository import ConfigVersion, OnWrite

Clock = Callable[[], datetime]
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """Facts about the request that the audit log records."""

    request_id: str
    client_ip: str | None

    @classmethod
    def of(cls, sent_request_id: str, client_ip: str | None) -> RequestFacts:
        """The facts of a web request: the client's `X-Request-Id` when well-formed,
        else a new one."""
        request_id = (
            sent_request_id if _REQUEST_ID.fullmatch(sent_request_id) else secrets.token_hex(16)
        )
        return cls(request_id, client_ip)


class AuditSink(Protocol):
    """Where an operation's audit events go (`services.audit.AuditLog`)."""

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
    ) -> None: ...

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
    ) -> OnWrite: ...


@dataclass(frozen=True, slots=True)
class Operation:
    """The context of one operation.

    `caller` is the authenticated admin (None for the CLI, which acts as `actor`);
    `scope` the organization the caller is confined to (`UNLIMITED`: every one);
    `facts` the request id and client address the audit event carries; `clock`
    the time source (tests drive it).
    """

    caller: Caller | None
    actor: str
    facts: RequestFacts
    audit: AuditSink
    scope: OrgScope = UNLIMITED
    clock: Clock = field(default=utc_now)

    @classmethod
    def for_caller(
        cls,
        caller: Caller,
        facts: RequestFacts,
        audit: AuditSink,
        scope: OrgScope = UNLIMITED,
        clock: Clock = utc_now,
    ) -> Operation:
        return cls(caller, caller.actor, facts, audit, scope, clock)

    @classmethod
    def for_cli(cls, audit: AuditSink, clock: Clock = utc_now) -> Operation:
        """An operation of the command line: unlimited, recorded as `cli:<os user>`."""
        facts = RequestFacts(request_id=f"cli-{secrets.token_hex(8)}", client_ip=None)
        return cls(None, cli_actor(), facts, audit, UNLIMITED, clock)

    def now(self) -> datetime:
        return self.clock()

    async def record(
        self,
        action: str,
        resource_type: str,
        resource_id: str | None,
        *,
        before: Any = None,
        after: Any = None,
        status: int = 200,
        config_version: int | None = None,
        conn: AsyncConnection | None = None,
    ) -> None:
        """Append one audit event for this operation (redacted and diffed by the log);
        with `conn`, in that connection's transaction (it commits with the change)."""
        await self.audit.record(
            caller=self.caller,
            actor=self.actor,
            facts=self.facts,
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            before=before,
            after=after,
            status=status,
            config_version=config_version,
            conn=conn,
        )

    def on_config_write(
        self,
        action: str,
        resource_type: str,
        resource_id: str | Callable[[ConfigVersion], str] | None,
        *,
        before: Any = None,
        after: Any = None,
        status: int = 200,
        only_if_created: bool = False,
        schema: type[BaseModel] | None = None,
    ) -> OnWrite:
        """A config write hook recording this operation's audit event in the config
        change's own transaction, with the version it produced (`resource_id` and
        `after` may be functions of it; `only_if_created`: none when nothing changed)."""
        return self.audit.on_config_write(
            caller=self.caller,
            actor=self.actor,
            facts=self.facts,
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            before=before,
            after=after,
            status=status,
            only_if_created=only_if_created,
            schema=schema,
        )


def cli_actor() -> str:
    """`cli:<os user>`: who made a change from the command line, for the audit log."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name in a bare container
        user = os.environ.get("USER") or "unknown"
    return f"cli:{user}"
