"""Traffic rollups written straight into a store, for tests of what reads them
(alert rules, the dashboard's alerts panel)."""

from __future__ import annotations

import time

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.analytics.sketch import LatencySketch
from portcullis.store.analytics_tables import RollupRow
from portcullis.store.engine import write_transaction


async def failing_minute(
    engine: AsyncEngine,
    *,
    route: str = "checkout",
    service: str = "shop",
    errors: int = 80,
    latency_ms: float = 20.0,
) -> None:
    """The last closed minute: 100 requests on `route`, `errors` of them errors (5xx),
    each taking `latency_ms`."""
    sketch = LatencySketch()
    sketch.add_many([latency_ms] * 100)
    async with write_transaction(engine) as conn:
        await conn.execute(
            insert(RollupRow).values(
                granularity="minute",
                bucket_start=int(time.time()) // 60 * 60 - 60,
                route=route,
                service=service,
                consumer="",
                status_class=5,
                requests=100,
                errors=errors,
                rate_limited=0,
                bytes_in=0,
                bytes_out=0,
                latency_sum_ms=latency_ms * 100,
                sketch=sketch.to_bytes(),
            )
        )
