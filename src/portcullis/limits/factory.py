"""Build a worker's rate-limit backend from its settings."""

from __future__ import annotations

from portcullis.limits.backend import FailurePolicy, LimitBackend
from portcullis.limits.memory import MemoryBackend
from portcullis.settings import Settings


def create_limit_backend(settings: Settings) -> LimitBackend:
    """Redis when `redis_url` is set (exact across workers and nodes), else this process's memory.

    With Redis, a local `MemoryBackend` stands by for the `local` failure policy.
    No connection is made here: the first decision connects (and loads the script).
    """
    memory = MemoryBackend(max_keys=settings.limits_memory_max_keys)
    if not settings.redis_url:
        return memory
    from portcullis.limits.redis_backend import RedisBackend

    return RedisBackend.from_url(
        settings.redis_url,
        timeout=settings.limits_redis_timeout,
        max_connections=settings.limits_redis_max_connections,
        prefix=settings.limits_key_prefix,
        retry_interval=settings.limits_redis_retry_interval,
        on_failure=FailurePolicy.local,
        fallback=memory,
    )
