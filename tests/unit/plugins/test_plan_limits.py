"""plan-limits plugin: plan resolution, route overrides, calendar quotas, boosts, overrides."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

from portcullis.identity.consumers import ConsumerInfo
from portcullis.limits.calendar import to_us
from portcullis.limits.memory import MemoryBackend
from portcullis.model.config import Consumer, GatewayConfig
from portcullis.model.plugins.registry import validate_plugin
from portcullis.model.traffic import TrafficRules
from portcullis.plugins.base import PluginResponse, RequestContext
from portcullis.plugins.env import PluginEnv
from portcullis.plugins.plan_limits import PlanLimits
from portcullis.plugins.registry import PLUGINS, build_plugin
from support.structured_fields import parse_list

QUOTA_TYPE = "https://iana.org/assignments/http-problem-types#quota-exceeded"
# 2026-12-31 09:00 UTC (= Europe/London, winter time).
START = to_us(datetime(2026, 12, 31, 9, 0, tzinfo=UTC))


class Clock:
    """One clock for the plugin (seconds) and the memory backend (microseconds)."""

    def __init__(self, now_us: int = START) -> None:
        self.now_us = now_us

    def seconds(self) -> float:
        return self.now_us / 1_000_000

    def micros(self) -> int:
        return self.now_us

    def advance(self, seconds: float) -> None:
        self.now_us += round(seconds * 1_000_000)


CONFIG: dict[str, Any] = {
    "services": [{"name": "shop", "url": "http://127.0.0.1:9"}],
    "routes": [
        {"name": "orders", "service": "shop", "paths": ["/orders"]},
        {"name": "search", "service": "shop", "paths": ["/search"]},
    ],
    "consumers": [
        {"username": "alice", "plan": "free"},
        {"username": "bob", "plan": "pro", "tags": ["peak"]},
        {"username": "carol"},
    ],
    "plans": [
        {
            "name": "free",
            "limits": [{"limit": 5, "period": "1m", "algorithm": "fixed_window"}],
            "quotas": [{"name": "daily", "limit": 3, "period": "day", "timezone": "Europe/London"}],
            "route_overrides": {
                "search": {"quotas": [{"name": "searches", "limit": 1, "period": "day"}]}
            },
        },
        {
            "name": "pro",
            "quotas": [
                {"name": "daily", "limit": 10, "period": "day", "timezone": "Europe/London"}
            ],
        },
        {"name": "basic", "quotas": [{"name": "monthly", "limit": 2, "period": "month"}]},
    ],
}


def build(clock: Clock, *, default_plan: str | None = None, **extra: Any) -> PlanLimits:
    config = GatewayConfig.model_validate({**CONFIG, **extra})
    env = PluginEnv(
        limits=MemoryBackend(clock=clock.micros),
        clock=clock.seconds,
        traffic=TrafficRules.of(config),
    )
    plugin_config = {"default_plan": default_plan} if default_plan else {}
    built = build_plugin("plan-limits", plugin_config, env)
    assert isinstance(built, PlanLimits)
    return built


def who(username: str) -> ConsumerInfo:
    return ConsumerInfo.of(
        Consumer.model_validate(next(c for c in CONFIG["consumers"] if c["username"] == username))
    )


def context(
    consumer: ConsumerInfo | None,
    *,
    route: str = "orders",
    credential: str | None = None,
    key_plan: str | None = None,
) -> RequestContext:
    scope = {"type": "http", "headers": [(b"host", b"api.test")]}
    compiled = SimpleNamespace(name=route, service=SimpleNamespace(name="shop"))
    ctx = RequestContext(scope, cast(Any, compiled), "GET", "/", "203.0.113.7", "rid", None, [])
    ctx.consumer = consumer
    ctx.credential_id = credential
    ctx.plan = key_plan
    return ctx


async def admitted(plugin: PlanLimits, make: Any, n: int) -> int:
    return sum([await plugin.access(make()) is None for _ in range(n)])


def header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str:
    values = [v.decode() for n, v in headers if n == name]
    assert len(values) == 1, (name, headers)
    return values[0]


def test_registered_below_auth_and_acl() -> None:
    assert PLUGINS["plan-limits"] is PlanLimits
    assert PlanLimits.priority < PLUGINS["acl"].priority < PLUGINS["key-auth"].priority
    assert validate_plugin("plan-limits", {"default_plan": "no such/plan"})


async def test_daily_quota_exhausts_at_exactly_n_and_names_the_policy() -> None:
    clock = Clock()
    plugin = build(clock)
    assert await admitted(plugin, lambda: context(who("alice")), 10) == 3
    reply = await plugin.access(context(who("alice")))
    assert isinstance(reply, PluginResponse)
    assert reply.status == 429
    body = json.loads(reply.body)
    assert body["type"] == QUOTA_TYPE
    assert body["violated-policies"] == ["daily"]
    # Local midnight in London is 15 h away: Retry-After says so.
    assert int(header(reply.headers, b"retry-after")) == 15 * 3600
    policy = parse_list(header(reply.headers, b"ratelimit-policy"))
    assert [item for item, _ in policy] == ["free-1m", "daily"]
    # The refused requests did not consume the minute limit.
    ok = context(who("bob"))
    assert await plugin.access(ok) is None


async def test_a_new_day_starts_from_zero_at_local_midnight() -> None:
    clock = Clock()
    plugin = build(clock)
    assert await admitted(plugin, lambda: context(who("alice")), 5) == 3
    clock.advance(15 * 3600 - 1)
    assert await plugin.access(context(who("alice"))) is not None
    clock.advance(1)
    assert await admitted(plugin, lambda: context(who("alice")), 5) == 3


async def test_route_override_replaces_the_quotas_and_counts_on_its_own() -> None:
    clock = Clock()
    plugin = build(clock)
    assert await admitted(plugin, lambda: context(who("alice"), route="search"), 3) == 1
    # The plan-wide daily quota was not touched by /search.
    assert await admitted(plugin, lambda: context(who("alice")), 5) == 3


async def test_key_plan_beats_consumer_plan_beats_default() -> None:
    clock = Clock()
    plugin = build(clock, default_plan="basic")
    # alice's key names "pro": 10 a day, not free's 3.
    assert await admitted(plugin, lambda: context(who("alice"), key_plan="pro"), 12) == 10
    # A key plan that names no plan falls through to the consumer's.
    assert await admitted(plugin, lambda: context(who("bob"), key_plan="gone"), 12) == 10
    # carol has no plan: the default (2 a month).
    assert await admitted(plugin, lambda: context(who("carol")), 5) == 2
    # Without a default, no plan means no limits.
    free_for_all = build(clock)
    assert await admitted(free_for_all, lambda: context(who("carol")), 5) == 5


BOOST = {
    "name": "nye",
    "multiplier": 3,
    "local": {"date": "2026-12-31", "start": "10:00", "end": "23:00", "timezone": "Europe/London"},
    "target": {"tag": "peak"},
}


async def test_boost_window_starts_and_ends_by_the_clock() -> None:
    clock = Clock()  # 09:00 London: before the window
    plugin = build(clock, boosts=[BOOST])
    assert await admitted(plugin, lambda: context(who("bob")), 4) == 4
    clock.advance(3600)  # 10:00: 3x for tagged consumers: 30 a day
    assert await admitted(plugin, lambda: context(who("bob")), 40) == 26
    # alice is not tagged: not boosted.
    assert await admitted(plugin, lambda: context(who("alice")), 5) == 3
    clock.advance(13 * 3600)  # 23:00: over, back to 10 a day (already used 30)
    assert await plugin.access(context(who("bob"))) is not None


async def test_the_largest_boost_wins_and_limits_only_boosts_leave_quotas() -> None:
    clock = Clock(to_us(datetime(2026, 12, 31, 12, tzinfo=UTC)))
    window = {"starts_at": "2026-12-31T11:00:00Z", "ends_at": "2026-12-31T13:00:00+00:00"}
    boosts = [
        {"name": "all", "multiplier": 2, "target": {"everyone": True}, **window},
        {"name": "route", "multiplier": 4, "target": {"route": "orders"}, **window},
        {
            "name": "lim",
            "multiplier": 50,
            "target": {"consumer": "bob"},
            "applies_to": "limits",
            **window,
        },
    ]
    plugin = build(clock, boosts=boosts)
    assert await admitted(plugin, lambda: context(who("bob")), 50) == 40  # 10 x 4


async def test_override_sets_values_until_it_expires() -> None:
    clock = Clock()
    expires = datetime(2026, 12, 31, 9, 30, tzinfo=UTC).isoformat()
    overrides = [
        {
            "name": "vip",
            "consumer": "alice",
            "limits": {"daily": 6, "free-1m": 20},
            "expires_at": expires,
            "reason": "launch",
        },
        {
            "name": "stop",
            "credential": "key-1",
            "limits": {"daily": 0},
            "expires_at": expires,
            "reason": "abuse",
        },
    ]
    plugin = build(clock, overrides=overrides)
    assert await admitted(plugin, lambda: context(who("alice")), 8) == 6
    # The key's override (0: blocked) beats the consumer's, with Retry-After to expiry.
    reply = await plugin.access(context(who("alice"), credential="key-1"))
    assert isinstance(reply, PluginResponse)
    assert reply.status == 429
    assert header(reply.headers, b"retry-after") == "1800"
    assert json.loads(reply.body)["violated-policies"] == ["daily"]
    clock.advance(1800)  # expired: the plan's 3 a day again (6 used)
    assert await plugin.access(context(who("alice"), credential="key-1")) is not None
    assert await plugin.access(context(who("alice"))) is not None


async def test_override_multiplier_replaces_boosts() -> None:
    clock = Clock(to_us(datetime(2026, 12, 31, 12, tzinfo=UTC)))
    overrides = [
        {
            "name": "slow",
            "consumer": "bob",
            "multiplier": 0.2,
            "expires_at": "2027-01-01T00:00:00Z",
            "reason": "r",
        }
    ]
    plugin = build(clock, boosts=[BOOST], overrides=overrides)
    assert await admitted(plugin, lambda: context(who("bob")), 5) == 2  # 10 x 0.2, no 3x


async def test_headers_show_each_limit_and_quota() -> None:
    clock = Clock()
    plugin = build(clock)
    ctx = context(who("alice"))
    assert await plugin.access(ctx) is None
    policy = dict(parse_list(header(ctx.response_headers, b"ratelimit-policy")))
    assert policy["free-1m"] == {"q": 5, "w": 60}
    assert policy["daily"] == {"q": 3, "w": 86400}
    current = dict(parse_list(header(ctx.response_headers, b"ratelimit")))
    assert current["daily"] == {"r": 2, "t": 15 * 3600}
    assert current["free-1m"]["r"] == 4
