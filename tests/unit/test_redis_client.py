"""One Redis per process: limits, cache and event bus share its client and outage circuit."""

from __future__ import annotations

from portcullis.cache.factory import create_cache_backend
from portcullis.cache.redis_cache import RedisCache
from portcullis.limits.backend import LimitRequest
from portcullis.limits.factory import create_limit_backend
from portcullis.limits.redis_backend import RedisBackend
from portcullis.limits.spec import LimitSpec
from portcullis.redis_client import SharedRedis
from portcullis.settings import Settings
from support.clock import ManualClock
from support.servers import free_port


def test_without_a_redis_url_there_is_no_shared_redis() -> None:
    assert SharedRedis.from_settings(Settings(redis_url=None)) is None


async def test_limits_and_cache_share_one_client_and_one_circuit() -> None:
    settings = Settings(
        redis_url=f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        cache_backend="redis",
        limits_redis_timeout=0.5,
        cache_redis_timeout=0.3,
    )
    redis = SharedRedis.from_settings(settings)
    assert redis is not None
    limits = create_limit_backend(settings, redis)
    cache = create_cache_backend(settings, redis)
    assert isinstance(limits, RedisBackend)
    assert isinstance(cache, RedisCache)
    assert limits.redis is redis
    assert cache.redis is redis
    assert limits.circuit is cache.circuit is redis.circuit
    # Each user keeps its own deadline; the sockets allow the longer one.
    assert (limits.timeout, cache.timeout) == (0.5, 0.3)
    assert redis.client.connection_pool.connection_kwargs["socket_timeout"] == 0.5
    try:
        # The limits find Redis down: the cache skips it at once instead of timing out too.
        request = LimitRequest("k", LimitSpec.of("gcra", 10, "1m"), 1, "k")
        decisions = await limits.decide([request])
        assert decisions[0].allowed  # the local fallback answered
        assert redis.circuit.is_open
        assert await cache.get("some-key") is None
        assert cache.skipped == 1
        assert redis.circuit.errors == 1  # the cache did not try (and fail) again
    finally:
        await limits.aclose()
        await cache.aclose()
        await redis.aclose()


def test_a_dedicated_client_has_the_same_server_and_no_read_timeout() -> None:
    redis = SharedRedis.connect("redis://127.0.0.1:6390/3", timeout=0.2, clock=ManualClock())
    dedicated = redis.dedicated()
    kwargs = dedicated.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("127.0.0.1", 6390, 3)
    assert kwargs["socket_timeout"] is None
    assert kwargs["socket_connect_timeout"] == 0.2
