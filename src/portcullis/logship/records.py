"""What a shipped log line says about a request: the record's user-facing fields as JSON.

Built in the shipper's task, never on the request path. Nothing secret is in a
`RequestRecord` to begin with (no headers, no query string: `path` is the ASGI path,
so an API key sent as a query parameter never reaches a log line); the credential's
id is left out as well, the consumer's name says who called.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from portcullis.analytics.record import Flag, RequestRecord

# Plain ints: `IntFlag` arithmetic costs several times an int's.
_FLAGS = tuple((int(flag), (flag.name or "").lower()) for flag in Flag if flag)
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
# The formatted second of the last timestamp (a batch's records mostly share one).
_last_second: tuple[int, str] = (-1, "")


def rfc3339(seconds: float) -> str:
    """`seconds` since the epoch as an RFC 3339 UTC timestamp with microseconds."""
    global _last_second
    whole = int(seconds // 1)
    micros = round((seconds - whole) * 1e6)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    cached, prefix = _last_second
    if cached != whole:
        prefix = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _last_second = (whole, prefix)
    return f"{prefix}.{micros:06d}Z"


def flag_names(flags: int) -> list[str]:
    if not flags:
        return []
    return [name for flag, name in _FLAGS if flags & flag]


def log_fields(record: RequestRecord) -> dict[str, Any]:
    """The JSON object one request is logged as."""
    return {
        "time": rfc3339(record.started_at),
        "request_id": record.request_id,
        "method": record.method,
        "path": record.path,
        "status": record.status,
        "route": record.route,
        "service": record.service,
        "consumer": record.consumer,
        "api": record.api,
        "api_version": record.api_version,
        "client_ip": record.client_ip,
        "user_agent": record.user_agent,
        "upstream": record.upstream_target,
        "latency_ms": round(record.latency_ms, 3),
        "upstream_ms": None if record.upstream_ms is None else round(record.upstream_ms, 3),
        "gateway_ms": round(record.gateway_ms, 3),
        "bytes_in": record.bytes_in,
        "bytes_out": record.bytes_out,
        "error": record.error_kind,
        "trace_id": record.trace_id,
        "flags": flag_names(record.flags),
    }


class LineEncoder:
    """Records as JSON, with the config's `custom_fields` (static values) added to each."""

    def __init__(self, custom: Mapping[str, str | int | float | bool] | None = None) -> None:
        self.custom = dict(custom or {})

    def line(self, record: RequestRecord) -> str:
        """One record as compact JSON (no newline)."""
        fields = log_fields(record)
        if self.custom:
            fields.update(self.custom)
        return _encode(fields)

    def array(self, records: Sequence[RequestRecord]) -> bytes:
        line = self.line
        return ("[" + ",".join(line(r) for r in records) + "]").encode()

    def lines(self, records: Sequence[RequestRecord]) -> bytes:
        """NDJSON: one object per line, each line ended by a newline."""
        line = self.line
        return "".join(line(r) + "\n" for r in records).encode()


_PLAIN = LineEncoder()
json_line = _PLAIN.line
json_array = _PLAIN.array
json_lines = _PLAIN.lines
