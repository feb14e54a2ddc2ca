"""Rate limits on the whole admin API: 429 problems, Retry-After and RateLimit headers."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from admin_support import PASSWORD
from fastapi import FastAPI

from portcullis.admin.app import create_admin_app
from portcullis.services.admin_auth import AuthService
from portcullis.services.rbac import Role
from portcullis.settings import Settings

QUOTA_EXCEEDED = "https://iana.org/assignments/http-problem-types#quota-exceeded"


async def _limited_app(database_url: str, **limits: Any) -> AsyncIterator[FastAPI]:
    settings = Settings(database_url=database_url, ready_requires_data_plane=False, **limits)
    app = create_admin_app(settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def strict_caller(database_url: str) -> AsyncIterator[FastAPI]:
    async for app in _limited_app(
        database_url, admin_rate_limit_per_minute=60, admin_rate_limit_burst=3
    ):
        yield app


@pytest.fixture
async def strict_ip(database_url: str) -> AsyncIterator[FastAPI]:
    async for app in _limited_app(
        database_url, admin_rate_limit_ip_per_minute=30, admin_rate_limit_ip_burst=2
    ):
        yield app


def _client(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("198.51.100.20", 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://admin")


async def test_a_credential_over_its_limit_gets_429_with_headers(strict_caller: FastAPI) -> None:
    auth: AuthService = strict_caller.state.authenticator
    await auth.create_user("limits@example.com", PASSWORD, Role.OPERATOR)
    async with _client(strict_caller) as client:
        login = await client.post(
            "/admin/v1/auth/login", json={"email": "limits@example.com", "password": PASSWORD}
        )
        assert login.status_code == 200
        assert '"caller"' not in login.headers["ratelimit-policy"]  # no credential sent
        client.headers["authorization"] = f"Bearer {login.json()['access_token']}"
        answers = [await client.get("/admin/v1/services") for _ in range(4)]
        assert [r.status_code for r in answers] == [200, 200, 200, 429]
        assert answers[0].headers["ratelimit-policy"] == '"caller";q=3;w=3, "ip";q=600;w=12'
        # The IP bucket refills at 50/s, so its exact level depends on timing.
        assert re.fullmatch(r'"caller";r=2;t=1, "ip";r=59[89];t=1', answers[0].headers["ratelimit"])
        refused = answers[3]
        assert refused.headers["content-type"] == "application/problem+json"
        problem = refused.json()
        assert problem["type"] == QUOTA_EXCEEDED
        assert problem["status"] == 429
        assert problem["violated-policies"] == ["caller"]
        assert problem["instance"] == "/admin/v1/services"
        retry_after = int(refused.headers["retry-after"])
        assert retry_after == 1
        t = re.search(r'"caller";r=0;t=(\d+)', refused.headers["ratelimit"])
        assert t is not None
        assert int(t.group(1)) == retry_after
        assert refused.headers["x-content-type-options"] == "nosniff"
        # A refused write changes nothing and is not remembered as an idempotent answer.
        blocked = await client.post(
            "/admin/v1/services",
            json={"name": "x", "url": "http://x"},
            headers={"Idempotency-Key": "k"},
        )
        assert blocked.status_code == 429
        # Health checks and the docs are not limited.
        assert (await client.get("/health/live")).status_code == 200
        assert "ratelimit" not in (await client.get("/health/ready")).headers


async def test_guessing_tokens_from_one_address_hits_the_ip_limit(strict_ip: FastAPI) -> None:
    async with _client(strict_ip) as client:
        statuses = [
            (
                await client.get(
                    "/admin/v1/services", headers={"authorization": f"Bearer guess-{i}"}
                )
            ).status_code
            for i in range(3)
        ]
        assert statuses == [401, 401, 429]
        refused = await client.get("/admin/v1/audit-events")
        assert refused.json()["violated-policies"] == ["ip"]
        assert refused.headers["retry-after"] == "2"
    transport = httpx.ASGITransport(app=strict_ip, client=("198.51.100.21", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as elsewhere:
        assert (await elsewhere.get("/admin/v1/services")).status_code == 401
