"""Calendar windows on Redis: the Lua script agrees with Python to the microsecond, keys
expire after the period (plus grace), and `peek` reads without counting."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis import Redis

from portcullis.limits import LimitRequest, LimitSpec
from portcullis.limits.algorithms import State, evaluate
from portcullis.limits.backend import BackendUnavailable
from portcullis.limits.redis_backend import RedisBackend, load_script
from portcullis.limits.spec import CALENDAR_GRACE_US
from support.redis import RedisServer, running_redis

EPOCH = 1_767_225_600_000_000
DAY = 86_400_000_000

HARNESS = """
local ALGORITHMS = {fixed_window, sliding_window, token_bucket, gcra, calendar_window}
local p = {
  code = tonumber(ARGV[1]), limit = tonumber(ARGV[2]), period = tonumber(ARGV[3]),
  capacity = tonumber(ARGV[4]), unit = tonumber(ARGV[5]), rate = tonumber(ARGV[6]),
  quantum = tonumber(ARGV[7]),
}
local raw = ARGV[10]
if raw == '' then raw = false end
local allowed, remaining, reset, retry, state, ttl =
  ALGORITHMS[p.code](raw, tonumber(ARGV[9]), tonumber(ARGV[8]), p)
return {allowed, remaining, reset, retry, state or '', ttl}
"""


@pytest.fixture(scope="module")
def harness(redis_server: RedisServer) -> Iterator[tuple[Redis, str]]:
    script = load_script()
    library = script[: script.rindex("-- One rate-limit decision")]
    client = Redis.from_url(redis_server.url)
    sha = client.script_load(library + HARNESS)
    yield client, sha
    client.close()


def lua(
    harness: tuple[Redis, str], spec: LimitSpec, state: State | None, now: int, cost: int
) -> Any:
    client, sha = harness
    raw = " ".join(str(v) for v in state) if state is not None else ""
    return client.evalsha(sha, 0, *spec.lua_args, cost, now, raw)


def python(spec: LimitSpec, state: State | None, now: int, cost: int) -> list[Any]:
    o = evaluate(spec, state, now, cost)
    d = o.decision
    encoded = " ".join(str(v) for v in o.state).encode() if o.state is not None else b""
    return [int(d.allowed), d.remaining, d.reset_after, d.retry_after, encoded, o.ttl_us]


@st.composite
def cases(draw: st.DrawFn) -> tuple[LimitSpec, State | None, int, int]:
    limit = draw(st.one_of(st.integers(1, 20), st.integers(1, 10**9)))
    start = EPOCH + draw(st.integers(0, 400 * DAY))
    length = draw(st.sampled_from([23 * 3600 * 10**6, DAY, 25 * 3600 * 10**6, 31 * DAY]))
    spec = LimitSpec.calendar(limit, start, start + length)
    # Mostly inside the window; sometimes a lagging or leading node's clock.
    now = start + draw(st.integers(-(10**7), length + 10**8))
    count = draw(st.one_of(st.none(), st.integers(0, limit + 3)))
    cost = draw(st.one_of(st.integers(0, 3), st.integers(0, limit + 2)))
    return spec, (count,) if count is not None else None, now, cost


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=cases())
def test_calendar_lua_matches_python(harness: tuple[Redis, str], case: Any) -> None:
    spec, state, now, cost = case
    assert lua(harness, spec, state, now, cost) == python(spec, state, now, cost)


async def test_decide_expire_and_peek(redis_server: RedisServer) -> None:
    backend = RedisBackend.from_url(redis_server.url, prefix=f"pc:cal:{uuid.uuid4().hex}:")
    sync = Redis.from_url(redis_server.url)
    try:
        now = int(sync.time()[0]) * 1_000_000
        spec = LimitSpec.calendar(3, now - 1_000_000, now + 5_000_000)
        request = LimitRequest("pq:daily:2026-11-23:c=alice", spec, 1, "pl:c=alice")
        assert [(await backend.decide([request]))[0].remaining for _ in range(3)] == [2, 1, 0]
        refused = (await backend.decide([request]))[0]
        assert not refused.allowed
        assert 0 < refused.retry_after <= 5_000_000
        ttl_ms = sync.pttl(backend.key_for(request))
        assert 5_000 < ttl_ms <= (5_000_000 + CALENDAR_GRACE_US) // 1000
        peeked = await backend.peek(
            [LimitRequest(request.key, LimitSpec.calendar(100, *_b(spec)), 7, request.slot)]
        )
        assert peeked[0].remaining == 97  # 3 used, read against a larger limit
        assert backend.allowed == 3  # peeks are not decisions
        assert backend.denied == 1
    finally:
        await backend.aclose()
        sync.close()


def _b(spec: LimitSpec) -> tuple[int, int]:
    return spec.ends_us - spec.period_us, spec.ends_us


async def test_peek_raises_when_redis_is_down() -> None:
    with running_redis() as server:
        backend = RedisBackend.from_url(server.url, timeout=0.5)
        server.kill()
        spec = LimitSpec.calendar(1, EPOCH, EPOCH + DAY)
        try:
            with pytest.raises(BackendUnavailable):
                await backend.peek([LimitRequest("k", spec, 0, "k")])
        finally:
            await backend.aclose()
