"""Build a worker's rate-limit backend from its settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from portcullis.limits.backend import FailurePolicy, LimitBackend
from portcullis.limits.memory import MemoryBackend
from portcullis.settings import Settings

if TYPE_CHECKING:
    from portcullis.redis_client import SharedRedis


def create_limit_backend(settings: Settings, redis: SharedRedis | None) -> LimitBackend:
    """Redis when the process has one (exact across workers and nodes), else its memory.

    `redis` is the process's shared Redis (`SharedRedis.from_settings`), which the
    backend uses but does not close. With Redis, a local `MemoryBackend` stands by for
    the `local` failure policy. No connection is made here: the first decision
    connects (and loads the script).
    """
    memory = MemoryBackend(max_keys=settings.limits_memory_max_keys)
    if redis is None:
        return memory
    from portcullis.limits.redis_backend import RedisBackend

    return RedisBackend(
        redis,
        timeout=settings.limits_redis_timeout,
        prefix=settings.limits_key_prefix,
        on_failure=FailurePolicy.local,
        fallback=memory,
    )
