"""OTLP/HTTP export against a real receiver: a small aiohttp server that accepts
`POST /v1/traces` (protobuf) and decodes it with opentelemetry-proto.

First the observer alone (ids and parentage checked exactly), then a real gateway
with `PORTCULLIS_OTLP_ENDPOINT`: a request carrying a client `traceparent` yields
the gateway's spans in the client's trace, and the upstream saw that trace too.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiohttp import web
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from portcullis.analytics.record import RequestRecord
from portcullis.analytics.tracing import tracing_observer
from support.servers import free_port, gateway, granian_app

DEMO = "portcullis.demo.upstream:create_demo_app"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


@dataclass
class Received:
    """Spans a receiver decoded, with the resource attributes of their batch."""

    spans: list[Span] = field(default_factory=list)
    resources: list[dict[str, Any]] = field(default_factory=list)
    content_types: set[str] = field(default_factory=set)

    def named(self, name: str) -> list[Span]:
        return [s for s in self.spans if s.name == name]


def attributes(span: Span) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        value = kv.value
        out[kv.key] = getattr(value, value.WhichOneof("value"))
    return out


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, Received]]:
    received = Received()

    async def traces(request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        received.content_types.add(request.headers.get("content-type", ""))
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        for resource_spans in message.resource_spans:
            resource = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.spans.append(span)
                    received.resources.append(resource)
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}/v1/traces", received
    finally:
        await runner.cleanup()


def record(**overrides: Any) -> RequestRecord:
    fields: dict[str, Any] = {
        "request_id": "req-1",
        "started_at": time.time(),
        "method": "POST",
        "path": "/orders/7",
        "path_template": "/orders",
        "route": "orders",
        "service": "shop",
        "upstream_target": "10.0.0.5:8080",
        "consumer": None,
        "credential_id": None,
        "status": 201,
        "bytes_in": 10,
        "bytes_out": 20,
        "client_ip": "127.0.0.1",
        "user_agent": None,
        "latency_ms": 30.0,
        "upstream_ms": 20.0,
        "gateway_ms": 10.0,
        "upstream_offset_ms": 5.0,
        "flags": 0,
        "error_kind": None,
        "trace_id": TRACE,
        "priority": None,
    }
    fields.update(overrides)
    return RequestRecord(**fields)


async def test_batched_export_reaches_a_real_receiver(receiver: tuple[str, Received]) -> None:
    url, received = receiver
    obs = tracing_observer(
        OTLPSpanExporter(endpoint=url, timeout=5), service_name="edge", instance_id="n:h:1"
    )
    obs.observe(record(parent_span_id=CLIENT_SPAN, upstream_span_id="1" * 16))
    obs.observe(record(trace_id="a" * 32, upstream_ms=None, upstream_offset_ms=None, status=401))
    # The exporter is synchronous (requests) on the processor's thread: flush off the loop.
    assert await asyncio.to_thread(obs.force_flush, 10_000)
    await asyncio.to_thread(obs.shutdown)
    assert received.content_types == {"application/x-protobuf"}
    assert sorted(s.name for s in received.spans) == [
        "POST orders",
        "POST orders",
        "access",
        "access",
        "upstream",
    ]
    assert {r["service.name"] for r in received.resources} == {"edge"}
    assert {r["service.instance.id"] for r in received.resources} == {"n:h:1"}
    linked = [s for s in received.spans if s.trace_id.hex() == TRACE]
    server = next(s for s in linked if s.name == "POST orders")
    upstream = next(s for s in linked if s.name == "upstream")
    access = next(s for s in linked if s.name == "access")
    assert server.kind == Span.SPAN_KIND_SERVER
    assert server.parent_span_id.hex() == CLIENT_SPAN
    assert access.parent_span_id == server.span_id
    assert upstream.parent_span_id == server.span_id
    assert upstream.span_id.hex() == "1" * 16
    assert upstream.kind == Span.SPAN_KIND_CLIENT
    assert upstream.end_time_unix_nano - upstream.start_time_unix_nano == 20_000_000
    assert server.end_time_unix_nano - server.start_time_unix_nano == 30_000_000
    assert attributes(server)["http.response.status_code"] == 201
    assert attributes(server)["portcullis.route"] == "orders"
    assert attributes(upstream)["server.address"] == "10.0.0.5"
    assert attributes(upstream)["server.port"] == 8080
    other = [s for s in received.spans if s.trace_id.hex() == "a" * 32]
    assert sorted(s.name for s in other) == ["POST orders", "access"]


@pytest.fixture(scope="module")
def upstream() -> Iterator[int]:
    with granian_app(DEMO, workers=1) as port:
        yield port


async def test_gateway_exports_spans_in_the_clients_trace(
    tmp_path: Path, upstream: int, receiver: tuple[str, Received]
) -> None:
    url, received = receiver
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "services": [{"name": "echo", "url": f"http://127.0.0.1:{upstream}/echo"}],
                "routes": [{"name": "traced", "service": "echo", "paths": ["/traced"]}],
            }
        )
    )
    env = {"PORTCULLIS_OTLP_ENDPOINT": url, "PORTCULLIS_OTLP_SERVICE_NAME": "gw-test"}
    # The gateway starts in a thread so this loop keeps serving the receiver meanwhile.
    stack = gateway(tmp_path, cfg, workers=1, extra_env=env)
    gw = await asyncio.to_thread(stack.__enter__)
    try:
        traceparent = f"00-{TRACE}-{CLIENT_SPAN}-01"
        async with httpx.AsyncClient(base_url=gw.url, timeout=10) as client:
            r = await client.get("/traced/x", headers={"traceparent": traceparent})
            # A trace the gateway starts itself, exported too (ratio 1.0).
            own = await client.get("/traced/own")
        assert r.status_code == 200
        forwarded = dict(r.json()["headers"])
        assert forwarded["traceparent"].split("-")[1] == TRACE
        # The upstream learns the trace was recorded (W3C sampled flag), both for the
        # client's trace and for the one the gateway started.
        assert forwarded["traceparent"].endswith("-01")
        own_traceparent = dict(own.json()["headers"])["traceparent"]
        assert own_traceparent.endswith("-01"), own_traceparent
        deadline = time.monotonic() + 20
        while len(received.spans) < 6 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        await asyncio.to_thread(stack.__exit__, None, None, None)
    own_trace = own_traceparent.split("-")[1]
    assert {s.trace_id.hex() for s in received.spans} == {TRACE, own_trace}
    received.spans = [s for s in received.spans if s.trace_id.hex() == TRACE]
    assert sorted(s.name for s in received.spans) == ["GET traced", "access", "upstream"]
    server = received.named("GET traced")[0]
    upstream_span = received.named("upstream")[0]
    assert upstream_span.parent_span_id == server.span_id
    # Parented on the client's span once the record carries it (see analytics/tracing.py);
    # a root span of the client's trace until then.
    assert server.parent_span_id.hex() in ("", CLIENT_SPAN)
    assert received.named("access")[0].parent_span_id == server.span_id
    assert attributes(server)["url.path"] == "/traced/x"
    assert attributes(server)["http.route"] == "/traced"
    assert attributes(upstream_span)["server.port"] == upstream
    assert {r["service.name"] for r in received.resources} == {"gw-test"}
    # The server span covers its children.
    assert server.start_time_unix_nano <= upstream_span.start_time_unix_nano
    assert upstream_span.end_time_unix_nano <= server.end_time_unix_nano
