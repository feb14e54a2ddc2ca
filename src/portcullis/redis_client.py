"""The Redis client the data plane's shared backends (limits, response cache) use."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

# What a call to Redis raises when Redis is away, slow or answering nonsense.
REDIS_FAILURES: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)


def redis_client(url: str, *, timeout: float, max_connections: int = 64) -> Redis:
    """A bounded pool with per-socket timeouts and no retries.

    redis-py's own retries are off: a retried script after a timeout could count a
    request twice. Callers put a deadline on each call and go through an
    `OutageCircuit` instead.
    """
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=None,  # waiting for a connection is bounded by the caller's deadline
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )
    return Redis(connection_pool=pool)
