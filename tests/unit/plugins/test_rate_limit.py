"""rate-limit plugin: config, keys, costs, all-or-nothing limits, headers and problems."""

from __future__ import annotations

import json
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any, cast

import pytest

from portcullis.identity.consumers import ConsumerInfo
from portcullis.limits import Decision, FailurePolicy, LimitRequest, LimitSpec
from portcullis.limits.memory import MemoryBackend, default_memory_backend
from portcullis.model.config import Consumer
from portcullis.model.plugins.registry import validate_plugin
from portcullis.plugins.base import PluginResponse, RequestContext
from portcullis.plugins.env import PluginEnv
from portcullis.plugins.rate_limit import RateLimit
from portcullis.plugins.registry import PLUGINS, build_plugin
from support.structured_fields import parse_list

ALICE = ConsumerInfo.of(Consumer(username="alice"))
BOB = ConsumerInfo.of(Consumer(username="bob"))
QUOTA_TYPE = "https://iana.org/assignments/http-problem-types#quota-exceeded"


class ClaimsContext(RequestContext):
    """A context with verified JWT claims (what jwt-auth would publish)."""

    claims: dict[str, Any]


def plugin(backend: Any = None, **config: Any) -> RateLimit:
    built = build_plugin(
        "rate-limit", config, PluginEnv(limits=backend if backend is not None else MemoryBackend())
    )
    assert isinstance(built, RateLimit)
    return built


def context(
    consumer: ConsumerInfo | None = None,
    *,
    ip: str = "203.0.113.7",
    method: str = "GET",
    headers: Sequence[tuple[bytes, bytes]] = (),
    route: str = "orders",
    cls: type[RequestContext] = RequestContext,
) -> RequestContext:
    scope = {"type": "http", "headers": [(b"host", b"api.test"), *headers]}
    compiled = SimpleNamespace(name=route, service=SimpleNamespace(name="shop"))
    ctx = cls(scope, cast(Any, compiled), method, "/", ip, "rid", None, [])
    ctx.consumer = consumer
    return ctx


def header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str:
    values = [v.decode() for n, v in headers if n == name]
    assert len(values) == 1, (name, headers)
    return values[0]


async def admitted(p: RateLimit, ctx_factory: Any, n: int) -> int:
    count = 0
    for _ in range(n):
        if await p.access(ctx_factory()) is None:
            count += 1
    return count


def test_registered_after_auth_and_authorization() -> None:
    assert PLUGINS["rate-limit"] is RateLimit
    assert RateLimit.priority < PLUGINS["acl"].priority
    assert RateLimit.priority < PLUGINS["key-auth"].priority
    assert RateLimit.priority < PLUGINS["jwt-auth"].priority
    assert RateLimit.priority == 910


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({"limits": []}, "limits"),
        ({"limits": [{"limit": 1, "period": "1w"}]}, "invalid period"),
        ({"limits": [{"limit": 1, "period": "1s", "key": "cookie"}]}, "unknown key"),
        ({"limits": [{"limit": 1, "period": "1s", "key": "header:bad name"}]}, "header name"),
        ({"limits": [{"limit": 1, "period": "1s", "key": ["ip", "ip"]}]}, "repeat"),
        ({"limits": [{"limit": 1, "period": "1s", "burst": 3}]}, "burst applies"),
        (
            {"limits": [{"limit": 1, "period": "1s"}, {"limit": 2, "period": 1}]},
            "two limits are named 'default-1s'",
        ),
        ({"limits": [{"limit": 1, "period": "1s"}], "on_backend_failure": "maybe"}, "open"),
        ({"limits": [{"limit": 1, "period": "1s"}], "policy_name": "a b"}, "policy_name"),
    ],
)
def test_config_errors(config: dict[str, Any], error: str) -> None:
    errors = validate_plugin("rate-limit", config)
    assert errors
    assert any(error in e for e in errors), errors


async def test_admits_exactly_the_limit_then_429_with_headers_and_problem() -> None:
    p = plugin(limits=[{"limit": 3, "period": "1m", "algorithm": "fixed_window"}])
    allowed = []
    for _ in range(3):
        ctx = context(ALICE)
        assert await p.access(ctx) is None
        allowed.append(ctx)
    last = allowed[-1].response_headers
    assert parse_list(header(last, b"ratelimit-policy")) == [("default", {"q": 3, "w": 60})]
    [(name, params)] = parse_list(header(last, b"ratelimit"))
    assert name == "default"
    assert params["r"] == 0
    assert 0 < cast(int, params["t"]) <= 60

    reply = await p.access(context(ALICE))
    assert isinstance(reply, PluginResponse)
    assert reply.status == 429
    assert header(reply.headers, b"content-type") == "application/problem+json"
    retry = int(header(reply.headers, b"retry-after"))
    [(name, params)] = parse_list(header(reply.headers, b"ratelimit"))
    assert (name, params["r"]) == ("default", 0)
    assert 1 <= cast(int, params["t"]) <= retry <= 60
    body = json.loads(reply.body)
    assert body["type"] == QUOTA_TYPE
    assert body["status"] == 429
    assert body["title"] == "Quota Exceeded"
    assert body["violated-policies"] == ["default"]
    # Another consumer has its own counter.
    assert await p.access(context(BOB)) is None


async def test_several_limits_name_their_items_and_only_violated_ones_are_reported() -> None:
    p = plugin(
        policy_name="api",
        limits=[
            {"limit": 5, "period": "1s", "algorithm": "gcra"},
            {"limit": 2, "period": "1h", "algorithm": "sliding_window", "name": "hourly"},
        ],
    )
    ctx = context(ALICE)
    assert await p.access(ctx) is None
    policy = parse_list(header(ctx.response_headers, b"ratelimit-policy"))
    assert policy == [("api-1s", {"q": 5, "w": 1}), ("hourly", {"q": 2, "w": 3600})]
    current = dict(parse_list(header(ctx.response_headers, b"ratelimit")))
    assert current["api-1s"]["r"] == 4
    assert current["hourly"]["r"] == 1
    assert await p.access(context(ALICE)) is None
    reply = await p.access(context(ALICE))
    assert reply is not None
    assert reply.status == 429
    assert [n for n, _ in parse_list(header(reply.headers, b"ratelimit"))] == ["hourly"]
    assert json.loads(reply.body)["violated-policies"] == ["hourly"]


async def test_refused_requests_consume_no_other_limit() -> None:
    backend = MemoryBackend()
    p = plugin(
        backend,
        limits=[
            {"limit": 1, "period": "1h", "algorithm": "fixed_window", "name": "tight"},
            {"limit": 100, "period": "1d", "algorithm": "fixed_window", "name": "daily"},
        ],
    )
    assert await admitted(p, lambda: context(ALICE), 10) == 1
    ctx = context(ALICE)
    assert await p.access(ctx) is not None
    # Only the admitted request was counted by the daily limit.
    peek = await backend.decide(
        [LimitRequest("default:daily:c=alice", LimitSpec.of("fixed_window", 100, "1d"), cost=0)]
    )
    assert peek[0].remaining == 99


@pytest.mark.parametrize(
    ("key", "same", "different"),
    [
        ("consumer", lambda: context(ALICE, ip="10.0.0.1"), lambda: context(BOB, ip="10.0.0.1")),
        ("ip", lambda: context(ALICE, ip="10.0.0.1"), lambda: context(ALICE, ip="10.0.0.2")),
        ("route", lambda: context(ALICE), lambda: context(ALICE, route="other")),
        (
            "header:X-Tenant",
            lambda: context(headers=[(b"x-tenant", b"t1")], ip="1.1.1.1"),
            lambda: context(headers=[(b"x-tenant", b"t2")], ip="1.1.1.1"),
        ),
        (["consumer", "route"], lambda: context(ALICE), lambda: context(ALICE, route="r2")),
    ],
)
async def test_keys_partition_the_counters(key: Any, same: Any, different: Any) -> None:
    p = plugin(limits=[{"limit": 2, "period": "1h", "key": key}])
    assert await admitted(p, same, 5) == 2
    assert await admitted(p, different, 5) == 2


async def test_global_and_service_keys_share_one_counter() -> None:
    for key in ("global", "service"):
        p = plugin(limits=[{"limit": 3, "period": "1h", "key": key}])
        made = [context(ALICE, route="a"), context(BOB, route="b"), context(None, ip="9.9.9.9")]
        assert [await p.access(c) is None for c in made] == [True, True, True]
        assert await p.access(context(ALICE, route="c")) is not None


async def test_missing_identity_falls_back_to_the_client_ip() -> None:
    p = plugin(limits=[{"limit": 1, "period": "1h", "key": "credential"}])
    anonymous = context(None, ip="10.0.0.9")
    assert await p.access(anonymous) is None
    assert await p.access(context(None, ip="10.0.0.9")) is not None
    keyed = context(ALICE, ip="10.0.0.9")
    keyed.credential_id = "key-1"
    assert await p.access(keyed) is None


async def test_claim_keys_use_verified_claims() -> None:
    p = plugin(limits=[{"limit": 1, "period": "1h", "key": "claim:tenant"}])

    def with_claims(tenant: str) -> RequestContext:
        ctx = context(ALICE, ip="10.0.0.1", cls=ClaimsContext)
        cast(ClaimsContext, ctx).claims = {"tenant": tenant}
        return ctx

    assert await p.access(with_claims("acme")) is None
    assert await p.access(with_claims("acme")) is not None
    assert await p.access(with_claims("globex")) is None
    # No claims on the context: counted per client IP.
    assert await p.access(context(ALICE, ip="10.0.0.1")) is None


async def test_costs_from_method_header_and_per_limit_override() -> None:
    backend = MemoryBackend()
    p = plugin(
        backend,
        method_costs={"post": 5, "options": 0},
        cost_header="X-Cost",
        max_cost=50,
        limits=[
            {"limit": 100, "period": "1h", "algorithm": "fixed_window", "name": "units"},
            {"limit": 100, "period": "1h", "algorithm": "fixed_window", "name": "calls", "cost": 1},
        ],
    )

    async def remaining(ctx: RequestContext) -> dict[str, int]:
        assert await p.access(ctx) is None
        items = parse_list(header(ctx.response_headers, b"ratelimit"))
        return {str(n): cast(int, v["r"]) for n, v in items}

    assert await remaining(context(ALICE)) == {"units": 99, "calls": 99}
    assert await remaining(context(ALICE, method="POST")) == {"units": 94, "calls": 98}
    assert await remaining(context(ALICE, method="OPTIONS")) == {"units": 94, "calls": 97}
    heavy = context(ALICE, headers=[(b"x-cost", b"20")])
    assert await remaining(heavy) == {"units": 74, "calls": 96}
    # A client can raise its cost, never lower it below 1 nor beyond max_cost.
    assert await remaining(context(ALICE, headers=[(b"x-cost", b"0")])) == {
        "units": 73,
        "calls": 95,
    }
    assert await remaining(context(ALICE, headers=[(b"x-cost", b"9999")])) == {
        "units": 23,
        "calls": 94,
    }
    assert await remaining(context(ALICE, headers=[(b"x-cost", b"-3")])) == {
        "units": 22,
        "calls": 93,
    }


async def test_headers_can_be_switched_off() -> None:
    p = plugin(headers=False, limits=[{"limit": 1, "period": "1h"}])
    ctx = context(ALICE)
    assert await p.access(ctx) is None
    assert ctx.response_headers == []
    reply = await p.access(context(ALICE))
    assert reply is not None
    assert reply.status == 429
    assert {n for n, _ in reply.headers} == {b"content-type", b"retry-after"}


class DownBackend:
    """A shared backend whose store is unreachable: answers by the failure policy."""

    name = "down"
    healthy = False

    def __init__(self) -> None:
        self.policies: list[FailurePolicy | None] = []

    async def decide(
        self, requests: Sequence[LimitRequest], on_failure: FailurePolicy | None = None
    ) -> list[Decision]:
        self.policies.append(on_failure)
        allowed = on_failure is FailurePolicy.open
        return [
            Decision(allowed, 0, 0, 0 if allowed else 2_000_000, counted=False) for _ in requests
        ]

    async def aclose(self) -> None:
        return

    def snapshot(self) -> dict[str, float]:
        return {}


async def test_failure_policies_open_and_closed() -> None:
    backend = DownBackend()
    closed = plugin(backend, on_backend_failure="closed", limits=[{"limit": 1, "period": "1s"}])
    reply = await closed.access(context(ALICE))
    assert reply is not None
    assert reply.status == 503
    body = json.loads(reply.body)
    assert (
        body["type"] == "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity"
    )
    assert body["violated-policies"] == ["default"]
    assert header(reply.headers, b"retry-after") == "2"
    assert all(n != b"ratelimit" for n, _ in reply.headers)  # nothing was counted

    opened = plugin(backend, on_backend_failure="open", limits=[{"limit": 1, "period": "1s"}])
    ctx = context(ALICE)
    assert await opened.access(ctx) is None
    assert [n for n, _ in ctx.response_headers] == [b"ratelimit-policy"]
    assert backend.policies == [FailurePolicy.closed, FailurePolicy.open]


async def test_without_a_worker_backend_the_process_memory_backend_is_used() -> None:
    p = build_plugin("rate-limit", {"limits": [{"limit": 1, "period": "1s"}]}, PluginEnv())
    assert isinstance(p, RateLimit)
    assert p.backend is default_memory_backend()


async def test_sub_second_periods_omit_the_window_parameter() -> None:
    p = plugin(limits=[{"limit": 10, "period": "500ms", "algorithm": "token_bucket"}])
    ctx = context(ALICE)
    assert await p.access(ctx) is None
    assert parse_list(header(ctx.response_headers, b"ratelimit-policy")) == [("default", {"q": 10})]


async def test_unnamed_policies_count_per_instance_named_ones_share() -> None:
    from dataclasses import replace

    backend = MemoryBackend()
    env = PluginEnv(limits=backend)
    limits = {"limits": [{"limit": 2, "period": "1m", "key": "consumer"}]}

    def on(instance: str, **extra: Any) -> RateLimit:
        built = build_plugin("rate-limit", {**limits, **extra}, replace(env, instance=instance))
        assert isinstance(built, RateLimit)
        return built

    a, b = on("rate-limit@route:a"), on("rate-limit@route:b")
    assert await admitted(a, lambda: context(ALICE), 3) == 2
    assert await admitted(b, lambda: context(ALICE), 3) == 2  # route b has its own budget
    shared_a = on("rate-limit@route:c", policy_name="team")
    shared_b = on("rate-limit@route:d", policy_name="team")
    assert await admitted(shared_a, lambda: context(ALICE), 1) == 1
    assert await admitted(shared_b, lambda: context(ALICE), 3) == 1  # one budget for both
