"""Per-version usage of API products on a real store (SQLite and PostgreSQL): request
records written through the request-log writer carry the API, version and sandbox; one
rollup round puts them in the rollups and in `api_callers`; the admin API (REST and
GraphQL) answers who still calls a version — consumers and keys, requests, exact last
seen — and each version's live and sandbox traffic."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest
from api_usage_support import DAY, gateway, iso_ms, ms, traffic
from sqlalchemy import select

from portcullis.admin.app import create_admin_app
from portcullis.analytics.log_queue import RequestLogWriter
from portcullis.analytics.record import RequestRecord
from portcullis.analytics.rollups import Rollups
from portcullis.model.loader import load_config_data
from portcullis.services.admin_auth import AuthService
from portcullis.services.rbac import Role
from portcullis.settings import Settings
from portcullis.store.analytics_tables import ApiCallerRow, RequestLogRow, RollupRow
from portcullis.store.config_repository import ConfigRepository
from portcullis.store.engine import create_engine
from portcullis.store.migrations import upgrade_to_head
from support.admin_session import TEST_PASSWORD_HASHER

PASSWORD = "api usage password 123"


@dataclass
class World:
    client: httpx.AsyncClient
    records: list[RequestRecord]
    sunset: datetime


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    await upgrade_to_head(database_url)
    now = time.time()
    sunset = datetime.fromtimestamp(now + 20 * DAY, UTC).replace(microsecond=0)
    records = traffic(now)
    engine = create_engine(database_url)
    try:
        await ConfigRepository(engine).apply(
            load_config_data(gateway(sunset)), author="test", comment=None
        )
        await RequestLogWriter(engine, "test-node").write(records)
        await Rollups(engine, max_batches=100_000, batch_buckets={"minute": 1440}).run_once()
        await AuthService(engine, hasher=TEST_PASSWORD_HASHER).create_user(
            "owner@example.com", PASSWORD, Role.OWNER
        )
        yield_engine = engine
        app = create_admin_app(Settings(database_url=database_url, log_json=False))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
                login = await client.post(
                    "/admin/v1/auth/login",
                    json={"email": "owner@example.com", "password": PASSWORD},
                )
                assert login.status_code == 200, login.text
                client.headers["authorization"] = f"Bearer {login.json()['access_token']}"
                client.engine = yield_engine  # type: ignore[attr-defined]
                yield World(client, records, sunset)
    finally:
        await engine.dispose()


async def check_the_log_and_rollups_keep_the_api_version_and_sandbox(world: World) -> None:
    engine = world.client.engine  # type: ignore[attr-defined]
    async with engine.connect() as conn:
        logged = (
            await conn.execute(
                select(
                    RequestLogRow.credential_id,
                    RequestLogRow.api,
                    RequestLogRow.api_version,
                    RequestLogRow.sandbox,
                )
                .where(RequestLogRow.ts_ms > ms(time.time() - DAY))
                .order_by(RequestLogRow.ts_ms)
            )
        ).all()
        rolled = (
            await conn.execute(
                select(RollupRow.api, RollupRow.api_version, RollupRow.sandbox, RollupRow.requests)
                .where(RollupRow.granularity == "minute")
                .where(RollupRow.bucket_start > time.time() - DAY)
                .order_by(RollupRow.bucket_start)
            )
        ).all()
    # (The app's retention job may have deleted the 40-day-old row by now.)
    assert [tuple(r) for r in logged] == [
        ("key-a1", "shop", "v1", False),
        ("key-a1", "shop", "v1", False),
        ("key-a1", "shop", "v1", False),
        ("key-a2", "shop", "v1", True),
        (None, "shop", "v1", False),
        ("key-b1", "shop", "v2", False),
        ("key-b1", "shop", "v2", False),
        ("key-b1", None, None, False),
    ]
    assert [tuple(r) for r in rolled] == [
        ("shop", "v1", False, 1),
        ("shop", "v1", False, 1),
        ("shop", "v1", False, 1),
        ("shop", "v1", True, 1),
        ("shop", "v1", False, 1),
        ("shop", "v2", False, 1),
        ("shop", "v2", False, 1),
        ("", "", False, 1),
    ]


async def check_who_still_calls_a_version(world: World) -> None:
    alice = [r for r in world.records if r.consumer == "alice"]
    anonymous = next(r for r in world.records if r.consumer is None)
    url = "/admin/v1/analytics/apis/shop/versions/v1/callers"
    answer = await world.client.get(url)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["api"], body["version"], body["status"], body["successor"]) == (
        "shop",
        "v1",
        "deprecated",
        "v2",
    )
    assert datetime.fromisoformat(body["sunset_at"]) == world.sunset
    assert body["requests"] == 5
    assert [c["consumer"] for c in body["callers"]] == [None, "alice"]  # most recent first
    anon, first = body["callers"]
    assert anon == {
        "consumer": None,
        "requests": 1,
        "sandbox_requests": 0,
        "last_seen": iso_ms(anonymous.started_at),
        "keys": [
            {
                "key_id": None,
                "requests": 1,
                "sandbox_requests": 0,
                "last_seen": iso_ms(anonymous.started_at),
            }
        ],
    }
    assert first == {
        "consumer": "alice",
        "requests": 4,
        "sandbox_requests": 1,
        "last_seen": iso_ms(alice[3].started_at),
        "keys": [
            {
                "key_id": "key-a2",
                "requests": 1,
                "sandbox_requests": 1,
                "last_seen": iso_ms(alice[3].started_at),
            },
            {
                "key_id": "key-a1",
                "requests": 3,
                "sandbox_requests": 0,
                "last_seen": iso_ms(alice[2].started_at),
            },
        ],
    }
    # A longer window reaches carol's call of 40 days ago; live traffic leaves the
    # sandbox request out.
    longer = (await world.client.get(url, params={"days": 60})).json()
    assert [c["consumer"] for c in longer["callers"]] == [None, "alice", "carol"]
    live = (await world.client.get(url, params={"sandbox": "false"})).json()
    assert [(c["consumer"], c["requests"]) for c in live["callers"]] == [
        (None, 1),
        ("alice", 3),
    ]
    v2 = (await world.client.get("/admin/v1/analytics/apis/shop/versions/v2/callers")).json()
    assert [(c["consumer"], c["requests"]) for c in v2["callers"]] == [("bob", 2)]


async def check_usage_per_version_keeps_sandbox_traffic_apart(world: World) -> None:
    answer = await world.client.get("/admin/v1/analytics/apis/shop/versions")
    assert answer.status_code == 200, answer.text
    versions = {v["version"]: v for v in answer.json()["versions"]}
    assert list(versions) == ["v1", "v2"]
    assert versions["v1"]["status"] == "deprecated"
    assert (versions["v1"]["live"]["requests"], versions["v1"]["sandbox"]["requests"]) == (4, 1)
    assert versions["v1"]["consumers"] == 1
    assert (versions["v2"]["live"]["requests"], versions["v2"]["sandbox"]["requests"]) == (2, 0)
    usage = "/admin/v1/analytics/usage"
    sandboxed = await world.client.get(usage, params={"api": "shop", "sandbox": "true"})
    assert sandboxed.json()["totals"]["requests"] == 1
    v1_live = await world.client.get(
        usage, params={"api": "shop", "api_version": "v1", "sandbox": "false"}
    )
    assert v1_live.json()["totals"]["requests"] == 4
    export = await world.client.get(
        "/admin/v1/analytics/usage/export", params={"format": "jsonl", "sandbox": "true"}
    )
    lines = [httpx.Response(200, content=line).json() for line in export.text.splitlines()]
    assert [(r["api"], r["api_version"], r["sandbox"], r["requests"]) for r in lines] == [
        ("shop", "v1", True, 1)
    ]


async def check_graphql_answers_the_same(world: World) -> None:
    query = """{ apiVersionCallers(api: "shop", version: "v1", query: {days: 7}) {
                   requests callers { consumer requests keys { keyId requests } } }
                 apiVersionsUsage(api: "shop") { versions { version live { requests } } } }"""
    answer = await world.client.post("/graphql", json={"query": query})
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    assert data["apiVersionCallers"]["requests"] == 5
    assert data["apiVersionCallers"]["callers"][1] == {
        "consumer": "alice",
        "requests": 4,
        "keys": [{"keyId": "key-a2", "requests": 1}, {"keyId": "key-a1", "requests": 3}],
    }
    assert [v["live"]["requests"] for v in data["apiVersionsUsage"]["versions"]] == [4, 2]


async def check_unknown_apis_and_bad_parameters_are_refused(world: World) -> None:
    base = "/admin/v1/analytics/apis"
    missing = await world.client.get(f"{base}/ghost/versions/v1/callers")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    bad = await world.client.get(f"{base}/shop/versions/v1/callers", params={"days": 0})
    assert bad.status_code == 422
    assert "days" in " ".join(e["detail"] for e in bad.json()["errors"])
    # A version no longer configured still answers (its traffic is history).
    gone = await world.client.get(f"{base}/shop/versions/v0/callers")
    assert gone.status_code == 200
    assert (gone.json()["status"], gone.json()["callers"]) == (None, [])


# One world (a store, traffic, a rollup round, an admin app) serves several checks: its
# setup is most of the cost.


async def test_who_still_calls_a_version_with_keys_and_exact_last_seen(world: World) -> None:
    await check_the_log_and_rollups_keep_the_api_version_and_sandbox(world)
    await check_who_still_calls_a_version(world)


async def test_usage_per_version_graphql_and_refusals(world: World) -> None:
    await check_usage_per_version_keeps_sandbox_traffic_apart(world)
    await check_graphql_answers_the_same(world)
    await check_unknown_apis_and_bad_parameters_are_refused(world)


async def test_api_callers_count_each_request_once_across_rounds(database_url: str) -> None:
    """Rounds that find nothing new add nothing (the cursor guards the increments)."""
    await upgrade_to_head(database_url)
    engine = create_engine(database_url)
    now = time.time()
    try:
        await RequestLogWriter(engine, "n").write(traffic(now)[:4])
        rollups = Rollups(engine, max_batches=100_000, batch_buckets={"minute": 1440})
        await rollups.run_once()
        await rollups.run_once()
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(ApiCallerRow.credential_id, ApiCallerRow.requests).order_by(
                        ApiCallerRow.credential_id
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    assert [tuple(r) for r in rows] == [("key-a1", 3), ("key-a2", 1)]
