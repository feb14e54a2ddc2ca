"""Deleting a consumer retires its credentials, on a real gateway (`portcullis serve`, 2 workers).

A consumer with an API key and an OAuth client (and a token minted by it) is deleted
through the admin API, or dropped by `portcullis config apply`; then a consumer with
the same username is created again. The old key and the old token must be refused on
the data plane from the deletion on, and stay refused for the new consumer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from support.admin_session import signed_in_owner
from support.servers import Gateway, gateway, granian_app

DEMO = "portcullis.demo.upstream:create_demo_app"
AUDIENCE = "orders-api"
# Consecutive answers over fresh connections, so both workers answered.
STREAK = 12


def gateway_config(upstream: int, *, with_acme: bool = True) -> dict[str, Any]:
    return {
        "services": [{"name": "echo", "url": f"http://127.0.0.1:{upstream}/echo"}],
        "routes": [
            {"name": "keyed", "service": "echo", "paths": ["/keyed"]},
            {"name": "tokens", "service": "echo", "paths": ["/tokens"]},
        ],
        "consumers": [{"username": "acme"}, {"username": "other"}]
        if with_acme
        else [{"username": "other"}],
        "plugins": [
            {"name": "key-auth", "route": "keyed", "config": {}},
            {
                "name": "jwt-auth",
                "route": "tokens",
                "config": {"gateway_tokens": True, "audiences": [AUDIENCE]},
            },
        ],
    }


@pytest.fixture(scope="module")
def upstream() -> Iterator[int]:
    with granian_app(DEMO) as port:
        yield port


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: int) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("consumer-deletion")
    cfg = tmp / "gateway.yaml"
    cfg.write_text(yaml.safe_dump(gateway_config(upstream)))
    with gateway(tmp, cfg, workers=2, extra_env={"PORTCULLIS_OAUTH_AUDIENCE": AUDIENCE}) as g:
        yield g


@pytest.fixture(scope="module")
def admin(gw: Gateway) -> Iterator[httpx.Client]:
    with signed_in_owner(gw, "owner@example.com") as client:
        yield client


def credentials(admin: httpx.Client, gw: Gateway, consumer: str) -> tuple[str, str, str]:
    """A new API key, OAuth client and access token for `consumer`: (key, client id, token)."""
    key = admin.post(f"/admin/v1/consumers/{consumer}/keys", json={"name": "k"})
    assert key.status_code == 201, key.text
    client = admin.post(f"/admin/v1/consumers/{consumer}/oauth-clients", json={"name": "c"})
    assert client.status_code == 201, client.text
    client_id, secret = client.json()["client_id"], client.json()["client_secret"]
    token = httpx.post(
        f"{gw.admin_url}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(client_id, secret),
        timeout=10,
    )
    assert token.status_code == 200, token.text
    return key.json()["key"], client_id, token.json()["access_token"]


def fresh_get(gw: Gateway, path: str, credential: str) -> int:
    """Status of one request over a new connection (so it may land on either worker)."""
    with httpx.Client(base_url=gw.url, timeout=5) as client:
        return client.get(path, headers={"authorization": f"Bearer {credential}"}).status_code


def settles_at(gw: Gateway, path: str, credential: str, status: int, timeout: float = 10) -> None:
    """Wait until every worker answers `status` (STREAK in a row over fresh connections)."""
    deadline = time.monotonic() + timeout
    streak = 0
    while streak < STREAK:
        got = fresh_get(gw, path, credential)
        streak = streak + 1 if got == status else 0
        assert time.monotonic() < deadline, f"{path} still answers {got}, not {status}"


def assert_refused_now(gw: Gateway, key: str, token: str) -> None:
    for _ in range(STREAK):
        assert fresh_get(gw, "/keyed", key) == 401
        assert fresh_get(gw, "/tokens", token) == 401


def test_deleting_a_consumer_through_the_admin_api_retires_its_credentials(
    gw: Gateway, admin: httpx.Client
) -> None:
    key, client_id, token = credentials(admin, gw, "acme")
    settles_at(gw, "/keyed", key, 200)
    settles_at(gw, "/tokens", token, 200)

    assert admin.delete("/admin/v1/consumers/acme").status_code == 204
    settles_at(gw, "/keyed", key, 401)
    settles_at(gw, "/tokens", token, 401)

    recreated = admin.post("/admin/v1/consumers", json={"username": "acme"})
    assert recreated.status_code == 201, recreated.text
    new_key, _, new_token = credentials(admin, gw, "acme")
    settles_at(gw, "/keyed", new_key, 200)  # the new consumer is live on every worker
    settles_at(gw, "/tokens", new_token, 200)
    assert_refused_now(gw, key, token)
    assert admin.get(f"/admin/v1/oauth-clients/{client_id}").status_code == 404
    keys = admin.get("/admin/v1/keys", params={"consumer": "acme"}).json()["items"]
    old = [k for k in keys if key.startswith(k["prefix"] + "_")]
    assert [(k["state"], "deleted" in k["status_reason"]) for k in old] == [("revoked", True)]
    listed = admin.get("/admin/v1/consumers/acme/oauth-clients").json()["items"]
    assert client_id not in [c["client_id"] for c in listed]


def test_config_apply_without_the_consumer_retires_its_credentials(
    gw: Gateway, admin: httpx.Client, upstream: int, tmp_path: Path
) -> None:
    admin.post("/admin/v1/consumers", json={"username": "acme"})  # 409 if it is there
    key, client_id, token = credentials(admin, gw, "acme")
    settles_at(gw, "/keyed", key, 200)
    settles_at(gw, "/tokens", token, 200)

    without = tmp_path / "without.yaml"
    without.write_text(yaml.safe_dump(gateway_config(upstream, with_acme=False)))
    gw.cli("config", "apply", str(without))
    settles_at(gw, "/keyed", key, 401)
    settles_at(gw, "/tokens", token, 401)

    with_acme = tmp_path / "with.yaml"
    with_acme.write_text(yaml.safe_dump(gateway_config(upstream)))
    gw.cli("config", "apply", str(with_acme))
    new_key, _, _ = credentials(admin, gw, "acme")
    settles_at(gw, "/keyed", new_key, 200)
    assert_refused_now(gw, key, token)
    assert admin.get(f"/admin/v1/oauth-clients/{client_id}").status_code == 404
