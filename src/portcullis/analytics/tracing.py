"""Optional OpenTelemetry traces of proxied requests, exported over OTLP/HTTP.

Off unless `otlp_endpoint` is set. Spans are not opened while a request runs:
the data plane already measures every phase for the request log, so
`TracingObserver` turns each finished `RequestRecord` into spans after the fact,
with the record's own timestamps:

    "<METHOD> <route>"  (SERVER)    started_at .. started_at + latency_ms
    ├── "access"        (INTERNAL)  started_at .. first upstream attempt (the plugin
    │                               chain and balancing; the whole request when no
    │                               upstream was called)
    └── "upstream"      (CLIENT)    first attempt .. upstream response ended (all attempts)

The spans are built directly as SDK `ReadableSpan`s and handed to a
`BatchSpanProcessor`, whose own thread batches, encodes and exports them (and
drops when its queue is full). Going through the SDK's `Tracer` instead costs
~55 µs per request for the three spans (context handling, attribute
validation, locks); building them directly costs ~4 µs (see
benchmarks/metrics_bench.py). Requests the ratio sampler skips cost nothing.

Linkage with the caller and the upstream (W3C Trace Context). The spans carry
the record's `trace_id` — the trace of the `traceparent` the proxy sent
upstream, which is the client's trace when it sent a valid one, else a new
trace the gateway started. Span ids depend on what the record knows:

- `parent_span_id` (the client's parent-id, None when the gateway started the
  trace): the server span's parent. Without it the server span is the trace's
  root within the gateway.
- `upstream_span_id` (the parent-id the proxy sent upstream): the id given to
  the "upstream" span, so the upstream's own spans become its children — when it
  differs from `parent_span_id`. A proxy that forwards the client's
  `traceparent` unchanged gives the upstream the client's span as parent: the
  upstream's spans are then siblings of the gateway's server span, and the
  "upstream" span gets a fresh id.

The proxy fills both when tracing is on (it then sends the upstream a parent-id
of its own, see proxy/headers.py). Span ids the record does not fix are random.

Sampling: `otlp_sample_ratio` keeps a trace when the low 64 bits of its trace id
fall under the ratio (the `TraceIdRatioBased` rule, `proxy.headers.trace_sampled`),
so every worker and node keeps or drops the same traces, and the `traceparent`
the proxy sends upstream carries the same decision in its sampled flag.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import structlog
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.status import Status, StatusCode

from portcullis import __version__
from portcullis.analytics.record import RequestRecord
from portcullis.proxy.headers import sample_threshold, trace_sampled

if TYPE_CHECKING:
    from portcullis.settings import Settings

log = structlog.get_logger(__name__)

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_ERROR = Status(StatusCode.ERROR)
INSTRUMENTATION = "portcullis.gateway"


def _hex_id(value: object, digits: int) -> int | None:
    """A W3C id (lower-case hex, not all zeros) as an int, or None."""
    if not isinstance(value, str) or len(value) != digits:
        return None
    try:
        number = int(value, 16)
    except ValueError:
        return None
    return number or None


def _new_id(bits: int) -> int:
    return random.getrandbits(bits) or 1


class TracingObserver:
    """A `RequestObserver` that exports every (sampled) request as three spans."""

    def __init__(
        self, processor: SpanProcessor, resource: Resource, *, sample_ratio: float = 1.0
    ) -> None:
        self.processor = processor
        self.resource = resource
        self._scope = InstrumentationScope(INSTRUMENTATION, __version__)
        self._threshold = sample_threshold(sample_ratio)

    def observe(self, record: RequestRecord) -> None:
        trace_id = _hex_id(record.trace_id, 32)
        # Without a trace id (no route matched) a random number takes the trace id's place.
        draw = trace_id if trace_id is not None else random.getrandbits(64)
        if not trace_sampled(draw, self._threshold):
            return
        self._export(record, trace_id if trace_id is not None else _new_id(128))

    def _export(self, record: RequestRecord, trace_id: int) -> None:
        resource, scope, emit = self.resource, self._scope, self.processor.on_end
        start = int(record.started_at * 1e9)
        end = start + int(record.latency_ms * 1e6)
        parent_id = _hex_id(record.parent_span_id, 16)
        parent = (
            SpanContext(trace_id, parent_id, is_remote=True, trace_flags=_SAMPLED)
            if parent_id is not None
            else None
        )
        server = SpanContext(trace_id, _new_id(64), is_remote=False, trace_flags=_SAMPLED)
        attributes: dict[str, Any] = {
            "http.request.method": record.method,
            "url.path": record.path,
            "http.response.status_code": record.status,
            "client.address": record.client_ip,
            "portcullis.request_id": record.request_id,
        }
        if record.route is not None:
            attributes["portcullis.route"] = record.route
        if record.service is not None:
            attributes["portcullis.service"] = record.service
        if record.path_template:
            attributes["http.route"] = record.path_template
        if record.user_agent is not None:
            attributes["user_agent.original"] = record.user_agent
        if record.consumer is not None:
            attributes["portcullis.consumer"] = record.consumer
        if record.error_kind is not None:
            attributes["error.type"] = record.error_kind
        if record.flags:
            attributes["portcullis.flags"] = record.flags
        offset = record.upstream_offset_ms
        access_end = end if offset is None else start + int(offset * 1e6)
        emit(
            ReadableSpan(
                "access",
                SpanContext(trace_id, _new_id(64), is_remote=False, trace_flags=_SAMPLED),
                server,
                resource,
                {},
                start_time=start,
                end_time=access_end,
                instrumentation_scope=scope,
            )
        )
        if offset is not None and record.upstream_ms is not None:
            emit(self._upstream_span(record, server, parent_id, access_end))
        emit(
            ReadableSpan(
                f"{record.method} {record.route}" if record.route else record.method,
                server,
                parent,
                resource,
                attributes,
                kind=SpanKind.SERVER,
                status=_ERROR if record.status >= 500 else Status(StatusCode.UNSET),
                start_time=start,
                end_time=end,
                instrumentation_scope=scope,
            )
        )

    def _upstream_span(
        self, record: RequestRecord, server: SpanContext, parent_id: int | None, start: int
    ) -> ReadableSpan:
        # The id the upstream saw as its parent, unless it is the client's own span.
        sent_id = _hex_id(record.upstream_span_id, 16)
        span_id = sent_id if sent_id is not None and sent_id != parent_id else _new_id(64)
        attributes: dict[str, Any] = {"http.request.method": record.method}
        target = record.upstream_target
        if target:
            host, _, port = target.rpartition(":")
            attributes["server.address"] = host.strip("[]") if host else target
            if port.isdigit():
                attributes["server.port"] = int(port)
        return ReadableSpan(
            "upstream",
            SpanContext(server.trace_id, span_id, is_remote=False, trace_flags=_SAMPLED),
            server,
            self.resource,
            attributes,
            kind=SpanKind.CLIENT,
            status=_ERROR if record.status >= 400 else Status(StatusCode.UNSET),
            start_time=start,
            end_time=start + int((record.upstream_ms or 0.0) * 1e6),
            instrumentation_scope=self._scope,
        )

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export every queued span now (blocking; call from a thread in async code)."""
        return self.processor.force_flush(timeout_millis)

    def shutdown(self) -> None:
        """Flush and stop the exporter thread (blocking)."""
        self.processor.shutdown()


def tracing_observer(
    exporter: SpanExporter,
    *,
    service_name: str = "portcullis",
    instance_id: str | None = None,
    sample_ratio: float = 1.0,
    batch: bool = True,
) -> TracingObserver:
    """A tracing observer exporting through `exporter` (batched on its own thread)."""
    resource: dict[str, Any] = {"service.name": service_name, "service.version": __version__}
    if instance_id is not None:
        resource["service.instance.id"] = instance_id
    processor: SpanProcessor = (
        BatchSpanProcessor(exporter, schedule_delay_millis=2000)
        if batch
        else SimpleSpanProcessor(exporter)
    )
    return TracingObserver(processor, Resource.create(resource), sample_ratio=sample_ratio)


def create_tracing(settings: Settings, *, instance_id: str | None = None) -> TracingObserver | None:
    """The OTLP/HTTP tracing observer the settings ask for, or None when tracing is off."""
    if not settings.otlp_endpoint:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    exporter = OTLPSpanExporter(
        endpoint=settings.otlp_endpoint, headers=dict(settings.otlp_headers), timeout=10
    )
    log.info("tracing.enabled", endpoint=settings.otlp_endpoint)
    return tracing_observer(
        exporter,
        service_name=settings.otlp_service_name,
        instance_id=instance_id,
        sample_ratio=settings.otlp_sample_ratio,
    )
