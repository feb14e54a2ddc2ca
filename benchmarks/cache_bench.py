"""response-cache costs per request, in microseconds, measured in process.

For a GET with a short query, a few headers and a 1 KiB JSON body it times, one
operation at a time with `perf_counter_ns` (median and p99 over `--n` runs):

- `key`: building the cache key;
- `hit`: the access phase answering from the cache (memory; Redis with `--redis-url`);
- `miss+store`: the access phase missing plus the `response_body` phase storing.

Run: `python -m benchmarks.cache_bench [--n 20000] [--redis-url redis://127.0.0.1:6379/0]`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any, cast

from portcullis.cache import CacheBackend, MemoryCache, PurgeScope
from portcullis.model.plugins.response_cache import ResponseCacheConfig
from portcullis.plugins.base import RequestContext
from portcullis.plugins.env import PluginEnv
from portcullis.plugins.response_cache import ResponseCache

BODY = b'{"items": [' + b",".join(b'{"id": %d, "name": "item"}' % i for i in range(40)) + b"]}"
REQUEST_HEADERS = [
    (b"host", b"api.example.com"),
    (b"user-agent", b"bench/1.0"),
    (b"accept", b"application/json"),
    (b"accept-encoding", b"gzip"),
]
RESPONSE_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(BODY)).encode()),
    (b"date", b"Mon, 23 Nov 2026 10:00:00 GMT"),
    (b"etag", b'"abc"'),
    (b"via", b"1.1 portcullis"),
    (b"x-request-id", b"rid"),
]


def context(path: str) -> RequestContext:
    scope = {"type": "http", "headers": REQUEST_HEADERS, "query_string": b"page=2&sort=name"}
    route = cast(Any, SimpleNamespace(name="items"))
    return RequestContext(scope, route, "GET", path, "203.0.113.7", "rid", None)


async def timed(n: int, op: Callable[[int], Awaitable[object]]) -> tuple[float, float]:
    samples = []
    for i in range(n):
        start = time.perf_counter_ns()
        await op(i)
        samples.append(time.perf_counter_ns() - start)
    samples.sort()
    return statistics.median(samples) / 1000, samples[int(len(samples) * 0.99)] / 1000


async def bench(name: str, backend: CacheBackend, n: int) -> None:
    plugin = ResponseCache(ResponseCacheConfig(), PluginEnv(cache=backend))

    async def key(i: int) -> object:
        return plugin.key_for(context("/items"))

    async def miss_and_store(i: int) -> object:
        ctx = context(f"/items/{i}")
        await plugin.access(ctx)
        return plugin.response_body(ctx, 200, [*RESPONSE_HEADERS, *ctx.response_headers], BODY)

    async def hit(i: int) -> object:
        reply = await plugin.access(context("/items/0"))
        assert reply is not None
        return reply

    print(f"{name}: body {len(BODY)} B, n={n}")
    med, p99 = await timed(n, key)
    print(f"  key          median {med:6.1f} us   p99 {p99:6.1f} us")
    med, p99 = await timed(n, miss_and_store)
    print(f"  miss+store   median {med:6.1f} us   p99 {p99:6.1f} us")
    flush = getattr(backend, "flush", None)
    if flush is not None:
        await flush()
    med, p99 = await timed(n, hit)
    print(f"  hit          median {med:6.1f} us   p99 {p99:6.1f} us")
    await backend.purge(PurgeScope())


async def main_async(n: int, redis_url: str | None) -> None:
    await bench("memory", MemoryCache(max_entries=n + 10), n)
    if redis_url:
        from portcullis.cache.redis_cache import RedisCache

        redis = RedisCache.from_url(redis_url, prefix="pc:cache-bench:", timeout=1.0)
        try:
            await bench("redis", redis, n)
        finally:
            await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--redis-url", default=None)
    args = parser.parse_args()
    asyncio.run(main_async(args.n, args.redis_url))


if __name__ == "__main__":
    main()
