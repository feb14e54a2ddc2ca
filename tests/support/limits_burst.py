"""One load process for the cross-process exactness test: `python -m support.limits_burst JSON`.

Runs `tasks` asyncio tasks against one Redis through its own `RedisBackend`; each
task makes `attempts` decisions back to back. Each process prints `ready` once its
backend is connected and its script loaded, then waits for a `go` line on stdin: the
parent sends it when every process is ready, so the bursts overlap. Then prints one
JSON line: admitted and refused counts, decisions the backend could not make, and
the backend's metrics.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from portcullis.limits import FailurePolicy, LimitRequest, LimitSpec
from portcullis.limits.redis_backend import RedisBackend


async def burst(job: dict[str, Any]) -> dict[str, Any]:
    backend = RedisBackend.from_url(
        job["redis_url"],
        prefix=job["prefix"],
        timeout=10.0,
        on_failure=FailurePolicy.closed,  # a failure must show, never admit silently
    )
    requests = [
        LimitRequest(key, LimitSpec.of(alg, limit, period, burst), cost, job["slot"])
        for key, alg, limit, period, burst, cost in job["limits"]
    ]
    admitted = refused = uncounted = 0

    async def task() -> None:
        nonlocal admitted, refused, uncounted
        for _ in range(job["attempts"]):
            decisions = await backend.decide(requests)
            if not all(d.counted for d in decisions):
                uncounted += 1
            elif all(d.allowed for d in decisions):
                admitted += 1
            else:
                refused += 1

    # Connect and load the script before the start line, so the burst is all decisions.
    await backend.decide([LimitRequest("warmup", requests[0].spec, 0, "warmup")])
    print("ready", flush=True)
    if (await asyncio.to_thread(sys.stdin.readline)).strip() != "go":
        raise SystemExit("no go from the parent")
    await asyncio.gather(*(task() for _ in range(job["tasks"])))
    stats = backend.snapshot()
    await backend.aclose()
    return {"admitted": admitted, "refused": refused, "uncounted": uncounted, "stats": stats}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(burst(json.loads(sys.argv[1])))))
