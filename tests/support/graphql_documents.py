"""Helpers of the persisted-document tests: an audit sink that keeps what it is given,
and the operation of a command-line user recorded into it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from portcullis.services.context import Clock, Operation, RequestFacts, utc_now
from portcullis.services.rbac import Caller
from portcullis.store.config_repository import ConfigVersion, OnWrite


class RecordingAudit:
    """An `AuditSink` that keeps each event as a dict (no store needed)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

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
        self.events.append(
            {
                "actor": actor,
                "action": action,
                "resource_type": resource_type,
                "resource_id": resource_id,
                "before": before,
                "after": after,
                "status": status,
                "in_transaction": conn is not None,
            }
        )

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
        raise AssertionError("persisted documents are no config write")


def cli_operation(audit: RecordingAudit, clock: Clock = utc_now) -> Operation:
    return Operation.for_cli(audit, clock=clock)


class DateClock:
    """A UTC clock the test moves (`advance`), for `clock=` parameters."""

    def __init__(self, now: datetime = datetime(2030, 1, 1, tzinfo=UTC)) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
