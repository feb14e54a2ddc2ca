"""One record per request the data plane answered, and who receives it.

The proxy builds a `RequestRecord` when a request ends (only when some observer
is installed) and hands it to every `RequestObserver` of the worker: the request
log queue, Prometheus metrics, tracing. Observers are synchronous and must not
block or raise: they run on the request's task after the response is sent, so
anything slow (I/O, batching) belongs behind their own queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntFlag
from typing import Protocol


class Flag(IntFlag):
    """What happened to a request, beyond its status (stored as an integer bitmask)."""

    NONE = 0
    RATE_LIMITED = 1  # refused by a rate limit or quota (429, or 503 when limits are down)
    AUTH_FAILED = 2  # refused by an auth or acl plugin (401/403)
    CACHE_HIT = 4  # answered from the response cache
    RETRIED = 8  # the upstream call was attempted more than once
    CIRCUIT_OPEN = 16  # no target could be tried because breakers were open
    SHED = 32  # refused by load shedding (adaptive concurrency, priority class)
    CACHE_MISS = 64  # a cacheable request that went upstream
    CLIENT_ABORTED = 128  # the client went away before the response was complete
    REQUEST_INVALID = 256  # refused by request-validator (not what the API description allows)
    RESPONSE_MISMATCH = 512  # the upstream's response differs from the API description


@dataclass(slots=True)
class RequestRecord:
    """The facts of one request, as the request log stores them.

    Times are seconds since the epoch (`started_at`) and milliseconds
    (latencies). `upstream_ms` is the time from sending to the upstream until its
    response ended (all attempts), None when no upstream was called;
    `gateway_ms` is the rest of `latency_ms`. `path_template` is the matched
    route's path pattern(s), so rollups group `/users/42` and `/users/43`.
    `error_kind` is the problem type slug when the gateway answered with a
    problem (e.g. `route-not-found`, `upstream-timeout`, `quota-exceeded`).
    """

    request_id: str
    started_at: float
    method: str
    path: str
    path_template: str | None
    route: str | None
    service: str | None
    upstream_target: str | None
    consumer: str | None
    credential_id: str | None
    status: int
    bytes_in: int
    bytes_out: int
    client_ip: str
    user_agent: str | None
    latency_ms: float
    upstream_ms: float | None
    gateway_ms: float
    # When the first upstream attempt started, in ms after `started_at` (None: no upstream call).
    upstream_offset_ms: float | None
    flags: int
    error_kind: str | None
    trace_id: str | None
    priority: str | None
    # W3C parent-ids: the client's (when it sent a traceparent and tracing is on) and
    # the one the upstream received (the gateway's upstream span when tracing is on).
    parent_span_id: str | None = None
    upstream_span_id: str | None = None
    # The API product and version the request was served as, and whether a sandbox
    # answered it (see model/apis.py).
    api: str | None = None
    api_version: str | None = None
    sandbox: bool = False


class RequestObserver(Protocol):
    """Receives every finished request of a worker; must return quickly and never raise."""

    def observe(self, record: RequestRecord) -> None: ...
