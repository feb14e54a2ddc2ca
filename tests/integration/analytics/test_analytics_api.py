"""The analytics API on a real store (SQLite and PostgreSQL): synthetic raw rows with
known latencies, one rollup round, then every endpoint — counts, percentiles within
the sketch's 1 %, exports that parse, 422 problems naming the parameter, and a
consumer reading only its own usage with its API key."""

from __future__ import annotations

import csv
import io
import json
import math
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from rollup_support import insert_rows, raw_row

from portcullis.admin.app import create_admin_app
from portcullis.analytics.record import Flag
from portcullis.analytics.rollups import Rollups
from portcullis.services.admin_auth import AuthService
from portcullis.services.analytics import EXPORT_COLUMNS
from portcullis.services.rbac import Role
from portcullis.settings import Settings
from portcullis.store.engine import create_engine
from portcullis.store.migrations import upgrade_to_head
from support.admin_session import TEST_PASSWORD_HASHER

H = 3600
PASSWORD = "analytics password 123"
ACCURACY = 0.01 * (1 + 1e-9)


@dataclass
class World:
    client: httpx.AsyncClient
    anonymous: httpx.AsyncClient
    base: int  # start of the three closed hours of synthetic traffic
    rows: list[dict[str, Any]]
    recent: int  # rows of the last few seconds (realtime only)
    app: FastAPI

    def params(self, **extra: Any) -> dict[str, Any]:
        return {"start": iso(self.base), "end": iso(self.base + 3 * H), **extra}

    def latencies(self, **match: Any) -> list[float]:
        return sorted(
            r["latency_ms"] for r in self.rows if all(r[k] == v for k, v in match.items())
        )


def iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def lower_quantile(values: list[float], q: float) -> float:
    return values[math.floor(q * (len(values) - 1))]


def assert_within(estimate: float, exact: float) -> None:
    # The API rounds to 0.001 ms.
    assert abs(estimate - exact) <= ACCURACY * exact + 0.0005, (estimate, exact)


def synthetic(base: int, n: int) -> list[dict[str, Any]]:
    rng = random.Random(11)
    rows = []
    for _ in range(n):
        extra: dict[str, Any] = {}
        roll = rng.random()
        if roll < 0.05:
            extra = {"status": 429, "flags": int(Flag.RATE_LIMITED), "error_kind": "quota-exceeded"}
        elif roll < 0.08:
            extra = {"status": 502, "error_kind": "upstream-unavailable"}
        elif roll < 0.1:
            extra = {"status": 500}
        rows.append(
            raw_row(
                base * 1000 + rng.randrange((3 * H - 120) * 1000),
                rng.lognormvariate(math.log(30), 0.8),
                route=rng.choice(["orders", "orders", "users"]),
                consumer=rng.choice([None, "alice", "alice", "bob"]),
                **extra,
            )
        )
    return rows


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    await upgrade_to_head(database_url)
    now = int(time.time())
    base = now - now % H - 3 * H
    rows = synthetic(base, 2000)
    engine = create_engine(database_url)
    recent = [raw_row((now - 3) * 1000, 12.0, route="orders") for _ in range(5)]
    try:
        await insert_rows(engine, rows + recent)
        await Rollups(engine, max_batches=1000).run_once()
        await AuthService(engine, hasher=TEST_PASSWORD_HASHER).create_user(
            "owner@example.com", PASSWORD, Role.OWNER
        )
    finally:
        await engine.dispose()
    app = create_admin_app(Settings(database_url=database_url, log_json=False))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 40000))
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://admin") as client,
            httpx.AsyncClient(transport=transport, base_url="http://admin") as anonymous,
        ):
            login = await client.post(
                "/admin/v1/auth/login", json={"email": "owner@example.com", "password": PASSWORD}
            )
            assert login.status_code == 200, login.text
            client.headers["authorization"] = f"Bearer {login.json()['access_token']}"
            yield World(client, anonymous, base, rows, len(recent), app)


async def test_usage_series_counts_and_percentiles(world: World) -> None:
    response = await world.client.get(
        "/admin/v1/analytics/usage", params=world.params(granularity="hour")
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [b["bucket_start"] for b in body["series"]] == [
        iso(world.base + i * H) for i in range(3)
    ]
    totals = body["totals"]
    assert totals["requests"] == len(world.rows)
    assert totals["errors"] == sum(1 for r in world.rows if r["status"] >= 500 or r["error_kind"])
    assert totals["rate_limited"] == sum(1 for r in world.rows if r["flags"])
    assert totals["bytes_out"] == 100 * len(world.rows)
    latencies = world.latencies()
    for name, q in (("latency_p50_ms", 0.5), ("latency_p95_ms", 0.95), ("latency_p99_ms", 0.99)):
        assert_within(totals[name], lower_quantile(latencies, q))
    for i, bucket in enumerate(body["series"]):
        start = (world.base + i * H) * 1000
        hour = sorted(r["latency_ms"] for r in world.rows if start <= r["ts_ms"] < start + H * 1000)
        assert bucket["requests"] == len(hour)
        assert_within(bucket["latency_p95_ms"], lower_quantile(hour, 0.95))

    minutes = await world.client.get(
        "/admin/v1/analytics/usage", params=world.params(granularity="minute", consumer="alice")
    )
    assert minutes.status_code == 200, minutes.text
    assert len(minutes.json()["series"]) == 180
    alice = world.latencies(consumer="alice")
    assert minutes.json()["totals"]["requests"] == len(alice)
    assert_within(minutes.json()["totals"]["latency_p99_ms"], lower_quantile(alice, 0.99))


async def test_top_endpoints_consumers_errors_and_latency(world: World) -> None:
    top = await world.client.get("/admin/v1/analytics/top/endpoints", params=world.params())
    assert top.status_code == 200, top.text
    items = top.json()["items"]
    assert [(i["route"], i["requests"]) for i in items] == [
        ("orders", len(world.latencies(route="orders"))),
        ("users", len(world.latencies(route="users"))),
    ]
    assert items[0]["service"] == "shop"

    consumers = await world.client.get(
        "/admin/v1/analytics/top/consumers", params=world.params(sort="errors", limit=1)
    )
    assert consumers.status_code == 200, consumers.text
    ranked = consumers.json()["items"]
    assert len(ranked) == 1
    errors = {
        name: sum(
            1
            for r in world.rows
            if r["consumer"] == name and (r["status"] >= 500 or r["error_kind"])
        )
        for name in ("alice", "bob")
    }
    assert ranked[0]["consumer"] == max(errors, key=lambda n: errors[n])
    assert ranked[0]["errors"] == max(errors.values())

    breakdown = await world.client.get("/admin/v1/analytics/errors", params=world.params())
    assert breakdown.status_code == 200, breakdown.text
    body = breakdown.json()
    by_class = {c["status_class"]: c for c in body["by_status_class"]}
    assert by_class["4xx"]["requests"] == sum(1 for r in world.rows if r["status"] == 429)
    assert by_class["5xx"]["errors"] == sum(1 for r in world.rows if r["status"] >= 500)
    kinds = {(k["error_kind"], k["status"]): k["requests"] for k in body["by_kind"]}
    assert kinds[("quota-exceeded", 429)] == sum(1 for r in world.rows if r["status"] == 429)
    assert kinds[(None, 500)] == sum(1 for r in world.rows if r["status"] == 500)

    latency = await world.client.get(
        "/admin/v1/analytics/latency", params=world.params(route="users")
    )
    assert latency.status_code == 200, latency.text
    stats = latency.json()
    users = world.latencies(route="users")
    assert stats["count"] == len(users)
    assert stats["min_ms"] == pytest.approx(users[0], abs=0.001)
    assert stats["max_ms"] == pytest.approx(users[-1], abs=0.001)
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)):
        assert_within(stats["percentiles"][name], lower_quantile(users, q))


async def test_realtime_reads_the_last_seconds(world: World) -> None:
    response = await world.client.get("/admin/v1/analytics/realtime", params={"window": 30})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["requests"] == world.recent
    assert body["latency_sample"] == world.recent
    assert body["latency_p95_ms"] == pytest.approx(12.0, rel=0.01)
    assert len(body["series"]) == 30
    assert body["requests_per_second"] == pytest.approx(world.recent / 30, abs=0.001)


async def test_exports_parse(world: World) -> None:
    csv_response = await world.client.get(
        "/admin/v1/analytics/usage/export", params=world.params(granularity="hour", format="csv")
    )
    assert csv_response.status_code == 200, csv_response.text
    assert csv_response.headers["content-type"].startswith("text/csv")
    records = list(csv.reader(io.StringIO(csv_response.text)))
    assert tuple(records[0]) == EXPORT_COLUMNS
    assert sum(int(r[EXPORT_COLUMNS.index("requests")]) for r in records[1:]) == len(world.rows)

    jsonl = await world.client.get(
        "/admin/v1/analytics/usage/export", params=world.params(granularity="day", format="jsonl")
    )
    assert jsonl.status_code == 200, jsonl.text
    lines = [json.loads(line) for line in jsonl.text.splitlines()]
    assert sum(line["requests"] for line in lines) == len(world.rows)
    assert {line["status_class"] for line in lines} == {"2xx", "4xx", "5xx"}
    assert all(set(line) == set(EXPORT_COLUMNS) for line in lines)


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, "'start'"),
        (
            {
                "start": "2026-01-01T00:00:00Z",
                "end": "2026-01-09T00:00:00Z",
                "granularity": "minute",
            },
            "'granularity'",
        ),
        ({"granularity": "week"}, "'granularity'"),
        ({"start": "1767225600"}, "'start'"),
        ({"end": "2026-01-01T00:00:00"}, "'end'"),
        ({"route": "a b"}, "'route'"),
        ({"bogus": "1"}, "'bogus'"),
    ],
)
async def test_bad_parameters_are_422_problems_naming_them(
    world: World, params: dict[str, str], named: str
) -> None:
    response = await world.client.get("/admin/v1/analytics/usage", params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    details = " ".join(e["detail"] for e in response.json()["errors"])
    assert named in details, details


async def test_consumers_read_only_their_own_usage(world: World) -> None:
    for name in ("alice", "bob"):
        created = await world.client.post("/admin/v1/consumers", json={"username": name})
        assert created.status_code == 201, created.text
    issued = await world.client.post("/admin/v1/consumers/alice/keys", json={"name": "portal"})
    assert issued.status_code == 201, issued.text
    key, key_id = issued.json()["key"], issued.json()["id"]

    own = await world.anonymous.get(
        "/consumer/v1/usage",
        params=world.params(granularity="hour"),
        headers={"authorization": f"Bearer {key}"},
    )
    assert own.status_code == 200, own.text
    assert own.headers["cache-control"] == "private, no-store"
    body = own.json()
    assert body["consumer"] == "alice"
    assert body["totals"]["requests"] == len(world.latencies(consumer="alice"))
    assert {r["route"] for r in body["by_route"]} <= {"orders", "users"}
    assert sum(r["requests"] for r in body["by_route"]) == body["totals"]["requests"]

    admin_view = await world.client.get(
        "/admin/v1/analytics/consumers/alice/usage", params=world.params(granularity="hour")
    )
    assert admin_view.status_code == 200, admin_view.text
    assert admin_view.json()["totals"] == body["totals"]

    for headers in ({}, {"authorization": "Bearer pc_live_nope"}, {"authorization": "Basic eA=="}):
        refused = await world.anonymous.get("/consumer/v1/usage", headers=headers)
        assert refused.status_code == 401, refused.text
        assert refused.headers["www-authenticate"].startswith("Bearer")
    admin_token = world.client.headers["authorization"]
    refused = await world.anonymous.get(
        "/consumer/v1/usage", headers={"authorization": admin_token}
    )
    assert refused.status_code == 401

    suspended = await world.client.post(
        f"/admin/v1/keys/{key_id}/suspend", json={"reason": "portal test"}
    )
    assert suspended.status_code == 200, suspended.text
    refused = await world.anonymous.get(
        "/consumer/v1/usage", headers={"authorization": f"Bearer {key}"}
    )
    assert refused.status_code == 401
    await world.client.post(f"/admin/v1/keys/{key_id}/resume")
    assert (
        await world.anonymous.get("/consumer/v1/usage", headers={"authorization": f"Bearer {key}"})
    ).status_code == 200
    revoked = await world.client.post(
        f"/admin/v1/keys/{key_id}/revoke", json={"reason": "portal test"}
    )
    assert revoked.status_code == 200, revoked.text
    refused = await world.anonymous.get(
        "/consumer/v1/usage", headers={"authorization": f"Bearer {key}"}
    )
    assert refused.status_code == 401


async def test_organization_limited_admins_see_their_traffic_only(world: World) -> None:
    org = await world.client.post("/admin/v1/organizations", json={"name": "acme"})
    assert org.status_code == 201, org.text
    for body in ({"username": "alice", "organization": "acme"}, {"username": "bob"}):
        created = await world.client.post("/admin/v1/consumers", json=body)
        assert created.status_code == 201, created.text
    auth: AuthService = world.app.state.authenticator
    await auth.create_user("acme@example.com", PASSWORD, Role.VIEWER, org.json()["id"])
    transport = httpx.ASGITransport(app=world.app, client=("198.51.100.9", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as acme:
        login = await acme.post(
            "/admin/v1/auth/login", json={"email": "acme@example.com", "password": PASSWORD}
        )
        acme.headers["authorization"] = f"Bearer {login.json()['access_token']}"
        consumers = await acme.get("/admin/v1/analytics/top/consumers", params=world.params())
        assert [c["consumer"] for c in consumers.json()["items"]] == ["alice"]
        usage = await acme.get("/admin/v1/analytics/usage", params=world.params())
        assert usage.json()["totals"]["requests"] == len(world.latencies(consumer="alice"))
        other = await acme.get("/admin/v1/analytics/consumers/bob/usage", params=world.params())
        assert other.status_code == 404
        own = await acme.get("/admin/v1/analytics/consumers/alice/usage", params=world.params())
        assert own.status_code == 200
        assert own.json()["totals"]["requests"] == len(world.latencies(consumer="alice"))
