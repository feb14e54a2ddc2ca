"""The one Redis connection (and outage circuit) of a process: limits, cache, event bus."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Self

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from portcullis.outage import OutageCircuit
from portcullis.redis_pipe import RedisPipe
from portcullis.settings import Settings

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


class SharedRedis:
    """One process's Redis: one bounded connection pool and one outage circuit.

    Created once at start-up (`from_settings`) by whoever owns the process's services
    (the data-plane server, the control plane's background jobs) and handed to every
    Redis user there: rate limits, the response cache, the event bus. So an outage is
    seen once, logged once, and every user skips Redis while the circuit is open
    instead of each paying its own timeout to find out. Users never close it; the
    owner does (`aclose`).
    """

    def __init__(self, client: Redis, circuit: OutageCircuit) -> None:
        self.client = client
        self.circuit = circuit
        self._pipe: RedisPipe | None = None

    @property
    def pipe(self) -> RedisPipe | None:
        """The process's pipelined connection to the same server, for per-request
        commands (redis_pipe.py); None over TLS, which it does not speak."""
        if self._pipe is None:
            pool = self.client.connection_pool
            kwargs = pool.connection_kwargs
            if "ssl" in pool.connection_class.__name__.lower():
                return None
            self._pipe = RedisPipe(
                host=str(kwargs.get("host", "127.0.0.1")),
                port=int(kwargs.get("port", 6379)),
                path=kwargs.get("path"),
                db=int(kwargs.get("db") or 0),
                username=kwargs.get("username"),
                password=kwargs.get("password"),
                client_name=kwargs.get("client_name") or "portcullis",
            )
        return self._pipe

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        timeout: float,
        max_connections: int = 64,
        retry_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> SharedRedis:
        """A pool for `url` (nothing connects until the first call) and a closed circuit."""
        return cls(
            redis_client(url, timeout=timeout, max_connections=max_connections),
            OutageCircuit("redis", retry_interval, clock=clock),
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> SharedRedis | None:
        """The process's Redis when `redis_url` is set, else None.

        Each user bounds its own calls (`limits_redis_timeout`, `cache_redis_timeout`);
        the sockets allow the longer of the two.
        """
        if not settings.redis_url:
            return None
        return cls.connect(
            settings.redis_url,
            timeout=max(settings.limits_redis_timeout, settings.cache_redis_timeout),
            max_connections=settings.limits_redis_max_connections,
            retry_interval=settings.limits_redis_retry_interval,
        )

    async def warm(self, connections: int, *, timeout: float) -> int:
        """Open up to `connections` pooled connections now (one PING each, concurrently);
        how many answered.

        A worker's first burst otherwise pays a TCP connect per concurrent request, and
        a call that misses its deadline falls back to the failure policy: on a cold
        start two gateways admitted twice a limit that way (issue 14). Failures are not
        counted against the circuit: Redis may come up after the gateway.
        """

        async def ping() -> bool:
            try:
                return bool(await self.client.ping())
            except REDIS_FAILURES:
                return False

        try:
            async with asyncio.timeout(timeout):
                answers = await asyncio.gather(*(ping() for _ in range(max(0, connections))))
        except TimeoutError:
            return 0
        return sum(answers)

    def dedicated(self) -> Redis:
        """A client of its own on the same server, with no read timeout: for a pub/sub
        subscription, which holds its connection and blocks on reads."""
        pool = self.client.connection_pool
        kwargs = {**pool.connection_kwargs, "socket_timeout": None}
        return Redis(
            connection_pool=ConnectionPool(connection_class=pool.connection_class, **kwargs)
        )

    async def aclose(self) -> None:
        if self._pipe is not None:
            await self._pipe.aclose()
        await self.client.aclose()
        await self.client.connection_pool.disconnect()


class RedisUser:
    """A per-request Redis user on the process's `SharedRedis` (rate limits, the response
    cache): its circuit, its health, and a way to make one with a Redis of its own."""

    def __init__(self, redis: SharedRedis, *, timeout: float, owns_redis: bool) -> None:
        # The process's Redis and its outage circuit, shared with the other Redis users.
        self.redis = redis
        self.circuit = redis.circuit
        self.timeout = timeout
        self._owns_redis = owns_redis

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        timeout: float = 0.2,
        max_connections: int = 64,
        retry_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        **kwargs: Any,
    ) -> Self:
        """One with a Redis of its own (closed with it): tests and one-off tools."""
        redis = SharedRedis.connect(
            url,
            timeout=timeout,
            max_connections=max_connections,
            retry_interval=retry_interval,
            clock=clock,
        )
        return cls(redis, timeout=timeout, owns_redis=True, **kwargs)

    @property
    def retry_interval(self) -> float:
        return self.circuit.retry_interval

    @property
    def healthy(self) -> bool:
        return not self.circuit.is_open

    async def _close_own_redis(self) -> None:
        if self._owns_redis:
            await self.redis.aclose()
