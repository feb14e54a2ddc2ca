"""Rate-limit decision cost per algorithm, in microseconds: memory and Redis backends.

For each algorithm (fixed window, sliding window, token bucket, GCRA) it times, one
decision at a time with `perf_counter_ns` (median and p99 over `--samples`):

- `function`      the pure algorithm function alone (one limit, no storage);
- `memory x1`     `MemoryBackend.decide` for one limit (dict lookup, store, sweep check);
- `memory x3`     the same with three limits decided together (all-or-nothing);
- `plugin x1`     the whole `rate-limit` plugin `access()` on the memory backend: key
                  from the consumer, cost, decision, RateLimit headers;
- `redis x1`      `RedisBackend.decide` for one limit: one EVALSHA round trip to a
                  local redis-server, sequential (latency, not throughput);
- `redis x3`      the same with three limits in one script call;
- `redis x1 c32`  wall time per decision with 32 concurrent tasks (throughput view);
- `redis x1 cpu`  this process's CPU per decision in that run (the worker's cost; the
                  redis-server is another process), and both again for the baseline
                  `redis-py` client the pipelined connection replaced (redis_pipe.py).

Requests rotate over 1,000 keys with limits high enough that all are admitted (the
common path). A private redis-server is started on a free loopback port (no
persistence). The event loop is uvloop, as in the gateway's workers (`--loop asyncio`
for the default loop). The machine is shared: compare medians, rerun when p99 looks noisy.

Run from the repository root:
    .venv/bin/python benchmarks/limits_bench.py
    .venv/bin/python benchmarks/limits_bench.py --samples 5000 --no-redis
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from portcullis.identity.consumers import ConsumerInfo
from portcullis.limits import Algorithm, LimitBackend, LimitRequest, LimitSpec
from portcullis.limits.algorithms import evaluate
from portcullis.limits.memory import MemoryBackend
from portcullis.limits.redis_backend import RedisBackend
from portcullis.model.config import Consumer
from portcullis.plugins.base import RequestContext
from portcullis.plugins.env import PluginEnv
from portcullis.plugins.registry import build_plugin

ROOT = Path(__file__).resolve().parents[1]
KEYS = 1000
BIG = 10**8  # high limits: every decision is admitted


def specs(algorithm: Algorithm) -> list[LimitSpec]:
    burst = BIG if algorithm in (Algorithm.token_bucket, Algorithm.gcra) else None
    return [
        LimitSpec(algorithm, BIG, 1_000_000, burst),
        LimitSpec(algorithm, BIG, 3_600_000_000, burst),
        LimitSpec(algorithm, BIG, 86_400_000_000, burst),
    ]


def batches(algorithm: Algorithm, width: int) -> list[list[LimitRequest]]:
    chosen = specs(algorithm)[:width]
    return [
        [LimitRequest(f"bench:{j}:{i}", spec, 1, f"bench:{i}") for j, spec in enumerate(chosen)]
        for i in range(KEYS)
    ]


def summary(samples_ns: list[int]) -> tuple[float, float]:
    ordered = sorted(samples_ns)
    return statistics.median(ordered) / 1000, ordered[int(len(ordered) * 0.99)] / 1000


def time_function(algorithm: Algorithm, samples: int) -> tuple[float, float]:
    spec = specs(algorithm)[0]
    states: list[Any] = [None] * KEYS
    now = time.time_ns() // 1000
    out = []
    for n in range(samples):
        i = n % KEYS
        t0 = time.perf_counter_ns()
        o = evaluate(spec, states[i], now + n, 1)
        out.append(time.perf_counter_ns() - t0)
        states[i] = o.state
    return summary(out)


async def time_async(
    call: Callable[[int], Awaitable[object]], samples: int, warmup: int = 200
) -> tuple[float, float]:
    for n in range(warmup):
        await call(n)
    out = []
    for n in range(samples):
        t0 = time.perf_counter_ns()
        await call(n)
        out.append(time.perf_counter_ns() - t0)
    return summary(out)


async def time_concurrent(
    call: Callable[[int], Awaitable[object]], total: int, tasks: int = 32
) -> tuple[float, float]:
    """(wall µs, CPU µs of this process) per decision with `tasks` concurrent callers;
    the CPU figure leaves out redis-server, a process of its own."""
    per_task = total // tasks

    async def worker(w: int) -> None:
        for n in range(per_task):
            await call(w * per_task + n)

    t0, c0 = time.perf_counter_ns(), time.process_time_ns()
    await asyncio.gather(*(worker(w) for w in range(tasks)))
    count = per_task * tasks
    wall = (time.perf_counter_ns() - t0) / count / 1000
    return wall, (time.process_time_ns() - c0) / count / 1000


def decider(
    backend: LimitBackend, reqs: list[list[LimitRequest]]
) -> Callable[[int], Awaitable[object]]:
    """Decision number n: the n-th key's requests (rotating over KEYS)."""

    def call(n: int) -> Awaitable[object]:
        return backend.decide(reqs[n % KEYS])

    return call


def plugin_call(algorithm: Algorithm) -> Callable[[int], Awaitable[object]]:
    plugin = build_plugin(
        "rate-limit",
        {"limits": [{"limit": BIG, "period": "1h", "algorithm": algorithm.value}]},
        PluginEnv(limits=MemoryBackend()),
    )
    consumers = [ConsumerInfo.of(Consumer(username=f"c{i}")) for i in range(KEYS)]
    route = cast(Any, SimpleNamespace(name="r", service=SimpleNamespace(name="s")))
    scope = {"type": "http", "headers": [(b"host", b"api.test")]}

    async def call(n: int) -> object:
        ctx = RequestContext(scope, route, "GET", "/", "127.0.0.1", "rid", None, [])
        ctx.consumer = consumers[n % KEYS]
        return await plugin.access(ctx)

    return call


async def run(args: argparse.Namespace, redis_url: str | None) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    cpus: dict[str, float] = {}

    def add(alg: Algorithm, what: str, figures: tuple[float, float] | float) -> None:
        text = (
            f"{figures[0]:8.2f} {figures[1]:9.2f}"
            if isinstance(figures, tuple)
            else f"{figures:8.2f} {'':>9}"
        )
        rows.append((alg.value, what, text))
        print(f"{alg.value:<15} {what:<16} {text}", flush=True)

    for alg in Algorithm:
        add(alg, "function", time_function(alg, args.samples))
        memory = MemoryBackend()
        for width in (1, 3):
            reqs = batches(alg, width)
            add(
                alg,
                f"memory x{width}",
                await time_async(decider(memory, reqs), args.samples),
            )
        add(alg, "plugin x1", await time_async(plugin_call(alg), args.samples))
        if redis_url is None:
            continue
        backend = RedisBackend.from_url(redis_url, timeout=5.0, prefix=f"bench:{alg.value}:")
        try:
            for width in (1, 3):
                reqs = batches(alg, width)
                add(
                    alg,
                    f"redis x{width}",
                    await time_async(decider(backend, reqs), args.redis_samples),
                )
            reqs = batches(alg, 1)
            # Wall and CPU per decision at 32 concurrent, beside the same backend on
            # redis-py's client (the baseline the pipelined connection replaced).
            baseline = RedisBackend.from_url(
                redis_url, timeout=5.0, prefix=f"bench:{alg.value}:py:", pipelined=False
            )
            try:
                for label, chosen in (("redis x1 c32", backend), ("redis-py x1 c32", baseline)):
                    wall, cpu = await time_concurrent(decider(chosen, reqs), args.redis_samples)
                    add(alg, label, wall)
                    add(alg, label.replace("c32", "cpu"), cpu)
                    cpus[label] = cpus.get(label, 0.0) + cpu
                assert baseline.fallback_decisions == 0, baseline.circuit.last_error
            finally:
                await baseline.aclose()
            assert backend.fallback_decisions == 0, backend.circuit.last_error
        finally:
            await backend.aclose()
    if cpus:
        ours, theirs = cpus["redis x1 c32"], cpus["redis-py x1 c32"]
        print(
            f"\nworker CPU per Redis decision at 32 concurrent, mean of the algorithms: "
            f"pipelined {ours / len(Algorithm):.1f} µs, redis-py {theirs / len(Algorithm):.1f} µs "
            f"(ratio {theirs / ours:.1f}x; target <= 30 µs)",
            flush=True,
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=20_000, help="in-process samples")
    parser.add_argument("--redis-samples", type=int, default=3_000, help="Redis samples")
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis backend")
    parser.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="event loop (gateway: uvloop)",
    )
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    print(f"{'algorithm':<15} {'path':<16} {'median':>8} {'p99':>9}   (µs per decision)")
    if args.no_redis:
        asyncio.run(run(args, None))
        return 0
    sys.path.insert(0, str(ROOT / "tests"))
    from support.redis import running_redis

    with running_redis() as server:
        asyncio.run(run(args, server.url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
