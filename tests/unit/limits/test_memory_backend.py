"""MemoryBackend: exact within a process, all-or-nothing, bounded, idle keys expire."""

from __future__ import annotations

import asyncio

import pytest

from portcullis.limits import Algorithm, FailurePolicy, LimitRequest, LimitSpec
from portcullis.limits.memory import MemoryBackend, default_memory_backend

EPOCH = 1_767_225_600_000_000


class Clock:
    def __init__(self, now: int = EPOCH) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.mark.parametrize("algorithm", list(Algorithm))
async def test_concurrent_burst_admits_exactly_the_limit(algorithm: Algorithm) -> None:
    backend = MemoryBackend()
    spec = LimitSpec.of(algorithm, 25, "1h")
    request = [LimitRequest("p:l:c=alice", spec)]
    results = await asyncio.gather(*(backend.decide(request) for _ in range(200)))
    assert sum(d[0].allowed for d in results) == 25
    assert backend.snapshot()["decisions_allowed"] == 25
    assert backend.snapshot()["decisions_denied"] == 175


async def test_several_limits_are_all_or_nothing() -> None:
    clock = Clock()
    backend = MemoryBackend(clock=clock)
    per_second = LimitSpec.of("fixed_window", 2, "1s")
    per_hour = LimitSpec.of("gcra", 3, "1h")
    requests = [LimitRequest("p:s:x", per_second), LimitRequest("p:h:x", per_hour)]
    assert [d.allowed for d in await backend.decide(requests)] == [True, True]
    assert [d.allowed for d in await backend.decide(requests)] == [True, True]
    refused = await backend.decide(requests)
    assert [d.allowed for d in refused] == [False, True]
    # The hour limit was not charged for the refused request...
    assert refused[1].remaining == 1
    clock.now += 1_000_000
    # ... so after the second rolls over, exactly one more request fits the hour.
    assert [d.allowed for d in await backend.decide(requests)] == [True, True]
    last = await backend.decide(requests)
    assert [d.allowed for d in last] == [True, False]
    assert last[0].remaining == 1


async def test_costs_and_cost_zero_peeks() -> None:
    backend = MemoryBackend(clock=Clock())
    spec = LimitSpec.of("token_bucket", 10, "1m")
    assert (await backend.decide([LimitRequest("k", spec, cost=7)]))[0].remaining == 3
    peek = (await backend.decide([LimitRequest("k", spec, cost=0)]))[0]
    assert peek.allowed
    assert peek.remaining == 3
    assert not (await backend.decide([LimitRequest("k", spec, cost=4)]))[0].allowed
    assert (await backend.decide([LimitRequest("k", spec, cost=3)]))[0].remaining == 0


async def test_algorithms_do_not_share_state_under_one_key() -> None:
    backend = MemoryBackend(clock=Clock())
    window = LimitSpec.of("fixed_window", 1, "1h")
    bucket = LimitSpec.of("token_bucket", 1, "1h")
    assert (await backend.decide([LimitRequest("k", window)]))[0].allowed
    assert (await backend.decide([LimitRequest("k", bucket)]))[0].allowed
    assert len(backend) == 2


async def test_idle_keys_expire_and_busy_keys_stay() -> None:
    clock = Clock()
    backend = MemoryBackend(clock=clock)
    short = LimitSpec.of("gcra", 10, "1s")
    busy = LimitSpec.of("gcra", 10, "10s")  # each request adds 1 s to the key's deadline
    long = LimitSpec.of("fixed_window", 10, "1h")
    for i in range(50):
        await backend.decide([LimitRequest(f"idle-{i}", short)])
    await backend.decide([LimitRequest("hourly", long)])
    assert len(backend) == 51
    # A busy key's deadline keeps moving past the slot it was filed under.
    for _ in range(6):
        await backend.decide([LimitRequest("busy", busy)])
        clock.now += 500_000
    assert len(backend) == 2  # the idle ones went when their second passed
    assert backend.expired == 50
    clock.now += 10_000_000
    await backend.decide([LimitRequest("other", short, cost=0)])
    assert len(backend) == 1  # busy expired too once idle; cost 0 stores nothing
    clock.now += 3_600_000_000
    await backend.decide([LimitRequest("other", short, cost=0)])
    assert len(backend) == 0
    assert backend.expired == 52


async def test_memory_is_bounded_by_evicting_the_soonest_to_expire() -> None:
    clock = Clock()
    backend = MemoryBackend(max_keys=10, clock=clock)
    day = LimitSpec.of("fixed_window", 5, "1d")
    second = LimitSpec.of("fixed_window", 5, "1s")
    for i in range(5):
        await backend.decide([LimitRequest(f"day-{i}", day)])
    for i in range(20):
        await backend.decide([LimitRequest(f"sec-{i}", second)])
    assert len(backend) == 10
    assert backend.evictions == 15
    # The long-lived counters survived: the short-lived ones were dropped first.
    assert (await backend.decide([LimitRequest("day-0", day, cost=0)]))[0].remaining == 4


async def test_a_clock_that_steps_back_does_not_refill() -> None:
    clock = Clock()
    backend = MemoryBackend(clock=clock)
    spec = LimitSpec.of("token_bucket", 2, "1s")
    for _ in range(2):
        assert (await backend.decide([LimitRequest("k", spec)]))[0].allowed
    clock.now -= 5_000_000
    assert not (await backend.decide([LimitRequest("k", spec)]))[0].allowed


async def test_protocol_surface() -> None:
    backend = MemoryBackend()
    assert backend.name == "memory"
    assert backend.healthy
    spec = LimitSpec.of("gcra", 1, "1s")
    # Backends that cannot fail ignore the failure policy.
    assert (await backend.decide([LimitRequest("k", spec)], FailurePolicy.closed))[0].allowed
    assert backend.snapshot()["keys"] == 1
    await backend.aclose()
    assert backend.snapshot()["keys"] == 0
    assert default_memory_backend() is default_memory_backend()
    with pytest.raises(ValueError, match="max_keys"):
        MemoryBackend(max_keys=0)
