"""API-product traffic for the per-version usage tests: the config of an API `shop`
(v1 deprecated with a sunset, v2 stable) and request records as the proxy builds them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from portcullis.analytics.record import RequestRecord

DAY = 86400


def gateway(sunset: datetime) -> dict[str, Any]:
    return {
        "services": [{"name": "shop", "url": "http://127.0.0.1:9"}],
        "routes": [
            {"name": "shop-v1", "service": "shop", "paths": ["/v1"]},
            {"name": "shop-v2", "service": "shop", "paths": ["/v2"]},
            {"name": "other", "service": "shop", "paths": ["/other"]},
        ],
        "consumers": [{"username": u} for u in ("alice", "bob", "carol")],
        "apis": [
            {
                "name": "shop",
                "versions": [
                    {
                        "name": "v1",
                        "status": "deprecated",
                        "routes": ["shop-v1"],
                        "deprecated_at": "2026-01-01T00:00:00Z",
                        "sunset_at": sunset.isoformat(),
                        "successor": "v2",
                    },
                    {"name": "v2", "routes": ["shop-v2"]},
                ],
            }
        ],
    }


def record(
    at: float,
    route: str,
    consumer: str | None = None,
    key: str | None = None,
    *,
    version: str | None = None,
    sandbox: bool = False,
) -> RequestRecord:
    """A finished request as the proxy builds it (`ctx.api` set by version resolution)."""
    return RequestRecord(
        request_id=f"r-{at}-{consumer}-{key}",
        started_at=at,
        method="GET",
        path=f"/{route}/items",
        path_template=f"/{route}",
        route=route,
        service="shop",
        upstream_target="127.0.0.1:9",
        consumer=consumer,
        credential_id=key,
        status=200,
        bytes_in=0,
        bytes_out=10,
        client_ip="203.0.113.7",
        user_agent="tests",
        latency_ms=5.0,
        upstream_ms=4.0,
        gateway_ms=1.0,
        upstream_offset_ms=0.5,
        flags=0,
        error_kind=None,
        trace_id=None,
        priority=None,
        api="shop" if version is not None else None,
        api_version=version,
        sandbox=sandbox,
    )


def traffic(now: float) -> list[RequestRecord]:
    """Closed minutes of the last hours (and one request 40 days ago)."""
    base = now - 3 * 3600
    return [
        record(base + 10.25, "shop-v1", "alice", "key-a1", version="v1"),
        record(base + 70.5, "shop-v1", "alice", "key-a1", version="v1"),
        record(base + 130.75, "shop-v1", "alice", "key-a1", version="v1"),
        record(base + 200.125, "shop-v1", "alice", "key-a2", version="v1", sandbox=True),
        record(base + 260.0, "shop-v1", version="v1"),  # anonymous
        record(base + 300.0, "shop-v2", "bob", "key-b1", version="v2"),
        record(base + 360.0, "shop-v2", "bob", "key-b1", version="v2"),
        record(base + 420.0, "other", "bob", "key-b1"),  # no API
        record(now - 40 * DAY, "shop-v1", "carol", "key-c1", version="v1"),
    ]


def ms(at: float) -> int:
    return int(at * 1000)


def iso_ms(at: float) -> str:
    """How the API writes a last-seen time (millisecond precision, UTC)."""
    return datetime.fromtimestamp(ms(at) / 1000, UTC).isoformat().replace("+00:00", "Z")
