"""RedisBackend against a real Redis: atomic multi-limit decisions, hash tags, TTLs,
NOSCRIPT recovery, and the failure policies with automatic recovery when Redis dies,
stalls and comes back."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from redis import Redis
from redis.crc import key_slot

from portcullis.limits import Algorithm, FailurePolicy, LimitRequest, LimitSpec
from portcullis.limits.factory import create_limit_backend
from portcullis.limits.memory import MemoryBackend
from portcullis.limits.redis_backend import RedisBackend
from portcullis.redis_client import SharedRedis
from portcullis.settings import Settings
from support.clock import ManualClock
from support.redis import RedisServer, running_redis

SECOND = LimitSpec.of("fixed_window", 3, "1s")
HOUR = LimitSpec.of("gcra", 5, "1h")
DAY = LimitSpec.of("sliding_window", 100, "1d")


@pytest.fixture
def prefix() -> str:
    return f"test:{uuid.uuid4().hex[:8]}:"


@pytest.fixture
async def backend(redis_server: RedisServer, prefix: str) -> AsyncIterator[RedisBackend]:
    b = RedisBackend.from_url(redis_server.url, prefix=prefix, timeout=2.0)
    yield b
    await b.aclose()


@pytest.fixture
def sync_client(redis_server: RedisServer) -> Iterator[Redis]:
    client = Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    client.close()


def requests(partition: str = "alice") -> list[LimitRequest]:
    slot = f"api:{partition}"
    return [
        LimitRequest(f"api:s:{partition}", SECOND, 1, slot),
        LimitRequest(f"api:h:{partition}", HOUR, 1, slot),
        LimitRequest(f"api:d:{partition}", DAY, 1, slot),
    ]


async def test_decisions_are_all_or_nothing(backend: RedisBackend) -> None:
    for expected in (2, 1, 0):
        decisions = await backend.decide(requests())
        assert all(d.allowed for d in decisions)
        assert decisions[0].remaining == expected
    refused = await backend.decide(requests())
    assert [d.allowed for d in refused] == [False, True, True]
    # Neither the hour nor the day limit paid for the refused request.
    assert refused[1].remaining == 2
    assert refused[2].remaining == 97
    assert 0 < refused[0].retry_after <= 1_000_000
    assert backend.allowed == 3
    assert backend.denied == 1


async def test_keys_share_one_cluster_slot_and_all_expire(
    backend: RedisBackend, sync_client: Redis, prefix: str
) -> None:
    await backend.decide(requests("bob"))
    keys = sorted(str(k) for k in sync_client.keys(f"{prefix}*"))
    assert keys == sorted(backend.key_for(r) for r in requests("bob"))
    assert all("{api:bob}" in k for k in keys)
    assert len({key_slot(k.encode()) for k in keys}) == 1
    ttls = {k: sync_client.pttl(k) for k in keys}
    assert all(t > 0 for t in ttls.values()), ttls
    assert ttls[backend.key_for(requests("bob")[0])] <= 1_000
    assert ttls[backend.key_for(requests("bob")[2])] <= 2 * 86_400_000


async def test_idle_keys_disappear_after_their_ttl(
    backend: RedisBackend, sync_client: Redis
) -> None:
    spec = LimitSpec.of("gcra", 10, "1s")  # one request matters for 100 ms
    request = LimitRequest("short", spec, 1, "short")
    await backend.decide([request])
    key = backend.key_for(request)
    # Redis expires it by itself: a TTL no longer than the time the request matters.
    assert 0 < sync_client.pttl(key) <= 100


async def test_noscript_after_a_flush_reloads_the_script(
    backend: RedisBackend, sync_client: Redis
) -> None:
    await backend.decide(requests("carol"))
    sync_client.script_flush()
    decisions = await backend.decide(requests("carol"))
    assert decisions[0].remaining == 1
    assert backend.script_loads >= 1
    assert backend.circuit.errors == 0


async def test_each_algorithm_counts_costs(backend: RedisBackend) -> None:
    for algorithm in Algorithm:
        spec = LimitSpec.of(algorithm, 10, "1h")
        request = [LimitRequest(f"cost:{algorithm}", spec, 7, "cost")]
        assert (await backend.decide(request))[0].remaining == 3
        refused = (await backend.decide(request))[0]
        assert not refused.allowed
        assert refused.remaining == 3
        assert refused.retry_after > 0


@pytest.mark.parametrize("policy", list(FailurePolicy))
async def test_redis_down_then_back(policy: FailurePolicy) -> None:
    """Killed Redis: the policy answers at once, the circuit retries, and it recovers."""
    spec = LimitSpec.of("fixed_window", 2, "1h")
    clock = ManualClock()
    with running_redis() as server:
        backend = RedisBackend.from_url(
            server.url, timeout=0.5, retry_interval=0.3, on_failure=policy, clock=clock
        )
        try:
            request = [LimitRequest("k", spec, 1, "k")]
            assert (await backend.decide(request))[0].counted
            assert backend.healthy
            server.kill()
            answers = [(await backend.decide(request))[0] for _ in range(5)]
            snap = backend.snapshot()
            assert backend.circuit_open
            assert snap["fallback_active"] == 1
            assert snap["circuit_opened"] == 1
            assert snap["backend_errors"] == 1  # the circuit spares Redis the other four
            if policy is FailurePolicy.open:
                assert all(a.allowed and not a.counted for a in answers)
                assert snap["failopen_decisions"] == 5
            elif policy is FailurePolicy.closed:
                assert not any(a.allowed for a in answers)
                assert all(not a.counted and a.retry_after == 300_000 for a in answers)
                assert snap["failclosed_decisions"] == 5
            else:
                # Local counters: exact within the process while Redis is away.
                assert [a.allowed for a in answers] == [True, True, False, False, False]
                assert all(a.counted for a in answers)
                assert snap["fallback_decisions"] == 5
            server.start()  # same port, empty (no persistence)
            clock.advance(0.29)
            assert (await backend.decide(request))[0].counted is (policy is FailurePolicy.local)
            assert backend.circuit_open  # no probe before the retry interval
            clock.advance(0.01)
            back = (await backend.decide(request))[0]
            assert back.counted
            assert back.allowed
            assert back.remaining == 1  # counting in Redis again, from its empty state
            assert backend.healthy
            assert backend.snapshot()["recoveries"] == 1
            assert backend.snapshot()["fallback_active"] == 0
        finally:
            await backend.aclose()


async def test_a_stalled_redis_times_out_to_the_policy_and_recovers() -> None:
    spec = LimitSpec.of("gcra", 100, "1s")
    clock = ManualClock()
    with running_redis() as server:
        backend = RedisBackend.from_url(
            server.url,
            timeout=0.1,
            retry_interval=0.2,
            on_failure=FailurePolicy.local,
            clock=clock,
        )
        try:
            request = [LimitRequest("k", spec, 1, "k")]
            assert (await backend.decide(request))[0].counted
            server.pause(0.8)
            answer = (await backend.decide(request))[0]
            assert answer.allowed  # the policy answered when the deadline passed
            assert backend.snapshot()["backend_timeouts"] == 1
            # While the circuit is open, Redis is not asked (no deadline paid again).
            for _ in range(20):
                await backend.decide(request)
            snap = backend.snapshot()
            assert snap["backend_errors"] == 1
            assert snap["fallback_decisions"] == 21
            # Commands wait out a CLIENT PAUSE: this PING returns when Redis answers again.
            with Redis.from_url(server.url, socket_timeout=5) as client:
                assert client.ping()
            clock.advance(0.2)
            await backend.decide(request)
            assert backend.healthy
            assert backend.snapshot()["recoveries"] >= 1
        finally:
            await backend.aclose()


async def test_the_policy_can_be_chosen_per_call() -> None:
    spec = LimitSpec.of("gcra", 1, "1s")
    with running_redis() as server:
        backend = RedisBackend.from_url(server.url, timeout=0.5, on_failure=FailurePolicy.open)
        try:
            server.kill()
            request = [LimitRequest("k", spec, 1, "k")]
            assert (await backend.decide(request))[0].allowed
            refused = (await backend.decide(request, FailurePolicy.closed))[0]
            assert not refused.allowed
            assert not refused.counted
        finally:
            await backend.aclose()


async def test_factory_picks_the_backend_from_settings(redis_server: RedisServer) -> None:
    memory = create_limit_backend(Settings(redis_url=None, limits_memory_max_keys=5), None)
    assert isinstance(memory, MemoryBackend)
    assert memory.max_keys == 5
    settings = Settings(
        redis_url=redis_server.url, limits_redis_timeout=0.7, limits_key_prefix="x:"
    )
    redis = SharedRedis.from_settings(settings)
    assert redis is not None
    shared = create_limit_backend(settings, redis)
    try:
        assert isinstance(shared, RedisBackend)
        assert shared.timeout == 0.7
        assert shared.prefix == "x:"
        assert shared.on_failure is FailurePolicy.local
        assert shared.circuit is redis.circuit
        decisions = await shared.decide([LimitRequest("f", HOUR, 1, "f")])
        assert decisions[0].counted
    finally:
        await shared.aclose()
        # The backend does not own the process's Redis: it still answers until its owner closes it.
        assert await redis.client.ping()
        await redis.aclose()


async def test_warm_opens_connections_and_loads_the_script_before_traffic(
    redis_server: RedisServer, sync_client: Redis, prefix: str
) -> None:
    sync_client.script_flush()
    name = f"warm-{uuid.uuid4().hex[:8]}"
    redis = SharedRedis.connect(redis_server.url, timeout=2.0)
    redis.client.connection_pool.connection_kwargs["client_name"] = name
    b = RedisBackend(redis, prefix=prefix, timeout=2.0, owns_redis=True)
    try:
        # Decisions share one pipelined connection: warming opens it (named after the
        # process's Redis client) and loads the script.
        assert await b.warm(6) == 1
        clients = [c for c in sync_client.client_list() if c.get("name") == name]
        assert len(clients) == 1
        assert b.script_loads == 1
        # The first decision finds the script loaded: no NOSCRIPT round trip.
        assert all(d.allowed for d in await b.decide(requests("warm")))
        assert b.script_loads == 1
        assert b.fallback_decisions == 0
    finally:
        await b.aclose()


async def test_warm_against_an_absent_redis_returns_zero_and_leaves_the_circuit_closed() -> None:
    b = RedisBackend.from_url("redis://127.0.0.1:1", timeout=0.5)
    try:
        assert await b.warm(4, timeout=1.0) == 0
        assert b.healthy
    finally:
        await b.aclose()
