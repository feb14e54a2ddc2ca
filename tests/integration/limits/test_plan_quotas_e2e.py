"""Plans at the gateway: a real `portcullis serve` (2 workers) on a real Redis.

A daily quota admits exactly N across both workers; a boost window that is active
now raises it; an override set through the admin API takes effect within about a
second and stops by itself at `expires_at`; the usage API reports used, remaining
and resets_at from the shared counters; bad input is a 422 problem with a pointer
and changes nothing; a plan in use cannot be deleted (409 naming its consumers).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import yaml

from support.admin_session import signed_in_owner
from support.quota_events import check_thresholds_announced
from support.redis import RedisServer
from support.servers import Gateway, gateway, granian_app

DEMO = "portcullis.demo.upstream:create_demo_app"
QUOTA = 20


def noon_zone() -> str:
    """An `Etc/GMT` zone where it is about noon now, so no test straddles local midnight."""
    shift = 12 - datetime.now(UTC).hour
    if shift == 0:
        return "Etc/GMT"
    return f"Etc/GMT-{shift}" if shift > 0 else f"Etc/GMT+{-shift}"


ZONE = noon_zone()


def config(upstream: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    daily = {"name": "daily", "limit": QUOTA, "period": "day", "timezone": ZONE}
    return {
        "services": [{"name": "echo", "url": f"http://127.0.0.1:{upstream}/echo"}],
        "routes": [{"name": "api", "service": "echo", "paths": ["/api"]}],
        "consumers": [
            {"username": "alice", "plan": "free"},
            {"username": "bob", "plan": "free", "tags": ["peak"]},
            {"username": "carol", "plan": "big"},
            {"username": "dave", "plan": "twenty"},
        ],
        "plans": [
            {"name": "free", "quotas": [daily]},
            {"name": "big", "quotas": [{**daily, "limit": 100_000}]},
            {"name": "twenty", "quotas": [daily]},
        ],
        "boosts": [
            {
                "name": "peak-now",
                "multiplier": 3,
                "starts_at": (now - timedelta(hours=1)).isoformat(),
                "ends_at": (now + timedelta(hours=1)).isoformat(),
                "target": {"tag": "peak"},
            }
        ],
        "plugins": [
            {"name": "key-auth", "config": {}},
            {"name": "plan-limits", "config": {"on_backend_failure": "closed"}},
        ],
    }


@pytest.fixture(scope="module")
def upstream() -> Iterator[int]:
    with granian_app(DEMO, workers=1) as port:
        yield port


@pytest.fixture(scope="module")
def gw(
    tmp_path_factory: pytest.TempPathFactory, upstream: int, redis_server: RedisServer
) -> Iterator[Gateway]:
    tmp: Path = tmp_path_factory.mktemp("plans")
    cfg = tmp / "gateway.yaml"
    cfg.write_text(yaml.safe_dump(config(upstream)))
    env = {
        "PORTCULLIS_REDIS_URL": redis_server.url,
        "PORTCULLIS_LIMITS_REDIS_TIMEOUT": "5",
        # This module's own counters in the session's Redis.
        "PORTCULLIS_LIMITS_KEY_PREFIX": f"pc:plans:{time.time_ns()}:",
        # quota.threshold_reached is read from the shared counters every 0.3 s.
        "PORTCULLIS_QUOTA_EVENTS_INTERVAL": "0.3",
    }
    with gateway(tmp, cfg, workers=2, extra_env=env) as g:
        yield g


@pytest.fixture(scope="module")
def admin(gw: Gateway) -> Iterator[httpx.Client]:
    with signed_in_owner(gw, "plans@example.com") as client:
        yield client


def new_key(admin: httpx.Client, consumer: str) -> tuple[str, str]:
    created = admin.post(f"/admin/v1/consumers/{consumer}/keys", json={"name": f"{consumer}-k"})
    assert created.status_code == 201, created.text
    return created.json()["id"], created.json()["key"]


async def fire(gw: Gateway, key: str, n: int) -> list[int]:
    """`n` concurrent requests over fresh connections (so both workers take some)."""

    async def one() -> int:
        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
            r = await client.get("/api", headers={"x-api-key": key})
            return r.status_code

    return list(await asyncio.gather(*(one() for _ in range(n))))


def status(gw: Gateway, key: str) -> int:
    with httpx.Client(base_url=gw.url, timeout=5) as client:
        return client.get("/api", headers={"x-api-key": key}).status_code


async def test_daily_quota_admits_exactly_n_across_workers_and_usage_reports_it(
    gw: Gateway, admin: httpx.Client
) -> None:
    key_id, key = new_key(admin, "alice")
    codes = await fire(gw, key, 3 * QUOTA)
    assert codes.count(200) == QUOTA, codes
    assert codes.count(429) == 2 * QUOTA
    usage = admin.get("/admin/v1/consumers/alice/usage")
    assert usage.status_code == 200, usage.text
    body = usage.json()
    assert (body["plan"], body["plan_source"], body["counters"]) == ("free", "consumer", "shared")
    [daily] = body["quotas"]
    assert (daily["used"], daily["remaining"], daily["limit"]) == (QUOTA, 0, QUOTA)
    tz = ZoneInfo(ZONE)
    tomorrow = datetime.now(tz).date() + timedelta(days=1)
    resets = datetime.fromisoformat(daily["resets_at"])
    assert resets == datetime.combine(tomorrow, datetime.min.time(), tzinfo=tz)
    assert resets.utcoffset() == datetime.now(tz).utcoffset()  # given with the zone's offset
    assert daily["period_id"] == datetime.now(tz).date().isoformat()
    by_key = admin.get(f"/admin/v1/keys/{key_id}/usage").json()
    assert by_key["quotas"][0]["used"] == QUOTA
    assert admin.get("/admin/v1/consumers/nobody/usage").status_code == 404


async def test_an_active_boost_window_raises_the_quota(gw: Gateway, admin: httpx.Client) -> None:
    _, key = new_key(admin, "bob")
    codes = await fire(gw, key, 4 * QUOTA)
    assert codes.count(200) == 3 * QUOTA, codes
    usage = admin.get("/admin/v1/consumers/bob/usage").json()
    assert usage["adjustment"] == "boost"
    assert (usage["quotas"][0]["limit"], usage["quotas"][0]["used"]) == (3 * QUOTA, 3 * QUOTA)


def test_an_override_takes_effect_on_every_worker_and_expires_by_itself(
    gw: Gateway, admin: httpx.Client
) -> None:
    key_id, key = new_key(admin, "carol")
    assert status(gw, key) == 200
    expires = datetime.now(UTC) + timedelta(seconds=8)
    created = admin.post(
        "/admin/v1/overrides",
        json={
            "name": "carol-stop",
            "credential": key_id,
            "limits": {"daily": 0},
            "expires_at": expires.isoformat(),
            "reason": "abuse report #7",
        },
    )
    assert created.status_code == 201, created.text
    # Done when both workers enforce it: 8 refusals in a row (connections are spread
    # over the workers); each worker picks the new config up on its next poll.
    start = time.monotonic()
    streak = 0
    while streak < 8:
        assert time.monotonic() - start < 30, "the override never reached every worker"
        streak = streak + 1 if status(gw, key) == 429 else 0
        if not streak:
            time.sleep(0.02)
    took = time.monotonic() - start
    print(f"override enforced by every worker after {took:.2f}s")
    audit = admin.get("/admin/v1/audit-events", params={"resource_type": "override"})
    assert audit.status_code == 200
    assert any(e.get("resource_id") == "carol-stop" for e in audit.json()["items"])
    # Nothing changes in the config when it expires; the data plane lets carol back in.
    while datetime.now(UTC) < expires:
        time.sleep(0.05)
    deadline = time.monotonic() + 30  # a guard against a hang, not a target
    while status(gw, key) != 200:
        assert time.monotonic() < deadline, "the override did not expire"
        time.sleep(0.02)
    assert admin.get("/admin/v1/overrides/carol-stop").status_code == 200


def test_bad_input_is_a_422_with_a_pointer_and_changes_nothing(admin: httpx.Client) -> None:
    before = admin.get("/admin/v1/config/versions").json()["items"][0]["version"]
    bad_boost = {
        "name": "nope",
        "multiplier": 0.5,
        "local": {"date": "2026-12-31", "start": "10:00", "end": "23:00", "timezone": "UTC"},
        "target": {"everyone": True},
    }
    r = admin.post("/admin/v1/boosts", json=bad_boost)
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert [e["pointer"] for e in r.json()["errors"]] == ["#/multiplier"]
    zone = {**bad_boost, "multiplier": 2, "local": {**bad_boost["local"], "timezone": "Moon/Base"}}
    r = admin.post("/admin/v1/boosts", json=zone)
    assert r.status_code == 422
    assert [e["pointer"] for e in r.json()["errors"]] == ["#/local/timezone"]
    ghost = admin.post(
        "/admin/v1/overrides",
        json={
            "name": "g",
            "consumer": "ghost",
            "multiplier": 2,
            "reason": "r",
            "expires_at": "2030-01-01T00:00:00Z",
        },
    )
    assert ghost.status_code == 422
    assert [e["pointer"] for e in ghost.json()["errors"]] == ["#/consumer"]
    in_use = admin.delete("/admin/v1/plans/free")
    assert in_use.status_code == 409
    assert {d["id"] for d in in_use.json()["dependents"]} == {"alice", "bob"}
    after = admin.get("/admin/v1/config/versions").json()["items"][0]["version"]
    assert after == before


def test_80_and_100_percent_of_the_quota_are_announced_from_the_shared_counters(
    gw: Gateway, admin: httpx.Client
) -> None:
    check_thresholds_announced(gw, admin, "dave", QUOTA)
