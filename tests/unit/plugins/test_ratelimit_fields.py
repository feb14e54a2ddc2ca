"""RateLimit / RateLimit-Policy fields checked with a real Structured Field parser
(`http-sfv`) against draft-ietf-httpapi-ratelimit-headers (latest text), for every
limit algorithm and for plan quotas.

§4.2.2: `t` is "the number of seconds until additional quota associated with the
quota policy is made available" — the same meaning on a 200 and on a 429, so it
never exceeds the policy window `w`, and waiting `t` seconds does bring more
quota. §5: `Retry-After` is never earlier than `t`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any, cast

import pytest
from http_sfv.item import Item
from http_sfv.list import List

from portcullis.identity.consumers import ConsumerInfo
from portcullis.limits.memory import MemoryBackend
from portcullis.model.config import Consumer, GatewayConfig
from portcullis.model.traffic import TrafficRules
from portcullis.plugins.base import PluginResponse, RequestContext
from portcullis.plugins.env import PluginEnv
from portcullis.plugins.registry import build_plugin

START = 1_798_707_617_300_000  # 2026-12-31 09:00:17.3 UTC: not on a window boundary
ALICE = ConsumerInfo.of(Consumer(username="alice", plan="free"))


class Clock:
    def __init__(self) -> None:
        self.now_us = START

    def micros(self) -> int:
        return self.now_us

    def seconds(self) -> float:
        return self.now_us / 1_000_000

    def advance(self, seconds: float) -> None:
        self.now_us += round(seconds * 1_000_000)


def context(consumer: ConsumerInfo | None = ALICE) -> RequestContext:
    scope = {"type": "http", "headers": [(b"host", b"api.test")]}
    compiled = SimpleNamespace(name="orders", service=SimpleNamespace(name="shop"))
    ctx = RequestContext(scope, cast(Any, compiled), "GET", "/", "203.0.113.7", "rid", None, [])
    ctx.consumer = consumer
    return ctx


def field(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes:
    values = [v for n, v in headers if n == name]
    assert len(values) == 1, (name, headers)
    return values[0]


def sfv_list(value: bytes) -> dict[str, dict[str, Any]]:
    """Parse a List of Items whose values are Strings (the draft's rule), strictly."""
    parsed = List()
    parsed.parse(value)
    out: dict[str, dict[str, Any]] = {}
    for item in parsed:
        assert isinstance(item, Item), value
        assert isinstance(item.value, str), value  # a String, not a Token
        out[item.value] = dict(item.params)
    return out


class Checked:
    """Every response's fields, parsed and checked against the draft's rules."""

    def __init__(self, plugin: Any, clock: Clock) -> None:
        self.plugin = plugin
        self.clock = clock

    async def send(self) -> tuple[bool, dict[str, dict[str, Any]], int | None]:
        ctx = context()
        reply = await self.plugin.access(ctx)
        headers = ctx.response_headers if reply is None else reply.headers
        policies = sfv_list(field(headers, b"ratelimit-policy"))
        for params in policies.values():
            assert isinstance(params["q"], int)
            assert params["q"] >= 0
            assert isinstance(params["w"], int)
            assert params["w"] > 0
        current = sfv_list(field(headers, b"ratelimit"))
        for name, params in current.items():
            assert name in policies
            r, t = params["r"], params["t"]
            assert isinstance(r, int)
            assert r >= 0
            assert isinstance(t, int)
            assert 0 <= t <= policies[name]["w"], (name, params)
        retry = None
        if reply is not None:
            assert isinstance(reply, PluginResponse)
            assert reply.status == 429
            retry = int(field(reply.headers, b"retry-after"))
            assert all(retry >= p["t"] for p in current.values()), (retry, current)
        return reply is None, current, retry


ALGORITHMS = ["fixed_window", "sliding_window", "token_bucket", "gcra"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_t_is_the_wait_for_more_quota_on_200_and_429_and_never_exceeds_w(
    algorithm: str,
) -> None:
    clock = Clock()
    limit: dict[str, Any] = {"limit": 3, "period": "1m", "algorithm": algorithm}
    plugin = build_plugin(
        "rate-limit", {"limits": [limit]}, PluginEnv(limits=MemoryBackend(clock=clock.micros))
    )
    check = Checked(plugin, clock)
    # Spread over two windows so sliding counts carry a previous window's weight.
    for _ in range(40):
        admitted, current, retry = await check.send()
        (params,) = current.values()
        if not admitted:
            # Waiting `t` seconds makes more quota available: the same request now passes.
            assert params["r"] == 0
            assert retry is not None
            assert retry >= params["t"] >= 1
            clock.advance(params["t"])
            again, after, _ = await check.send()
            assert again, (algorithm, params, after)
        clock.advance(7.9)
    # The meter's own rate: tokens come one per 20 s, so `t` after spending one is
    # at most 20 (the full refill would be later); a window ends within 60 s.
    clock.advance(3600)
    admitted, current, _ = await check.send()
    (params,) = current.values()
    assert admitted
    if algorithm in ("token_bucket", "gcra"):
        assert params == {"r": 2, "t": 20}
        clock.advance(1)
        await check.send()
        admitted, current, _ = await check.send()
        (params,) = current.values()
        # Two tokens short: the next arrives in 19 s (the full refill would take 59 s).
        assert params == {"r": 0, "t": 19}
    else:
        assert params["r"] == 2
        assert 1 <= params["t"] <= 60


async def test_plan_limits_and_quotas_follow_the_same_rules() -> None:
    clock = Clock()
    config = GatewayConfig.model_validate(
        {
            "services": [{"name": "shop", "url": "http://127.0.0.1:9"}],
            "routes": [{"name": "orders", "service": "shop", "paths": ["/orders"]}],
            "consumers": [{"username": "alice", "plan": "free"}],
            "plans": [
                {
                    "name": "free",
                    "limits": [
                        {"limit": 2, "period": "1m", "algorithm": "sliding_window"},
                        {"limit": 4, "period": "1h", "algorithm": "gcra"},
                    ],
                    "quotas": [{"name": "daily", "limit": 6, "period": "day"}],
                }
            ],
        }
    )
    env = PluginEnv(
        limits=MemoryBackend(clock=clock.micros),
        clock=clock.seconds,
        traffic=TrafficRules.of(config),
    )
    check = Checked(build_plugin("plan-limits", {}, env), clock)
    refusals = 0
    for _ in range(30):
        admitted, current, _ = await check.send()
        if not admitted:
            refusals += 1
            for params in current.values():
                assert params["t"] >= 1
        clock.advance(41)
    assert refusals
    # The daily quota's `t` is the time to the day's end (less than w = 86400).
    clock.advance(3 * 3600)
    _, current, _ = await check.send()
    midnight = math.ceil((86400 * 1_000_000 - clock.now_us % (86400 * 1_000_000)) / 1_000_000)
    assert current["daily"]["t"] == midnight
