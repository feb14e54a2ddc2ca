"""RedisCache against a real redis-server: entries, PX TTLs, SCAN purges, and outages."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from portcullis.cache import CacheEntry, CacheUnavailable, PurgeScope, cache_key, key_path
from portcullis.cache.redis_cache import RedisCache
from support.clock import ManualClock
from support.redis import RedisServer, free_port


def entry(body: bytes = b"body", ttl: float = 60.0) -> CacheEntry:
    now = time.time()
    return CacheEntry(200, ((b"content-type", b"text/plain"),), body, now, now + ttl, age=2)


@pytest.fixture
async def cache(redis_server: RedisServer) -> AsyncIterator[RedisCache]:
    backend = RedisCache.from_url(redis_server.url, prefix=f"t:{uuid.uuid4().hex[:8]}:")
    yield backend
    await backend.purge(PurgeScope())
    await backend.aclose()


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def test_entries_round_trip_with_a_px_ttl(cache: RedisCache, raw: Redis) -> None:
    stored = entry(b"\x00binary\xff" * 100, ttl=30)
    cache.put([("r|/a|d1", stored)])
    await cache.flush()
    assert await cache.get("r|/a|d1") == stored
    assert await cache.get("r|/a|nothing") is None
    pttl = await raw.pttl(cache.prefix + "r|/a|d1")
    assert 29_000 < pttl <= 30_000
    assert cache.snapshot()["stores"] == 1
    assert cache.snapshot()["hits"] == 1
    assert cache.snapshot()["misses"] == 1


async def test_an_already_expired_entry_is_not_written(cache: RedisCache, raw: Redis) -> None:
    cache.put([("r|/a|old", entry(ttl=-1))])
    await cache.flush()
    assert await raw.exists(cache.prefix + "r|/a|old") == 0


async def test_purges_delete_exactly_their_scope(cache: RedisCache, raw: Redis) -> None:
    paths = {
        "orders": ["/orders/1", "/orders/10", "/orders/2", "/a*[x]"],
        "users": ["/orders/1", "/users/1"],
    }

    async def fill() -> list[str]:
        keys = [
            cache_key(route, key_path(path), f"{i:032x}")
            for route, items in paths.items()
            for path in items
            for i in range(3)
        ]
        cache.put([(k, entry()) for k in keys])
        await cache.flush()
        return keys

    # Keys of other features (rate limits) under another prefix are never touched.
    await raw.set("pc:rl:{x}:counter", b"7")
    cases = [
        PurgeScope.of(route="orders", path="/orders/1"),
        PurgeScope.of(path="/orders/1"),
        PurgeScope.of(path_prefix="/orders/1"),
        PurgeScope.of(route="users"),
        PurgeScope.of(path="/a*[x]"),
        PurgeScope.of(),
    ]
    for scope in cases:
        keys = await fill()
        expected = {k for k in keys if scope.matches(k)}
        assert await cache.purge(scope) == len(expected), scope
        for key in keys:
            assert (await raw.exists(cache.prefix + key) == 0) == (key in expected), (scope, key)
    assert await raw.get("pc:rl:{x}:counter") == b"7"
    await raw.delete("pc:rl:{x}:counter")


async def test_an_unreachable_redis_is_a_fast_miss_and_never_an_error() -> None:
    cache = RedisCache.from_url(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    try:
        assert await cache.get("r|/a|d") is None
        assert not cache.healthy
        # The circuit is open: further reads skip Redis (no timeout paid per request:
        # skipped reads never reach the client, so they add no backend error).
        for _ in range(100):
            assert await cache.get("r|/a|d") is None
        cache.put([("r|/a|d", entry())])
        stats = cache.snapshot()
        assert stats["backend_errors"] == 1
        assert stats["skipped_reads"] == 100
        assert stats["misses"] == 101
        assert stats["dropped_writes"] == 1
        assert stats["outages"] == 1
        with pytest.raises(CacheUnavailable):
            await cache.purge(PurgeScope())
    finally:
        await cache.aclose()


async def test_recovers_after_an_outage(redis_server: RedisServer) -> None:
    clock = ManualClock()
    cache = RedisCache.from_url(
        redis_server.url, prefix="t:recover:", retry_interval=0.2, clock=clock
    )
    try:
        cache.circuit.failed(ConnectionError("simulated"))
        assert await cache.get("r|/a|d") is None
        clock.advance(0.19)
        assert await cache.get("r|/a|d") is None
        assert cache.snapshot()["skipped_reads"] == 2
        clock.advance(0.01)
        assert await cache.get("r|/a|d") is None  # the probe reaches Redis: a real miss
        assert cache.healthy
        cache.put([("r|/a|d", entry())])
        await cache.flush()
        assert await cache.get("r|/a|d") is not None
    finally:
        await cache.purge(PurgeScope())
        await cache.aclose()
