"""An observer for `ProxyApp` unit tests: keeps every request record it is shown."""

from __future__ import annotations

from portcullis.analytics.record import Flag, RequestRecord


def make_record(n: int = 0, **overrides: object) -> RequestRecord:
    """A finished request's record with plausible values; `overrides` replace fields."""
    fields: dict[str, object] = {
        "request_id": f"req-{n}",
        "started_at": 1_700_000_000.25 + n,
        "method": "GET",
        "path": f"/items/{n}",
        "path_template": "/items",
        "route": "items",
        "service": "catalog",
        "upstream_target": "127.0.0.1:9000",
        "consumer": "alice",
        "credential_id": "key-1",
        "status": 200,
        "bytes_in": 0,
        "bytes_out": 17,
        "client_ip": "127.0.0.1",
        "user_agent": "pytest",
        "latency_ms": 3.5,
        "upstream_ms": 2.0,
        "gateway_ms": 1.5,
        "upstream_offset_ms": 0.7,
        "flags": int(Flag.RETRIED),
        "error_kind": None,
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "priority": None,
    }
    fields.update(overrides)
    return RequestRecord(**fields)  # type: ignore[arg-type]


class RecordCollector:
    """A `RequestObserver` that appends each finished request's record to `records`."""

    def __init__(self) -> None:
        self.records: list[RequestRecord] = []

    def observe(self, record: RequestRecord) -> None:
        self.records.append(record)
