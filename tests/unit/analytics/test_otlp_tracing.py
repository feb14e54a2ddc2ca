"""Spans built from request records: names, timing, parentage, ids, attributes, sampling."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from portcullis.analytics.record import RequestRecord
from portcullis.analytics.tracing import TracingObserver, tracing_observer

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
SENT_SPAN = "b7ad6b7169203331"


def record(**overrides: Any) -> RequestRecord:
    fields: dict[str, Any] = {
        "request_id": "req-1",
        "started_at": 1_700_000_000.0,
        "method": "GET",
        "path": "/users/42",
        "path_template": "/users",
        "route": "users",
        "service": "accounts",
        "upstream_target": "127.0.0.1:9000",
        "consumer": "alice",
        "credential_id": None,
        "status": 200,
        "bytes_in": 0,
        "bytes_out": 10,
        "client_ip": "10.1.2.3",
        "user_agent": "curl/8",
        "latency_ms": 50.0,
        "upstream_ms": 40.0,
        "gateway_ms": 10.0,
        "upstream_offset_ms": 6.0,
        "flags": 0,
        "error_kind": None,
        "trace_id": TRACE,
        "priority": None,
    }
    fields.update(overrides)
    return RequestRecord(**fields)


def traced(sample_ratio: float = 1.0) -> tuple[TracingObserver, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    obs = tracing_observer(
        exporter, service_name="gw", instance_id="n:h:1", sample_ratio=sample_ratio, batch=False
    )
    return obs, exporter


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {s.name: s for s in exporter.get_finished_spans()}


def test_three_spans_with_the_records_timing_and_trace() -> None:
    obs, exporter = traced()
    obs.observe(record())
    spans = by_name(exporter)
    assert set(spans) == {"GET users", "access", "upstream"}
    server, access, upstream = spans["GET users"], spans["access"], spans["upstream"]
    start = 1_700_000_000 * 10**9
    assert (server.start_time, server.end_time) == (start, start + 50_000_000)
    assert (access.start_time, access.end_time) == (start, start + 6_000_000)
    assert (upstream.start_time, upstream.end_time) == (start + 6_000_000, start + 46_000_000)
    assert server.kind is SpanKind.SERVER
    assert upstream.kind is SpanKind.CLIENT
    trace_id = int(TRACE, 16)
    assert {s.context.trace_id for s in spans.values()} == {trace_id}
    assert server.parent is None
    assert access.parent is not None
    assert access.parent.span_id == server.context.span_id
    assert upstream.parent is not None
    assert upstream.parent.span_id == server.context.span_id
    assert server.attributes is not None
    assert dict(server.attributes) == {
        "http.request.method": "GET",
        "url.path": "/users/42",
        "http.response.status_code": 200,
        "client.address": "10.1.2.3",
        "portcullis.request_id": "req-1",
        "portcullis.route": "users",
        "portcullis.service": "accounts",
        "http.route": "/users",
        "user_agent.original": "curl/8",
        "portcullis.consumer": "alice",
    }
    assert upstream.attributes is not None
    assert upstream.attributes["server.address"] == "127.0.0.1"
    assert upstream.attributes["server.port"] == 9000
    assert server.resource.attributes["service.name"] == "gw"
    assert server.resource.attributes["service.instance.id"] == "n:h:1"


def test_parented_on_the_client_and_named_as_sent_upstream() -> None:
    obs, exporter = traced()
    obs.observe(record(parent_span_id=CLIENT_SPAN, upstream_span_id=SENT_SPAN))
    spans = by_name(exporter)
    server, upstream = spans["GET users"], spans["upstream"]
    assert server.parent is not None
    assert server.parent.span_id == int(CLIENT_SPAN, 16)
    assert server.parent.is_remote
    assert server.context.trace_id == int(TRACE, 16)
    # The upstream saw SENT_SPAN as its parent: that is the upstream span's own id.
    assert upstream.context.span_id == int(SENT_SPAN, 16)


def test_an_id_forwarded_unchanged_is_not_reused() -> None:
    obs, exporter = traced()
    obs.observe(record(parent_span_id=CLIENT_SPAN, upstream_span_id=CLIENT_SPAN))
    spans = by_name(exporter)
    assert spans["upstream"].context.span_id != int(CLIENT_SPAN, 16)
    assert len({s.context.span_id for s in spans.values()}) == 3


def test_no_upstream_call_means_no_upstream_span_and_errors_are_marked() -> None:
    obs, exporter = traced()
    obs.observe(
        record(
            status=503,
            upstream_ms=None,
            upstream_offset_ms=None,
            error_kind="circuit-open",
            route=None,
            trace_id=None,
        )
    )
    spans = by_name(exporter)
    assert set(spans) == {"GET", "access"}
    server = spans["GET"]
    assert server.status.status_code is StatusCode.ERROR
    assert server.attributes is not None
    assert server.attributes["error.type"] == "circuit-open"
    assert spans["access"].end_time == server.end_time


def test_sampling_by_trace_id_is_deterministic() -> None:
    kept = "0" * 16 + "0000000000000001"  # low 64 bits tiny: under any positive ratio
    dropped = "0" * 16 + "ffffffffffffffff"
    obs, exporter = traced(sample_ratio=0.5)
    obs.observe(record(trace_id=kept))
    obs.observe(record(trace_id=dropped))
    assert {s.context.trace_id for s in exporter.get_finished_spans()} == {int(kept, 16)}
    obs, exporter = traced(sample_ratio=0.0)
    obs.observe(record(trace_id=kept))
    obs.observe(record(trace_id=None))
    assert exporter.get_finished_spans() == ()
