"""What per-version usage adds to a rollup round (analytics/rollups.py): the same raw
minutes rolled up without an API (the baseline: no `api_callers` rows, one rollup
dimension less in use) and as API traffic (two versions, 10 % sandbox, 50 consumers
with 2 keys each), on a temp SQLite file; rounds alternate and the medians are printed.

Run from the repository root:
    .venv/bin/python benchmarks/api_usage_bench.py [--rows 100000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from portcullis.analytics.log_queue import RequestLogWriter
from portcullis.analytics.record import RequestRecord
from portcullis.analytics.rollups import Rollups
from portcullis.store.engine import create_engine
from portcullis.store.migrations import upgrade_to_head


def records(n: int, with_api: bool) -> list[RequestRecord]:
    rng = random.Random(1)
    base = time.time() - 2 * 3600
    out = []
    for i in range(n):
        consumer = f"c{rng.randrange(50)}"
        out.append(
            RequestRecord(
                request_id=f"r{i}",
                started_at=base + i * 3600 / n,
                method="GET",
                path="/v1/items",
                path_template="/v1",
                route="shop-v1",
                service="shop",
                upstream_target="127.0.0.1:9",
                consumer=consumer,
                credential_id=f"{consumer}-k{rng.randrange(2)}",
                status=200,
                bytes_in=0,
                bytes_out=100,
                client_ip="203.0.113.7",
                user_agent="bench",
                latency_ms=rng.lognormvariate(2.5, 0.5),
                upstream_ms=1.0,
                gateway_ms=1.0,
                upstream_offset_ms=0.1,
                flags=0,
                error_kind=None,
                trace_id=None,
                priority=None,
                api="shop" if with_api else None,
                api_version=rng.choice(["v1", "v2"]) if with_api else None,
                sandbox=with_api and rng.random() < 0.1,
            )
        )
    return out


async def round_seconds(n: int, with_api: bool) -> float:
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite+aiosqlite:///{directory}/bench.db"
        await upgrade_to_head(url)
        engine = create_engine(url)
        try:
            writer = RequestLogWriter(engine, "bench")
            rows = records(n, with_api)
            for start in range(0, n, 5000):
                await writer.write(rows[start : start + 5000])
            began = time.perf_counter()
            await Rollups(engine, max_batches=100_000).run_once()
            return time.perf_counter() - began
        finally:
            await engine.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    plain: list[float] = []
    api: list[float] = []
    for _ in range(args.runs):
        plain.append(await round_seconds(args.rows, False))
        api.append(await round_seconds(args.rows, True))
    print(
        f"{args.rows} raw rows over one hour, one rollup round (median of {args.runs}):"
        f" no API {statistics.median(plain):.2f} s, API traffic {statistics.median(api):.2f} s"
    )


if __name__ == "__main__":
    asyncio.run(main())
