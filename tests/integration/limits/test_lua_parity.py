"""The Lua algorithms, run by a real Redis, agree with the Python ones to the microsecond.

A small harness script joins the shipped helper and algorithm files (the same text
the backend loads) with a body that calls one algorithm at a given `now` on a given
state, so random states, times and costs can be compared one by one. Python's own
implementation is checked against brute-force references in the unit tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis import Redis

from portcullis.limits.algorithms import State, evaluate
from portcullis.limits.redis_backend import LUA_FILES, load_script
from portcullis.limits.spec import Algorithm, LimitSpec
from support.redis import RedisServer

EPOCH = 1_767_225_600_000_000

HARNESS = """
local ALGORITHMS = {fixed_window, sliding_window, token_bucket, gcra}
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
    # Everything but the main body of decide.lua, then the harness body.
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
    alg = draw(st.sampled_from(list(Algorithm)))
    limit = draw(st.one_of(st.integers(1, 20), st.integers(1, 10**6)))
    period = draw(
        st.one_of(
            st.sampled_from([1_000, 1_000_000, 60_000_000, 3_600_000_000, 86_400_000_000]),
            st.integers(1_000, 10**10),
        )
    )
    burst = None
    if alg in (Algorithm.token_bucket, Algorithm.gcra):
        burst = draw(st.one_of(st.none(), st.integers(1, 1000)))
    try:
        spec = LimitSpec(alg, limit, period, burst)
    except ValueError:
        spec = LimitSpec(alg, min(limit, 20), period, burst)
    now = EPOCH + draw(st.integers(0, 10**12))
    cost = draw(st.one_of(st.integers(0, 3), st.integers(0, spec.capacity + 2)))
    # A state the algorithm itself produced a little earlier, or none.
    state: State | None = None
    for _ in range(draw(st.integers(0, 6))):
        earlier = now - draw(st.integers(0, 2 * period))
        o = evaluate(spec, state, earlier, draw(st.integers(1, max(1, spec.capacity))))
        state = o.state if o.state is not None else state
    return spec, state, now, cost


def test_the_script_is_the_shipped_files_joined() -> None:
    script = load_script()
    lua_dir = resources.files("portcullis.limits").joinpath("lua")
    for name in LUA_FILES:
        assert lua_dir.joinpath(name).read_text(encoding="utf-8") in script
    assert script.count("redis.call('TIME')") == 1


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=cases())
def test_lua_matches_python(harness: tuple[Redis, str], case: Any) -> None:
    spec, state, now, cost = case
    assert lua(harness, spec, state, now, cost) == python(spec, state, now, cost)


@pytest.mark.parametrize("algorithm", list(Algorithm))
def test_lua_matches_python_on_a_long_sequence(
    harness: tuple[Redis, str], algorithm: Algorithm
) -> None:
    """One key driven for a while at realistic magnitudes (a day-long window, big limits)."""
    spec = LimitSpec(
        algorithm,
        50_000,
        86_400_000_000,
        120_000 if algorithm in (Algorithm.token_bucket, Algorithm.gcra) else None,
    )
    state: State | None = None
    now = EPOCH + 86_400_000_000 - 3_000_000  # the window edge falls inside the run
    for i in range(300):
        now += 1 + (i * 7919) % 20_011
        cost = 1 + (i * 31) % 900
        expected = python(spec, state, now, cost)
        assert lua(harness, spec, state, now, cost) == expected
        o = evaluate(spec, state, now, cost)
        state = o.state if o.state is not None else state


@pytest.mark.parametrize("algorithm", list(Algorithm))
@pytest.mark.parametrize(("limit", "period"), [(3, 1_000), (7, 1_000_000), (13, 3_600_000_000)])
def test_lua_matches_python_at_the_announced_edges(
    harness: tuple[Redis, str], algorithm: Algorithm, limit: int, period: int
) -> None:
    """Refused requests retried exactly at, and one microsecond before, their retry time."""
    spec = LimitSpec(algorithm, limit, period)
    state: State | None = None
    now = EPOCH + 12_345
    for i in range(60):
        cost = 1 + i % 3
        expected = python(spec, state, now, cost)
        assert lua(harness, spec, state, now, cost) == expected
        o = evaluate(spec, state, now, cost)
        if o.state is not None:
            state = o.state
        elif not o.decision.allowed:
            # Next: one microsecond early, then exactly on time.
            for at in (now + o.decision.retry_after - 1, now + o.decision.retry_after):
                assert lua(harness, spec, state, at, cost) == python(spec, state, at, cost)
            now += o.decision.retry_after
            continue
        now += (i * 7) % 5
