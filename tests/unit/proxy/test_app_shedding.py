"""ProxyApp under an adaptive concurrency limit: shedding, the request record, and the
permit released on every exit path (so a slot never leaks)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from portcullis.analytics.record import Flag
from portcullis.asgi import Message
from portcullis.model.config import GatewayConfig
from portcullis.proxy.app import ProxyApp
from portcullis.runtime.holder import SnapshotHolder
from portcullis.runtime.snapshot import build_snapshot
from portcullis.settings import Settings
from portcullis.upstream.shedding import ConcurrencyLimiter
from portcullis.upstream.transport import (
    ConnectError,
    Origin,
    TransportTimeouts,
    UpstreamRequest,
    UpstreamResponse,
)
from support.records import RecordCollector


class _Gated:
    """Answers 200 (or `status`) once `gate` is set; or raises `error` at once."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.gate.set()
        self.status = 200
        self.error: Exception | None = None
        self.entered = 0

    async def send(
        self, origin: Origin, request: UpstreamRequest, timeouts: TransportTimeouts
    ) -> UpstreamResponse:
        self.entered += 1
        if self.error is not None:
            raise self.error
        await self.gate.wait()

        async def body() -> AsyncIterator[bytes]:
            yield b"ok"

        return UpstreamResponse(status=self.status, headers=[], body=body())

    async def aclose(self) -> None:
        return None


def _app(
    transport: _Gated, **concurrency: Any
) -> tuple[ProxyApp, ConcurrencyLimiter, RecordCollector]:
    block = {"enabled": True, "algorithm": "aimd", "initial_limit": 2, "min_limit": 1}
    block.update(concurrency)
    doc: dict[str, Any] = {
        "services": [
            {
                "name": "svc",
                "url": "http://127.0.0.1:9",
                "retries": {"attempts": 0},
                "adaptive_concurrency": block,
            }
        ],
        "routes": [
            {"name": "crit", "service": "svc", "paths": ["/crit"], "priority_class": "critical"},
            {"name": "low", "service": "svc", "paths": ["/low"], "priority_class": "low"},
        ],
    }
    snapshot = build_snapshot(GatewayConfig.model_validate(doc), 1)
    app = ProxyApp(Settings(), SnapshotHolder(snapshot), transport)
    collect = RecordCollector()
    app.observers = (collect,)
    (limiter,) = snapshot.limiters.values()
    return app, limiter, collect


def _scope(path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
        "client": ("10.1.2.3", 5555),
        "headers": [(b"host", b"gw")],
    }


async def _call(app: ProxyApp, path: str) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(_scope(path), receive, send)
    return sent


async def test_low_requests_are_shed_while_critical_ones_pass() -> None:
    transport = _Gated()
    transport.gate.clear()
    app, limiter, collect = _app(transport)
    held = asyncio.create_task(_call(app, "/low"))  # low's share of 2 is 1: now full
    while limiter.inflight < 1:
        await asyncio.sleep(0)
    shed = await _call(app, "/low")
    assert shed[0]["status"] == 503
    headers = dict(shed[0]["headers"])
    assert headers[b"content-type"] == b"application/problem+json"
    assert headers[b"retry-after"] == b"1"
    problem = json.loads(shed[1]["body"])
    assert problem["type"] == "https://portcullis.dev/problems/overloaded"
    assert problem["status"] == 503
    assert "low" in problem["detail"]
    record = collect.records[-1]
    assert record.flags & Flag.SHED
    assert record.priority == "low"
    assert record.error_kind == "overloaded"
    assert record.upstream_ms is None  # never went upstream
    assert transport.entered == 1

    critical = asyncio.create_task(_call(app, "/crit"))
    while limiter.inflight < 2:
        await asyncio.sleep(0)
    transport.gate.set()
    assert (await critical)[0]["status"] == 200
    assert (await held)[0]["status"] == 200
    assert limiter.inflight == 0
    assert limiter.admitted == [1, 0, 0, 1]
    assert limiter.shed == [0, 0, 0, 1]
    assert [r.priority for r in collect.records] == ["low", "low", "critical"]
    assert not collect.records[-1].flags & Flag.SHED


async def test_a_critical_request_waits_in_the_queue_instead_of_failing() -> None:
    transport = _Gated()
    transport.gate.clear()
    app, limiter, _ = _app(transport, initial_limit=1, queue_size=2, queue_timeout=5.0)
    first = asyncio.create_task(_call(app, "/crit"))
    while limiter.inflight < 1:
        await asyncio.sleep(0)
    second = asyncio.create_task(_call(app, "/crit"))
    while limiter.queued < 1:
        await asyncio.sleep(0)
    transport.gate.set()
    assert (await first)[0]["status"] == 200
    assert (await second)[0]["status"] == 200
    assert limiter.shed == [0, 0, 0, 0]
    assert limiter.inflight == 0


async def test_upstream_failures_release_the_slot_and_count_as_drops() -> None:
    transport = _Gated()
    app, limiter, _ = _app(transport, initial_limit=10)
    transport.error = ConnectError("refused")
    assert (await _call(app, "/crit"))[0]["status"] == 502
    assert limiter.inflight == 0
    assert limiter.limit == pytest.approx(9.0)
    transport.error = None
    transport.status = 503
    assert (await _call(app, "/crit"))[0]["status"] == 503  # the upstream's own 503
    assert limiter.inflight == 0
    assert limiter.limit == pytest.approx(8.1)
    transport.status = 200
    assert (await _call(app, "/crit"))[0]["status"] == 200
    assert limiter.inflight == 0
    assert limiter.limit == pytest.approx(8.1)  # 1 of 8 in flight: nothing to grow


async def test_a_cancelled_request_releases_its_slot() -> None:
    transport = _Gated()
    transport.gate.clear()
    app, limiter, collect = _app(transport)
    task = asyncio.create_task(_call(app, "/crit"))
    while limiter.inflight < 1:
        await asyncio.sleep(0)
    task.cancel()  # e.g. the server cancels the request task on disconnect
    with pytest.raises(asyncio.CancelledError):
        await task
    assert limiter.inflight == 0
    assert limiter.limit == 2  # no response, no latency sample
    assert collect.records[-1].flags & Flag.CLIENT_ABORTED
