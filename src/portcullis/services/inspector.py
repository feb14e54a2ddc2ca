"""The request inspector: opt-in, time-boxed, sampled captures of a route's traffic.

An operator starts a capture on a route with a duration (at most 15 minutes), a
sample rate and a maximum count (`InspectorService.start`). The session is a store
row, not a config version: starting one changes nothing in the config. A `capture`
invalidation in the same transaction tells every data-plane worker, which then
records sampled requests of that route (proxy/inspector.py): method, path, query,
request and response headers with credentials redacted, status, latency, consumer,
and the first 1 KiB of each body. A capture ends at its time box, when it is full,
or when stopped.

Who sees what:
- operators (admin callers) see the captures of routes in their organization scope
  (the route's organization when the capture started; others are 404);
- a developer of the portal sees the exchanges made with their own applications'
  consumers only (`DeveloperInspector`, through a `DeveloperConsumers` lookup).

The audit log records starts and stops (route, duration, rate, count), never a
captured exchange. Sessions and their exchanges are deleted
`inspector_retention_days` after they started (`inspector_retention_job`).
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol, TypeVar

import structlog
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Select, and_, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.periodic import Periodic
from portcullis.problems import ProblemKind
from portcullis.runtime.captures import BODY_LIMIT
from portcullis.services.config_editor import ConfigEditor
from portcullis.services.context import Operation, utc_now
from portcullis.services.errors import ServiceError, not_found
from portcullis.services.portal import Developer
from portcullis.services.portal_apps import AppConsumer
from portcullis.settings import Settings
from portcullis.store.admin_tables import OrganizationRow
from portcullis.store.engine import write_transaction
from portcullis.store.inspector_tables import CapturedExchangeRow, CaptureSessionRow
from portcullis.store.invalidations import InvalidationKind, append_invalidations

log = structlog.get_logger(__name__)

CAPTURE_ACTIVE = ProblemKind("capture-active", "The route already has an active capture", 409)
MAX_DURATION_SECONDS = 900
MAX_COUNT = 1000
PAGE_LIMIT = 200


class CaptureIn(BaseModel):
    """What a capture takes: how long, how much of the traffic, how many exchanges."""

    model_config = ConfigDict(extra="forbid")

    duration_seconds: int = Field(
        300, ge=1, le=MAX_DURATION_SECONDS, description="The time box (at most 15 minutes)"
    )
    sample_rate: float = Field(
        1.0, gt=0, le=1, description="The share of the route's requests recorded (0 < r <= 1)"
    )
    max_count: int = Field(
        100, ge=1, le=MAX_COUNT, description="The capture ends after this many exchanges"
    )


class CaptureOut(BaseModel):
    """A capture session."""

    id: str
    route: str
    started_by: str
    started_at: datetime
    ends_at: datetime
    sample_rate: float
    max_count: int
    captured: int = Field(description="Exchanges stored so far")
    active: bool = Field(description="Still recording (not stopped, not full, inside its time box)")
    stopped_at: datetime | None
    stop_reason: Literal["stopped", "full"] | None


class ExchangeSummary(BaseModel):
    """One captured exchange, as listed."""

    id: int
    capture_id: str
    route: str
    captured_at: datetime
    method: str
    path: str
    status: int
    latency_ms: float
    consumer: str | None


class CapturedBody(BaseModel):
    """The start of a body: text when it is UTF-8, else base64."""

    encoding: Literal["utf-8", "base64"]
    data: str
    size: int = Field(description="Bytes the body had (what was seen of it)")
    truncated: bool = Field(description=f"Only the first {BODY_LIMIT} bytes are kept")


class ExchangeOut(ExchangeSummary):
    """One captured exchange in full (credential values redacted when recorded)."""

    request_id: str
    query: str
    credential_id: str | None
    request_headers: list[tuple[str, str]]
    response_headers: list[tuple[str, str]]
    request_body: CapturedBody | None = Field(description="null: the body was not read")
    response_body: CapturedBody | None


class ExchangePage(BaseModel):
    items: list[ExchangeSummary]


class DeveloperConsumers(Protocol):
    """The consumers of a developer's applications (`PortalApps.consumers_of`)."""

    async def consumers_of(self, developer: Developer) -> Sequence[AppConsumer]: ...


_M = TypeVar("_M", CaptureSessionRow, CapturedExchangeRow)


def _load(cls: type[_M], row: Any) -> _M:
    """A detached row object from a Core result `Row` (its table's columns)."""
    mapping = row._mapping
    return cls(**{c.key: mapping[c.key] for c in cls.__table__.columns})


def _body(data: bytes | None, size: int | None) -> CapturedBody | None:
    if data is None or size is None:
        return None
    truncated = size > BODY_LIMIT
    # A body cut at the limit may end inside a UTF-8 sequence: drop at most 3 bytes.
    for cut in range(4 if truncated else 1):
        try:
            text = data[: len(data) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return CapturedBody(encoding="utf-8", data=text, size=size, truncated=truncated)
    return CapturedBody(
        encoding="base64", data=base64.b64encode(data).decode(), size=size, truncated=truncated
    )


def _capture_out(row: CaptureSessionRow, now: datetime) -> CaptureOut:
    return CaptureOut(
        id=row.id,
        route=row.route,
        started_by=row.started_by,
        started_at=row.started_at,
        ends_at=row.ends_at,
        sample_rate=row.sample_rate,
        max_count=row.max_count,
        captured=row.captured,
        active=row.stopped_at is None and row.ends_at > now and row.captured < row.max_count,
        stopped_at=row.stopped_at,
        stop_reason=row.stop_reason,
    )


def _summary(row: CapturedExchangeRow) -> ExchangeSummary:
    return ExchangeSummary(
        id=row.id,
        capture_id=row.session_id,
        route=row.route,
        captured_at=row.captured_at,
        method=row.method,
        path=row.path,
        status=row.status,
        latency_ms=row.latency_ms,
        consumer=row.consumer,
    )


def _exchange_out(row: CapturedExchangeRow) -> ExchangeOut:
    return ExchangeOut(
        **_summary(row).model_dump(),
        request_id=row.request_id,
        query=row.query,
        credential_id=row.credential_id,
        request_headers=[tuple(h) for h in json.loads(row.request_headers)],
        response_headers=[tuple(h) for h in json.loads(row.response_headers)],
        request_body=_body(row.request_body, row.request_body_size),
        response_body=_body(row.response_body, row.response_body_size),
    )


async def _exchange_page(
    engine: AsyncEngine, query: Select[CapturedExchangeRow], after: int | None, limit: int
) -> ExchangePage:
    """Newest first; with `after`, the exchanges newer than that id, oldest first (to
    follow a capture as it records)."""
    limit = max(1, min(limit, PAGE_LIMIT))
    if after is not None:
        query = query.where(CapturedExchangeRow.id > after).order_by(CapturedExchangeRow.id)
    else:
        query = query.order_by(CapturedExchangeRow.id.desc())
    async with engine.connect() as conn:
        rows = (await conn.execute(query.limit(limit))).all()
    return ExchangePage(items=[_summary(_load(CapturedExchangeRow, r)) for r in rows])


class InspectorService:
    """Operators' captures: start, stop, list, read (see the module doc)."""

    def __init__(self, engine: AsyncEngine, editor: ConfigEditor) -> None:
        self._engine = engine
        self._editor = editor

    async def _route_organization(self, op: Operation, route: str) -> str | None:
        """The id of the route's organization; 404 for a route the caller can't see."""
        config = (await self._editor.state()).config
        found = next((r for r in config.routes if r.name == route), None)
        if found is None or not op.scope.sees_named(found.organization):
            raise not_found(f"no route named {route!r}", target="route")
        if found.organization is None:
            return None
        async with self._engine.connect() as conn:
            org_id = await conn.scalar(
                select(OrganizationRow.id).where(OrganizationRow.name == found.organization)
            )
        return str(org_id) if org_id is not None else None

    async def start(self, op: Operation, route: str, spec: CaptureIn) -> CaptureOut:
        """Start a capture on `route` (409 while one is active there)."""
        org_id = await self._route_organization(op, route)
        now = op.now()
        row = CaptureSessionRow(
            id=secrets.token_hex(8),
            route=route,
            organization_id=org_id,
            started_by=op.actor[:320],
            started_at=now,
            ends_at=now + timedelta(seconds=spec.duration_seconds),
            sample_rate=spec.sample_rate,
            max_count=spec.max_count,
            captured=0,
            stopped_at=None,
            stop_reason=None,
        )
        async with write_transaction(self._engine) as conn:
            active = await conn.scalar(
                select(CaptureSessionRow.id).where(
                    and_(
                        CaptureSessionRow.route == route,
                        CaptureSessionRow.stopped_at.is_(None),
                        CaptureSessionRow.ends_at > now,
                        CaptureSessionRow.captured < CaptureSessionRow.max_count,
                    )
                )
            )
            if active is not None:
                raise ServiceError(
                    CAPTURE_ACTIVE,
                    f"route {route!r} already has an active capture ({active}); stop it first",
                    capture_id=active,
                )
            values = {c.key: getattr(row, c.key) for c in CaptureSessionRow.__table__.columns}
            await conn.execute(insert(CaptureSessionRow).values(**values))
            await append_invalidations(conn, [(InvalidationKind.CAPTURE, route)])
            out = _capture_out(row, now)
            await op.record(
                "start",
                "capture",
                f"{route}/{row.id}",
                after=spec.model_dump(),
                status=201,
                conn=conn,
            )
        return out

    async def _session(self, op: Operation, route: str, capture_id: str) -> CaptureSessionRow:
        async with self._engine.connect() as conn:
            found = (
                await conn.execute(
                    select(CaptureSessionRow).where(
                        and_(CaptureSessionRow.id == capture_id, CaptureSessionRow.route == route)
                    )
                )
            ).first()
        row = _load(CaptureSessionRow, found) if found is not None else None
        if row is None or not op.scope.owns(row.organization_id):
            raise not_found(f"no capture {capture_id!r} on route {route!r}", target="capture_id")
        return row

    async def get(self, op: Operation, route: str, capture_id: str) -> CaptureOut:
        return _capture_out(await self._session(op, route, capture_id), op.now())

    async def stop(self, op: Operation, route: str, capture_id: str) -> CaptureOut:
        """End a capture now (a stopped or finished one stays as it is)."""
        row = await self._session(op, route, capture_id)
        now = op.now()
        if _capture_out(row, now).active:
            async with write_transaction(self._engine) as conn:
                await conn.execute(
                    update(CaptureSessionRow)
                    .where(CaptureSessionRow.id == capture_id)
                    .values(stopped_at=now, stop_reason="stopped")
                )
                await append_invalidations(conn, [(InvalidationKind.CAPTURE, route)])
                await op.record("stop", "capture", f"{route}/{capture_id}", conn=conn)
            row.stopped_at, row.stop_reason = now, "stopped"
        return _capture_out(row, now)

    async def list(self, op: Operation, route: str) -> list[CaptureOut]:
        """The route's captures, newest first (404 for a route the caller can't see)."""
        await self._route_organization(op, route)
        query = select(CaptureSessionRow).where(CaptureSessionRow.route == route)
        if op.scope.limited:
            query = query.where(CaptureSessionRow.organization_id == op.scope.organization_id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query.order_by(CaptureSessionRow.started_at.desc()))).all()
        now = op.now()
        return [_capture_out(_load(CaptureSessionRow, r), now) for r in rows]

    async def exchanges(
        self,
        op: Operation,
        route: str,
        capture_id: str,
        *,
        after: int | None = None,
        limit: int = 50,
    ) -> ExchangePage:
        await self._session(op, route, capture_id)
        query = select(CapturedExchangeRow).where(CapturedExchangeRow.session_id == capture_id)
        return await _exchange_page(self._engine, query, after, limit)

    async def exchange(self, op: Operation, exchange_id: int) -> ExchangeOut:
        """One exchange in full (404 unless its capture is in the caller's scope)."""
        query = (
            select(CapturedExchangeRow, CaptureSessionRow.organization_id.label("owner"))
            .join(CaptureSessionRow, CaptureSessionRow.id == CapturedExchangeRow.session_id)
            .where(CapturedExchangeRow.id == exchange_id)
        )
        async with self._engine.connect() as conn:
            found = (await conn.execute(query)).first()
        if found is None or not op.scope.owns(found.owner):
            raise not_found(f"no captured exchange {exchange_id}", target="exchange_id")
        return _exchange_out(_load(CapturedExchangeRow, found))


class DeveloperInspector:
    """A portal developer's view: exchanges made with their own applications' consumers."""

    def __init__(self, engine: AsyncEngine, consumers: DeveloperConsumers) -> None:
        self._engine = engine
        self._consumers = consumers

    async def _mine(self, developer: Developer) -> list[str]:
        return [c.consumer for c in await self._consumers.consumers_of(developer)]

    async def exchanges(
        self, developer: Developer, *, after: int | None = None, limit: int = 50
    ) -> ExchangePage:
        """Exchanges made with the developer's applications' consumers, on any route."""
        mine = await self._mine(developer)
        query = select(CapturedExchangeRow).where(CapturedExchangeRow.consumer.in_(mine))
        return await _exchange_page(self._engine, query, after, limit)

    async def exchange(self, developer: Developer, exchange_id: int) -> ExchangeOut:
        """One of them in full; 404 for any other (another developer's, or none)."""
        mine = await self._mine(developer)
        async with self._engine.connect() as conn:
            found = (
                await conn.execute(
                    select(CapturedExchangeRow).where(
                        and_(
                            CapturedExchangeRow.id == exchange_id,
                            CapturedExchangeRow.consumer.in_(mine),
                        )
                    )
                )
            ).first()
        if found is None:
            raise not_found(f"no captured exchange {exchange_id}", target="exchange_id")
        return _exchange_out(_load(CapturedExchangeRow, found))


async def purge_captures(engine: AsyncEngine, older_than: datetime) -> int:
    """Delete sessions started before `older_than` that are over, with their exchanges
    (exchanges first: SQLite enforces the cascade only with foreign keys on)."""
    old = select(CaptureSessionRow.id).where(CaptureSessionRow.started_at < older_than)
    async with write_transaction(engine) as conn:
        await conn.execute(
            delete(CapturedExchangeRow).where(CapturedExchangeRow.session_id.in_(old))
        )
        deleted = (
            await conn.execute(
                delete(CaptureSessionRow).where(CaptureSessionRow.started_at < older_than)
            )
        ).rowcount
    return int(deleted)


def inspector_retention_job(engine: AsyncEngine, settings: Settings) -> Periodic:
    """Every 5 minutes, delete captures older than `inspector_retention_days`."""
    from portcullis.analytics.jobs import control_job

    async def round() -> None:
        cutoff = utc_now() - timedelta(days=settings.inspector_retention_days)
        deleted = await purge_captures(engine, cutoff)
        if deleted:
            log.info("inspector.retention", deleted=deleted, before=cutoff.isoformat())

    job = control_job("inspector-retention", round, 300.0)
    job.failure_event = "inspector.retention_failed"
    return job
