"""basic-auth and hmac-auth end to end: `portcullis serve` (granian, two workers, Redis for
hmac nonces) in front of the demo echo upstream, credentials in the gateway's store.

Covers what only the real thing shows: a client's Basic credentials and an RFC 9421
signature (made by the independent `http-message-signatures` client, body digest
included) pass through real HTTP; a replayed nonce is refused whichever worker gets
it (Redis); a route accepts only its organization's consumers; a deleted credential
stops working on every worker within the event feed's poll window (polled with a
deadline, no sleeps as synchronisation).

mtls-auth's end-to-end test goes through the TLS port: tests/integration/proxy/test_tls_e2e.py.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from portcullis.identity.credential_store import CredentialKind, CredentialRepository
from portcullis.identity.secrets import load_server_secret
from portcullis.store.engine import create_engine
from support.auth_credentials import sign_request
from support.redis import RedisServer, running_redis
from support.servers import Gateway, gateway, granian_app

DEMO = "portcullis.demo.upstream:create_demo_app"
HMAC_SECRET = "alice-e2e-hmac-secret-0123456789"
PASSWORD = "alice-e2e-password"
DEADLINE = 10.0


def config(demo: int) -> dict[str, Any]:
    echo = f"http://127.0.0.1:{demo}/echo"
    routes = [
        {"name": "basic", "service": "echo", "paths": ["/basic"]},
        {"name": "hmac", "service": "echo", "paths": ["/hmac"]},
        {
            "name": "globex-basic",
            "service": "globex",
            "paths": ["/globex"],
            "organization": "globex",
        },
    ]
    return {
        "services": [
            {"name": "echo", "url": echo},
            {"name": "globex", "url": echo, "organization": "globex"},
        ],
        "routes": routes,
        "consumers": [
            {"username": "alice"},
            {"username": "gina", "organization": "globex"},
        ],
        "plugins": [
            {"name": "basic-auth", "route": "basic", "config": {"realm": "e2e"}},
            {"name": "hmac-auth", "route": "hmac", "config": {"nonce_store": "redis"}},
            {"name": "basic-auth", "route": "globex-basic", "config": {}},
        ],
    }


async def _credentials(database_url: str) -> str:
    engine = create_engine(database_url)
    try:
        repo = CredentialRepository(
            engine, load_server_secret(os.environ["PORTCULLIS_SECRET_KEY"], Path())
        )
        for who, org in (("alice", None), ("gina", "globex")):
            await repo.create(
                kind=CredentialKind.BASIC,
                identifier=who,
                secret=PASSWORD,
                consumer=who,
                organization=org,
                created_by="e2e",
            )
        created = await repo.create(
            kind=CredentialKind.HMAC,
            identifier="pch_e2e_alice",
            secret=HMAC_SECRET,
            consumer="alice",
            organization=None,
            created_by="e2e",
        )
        return created.id
    finally:
        await engine.dispose()


async def _delete(database_url: str, credential_id: str) -> None:
    engine = create_engine(database_url)
    try:
        repo = CredentialRepository(
            engine, load_server_secret(os.environ["PORTCULLIS_SECRET_KEY"], Path())
        )
        assert await repo.delete(credential_id)
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture(scope="module")
def gw(
    tmp_path_factory: pytest.TempPathFactory, redis: RedisServer
) -> Iterator[tuple[Gateway, str]]:
    tmp = tmp_path_factory.mktemp("auth-plugins")
    with granian_app(DEMO) as demo:
        cfg = tmp / "gateway.yaml"
        cfg.write_text(yaml.safe_dump(config(demo)))
        with gateway(tmp, cfg, workers=2, extra_env={"PORTCULLIS_REDIS_URL": redis.url}) as g:
            yield g, asyncio.run(_credentials(g.database_url))


def upstream_headers(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 200, response.text
    return dict(response.json()["headers"])


def basic(user: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def signed(
    gw: Gateway, method: str, path: str, body: bytes | None = None, nonce: str | None = None
) -> dict[str, str]:
    return sign_request(
        method,
        f"{gw.url}{path}",
        "pch_e2e_alice",
        HMAC_SECRET.encode(),
        created=time.time(),
        nonce=nonce or uuid.uuid4().hex,
        body=body,
    )


def test_basic_credentials_identify_the_consumer(gw: tuple[Gateway, str]) -> None:
    with httpx.Client(base_url=gw[0].url, timeout=10) as client:
        ok = client.get("/basic", headers=basic("alice", PASSWORD))
        seen = upstream_headers(ok)
        assert seen["x-consumer-name"] == "alice"
        assert "authorization" not in seen
        wrong = client.get("/basic", headers=basic("alice", "nope"))
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"] == 'Basic realm="e2e", charset="UTF-8"'
        assert wrong.headers["content-type"] == "application/problem+json"
        # globex's consumer, right password, on the operator's route: as unknown.
        foreign = client.get("/basic", headers=basic("gina", PASSWORD))
        assert foreign.status_code == 401
        assert foreign.json()["detail"] == wrong.json()["detail"]
        assert client.get("/globex", headers=basic("gina", PASSWORD)).status_code == 200
        assert client.get("/globex", headers=basic("alice", PASSWORD)).status_code == 401


def test_signed_requests_body_digest_and_replay_across_workers(gw: tuple[Gateway, str]) -> None:
    g = gw[0]
    with httpx.Client(base_url=g.url, timeout=10) as client:
        body = b'{"order": 42}'
        headers = signed(g, "POST", "/hmac/orders?x=1", body=body)
        ok = client.post("/hmac/orders?x=1", headers=headers, content=body)
        seen = upstream_headers(ok)
        assert seen["x-consumer-name"] == "alice"
        assert "signature" not in seen
        # The same signed request again, to whichever worker: the nonce is spent (Redis).
        for _ in range(4):
            again = client.post("/hmac/orders?x=1", headers=headers, content=body)
            assert again.status_code == 401
            assert "already used" in again.json()["detail"]
        # A different body under the signed digest.
        fresh = signed(g, "POST", "/hmac/orders?x=1", body=body)
        tampered = client.post("/hmac/orders?x=1", headers=fresh, content=b'{"order": 43}')
        assert tampered.status_code == 401
        assert "Content-Digest" in tampered.json()["detail"]
        # Signed for another path.
        moved = client.get("/hmac/other", headers=signed(g, "GET", "/hmac/orders"))
        assert moved.status_code == 401
        missing = client.get("/hmac/orders")
        assert missing.headers["www-authenticate"].startswith('Signature realm="portcullis"')
        assert "accept-signature" in missing.headers


def test_a_deleted_credential_stops_working_on_every_worker(gw: tuple[Gateway, str]) -> None:
    g, hmac_id = gw
    with httpx.Client(base_url=g.url, timeout=10) as client:
        # Warm both workers' caches (connections spread across workers).
        for _ in range(6):
            assert client.get("/hmac/x", headers=signed(g, "GET", "/hmac/x")).status_code == 200
        asyncio.run(_delete(g.database_url, hmac_id))
        deadline = time.monotonic() + DEADLINE
        refused = 0
        while refused < 6:
            assert time.monotonic() < deadline, "a deleted hmac credential still works"
            with httpx.Client(base_url=g.url, timeout=10) as fresh:  # a new connection each
                status = fresh.get("/hmac/x", headers=signed(g, "GET", "/hmac/x")).status_code
            refused = refused + 1 if status == 401 else 0
