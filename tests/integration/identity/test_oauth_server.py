"""The built-in OAuth2 server on a real gateway (`portcullis serve`): authlib's OAuth2 client
fetches, introspects and revokes tokens; PyJWT's PyJWKClient verifies them from the live
JWKS endpoint; jwt-auth on :8000 accepts them and refuses them within a second of revocation.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import sqlite3
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_private_key

from portcullis.identity.secrets import load_server_secret
from portcullis.services.admin_auth import AuthService
from portcullis.services.rbac import Role
from portcullis.store.engine import create_engine, sqlite_file
from support.admin_session import TEST_PASSWORD_HASHER
from support.servers import Gateway, gateway, granian_app

with warnings.catch_warnings():
    # authlib warns that it found httpx rather than its successor httpx2; httpx is what we use.
    from authlib.deprecate import AuthlibDeprecationWarning

    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.base_client import OAuthError
    from authlib.integrations.httpx_client import AsyncOAuth2Client

DEMO = "portcullis.demo.upstream:create_demo_app"
AUDIENCE = "orders-api"
PASSWORD = "correct horse battery staple"
STREAK = 12


def gateway_config(upstream: int) -> dict[str, Any]:
    return {
        "consumers": [{"username": "alice", "groups": ["staff"]}, {"username": "bob"}],
        "services": [{"name": "echo", "url": f"http://127.0.0.1:{upstream}/echo"}],
        "routes": [{"name": "orders", "service": "echo", "paths": ["/orders"]}],
        "plugins": [
            {
                "name": "jwt-auth",
                "route": "orders",
                "config": {"gateway_tokens": True, "audiences": [AUDIENCE]},
            }
        ],
    }


@pytest.fixture(scope="module")
def upstream() -> Iterator[int]:
    with granian_app(DEMO) as port:
        yield port


def start(tmp: Path, upstream: int, **env: str) -> Any:
    cfg = tmp / "gateway.yaml"
    cfg.write_text(yaml.safe_dump(gateway_config(upstream)))
    return gateway(tmp, cfg, workers=2, extra_env={"PORTCULLIS_OAUTH_AUDIENCE": AUDIENCE, **env})


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: int) -> Iterator[Gateway]:
    with start(tmp_path_factory.mktemp("oauth-gw"), upstream) as g:
        yield g


async def _create_owner(database_url: str, email: str) -> None:
    engine = create_engine(database_url)
    try:
        await AuthService(engine, hasher=TEST_PASSWORD_HASHER).create_user(
            email, PASSWORD, Role.OWNER
        )
    finally:
        await engine.dispose()


@contextmanager
def admin_client(gw: Gateway, email: str = "owner@example.com") -> Iterator[httpx.Client]:
    """A client of the gateway's admin API, signed in as a new owner."""
    # Its own thread and event loop: callers may be inside a running loop.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _create_owner(gw.database_url, email)).result()
    with httpx.Client(base_url=gw.admin_url, timeout=10) as client:
        login = client.post("/admin/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert login.status_code == 200, login.text
        client.headers["authorization"] = f"Bearer {login.json()['access_token']}"
        yield client


@pytest.fixture(scope="module")
def admin(gw: Gateway) -> Iterator[httpx.Client]:
    with admin_client(gw) as client:
        yield client


def register(admin: httpx.Client, consumer: str = "alice", **body: Any) -> tuple[str, str]:
    body.setdefault("allowed_scopes", ["orders:read", "orders:write"])
    response = admin.post(
        f"/admin/v1/consumers/{consumer}/oauth-clients", json={"name": "svc", **body}
    )
    assert response.status_code == 201, response.text
    return response.json()["client_id"], response.json()["client_secret"]


def oauth(client_id: str, secret: str, method: str) -> AsyncOAuth2Client:
    return AsyncOAuth2Client(
        client_id,
        secret,
        token_endpoint_auth_method=method,
        revocation_endpoint_auth_method=method,
        timeout=10,
    )


def metadata(gw: Gateway) -> dict[str, Any]:
    response = httpx.get(f"{gw.admin_url}/.well-known/oauth-authorization-server", timeout=10)
    assert response.status_code == 200
    data: dict[str, Any] = response.json()
    return data


def verify_with_jwks(jwks_uri: str, token: str, issuer: str) -> dict[str, Any]:
    """What a resource server would do: PyJWKClient picks the key by kid from the live JWKS."""
    client = jwt.PyJWKClient(jwks_uri, cache_keys=False)
    key = client.get_signing_key_from_jwt(token)
    claims: dict[str, Any] = jwt.decode(
        token,
        key.key,
        algorithms=["ES256"],
        audience=AUDIENCE,
        issuer=issuer,
        options={"require": ["iss", "sub", "aud", "exp", "iat", "jti", "client_id"]},
    )
    return claims


def fresh_get(gw: Gateway, token: str) -> httpx.Response:
    """One request to :8000 over a new connection (so it may land on either worker)."""
    with httpx.Client(base_url=gw.url, timeout=5) as client:
        return client.get("/orders", headers={"authorization": f"Bearer {token}"})


def accepted(gw: Gateway, token: str, timeout: float = 5.0) -> dict[str, str]:
    """The upstream's view of an accepted request, once every worker trusts the token's key."""
    deadline = time.monotonic() + timeout
    streak = 0
    while True:
        response = fresh_get(gw, token)
        streak = streak + 1 if response.status_code == 200 else 0
        if streak >= STREAK:
            return dict(response.json()["headers"])
        assert time.monotonic() < deadline, response.text
        if streak == 0:
            time.sleep(0.05)


def test_metadata_names_the_live_endpoints(gw: Gateway) -> None:
    meta = metadata(gw)
    assert meta["issuer"] == gw.admin_url
    assert meta["token_endpoint"] == f"{gw.admin_url}/oauth/token"
    assert meta["jwks_uri"] == f"{gw.admin_url}/.well-known/jwks.json"
    assert meta["introspection_endpoint"] == f"{gw.admin_url}/oauth/introspect"
    assert meta["revocation_endpoint"] == f"{gw.admin_url}/oauth/revoke"
    assert meta["grant_types_supported"] == ["client_credentials"]
    assert meta["token_endpoint_auth_methods_supported"] == [
        "client_secret_basic",
        "client_secret_post",
    ]
    assert httpx.get(meta["jwks_uri"], timeout=10).status_code == 200


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
async def test_authlib_fetches_introspects_and_revokes_tokens_that_pyjwkclient_verifies(
    gw: Gateway, admin: httpx.Client, method: str
) -> None:
    meta = metadata(gw)
    client_id, secret = register(admin)
    async with oauth(client_id, secret, method) as client:
        token = await client.fetch_token(
            meta["token_endpoint"], grant_type="client_credentials", scope="orders:read"
        )
        access = token["access_token"]
        assert token["scope"] == "orders:read"
        claims = await asyncio.to_thread(verify_with_jwks, meta["jwks_uri"], access, meta["issuer"])
        assert claims["sub"] == "alice"
        assert claims["client_id"] == client_id
        assert claims["scope"] == "orders:read"
        assert jwt.get_unverified_header(access)["typ"] == "at+jwt"

        introspected = await client.introspect_token(meta["introspection_endpoint"], token=access)
        assert introspected.json()["active"] is True
        assert introspected.json()["jti"] == claims["jti"]
        revoked = await client.revoke_token(meta["revocation_endpoint"], token=access)
        assert revoked.status_code == 200
        after = await client.introspect_token(meta["introspection_endpoint"], token=access)
        assert after.json() == {"active": False}

    async with oauth(client_id, "pcs_not-the-secret", method) as impostor:
        with pytest.raises(OAuthError) as refused:
            await impostor.fetch_token(meta["token_endpoint"], grant_type="client_credentials")
    assert refused.value.error == "invalid_client"


async def test_scopes_beyond_the_clients_are_refused(gw: Gateway, admin: httpx.Client) -> None:
    client_id, secret = register(admin, allowed_scopes=["orders:read"])
    async with oauth(client_id, secret, "client_secret_basic") as client:
        with pytest.raises(OAuthError) as refused:
            await client.fetch_token(
                metadata(gw)["token_endpoint"],
                grant_type="client_credentials",
                scope="orders:read orders:write",
            )
    assert refused.value.error == "invalid_scope"


async def test_jwt_auth_accepts_gateway_tokens_and_refuses_them_once_revoked(
    gw: Gateway, admin: httpx.Client
) -> None:
    meta = metadata(gw)
    client_id, secret = register(admin)
    async with oauth(client_id, secret, "client_secret_post") as client:
        token = await client.fetch_token(meta["token_endpoint"], grant_type="client_credentials")
        access = token["access_token"]
        upstream = accepted(gw, access)
        assert upstream["x-consumer-id"] == "alice"
        assert upstream["x-consumer-groups"] == "staff"
        assert upstream["x-consumer-scopes"] == "orders:read orders:write"
        assert "authorization" not in upstream

        revoked = await client.revoke_token(meta["revocation_endpoint"], token=access)
        assert revoked.status_code == 200
        revoked_at = time.monotonic()
    streak, first = 0, 0.0
    while streak < STREAK:
        # A guard against a hang, not a target: the lag is printed below (a figure).
        assert time.monotonic() - revoked_at < 30, "revocation never reached every worker"
        now = time.monotonic()
        response = fresh_get(gw, access)
        if response.status_code == 401:
            first = now if streak == 0 else first
            streak += 1
        else:
            assert response.status_code == 200
            streak = 0
    lag = first - revoked_at
    print(f"\nrevocation in force on every worker {lag:.3f}s after the revoke response")
    assert 'error_description="token revoked"' in response.headers["www-authenticate"]


async def test_rotation_publishes_the_new_kid_and_old_tokens_keep_verifying(
    gw: Gateway, admin: httpx.Client
) -> None:
    meta = metadata(gw)
    client_id, secret = register(admin)
    async with oauth(client_id, secret, "client_secret_basic") as client:
        old = (await client.fetch_token(meta["token_endpoint"], grant_type="client_credentials"))[
            "access_token"
        ]
        old_kid = jwt.get_unverified_header(old)["kid"]
        rotated = admin.post("/admin/v1/oauth/signing-keys/rotate")
        assert rotated.status_code == 200, rotated.text
        new_kid = rotated.json()["kid"]
        assert new_kid != old_kid
        new = (await client.fetch_token(meta["token_endpoint"], grant_type="client_credentials"))[
            "access_token"
        ]
    assert jwt.get_unverified_header(new)["kid"] == new_kid
    published = {k["kid"] for k in httpx.get(meta["jwks_uri"], timeout=10).json()["keys"]}
    assert {old_kid, new_kid} <= published
    for token in (old, new):
        claims = await asyncio.to_thread(verify_with_jwks, meta["jwks_uri"], token, meta["issuer"])
        assert claims["client_id"] == client_id
        assert accepted(gw, token)["x-consumer-id"] == "alice"
    keys = {k["kid"]: k for k in admin.get("/admin/v1/oauth/signing-keys").json()["items"]}
    assert keys[new_kid]["status"] == "active"
    assert keys[old_kid]["status"] == "retired"
    assert keys[old_kid]["remove_after"] is not None


def _dump(database_url: str) -> str:
    path = sqlite_file(database_url)
    assert path is not None
    with closing(sqlite3.connect(path)) as conn:
        return "\n".join(conn.iterdump())


def _private_material(database_url: str) -> list[str]:
    """Every text form a leaked signing key could take (decrypted here, with the test secret)."""
    secret = load_server_secret(os.environ["PORTCULLIS_SECRET_KEY"], Path())
    path = sqlite_file(database_url)
    assert path is not None
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT kid, private_key FROM signing_keys").fetchall()
    assert rows
    found = []
    for kid, blob in rows:
        der = secret.decrypt(blob, context=kid.encode())
        key = load_der_private_key(der, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        scalar = key.private_numbers().private_value.to_bytes(32, "big")
        found += [
            der.hex(),
            base64.b64encode(der).decode(),
            base64.urlsafe_b64encode(scalar).rstrip(b"=").decode(),
            scalar.hex(),
        ]
    return found


async def test_no_secret_token_or_private_key_reaches_the_store_logs_or_audit(
    tmp_path: Path, upstream: int
) -> None:
    with start(tmp_path, upstream, PORTCULLIS_LOG_LEVEL="info") as g, admin_client(g) as owner:
        meta = metadata(g)
        client_id, first_secret = register(owner)
        rotated = owner.post(f"/admin/v1/oauth-clients/{client_id}/rotate-secret")
        secret = rotated.json()["client_secret"]
        async with oauth(client_id, secret, "client_secret_basic") as client:
            access = (
                await client.fetch_token(meta["token_endpoint"], grant_type="client_credentials")
            )["access_token"]
            await client.introspect_token(meta["introspection_endpoint"], token=access)
            accepted(g, access)
            await client.revoke_token(meta["revocation_endpoint"], token=access)
        async with oauth(client_id, first_secret, "client_secret_post") as stale:
            with pytest.raises(OAuthError):
                await stale.fetch_token(meta["token_endpoint"], grant_type="client_credentials")
        assert owner.post("/admin/v1/oauth/signing-keys/rotate").status_code == 200
        audit = owner.get("/admin/v1/audit-events/export", params={"format": "jsonl"}).text
        assert client_id in audit
        g.process.send_signal(signal.SIGTERM)
        logs = g.process.communicate(timeout=30)[0].decode(errors="replace")
    store = _dump(g.database_url)
    assert client_id in store
    assert "signing_key.rotated" in logs  # the control plane's log was captured
    for haystack in (store, logs, audit):
        for value in (first_secret, secret, access):
            assert value not in haystack
        for material in _private_material(g.database_url):
            assert material not in haystack
        assert "PRIVATE KEY" not in haystack
