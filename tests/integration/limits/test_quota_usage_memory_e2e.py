"""Quota usage without Redis: a real `portcullis serve` (2 workers, memory limit backend).

Each worker counts quotas in its own memory and publishes its counts to the store;
the usage API sums them. It reports `used` equal to the requests admitted, within a
few seconds, for a consumer and for a key, and says the counters are per worker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from support.admin_session import signed_in_owner
from support.quota_events import check_thresholds_announced
from support.servers import Gateway, gateway, granian_app

DEMO = "portcullis.demo.upstream:create_demo_app"
BIG, SMALL = 1000, 5
# The publication interval (2 s) plus slack for a loaded machine.
# A guard against a hang, not a target: how long the sum took is printed.
WITHIN = 30.0


def config(upstream: int) -> dict[str, Any]:
    daily = {"name": "daily", "limit": BIG, "period": "day", "timezone": "UTC"}
    return {
        "services": [{"name": "echo", "url": f"http://127.0.0.1:{upstream}/echo"}],
        "routes": [{"name": "api", "service": "echo", "paths": ["/api"]}],
        "consumers": [
            {"username": "alice", "plan": "big"},
            {"username": "bob", "plan": "small"},
            {"username": "erin", "plan": "ten"},
        ],
        "plans": [
            {"name": "big", "quotas": [daily]},
            {"name": "small", "quotas": [{**daily, "limit": SMALL}]},
            {"name": "ten", "quotas": [{**daily, "limit": 10}]},
        ],
        "plugins": [{"name": "key-auth", "config": {}}, {"name": "plan-limits", "config": {}}],
    }


@pytest.fixture(scope="module")
def upstream() -> Iterator[int]:
    with granian_app(DEMO, workers=1) as port:
        yield port


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: int) -> Iterator[Gateway]:
    tmp: Path = tmp_path_factory.mktemp("quota-usage")
    cfg = tmp / "gateway.yaml"
    cfg.write_text(yaml.safe_dump(config(upstream)))
    # quota.threshold_reached is read from the published counts every 0.3 s.
    env = {"PORTCULLIS_REDIS_URL": "", "PORTCULLIS_QUOTA_EVENTS_INTERVAL": "0.3"}
    with gateway(tmp, cfg, workers=2, extra_env=env) as g:
        yield g


@pytest.fixture(scope="module")
def admin(gw: Gateway) -> Iterator[httpx.Client]:
    with signed_in_owner(gw, "usage@example.com") as client:
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


def daily_usage(admin: httpx.Client, path: str, used: int) -> tuple[dict[str, Any], float]:
    """The usage once it reports `used` (or the last answer after `WITHIN` s), and how long."""
    start = time.monotonic()
    while True:
        r = admin.get(path)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        took = time.monotonic() - start
        if body["quotas"][0]["used"] == used or took > WITHIN:
            return body, took
        time.sleep(0.1)


async def test_usage_sums_the_workers_counts(gw: Gateway, admin: httpx.Client) -> None:
    key_id, key = new_key(admin, "alice")
    before, _ = daily_usage(admin, "/admin/v1/consumers/alice/usage", 0)
    assert before["counters"] == "per_worker"
    assert before["quotas"][0]["used"] == 0
    codes = await fire(gw, key, 40)
    assert codes == [200] * 40
    body, took = daily_usage(admin, "/admin/v1/consumers/alice/usage", 40)
    [daily] = body["quotas"]
    assert (daily["used"], daily["remaining"], daily["limit"]) == (40, BIG - 40, BIG), took
    print(f"\nusage summed the workers' counts {took:.2f}s after the requests")
    # Both workers took some (fresh connections), and neither counted all of them.
    assert daily["live_workers"] == 2
    assert 0 < daily["busiest_worker_used"] < 40
    by_key, _ = daily_usage(admin, f"/admin/v1/keys/{key_id}/usage", 40)
    assert (by_key["counters"], by_key["quotas"][0]["used"]) == ("per_worker", 40)


async def test_each_worker_enforces_the_quota_and_usage_reports_what_was_admitted(
    gw: Gateway, admin: httpx.Client
) -> None:
    _, key = new_key(admin, "bob")
    codes = await fire(gw, key, 6 * SMALL)
    admitted = codes.count(200)
    # Per worker: at least the limit, at most the limit on each of the two workers.
    assert SMALL <= admitted <= 2 * SMALL, codes
    assert codes.count(429) == 6 * SMALL - admitted
    body, _ = daily_usage(admin, "/admin/v1/consumers/bob/usage", admitted)
    [daily] = body["quotas"]
    assert (daily["used"], daily["remaining"]) == (admitted, max(0, SMALL - admitted))
    assert daily["busiest_worker_used"] == SMALL


def test_80_and_100_percent_of_the_quota_are_announced_from_the_published_counts(
    gw: Gateway, admin: httpx.Client
) -> None:
    check_thresholds_announced(gw, admin, "erin", 10)
