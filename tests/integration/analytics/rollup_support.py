"""Synthetic request-log rows for the rollup and analytics API tests."""

from __future__ import annotations

import itertools
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.store.analytics_tables import RequestLogRow

_ids = itertools.count()


def raw_row(ts_ms: int, latency_ms: float, **fields: Any) -> dict[str, Any]:
    """One `request_log` row (a 200 on route `orders` of service `shop` unless overridden)."""
    row: dict[str, Any] = {
        "ts_ms": ts_ms,
        "request_id": f"req-{next(_ids)}",
        "node": "test-node",
        "method": "GET",
        "path": "/orders/1",
        "path_template": "/orders",
        "route": "orders",
        "service": "shop",
        "upstream_target": "127.0.0.1:9",
        "consumer": None,
        "credential_id": None,
        "status": 200,
        "bytes_in": 10,
        "bytes_out": 100,
        "client_ip": "203.0.113.9",
        "user_agent": "tests",
        "latency_ms": latency_ms,
        "upstream_ms": latency_ms * 0.9,
        "gateway_ms": latency_ms * 0.1,
        "flags": 0,
        "error_kind": None,
        "trace_id": None,
        "priority": None,
    }
    row.update(fields)
    return row


async def insert_rows(engine: AsyncEngine, rows: list[dict[str, Any]]) -> None:
    async with engine.begin() as conn:
        for i in range(0, len(rows), 1000):
            await conn.execute(insert(RequestLogRow), rows[i : i + 1000])
