"""Counters carry the organization, and traffic rules reach only their organization.

Two organizations configure the same names — a rate-limit `policy_name`, a plan quota
`daily`, a consumer tag — and one spends: the other's budget must not move. Before the
fix the counter keys were the names alone (`api:...`, `pq:daily:...`), so acme's
traffic exhausted globex's budget, an acme boost of a tag raised globex's consumers
and an acme override of a key id throttled globex's key.
"""

from __future__ import annotations

import json
from typing import Any

from portcullis.identity.consumers import ConsumerInfo
from portcullis.limits.memory import MemoryBackend
from portcullis.model import GatewayConfig
from portcullis.model.config import Consumer
from portcullis.model.traffic import TrafficRules
from portcullis.plugins.base import PluginResponse, RequestContext
from portcullis.plugins.env import PluginEnv
from portcullis.plugins.plan_limits import NO_ADJUSTMENT, PlanBook
from portcullis.runtime.snapshot import CompiledRoute, Snapshot, build_snapshot

NOW_US = 1_750_000_000 * 1_000_000


def two_tenants(**extra: list[dict[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "services": [{"name": "svc", "url": "http://127.0.0.1:9"}],
        "routes": [
            {"name": "acme", "service": "svc", "paths": ["/acme"], "organization": "acme"},
            {"name": "globex", "service": "svc", "paths": ["/globex"], "organization": "globex"},
        ],
    }
    data.update(extra)
    return data


def snapshot_of(data: dict[str, Any]) -> Snapshot:
    env = PluginEnv(limits=MemoryBackend(clock=lambda: NOW_US), clock=lambda: NOW_US / 1e6)
    return build_snapshot(GatewayConfig.model_validate(data), 1, env=env)


async def call(snapshot: Snapshot, route: str) -> PluginResponse | None:
    match = snapshot.router.match("GET", "", f"/{route}", [])
    assert match is not None
    payload: CompiledRoute = match.payload
    scope: dict[str, Any] = {"type": "http", "headers": [], "query_string": b""}
    ctx = RequestContext(scope, payload, "GET", "/", "203.0.113.7", "rid", None, [])
    for plugin in payload.chain.access:
        reply = await plugin.access(ctx)
        if reply is not None:
            return reply
    return None


async def test_a_policy_name_is_each_organizations_own_budget() -> None:
    limit = {"limits": [{"limit": 2, "period": "1m", "key": "global"}], "policy_name": "api"}
    snapshot = snapshot_of(
        two_tenants(
            plugins=[
                {"name": "rate-limit", "route": "acme", "config": limit},
                {"name": "rate-limit", "route": "globex", "config": limit},
            ]
        )
    )
    assert await call(snapshot, "acme") is None
    assert await call(snapshot, "acme") is None
    refused = await call(snapshot, "acme")
    assert refused is not None
    assert refused.status == 429
    # acme spent its `api`; globex's `api` is untouched.
    assert await call(snapshot, "globex") is None


async def test_a_plan_quota_name_is_each_organizations_own_counter() -> None:
    def plan(name: str, org: str) -> dict[str, Any]:
        return {
            "name": name,
            "organization": org,
            "quotas": [{"name": "daily", "limit": 2, "period": "day"}],
        }

    snapshot = snapshot_of(
        two_tenants(
            plans=[plan("acme-free", "acme"), plan("globex-free", "globex")],
            plugins=[
                {"name": "plan-limits", "route": "acme", "config": {"default_plan": "acme-free"}},
                {
                    "name": "plan-limits",
                    "route": "globex",
                    "config": {"default_plan": "globex-free"},
                },
            ],
        )
    )
    # No consumer: both quotas count the same client address.
    assert await call(snapshot, "acme") is None
    assert await call(snapshot, "acme") is None
    refused = await call(snapshot, "acme")
    assert refused is not None
    assert json.loads(refused.body)["violated-policies"] == ["daily"]
    assert await call(snapshot, "globex") is None


def info(username: str, org: str | None, *, tags: list[str] | None = None) -> ConsumerInfo:
    return ConsumerInfo.of(Consumer(username=username, organization=org, tags=tags or []))


def book_of(**rules: list[dict[str, Any]]) -> PlanBook:
    config = GatewayConfig.model_validate(
        {
            "consumers": [
                {"username": "alice", "organization": "acme", "tags": ["vip"]},
                {"username": "bob", "organization": "globex", "tags": ["vip"]},
            ],
            **rules,
        }
    )
    return PlanBook(TrafficRules.of(config))


WINDOW = {"starts_at": "2025-01-01T00:00:00Z", "ends_at": "2026-01-01T00:00:00Z"}


def test_a_boost_of_a_tag_or_of_everyone_reaches_only_its_organization() -> None:
    book = book_of(
        boosts=[
            {"name": "t", "organization": "acme", "multiplier": 3, "target": {"tag": "vip"}}
            | WINDOW,
            {"name": "e", "organization": "acme", "multiplier": 2, "target": {"everyone": True}}
            | WINDOW,
        ]
    )
    alice, bob = info("alice", "acme", tags=["vip"]), info("bob", "globex", tags=["vip"])
    assert book.adjustment(NOW_US, alice, None, "r").limits == 3
    assert book.adjustment(NOW_US, bob, None, "r") is NO_ADJUSTMENT
    assert book.adjustment(NOW_US, None, None, "r") is NO_ADJUSTMENT
    operator = book_of(boosts=[{"name": "t", "multiplier": 3, "target": {"tag": "vip"}} | WINDOW])
    assert operator.adjustment(NOW_US, bob, None, "r").limits == 3  # the operator's: all


def test_a_key_override_applies_to_its_organizations_consumers_only() -> None:
    book = book_of(
        overrides=[
            {
                "name": "throttle",
                "organization": "acme",
                "credential": "k-of-globex",
                "multiplier": 0.1,
                "expires_at": "2099-01-01T00:00:00Z",
                "reason": "r",
            }
        ]
    )
    assert book.adjustment(NOW_US, info("bob", "globex"), "k-of-globex", "r") is NO_ADJUSTMENT
    assert book.adjustment(NOW_US, info("carl", "acme"), "k-of-globex", "r").limits == 0.1


def test_a_keys_plan_resolves_in_its_consumers_organization() -> None:
    book = book_of(
        plans=[
            {"name": "acme-gold", "organization": "acme"},
            {"name": "shared", "limits": []},
        ]
    )
    bob = info("bob", "globex")
    assert book.resolve("acme-gold", bob, None) == (None, None)
    plan, source = book.resolve("shared", bob, None)
    assert plan is not None
    assert (plan.name, source) == ("shared", "key")
    plan, _ = book.resolve("acme-gold", info("alice", "acme"), None)
    assert plan is not None
