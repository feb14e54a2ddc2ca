"""Exact across processes: 3 OS processes x 2 asyncio tasks burst at one Redis at once.

Every algorithm must admit exactly its limit — not one more, not one less — when
360 decisions from six concurrent clients in three processes race for 100 units;
and a request checked against two limits must consume both or neither.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from portcullis.limits import Algorithm, LimitRequest, LimitSpec
from portcullis.limits.redis_backend import RedisBackend
from support.clock import clear_of_window_edges
from support.redis import RedisServer

# Run as `-m support.limits_burst` from tests/: as a script, tests/support/redis.py
# would shadow the redis package.
TESTS_DIR = Path(__file__).resolve().parents[2]
PROCESSES, TASKS, ATTEMPTS = 3, 2, 60


def run_burst(redis_url: str, prefix: str, limits: list[list[Any]]) -> list[dict[str, Any]]:
    job = {
        "redis_url": redis_url,
        "prefix": prefix,
        "slot": "burst",
        "limits": limits,
        "tasks": TASKS,
        "attempts": ATTEMPTS,
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "support.limits_burst", json.dumps(job)],
            cwd=TESTS_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    results = []
    try:
        # A start line: every process has connected and loaded the script before any burst.
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready", "a burst process did not start"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            results.append(json.loads(out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
    return results


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_burst_from_three_processes_admits_exactly_the_limit(
    redis_server: RedisServer, algorithm: Algorithm
) -> None:
    clear_of_window_edges(3600)
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    results = run_burst(
        redis_server.url, prefix, [["p:l:all", algorithm.value, 100, "1h", None, 1]]
    )
    assert sum(r["uncounted"] for r in results) == 0
    assert sum(r["admitted"] for r in results) == 100
    assert sum(r["refused"] for r in results) == PROCESSES * TASKS * ATTEMPTS - 100
    # Every process took part in the race (each admitted or refused some).
    assert all(r["admitted"] + r["refused"] == TASKS * ATTEMPTS for r in results)
    client = Redis.from_url(redis_server.url)
    try:
        keys = client.keys(f"{prefix}*")
        assert len(keys) == 1
        assert 0 < client.pttl(keys[0]) <= 2 * 3_600_000
    finally:
        client.close()


async def test_two_limits_from_three_processes_consume_both_or_neither(
    redis_server: RedisServer,
) -> None:
    clear_of_window_edges(86_400)
    prefix = f"test:{uuid.uuid4().hex[:8]}:"
    limits: list[list[Any]] = [
        ["p:hourly:all", "gcra", 60, "1h", None, 1],
        ["p:daily:all", "fixed_window", 40, "1d", None, 1],
    ]
    results = run_burst(redis_server.url, prefix, limits)
    assert sum(r["uncounted"] for r in results) == 0
    assert sum(r["admitted"] for r in results) == 40
    backend = RedisBackend.from_url(redis_server.url, prefix=prefix)
    try:
        peek = await backend.decide(
            [
                LimitRequest(key, LimitSpec.of(alg, limit, period), 0, "burst")
                for key, alg, limit, period, _, _ in limits
            ]
        )
    finally:
        await backend.aclose()
    # The 320 refused requests left the hourly limit untouched: 60 - 40.
    assert [d.remaining for d in peek] == [20, 0]
