"""Build a worker's response-cache backend from its settings."""

from __future__ import annotations

from portcullis.cache.backend import CacheBackend
from portcullis.cache.memory import MemoryCache
from portcullis.settings import Settings


def create_cache_backend(settings: Settings) -> CacheBackend:
    """`cache_backend=memory` (default): this worker's memory; `redis`: shared in Redis.

    Redis needs `redis_url`; no connection is made here (the first lookup connects).
    """
    if settings.cache_backend == "memory":
        return MemoryCache(
            max_entries=settings.cache_memory_max_entries,
            max_bytes=settings.cache_memory_max_bytes,
        )
    if not settings.redis_url:
        raise ValueError("PORTCULLIS_CACHE_BACKEND=redis needs PORTCULLIS_REDIS_URL")
    from portcullis.cache.redis_cache import RedisCache

    return RedisCache.from_url(
        settings.redis_url,
        timeout=settings.cache_redis_timeout,
        prefix=settings.cache_key_prefix,
    )
