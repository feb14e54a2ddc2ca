"""The request inspector in a data-plane worker: tap sampled exchanges, write them later.

- `ExchangeTap` (proxy/exchange_tap.py): what the proxy records of a sampled request.
- `CaptureWriter`: the sink, a bounded `BatchQueue` (the request log's) whose writer
  inserts batches off the request path; a full queue drops and counts. The store
  caps each session at its `max_count` across all workers and drops rows recorded
  after the time box; a session that fills up is marked so, and an invalidation
  tells every worker to stop sampling.
- `CaptureSync`: loads the active sessions at start-up and whenever the invalidation
  feed reports a `capture` change, and installs them on the worker's `CaptureBoard`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from sqlalchemy import and_, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.analytics.log_queue import BatchQueue
from portcullis.runtime.captures import CaptureBoard, CapturedExchange, CaptureSession
from portcullis.settings import Settings
from portcullis.store.engine import write_transaction
from portcullis.store.inspector_tables import CapturedExchangeRow, CaptureSessionRow
from portcullis.store.invalidations import (
    Invalidation,
    InvalidationKind,
    append_invalidations,
)

log = structlog.get_logger(__name__)


def _row(e: CapturedExchange) -> dict[str, object]:
    return {
        "session_id": e.session_id,
        "route": e.route[:128],
        "captured_at": datetime.fromtimestamp(e.captured_at, UTC),
        "request_id": e.request_id[:128],
        "method": e.method[:16],
        "path": e.path,
        "query": e.query,
        "request_headers": json.dumps(e.request_headers),
        "response_headers": json.dumps(e.response_headers),
        "status": e.status,
        "latency_ms": e.latency_ms,
        "consumer": e.consumer,
        "credential_id": e.credential_id,
        "request_body": e.request_body,
        "request_body_size": e.request_body_size,
        "response_body": e.response_body,
        "response_body_size": e.response_body_size,
    }


async def write_exchanges(
    engine: AsyncEngine, exchanges: Sequence[CapturedExchange], now: Callable[[], datetime]
) -> int:
    """Insert a batch, at most each session's remaining count, none past its time box or
    after it stopped; a session that fills up is closed and announced. Rows written."""
    by_session: dict[str, list[CapturedExchange]] = {}
    for e in exchanges:
        by_session.setdefault(e.session_id, []).append(e)
    written = 0
    async with write_transaction(engine) as conn:
        sessions = (
            await conn.execute(
                select(
                    CaptureSessionRow.id,
                    CaptureSessionRow.route,
                    CaptureSessionRow.ends_at,
                    CaptureSessionRow.max_count,
                    CaptureSessionRow.captured,
                    CaptureSessionRow.stopped_at,
                )
                .where(CaptureSessionRow.id.in_(by_session))
                .with_for_update()
            )
        ).all()
        full: list[tuple[InvalidationKind, str]] = []
        for sid, route, ends_at, max_count, captured, stopped_at in sessions:
            ends = (stopped_at or ends_at).timestamp()
            keep = [e for e in by_session[sid] if e.captured_at <= ends]
            keep = keep[: max(0, max_count - captured)]
            if not keep:
                continue
            await conn.execute(insert(CapturedExchangeRow), [_row(e) for e in keep])
            values: dict[str, object] = {"captured": CaptureSessionRow.captured + len(keep)}
            if captured + len(keep) >= max_count and stopped_at is None:
                values |= {"stopped_at": now(), "stop_reason": "full"}
                full.append((InvalidationKind.CAPTURE, route))
            await conn.execute(
                update(CaptureSessionRow).where(CaptureSessionRow.id == sid).values(**values)
            )
            written += len(keep)
        await append_invalidations(conn, full)
    return written


class CaptureWriter(BatchQueue[CapturedExchange]):
    """The worker's sink for captured exchanges: bounded, batched, off the request path."""

    @classmethod
    def from_settings(cls, engine: AsyncEngine, settings: Settings) -> CaptureWriter:
        async def write(batch: Sequence[CapturedExchange]) -> None:
            await write_exchanges(engine, batch, lambda: datetime.now(UTC))

        return cls(
            write,
            name="inspector",
            capacity=settings.inspector_queue_size,
            batch_size=100,
            flush_interval=settings.inspector_flush_interval,
        )


@dataclass(frozen=True, slots=True)
class ActiveSession:
    id: str
    route: str
    ends_at: datetime
    sample_rate: float
    max_count: int
    captured: int


async def active_sessions(engine: AsyncEngine, now: datetime) -> list[ActiveSession]:
    """Sessions still capturing: not stopped, inside their time box, not full."""
    query = select(
        CaptureSessionRow.id,
        CaptureSessionRow.route,
        CaptureSessionRow.ends_at,
        CaptureSessionRow.sample_rate,
        CaptureSessionRow.max_count,
        CaptureSessionRow.captured,
    ).where(
        and_(
            CaptureSessionRow.stopped_at.is_(None),
            CaptureSessionRow.ends_at > now,
            CaptureSessionRow.captured < CaptureSessionRow.max_count,
        )
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [ActiveSession(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]


class CaptureSync:
    """Keeps a worker's `CaptureBoard` in step with the stored sessions (see the module doc).

    A session already installed keeps its object (and so its local sample count)
    across reloads.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        board: CaptureBoard,
        sink: Callable[[CapturedExchange], None],
        *,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._engine = engine
        self.board = board
        self._sink = sink
        self._clock = clock
        self._rng = rng
        self._task: asyncio.Task[None] | None = None
        self._again = False

    async def refresh(self) -> None:
        rows = await active_sessions(self._engine, datetime.fromtimestamp(self._clock(), UTC))
        current = self.board.active()
        sessions: list[CaptureSession] = []
        for row in rows:
            known = current.get(row.route)
            if known is not None and known.id == row.id:
                sessions.append(known)
                continue
            sessions.append(
                CaptureSession(
                    id=row.id,
                    route=row.route,
                    ends_at=row.ends_at.timestamp(),
                    sample_rate=row.sample_rate,
                    max_count=row.max_count - row.captured,
                    sink=self._sink,
                    clock=self._clock,
                    random=self._rng,
                )
            )
        self.board.install(sessions)
        if sessions:
            log.info("inspector.sessions", routes=sorted(s.route for s in sessions))

    def on_events(self, events: Iterable[Invalidation]) -> None:
        """An invalidation listener: reload the sessions (one reload at a time)."""
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.ensure_future(self._reload())

    async def _reload(self) -> None:
        while True:
            self._again = False
            try:
                await self.refresh()
            except Exception as exc:
                log.warning("inspector.reload_failed", error=str(exc))
            if not self._again:
                return

    async def aclose(self) -> None:
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
