"""ProxyApp: request records for observers, the response-body phase, plugin replies.

A scripted in-memory transport stands in for the upstream so each exit path of
the proxy can be driven precisely; the real transports are covered by the
integration suites.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from portcullis.analytics.record import Flag, RequestRecord
from portcullis.asgi import Message
from portcullis.model.config import GatewayConfig
from portcullis.model.plugins.base import BODY_BUFFER_LIMIT, PluginConfig
from portcullis.plugins import registry
from portcullis.plugins.base import Headers, Phase, Plugin, PluginResponse, RequestContext
from portcullis.proxy import app as proxy_app
from portcullis.proxy.app import ProxyApp
from portcullis.runtime.holder import SnapshotHolder
from portcullis.runtime.snapshot import build_snapshot
from portcullis.settings import Settings
from portcullis.upstream.transport import (
    ConnectError,
    Origin,
    TransportTimeouts,
    UpstreamRequest,
    UpstreamResponse,
)
from support.clock import ManualClock
from support.records import RecordCollector


class _Scripted:
    """A transport that answers from a script: a response factory or an exception."""

    def __init__(self) -> None:
        self.answers: list[Any] = []
        self.sent: list[UpstreamRequest] = []

    async def send(
        self, origin: Origin, request: UpstreamRequest, timeouts: TransportTimeouts
    ) -> UpstreamResponse:
        self.sent.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        status, headers, chunks = answer

        async def body() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        return UpstreamResponse(status=status, headers=list(headers), body=body())

    async def aclose(self) -> None:
        return None


class _Broken:
    def observe(self, record: RequestRecord) -> None:
        raise RuntimeError("observer bug")


class _UpperConfig(PluginConfig):
    refuse: bool = False
    body_limit: int | None = None


class _Upper(Plugin[_UpperConfig]):
    """Upper-cases JSON bodies; optionally refuses with 401 after adding a header."""

    name: ClassVar[str] = "test-upper"
    priority: ClassVar[int] = 100
    config_model = _UpperConfig
    phases: ClassVar[frozenset[Phase]] = frozenset({"access", "request_body", "response_body"})
    refusal_flag: ClassVar[int] = Flag.AUTH_FAILED

    async def access(self, ctx: RequestContext) -> PluginResponse | None:
        ctx.response_headers.append((b"x-seen", b"1"))
        ctx.body_limit = self.config.body_limit
        if self.config.refuse:
            return PluginResponse(401, b"no", [(b"content-type", b"text/plain")])
        return None

    def response_body(
        self, ctx: RequestContext, status: int, headers: Headers, body: bytes
    ) -> bytes | None:
        return body.upper()

    def request_body(self, ctx: RequestContext, body: bytes) -> bytes | None:
        return b"<" + body + b">"


@pytest.fixture
def upper_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.PLUGINS, "test-upper", _Upper)
    monkeypatch.setitem(registry.SCHEMAS, "test-upper", _UpperConfig)


def _app(
    transport: _Scripted,
    *,
    plugin: dict[str, Any] | None = None,
    plugin_name: str = "test-upper",
    **settings: Any,
) -> tuple[ProxyApp, RecordCollector]:
    doc: dict[str, Any] = {
        "services": [{"name": "svc", "url": "http://127.0.0.1:9", "retries": {"attempts": 0}}],
        "routes": [{"name": "r", "service": "svc", "paths": ["/api"]}],
    }
    if plugin is not None:
        doc["plugins"] = [{"name": plugin_name, "route": "r", "config": plugin}]
    config = GatewayConfig.model_validate(doc)
    snapshot = build_snapshot(config, 1)
    app = ProxyApp(Settings(**settings), SnapshotHolder(snapshot), transport)
    collect = RecordCollector()
    app.observers = (_Broken(), collect)
    return app, collect


def _scope(path: str, headers: Headers | None = None) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
        "client": ("10.1.2.3", 5555),
        "headers": [(b"host", b"gw"), (b"user-agent", b"ua/1"), *(headers or [])],
    }


async def _call(
    app: ProxyApp, scope: dict[str, Any], body: list[bytes] | None = None
) -> list[Message]:
    sent: list[Message] = []
    pending = list(body or [b""])

    async def receive() -> Message:
        chunk = pending.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def _headers(messages: list[Message]) -> dict[bytes, bytes]:
    return dict(messages[0]["headers"])


async def test_proxied_request_record_has_route_upstream_and_sizes() -> None:
    transport = _Scripted()
    transport.answers.append((200, [(b"content-length", b"5")], [b"he", b"llo"]))
    app, collect = _app(transport)
    messages = await _call(app, _scope("/api/x"))
    assert messages[0]["status"] == 200
    (record,) = collect.records
    assert record.route == "r"
    assert record.service == "svc"
    assert record.path == "/api/x"
    assert record.path_template == "/api"
    assert record.upstream_target == "127.0.0.1:9"
    assert record.status == 200
    assert record.bytes_out == 5
    assert record.user_agent == "ua/1"
    assert record.client_ip == "10.1.2.3"
    assert record.request_id == _headers(messages)[b"x-request-id"].decode()
    assert record.trace_id is not None
    assert len(record.trace_id) == 32
    assert record.upstream_ms is not None
    assert record.upstream_offset_ms is not None
    assert record.flags == 0
    assert record.error_kind is None


class _TimedConfig(PluginConfig):
    pass


class _Timed(Plugin[_TimedConfig]):
    """Spends 30 ms of the test clock in the access phase (gateway time before upstream)."""

    name: ClassVar[str] = "test-timed"
    priority: ClassVar[int] = 100
    config_model = _TimedConfig
    phases: ClassVar[frozenset[Phase]] = frozenset({"access"})
    clock: ClassVar[ManualClock] = ManualClock()

    async def access(self, ctx: RequestContext) -> PluginResponse | None:
        self.clock.advance(0.030)
        return None


class _TimedTransport(_Scripted):
    """Takes 40 ms of the test clock to answer and 10 ms per body chunk."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__()
        self.clock = clock

    async def send(
        self, origin: Origin, request: UpstreamRequest, timeouts: TransportTimeouts
    ) -> UpstreamResponse:
        self.clock.advance(0.040)
        clock = self.clock

        async def body() -> AsyncIterator[bytes]:
            for chunk in (b"he", b"llo"):
                clock.advance(0.010)
                yield chunk

        return UpstreamResponse(status=200, headers=[(b"content-length", b"5")], body=body())


async def test_latency_split_is_the_time_spent_on_each_side(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """30 ms in a plugin, then 40 ms to the response head and 20 ms of body upstream: the
    record splits the 90 ms exactly so (each figure checked against the script, not against
    the other figures)."""
    clock = ManualClock()
    monkeypatch.setattr(proxy_app, "time", SimpleNamespace(monotonic=clock, time=time.time))
    monkeypatch.setattr(_Timed, "clock", clock)
    monkeypatch.setitem(registry.PLUGINS, "test-timed", _Timed)
    monkeypatch.setitem(registry.SCHEMAS, "test-timed", _TimedConfig)
    app, collect = _app(_TimedTransport(clock), plugin={}, plugin_name="test-timed")
    messages = await _call(app, _scope("/api/x"))
    assert messages[0]["status"] == 200
    (record,) = collect.records
    assert record.upstream_offset_ms == pytest.approx(30.0)
    assert record.upstream_ms == pytest.approx(60.0)
    assert record.gateway_ms == pytest.approx(30.0)
    assert record.latency_ms == pytest.approx(90.0)


async def test_route_not_found_is_recorded_with_its_problem_kind() -> None:
    app, collect = _app(_Scripted())
    messages = await _call(app, _scope("/nowhere"))
    assert messages[0]["status"] == 404
    (record,) = collect.records
    assert record.route is None
    assert record.error_kind == "route-not-found"
    assert record.upstream_ms is None
    assert record.bytes_out > 0


async def test_upstream_failure_is_recorded_with_target_and_error_kind() -> None:
    transport = _Scripted()
    transport.answers.append(ConnectError("refused"))
    app, collect = _app(transport)
    messages = await _call(app, _scope("/api"))
    assert messages[0]["status"] == 502
    (record,) = collect.records
    assert record.error_kind == "upstream-connect-failed"
    assert record.upstream_target == "127.0.0.1:9"
    assert record.upstream_ms is not None


@pytest.mark.usefixtures("upper_plugin")
async def test_plugin_refusal_sets_flag_and_carries_earlier_response_headers() -> None:
    app, collect = _app(_Scripted(), plugin={"refuse": True})
    messages = await _call(app, _scope("/api"))
    assert messages[0]["status"] == 401
    assert _headers(messages)[b"x-seen"] == b"1"
    (record,) = collect.records
    assert record.flags & Flag.AUTH_FAILED
    assert record.error_kind == "plugin:test-upper"


@pytest.mark.usefixtures("upper_plugin")
async def test_body_phase_rewrites_body_and_content_length() -> None:
    transport = _Scripted()
    transport.answers.append(
        (200, [(b"content-length", b"5"), (b"content-type", b"text/plain")], [b"he", b"llo"])
    )
    app, collect = _app(transport, plugin={})
    messages = await _call(app, _scope("/api"))
    assert messages[0]["status"] == 200
    assert _headers(messages)[b"content-length"] == b"5"
    assert b"".join(m.get("body", b"") for m in messages[1:]) == b"HELLO"
    assert collect.records[0].bytes_out == 5


@pytest.mark.usefixtures("upper_plugin")
async def test_body_phase_is_skipped_for_bodies_over_the_buffer_limit() -> None:
    chunk = b"a" * (1024 * 1024)
    count = BODY_BUFFER_LIMIT // len(chunk) + 2
    transport = _Scripted()
    transport.answers.append((200, [], [chunk] * count))
    app, _ = _app(transport, plugin={})
    messages = await _call(app, _scope("/api"))
    body = b"".join(m.get("body", b"") for m in messages[1:])
    assert len(body) == len(chunk) * count
    assert body == chunk * count  # untouched: not upper-cased


@pytest.mark.usefixtures("upper_plugin")
async def test_declared_oversized_body_streams_untouched() -> None:
    transport = _Scripted()
    declared = str(BODY_BUFFER_LIMIT + 1).encode()
    transport.answers.append((200, [(b"content-length", declared)], [b"abc"]))
    app, _ = _app(transport, plugin={})
    messages = await _call(app, _scope("/api"))
    assert b"".join(m.get("body", b"") for m in messages[1:]) == b"abc"


@pytest.mark.usefixtures("upper_plugin")
async def test_body_failure_while_buffering_becomes_a_clean_502() -> None:
    transport = _Scripted()

    class _Failing:
        def __init__(self) -> None:
            self.calls = 0

        def __aiter__(self) -> _Failing:
            return self

        async def __anext__(self) -> bytes:
            self.calls += 1
            if self.calls == 1:
                return b"partial"
            raise ConnectError("reset")

    async def send(
        origin: Origin, request: UpstreamRequest, timeouts: TransportTimeouts
    ) -> UpstreamResponse:
        return UpstreamResponse(status=200, headers=[], body=_Failing())

    transport.send = send  # type: ignore[method-assign]
    app, collect = _app(transport, plugin={})
    messages = await _call(app, _scope("/api"))
    assert messages[0]["status"] == 502
    assert collect.records[0].error_kind == "upstream-connect-failed"


async def _drain(request: UpstreamRequest) -> bytes:
    if isinstance(request.body, bytes):
        return request.body
    return b"".join([chunk async for chunk in request.body])


class _Draining(_Scripted):
    """Reads the request body as a real transport would, before answering."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []

    async def send(
        self, origin: Origin, request: UpstreamRequest, timeouts: TransportTimeouts
    ) -> UpstreamResponse:
        self.bodies.append(await _drain(request))
        return await super().send(origin, request, timeouts)


def _post(path: str, headers: Headers) -> dict[str, Any]:
    scope = _scope(path, headers)
    scope["method"] = "POST"
    return scope


@pytest.mark.usefixtures("upper_plugin")
async def test_request_body_phase_rewrites_chunked_body_with_a_content_length() -> None:
    transport = _Draining()
    transport.answers.append((200, [(b"content-length", b"0")], []))
    app, collect = _app(transport, plugin={})
    scope = _post("/api", [(b"transfer-encoding", b"chunked")])
    messages = await _call(app, scope, [b"ab", b"cd"])
    assert messages[0]["status"] == 200
    assert transport.bodies == [b"<abcd>"]
    assert transport.sent[0].content_length == 6
    assert collect.records[0].bytes_in == 4


@pytest.mark.usefixtures("upper_plugin")
async def test_plugin_body_limit_applies_to_chunked_bodies() -> None:
    transport = _Draining()
    app, collect = _app(transport, plugin={"body_limit": 3})
    scope = _post("/api", [(b"transfer-encoding", b"chunked")])
    messages = await _call(app, scope, [b"ab", b"cd"])
    assert messages[0]["status"] == 413
    assert transport.sent == []
    assert collect.records[0].error_kind == "payload-too-large"


async def test_no_route_record_carries_the_request_id_the_client_got() -> None:
    app, collect = _app(_Scripted())
    messages = await _call(app, _scope("/nowhere"))
    assert collect.records[0].request_id == _headers(messages)[b"x-request-id"].decode()


@pytest.mark.usefixtures("upper_plugin")
async def test_head_reply_from_a_plugin_keeps_the_get_content_length() -> None:
    app, _ = _app(_Scripted(), plugin={"refuse": True})
    scope = _scope("/api")
    scope["method"] = "HEAD"
    messages = await _call(app, scope)
    assert _headers(messages)[b"content-length"] == b"2"
    assert b"".join(m.get("body", b"") for m in messages[1:]) == b""


@pytest.mark.usefixtures("upper_plugin")
async def test_gateway_problems_carry_headers_plugins_granted() -> None:
    transport = _Scripted()
    transport.answers.append(ConnectError("refused"))
    app, _ = _app(transport, plugin={})
    app.observers = ()
    messages = await _call(app, _scope("/api"))
    assert messages[0]["status"] == 502
    assert _headers(messages)[b"x-seen"] == b"1"


async def test_tracing_records_client_parent_and_the_id_sent_upstream() -> None:
    transport = _Scripted()
    transport.answers.append((200, [(b"content-length", b"0")], []))
    app, collect = _app(transport, otlp_endpoint="http://127.0.0.1:4318")
    tp = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    await _call(app, _scope("/api", [(b"traceparent", tp)]))
    record = collect.records[0]
    sent = dict(transport.sent[0].headers)[b"traceparent"]
    assert record.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert record.parent_span_id == "00f067aa0ba902b7"
    assert record.upstream_span_id == sent[36:52].decode()
    assert record.upstream_span_id != record.parent_span_id
