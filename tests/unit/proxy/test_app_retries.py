"""ProxyApp's retry loop: what is retried, where to, what the client gets when it is not.

A scripted transport plays the upstream targets (by port), so every branch of
the loop is driven exactly; the real transports' own retry rule is in the
transport conformance suite and the end-to-end attempt counts in
tests/integration/proxy/test_upstream_failures.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import pytest

from portcullis.analytics.record import Flag
from portcullis.asgi import Message
from portcullis.model.config import GatewayConfig
from portcullis.proxy import app as proxy_app
from portcullis.proxy.app import ProxyApp
from portcullis.runtime.holder import SnapshotHolder
from portcullis.runtime.snapshot import build_snapshot
from portcullis.settings import Settings
from portcullis.upstream.transport import (
    ConnectError,
    Origin,
    ReadTimeout,
    RemoteProtocolError,
    TransportTimeouts,
    UpstreamRequest,
    UpstreamResponse,
)
from support.clock import ManualClock
from support.records import RecordCollector

Answer = Exception | tuple[int, list[bytes]]


class _Targets:
    """A transport whose targets answer from per-port scripts (the last answer repeats)."""

    def __init__(self, **scripts: list[Answer]) -> None:
        self.scripts = {int(port.lstrip("p")): list(answers) for port, answers in scripts.items()}
        self.sent: list[tuple[int, UpstreamRequest]] = []

    async def send(
        self, origin: Origin, request: UpstreamRequest, timeouts: TransportTimeouts
    ) -> UpstreamResponse:
        self.sent.append((origin.port, request))
        script = self.scripts[origin.port]
        answer = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(answer, Exception):
            raise answer
        status, chunks = answer

        async def body() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        return UpstreamResponse(status, [], body())

    async def aclose(self) -> None:
        return None

    @property
    def ports(self) -> list[int]:
        return [port for port, _ in self.sent]


def _app(
    transport: _Targets, targets: int = 2, timeouts: dict[str, float] | None = None, **retries: Any
) -> tuple[ProxyApp, RecordCollector]:
    doc = {
        "upstreams": [
            {
                "name": "up",
                "algorithm": "round-robin",
                "targets": [{"target": f"127.0.0.1:{i + 1}"} for i in range(targets)],
                "healthchecks": {"passive": {"enabled": False}},
                "circuit_breaker": {"enabled": False},
            }
        ],
        "services": [
            {"name": "svc", "upstream": "up", "retries": retries, "timeouts": timeouts or {}}
        ],
        "routes": [{"name": "r", "service": "svc", "paths": ["/api"]}],
    }
    snapshot = build_snapshot(GatewayConfig.model_validate(doc), 1)
    app = ProxyApp(Settings(), SnapshotHolder(snapshot), transport)
    collect = RecordCollector()
    app.observers = (collect,)
    return app, collect


async def _call(
    app: ProxyApp, method: str = "GET", body: bytes = b"", headers: list[Any] | None = None
) -> list[Message]:
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "path": "/api",
        "raw_path": b"/api",
        "query_string": b"",
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
        "client": ("10.1.2.3", 5555),
        "headers": [
            (b"host", b"gw"),
            *([(b"content-length", str(len(body)).encode())] if body else []),
            *(headers or []),
        ],
    }
    sent: list[Message] = []
    pending = [body]

    async def receive() -> Message:
        return {"type": "http.request", "body": pending.pop(0) if pending else b""}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def _problem(messages: list[Message]) -> tuple[int, str, dict[bytes, bytes]]:
    assert messages[0]["status"] >= 400, f"a {messages[0]['status']}, not a problem"
    body = json.loads(b"".join(m.get("body", b"") for m in messages[1:]))
    slug = body["type"].rsplit("/", 1)[1]
    assert body["status"] == messages[0]["status"]
    return messages[0]["status"], slug, dict(messages[0]["headers"])


# -- a single target: the real failure is the answer ---------------------------------


@pytest.mark.parametrize(
    ("error", "status", "slug"),
    [
        (ConnectError("refused"), 502, "upstream-connect-failed"),
        (RemoteProtocolError("closed", request_sent=True), 502, "upstream-protocol-error"),
        (ReadTimeout("slow", request_sent=True), 504, "upstream-timeout"),
    ],
    ids=["connect-refused", "protocol-error", "read-timeout"],
)
async def test_single_target_failure_is_answered_with_its_own_kind(
    error: Exception, status: int, slug: str
) -> None:
    transport = _Targets(p1=[error])
    app, collect = _app(transport, targets=1)
    got_status, got_slug, headers = _problem(await _call(app))
    assert (got_status, got_slug) == (status, slug)
    assert b"retry-after" not in headers
    assert transport.ports == [1]
    (record,) = collect.records
    assert (record.status, record.error_kind) == (status, slug)
    assert record.upstream_target == "127.0.0.1:1"


async def test_single_target_retry_status_returns_the_upstream_response() -> None:
    transport = _Targets(p1=[(503, [b"busy"])])
    app, _ = _app(transport, targets=1)
    messages = await _call(app)
    assert messages[0]["status"] == 503
    assert b"".join(m.get("body", b"") for m in messages[1:]) == b"busy"
    assert transport.ports == [1]


async def test_first_pick_finding_no_target_is_still_no_healthy_target() -> None:
    app, _ = _app(_Targets(), targets=0)
    status, slug, headers = _problem(await _call(app))
    assert (status, slug, headers[b"retry-after"]) == (503, "upstream-unavailable", b"1")


# -- what may be retried ------------------------------------------------------------------


async def test_idempotent_request_is_retried_on_another_target() -> None:
    transport = _Targets(p1=[RemoteProtocolError("closed", request_sent=True)], p2=[(200, [])])
    app, collect = _app(transport)
    messages = await _call(app)
    assert messages[0]["status"] == 200
    assert transport.ports == [1, 2]
    assert collect.records[0].flags & Flag.RETRIED


@pytest.mark.parametrize("method", ["POST", "PATCH"])
@pytest.mark.parametrize(
    ("error", "status", "slug"),
    [
        (RemoteProtocolError("closed", request_sent=True), 502, "upstream-protocol-error"),
        (ReadTimeout("slow", request_sent=True), 504, "upstream-timeout"),
    ],
    ids=["protocol-error", "read-timeout"],
)
async def test_sent_non_idempotent_request_is_not_retried(
    method: str, error: Exception, status: int, slug: str
) -> None:
    transport = _Targets(p1=[error], p2=[(200, [])], p3=[(200, [])])
    app, _ = _app(transport, targets=3, attempts=2)
    assert _problem(await _call(app, method, b"payload"))[:2] == (status, slug)
    assert transport.ports == [1]
    assert transport.sent[0][1].idempotent is False


async def test_unsent_non_idempotent_request_is_retried() -> None:
    transport = _Targets(p1=[ConnectError("refused")], p2=[(201, [])])
    app, _ = _app(transport)
    messages = await _call(app, "POST", b"payload")
    assert messages[0]["status"] == 201
    assert transport.ports == [1, 2]


@pytest.mark.parametrize(
    ("opted_in", "key", "retried"),
    [(True, True, True), (True, False, False), (False, True, False)],
    ids=["opt-in-with-key", "opt-in-without-key", "key-without-opt-in"],
)
async def test_idempotency_key_opt_in(opted_in: bool, key: bool, retried: bool) -> None:
    transport = _Targets(p1=[RemoteProtocolError("closed", request_sent=True)], p2=[(201, [])])
    app, _ = _app(transport, idempotency_key=opted_in)
    headers = [(b"idempotency-key", b'"k-1"')] if key else []
    messages = await _call(app, "POST", b"payload", headers)
    assert messages[0]["status"] == (201 if retried else 502)
    assert transport.ports == ([1, 2] if retried else [1])
    assert transport.sent[0][1].idempotent is retried


async def test_non_idempotent_request_is_not_retried_on_a_retry_status() -> None:
    transport = _Targets(p1=[(503, [])], p2=[(201, [])])
    app, _ = _app(transport)
    messages = await _call(app, "POST", b"payload")
    assert messages[0]["status"] == 503
    assert transport.ports == [1]


async def test_transport_gets_the_budget_as_its_retry_gate() -> None:
    transport = _Targets(p1=[(200, [])])
    app, _ = _app(transport, targets=1)
    await _call(app)
    ((_, request),) = transport.sent
    budget = app.holder.current.budgets["svc"]
    assert request.retry_gate == budget.try_retry
    assert request.idempotent is True


# -- the budget caps every retry --------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [lambda: RemoteProtocolError("closed", request_sent=True), lambda: (503, [])],
    ids=["errors", "retry-status"],
)
async def test_budget_caps_retries_of_failing_requests(failure: Callable[[], Answer]) -> None:
    transport = _Targets(p1=[failure()], p2=[failure()], p3=[failure()])
    app, _ = _app(transport, targets=3, attempts=2, budget_ratio=0.2, min_per_second=0)
    for _ in range(200):
        await _call(app)
    # 200 requests earn 40 retries; without the budget they would make 600 attempts.
    assert len(transport.sent) == 200 + 40


async def test_retry_with_nowhere_to_go_spends_no_budget() -> None:
    transport = _Targets(p1=[ConnectError("refused")])
    app, _ = _app(transport, targets=1, budget_ratio=0.0, min_per_second=1)
    await _call(app)
    assert app.holder.current.budgets["svc"].available == pytest.approx(1.0)


# -- the attempts and the total deadline cap every retry ---------------------------------


@pytest.mark.parametrize("attempts", [0, 1, 2])
async def test_attempts_cap_the_retries_of_one_request(attempts: int) -> None:
    refused = [ConnectError("refused")]
    transport = _Targets(p1=refused, p2=refused, p3=refused, p4=refused)
    app, _ = _app(transport, targets=4, attempts=attempts, min_per_second=1000)
    status, slug, _ = _problem(await _call(app))
    assert (status, slug) == (502, "upstream-connect-failed")
    assert transport.ports == [1, 2, 3, 4][: attempts + 1]


class _Hangs(_Targets):
    """Port 1 never answers (until cancelled); the other ports answer from their scripts."""

    async def send(
        self, origin: Origin, request: UpstreamRequest, timeouts: TransportTimeouts
    ) -> UpstreamResponse:
        if origin.port == 1:
            self.sent.append((origin.port, request))
            await asyncio.Event().wait()
        return await super().send(origin, request, timeouts)


async def test_total_timeout_ends_the_exchange_without_a_retry() -> None:
    """A target that hangs past `timeouts.total` is the answer (504), although another
    target would answer at once and a retry is allowed: the total bounds retries too."""
    transport = _Hangs(p2=[(200, [])])
    app, collect = _app(transport, timeouts={"total": 0.05}, attempts=2, min_per_second=1000)
    status, slug, _ = _problem(await asyncio.wait_for(_call(app), 5))
    assert (status, slug) == (504, "upstream-timeout")
    assert transport.ports == [1]
    assert collect.records[0].error_kind == "upstream-timeout"


async def test_a_retry_after_the_deadline_gets_no_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first target spends the whole total (on the gateway's clock) before failing in a
    retryable way: the retry may start, but it gets no time and the answer is the timeout."""
    clock = ManualClock()
    monkeypatch.setattr(proxy_app, "time", SimpleNamespace(monotonic=clock, time=time.time))

    class _SlowFailure(_Targets):
        async def send(
            self, origin: Origin, request: UpstreamRequest, timeouts: TransportTimeouts
        ) -> UpstreamResponse:
            if origin.port == 1:
                self.sent.append((origin.port, request))
                clock.advance(0.5)
                raise ConnectError("refused")
            await asyncio.sleep(0)  # a real transport awaits its socket
            return await super().send(origin, request, timeouts)

    transport = _SlowFailure(p2=[(200, [])])
    app, _ = _app(transport, timeouts={"total": 0.3}, attempts=2, min_per_second=1000)
    status, slug, _ = _problem(await asyncio.wait_for(_call(app), 5))
    assert (status, slug) == (504, "upstream-timeout")
