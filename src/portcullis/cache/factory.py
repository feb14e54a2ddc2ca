"""Build a worker's response-cache backend from its settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from portcullis.cache.backend import CacheBackend
from portcullis.cache.memory import MemoryCache
from portcullis.settings import Settings

if TYPE_CHECKING:
    from portcullis.redis_client import SharedRedis


def create_cache_backend(settings: Settings, redis: SharedRedis | None = None) -> CacheBackend:
    """`cache_backend=memory` (default): this worker's memory; `redis`: shared in Redis.

    Redis needs `redis_url`. `redis` is the process's shared Redis (used, not closed);
    without it the cache gets a Redis of its own, closed with it (a one-off purge).
    No connection is made here (the first lookup connects).
    """
    if settings.cache_backend == "memory":
        return MemoryCache(
            max_entries=settings.cache_memory_max_entries,
            max_bytes=settings.cache_memory_max_bytes,
        )
    if not settings.redis_url:
        raise ValueError("PORTCULLIS_CACHE_BACKEND=redis needs PORTCULLIS_REDIS_URL")
    from portcullis.cache.redis_cache import RedisCache

    if redis is not None:
        return RedisCache(
            redis, timeout=settings.cache_redis_timeout, prefix=settings.cache_key_prefix
        )
    return RedisCache.from_url(
        settings.redis_url,
        timeout=settings.cache_redis_timeout,
        prefix=settings.cache_key_prefix,
    )
