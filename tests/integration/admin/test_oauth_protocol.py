"""The OAuth2 endpoints of the control plane, in process: RFC 6749 errors, scopes, RFC 9068
claims, RFC 7662 introspection and RFC 7009 revocation rules, brute-force protection.

The same flows against a real server, with authlib and PyJWT's PyJWKClient, and through
the data plane, are in tests/integration/identity/test_oauth_server.py.
"""

from __future__ import annotations

import base64
import time
import warnings
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI

from portcullis.identity.oauth_server import OAuthServer

with warnings.catch_warnings():
    # authlib warns that it found httpx rather than its successor httpx2; httpx is what we use.
    from authlib.deprecate import AuthlibDeprecationWarning

    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.base_client import OAuthError
    from authlib.integrations.httpx_client import AsyncOAuth2Client

ISSUER = "https://gateway.example.test"
AUDIENCE = "orders-api"
BASE = "http://admin"


@pytest.fixture(autouse=True)
def oauth_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read when the app starts (issuer) and on first OAuth use (the rest)."""
    monkeypatch.setenv("PORTCULLIS_OAUTH_ISSUER", ISSUER)
    monkeypatch.setenv("PORTCULLIS_OAUTH_AUDIENCE", AUDIENCE)
    monkeypatch.setenv("PORTCULLIS_OAUTH_CLIENT_FAILURE_LIMIT", "3")


async def consumer(owner: httpx.AsyncClient, username: str = "acme") -> None:
    response = await owner.post("/admin/v1/consumers", json={"username": username})
    assert response.status_code == 201, response.text


async def register(
    owner: httpx.AsyncClient, username: str = "acme", **body: Any
) -> tuple[str, str]:
    response = await owner.post(
        f"/admin/v1/consumers/{username}/oauth-clients", json={"name": "svc", **body}
    )
    assert response.status_code == 201, response.text
    return response.json()["client_id"], response.json()["client_secret"]


def oauth_client(app: FastAPI, client_id: str, secret: str, method: str) -> AsyncOAuth2Client:
    return AsyncOAuth2Client(
        client_id,
        secret,
        token_endpoint_auth_method=method,
        revocation_endpoint_auth_method=method,
        transport=httpx.ASGITransport(app=app),
        base_url=BASE,
    )


def basic(client_id: str, secret: str) -> dict[str, str]:
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"authorization": f"Basic {raw}"}


def oauth_error(response: httpx.Response, status: int, error: str) -> str:
    """Check an RFC 6749 §5.2 error response; returns its description."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"
    body = response.json()
    assert body["error"] == error, body
    assert set(body) == {"error", "error_description"}
    description: str = body["error_description"]
    return description


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
async def test_authlib_fetches_rfc9068_tokens_with_both_auth_methods(
    owner: httpx.AsyncClient, app: FastAPI, method: str
) -> None:
    await consumer(owner)
    client_id, secret = await register(owner, allowed_scopes=["orders:read", "orders:write"])
    async with oauth_client(app, client_id, secret, method) as client:
        token = await client.fetch_token(f"{BASE}/oauth/token", grant_type="client_credentials")
    assert token["token_type"] == "Bearer"
    assert token["expires_in"] == 3600
    assert token["scope"] == "orders:read orders:write"
    access = token["access_token"]
    header = jwt.get_unverified_header(access)
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "ES256"
    keys = (await owner.get("/.well-known/jwks.json")).json()["keys"]
    (jwk,) = [k for k in keys if k["kid"] == header["kid"]]
    claims = jwt.decode(
        access,
        jwt.PyJWK(jwk).key,
        algorithms=["ES256"],
        audience=AUDIENCE,
        issuer=ISSUER,
        options={"require": ["iss", "sub", "aud", "exp", "iat", "jti", "client_id"]},
    )
    assert claims["sub"] == "acme"
    assert claims["client_id"] == client_id
    assert claims["scope"] == "orders:read orders:write"
    assert claims["exp"] - claims["iat"] == 3600
    assert abs(claims["iat"] - time.time()) < 60


async def test_token_responses_are_never_cached_and_jtis_are_unique(
    owner: httpx.AsyncClient,
) -> None:
    await consumer(owner)
    client_id, secret = await register(owner, token_ttl=120)
    jtis = set()
    for _ in range(3):
        response = await owner.post(
            "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
        )
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store"
        assert response.json()["expires_in"] == 120
        assert "scope" not in response.json()  # the client has no scopes
        claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
        assert "scope" not in claims
        jtis.add(claims["jti"])
    assert len(jtis) == 3


async def test_scopes_are_limited_to_what_the_client_is_allowed(
    owner: httpx.AsyncClient, app: FastAPI
) -> None:
    await consumer(owner)
    client_id, secret = await register(owner, allowed_scopes=["orders:read", "orders:write"])
    async with oauth_client(app, client_id, secret, "client_secret_post") as client:
        narrow = await client.fetch_token(
            f"{BASE}/oauth/token", grant_type="client_credentials", scope="orders:read"
        )
        assert narrow["scope"] == "orders:read"
        assert jwt.decode(narrow["access_token"], options={"verify_signature": False})["scope"] == (
            "orders:read"
        )
        with pytest.raises(OAuthError) as refused:
            await client.fetch_token(
                f"{BASE}/oauth/token",
                grant_type="client_credentials",
                scope="orders:read admin",
            )
    assert refused.value.error == "invalid_scope"
    assert refused.value.description is not None
    assert "admin" in refused.value.description
    raw = await owner.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": "orders:delete"},
        auth=(client_id, secret),
    )
    assert "orders:delete" in oauth_error(raw, 400, "invalid_scope")


async def test_protocol_errors_follow_rfc6749(owner: httpx.AsyncClient, app: FastAPI) -> None:
    await consumer(owner)
    client_id, secret = await register(owner)
    grant = {"grant_type": "client_credentials"}

    unauthenticated = await owner.post("/oauth/token", data=grant)
    oauth_error(unauthenticated, 401, "invalid_client")
    assert unauthenticated.headers["www-authenticate"].startswith('Basic realm="portcullis"')
    wrong = await owner.post("/oauth/token", data=grant, auth=(client_id, "pcs_wrong"))
    oauth_error(wrong, 401, "invalid_client")
    unknown = await owner.post("/oauth/token", data=grant, auth=("pcc_" + "0" * 24, secret))
    oauth_error(unknown, 401, "invalid_client")
    bearer = await owner.post("/oauth/token", data=grant, headers={"authorization": "Bearer x"})
    oauth_error(bearer, 401, "invalid_client")

    password_grant = await owner.post(
        "/oauth/token", data={"grant_type": "password"}, auth=(client_id, secret)
    )
    oauth_error(password_grant, 400, "unsupported_grant_type")
    no_grant = await owner.post("/oauth/token", data={}, auth=(client_id, secret))
    oauth_error(no_grant, 400, "invalid_request")
    as_json = await owner.post("/oauth/token", json=grant, auth=(client_id, secret))
    oauth_error(as_json, 400, "invalid_request")
    repeated = await owner.post(
        "/oauth/token",
        content="grant_type=client_credentials&grant_type=client_credentials",
        headers={"content-type": "application/x-www-form-urlencoded", **basic(client_id, secret)},
    )
    assert "repeated" in oauth_error(repeated, 400, "invalid_request")
    two_methods = await owner.post(
        "/oauth/token", data={**grant, "client_secret": secret}, auth=(client_id, secret)
    )
    oauth_error(two_methods, 400, "invalid_request")
    huge = await owner.post(
        "/oauth/token", data={**grant, "pad": "x" * 20_000}, auth=(client_id, secret)
    )
    oauth_error(huge, 400, "invalid_request")
    # Form-encoded Basic credentials (RFC 6749 §2.3.1) are decoded.
    encoded = await owner.post(
        "/oauth/token", data=grant, headers=basic(client_id, secret.replace("_", "%5F"))
    )
    assert encoded.status_code == 200, encoded.text


async def test_repeated_failures_lock_the_client_id_from_that_address(
    owner: httpx.AsyncClient, app: FastAPI
) -> None:
    await consumer(owner)
    target, secret = await register(owner)
    bystander, bystander_secret = await register(owner)
    grant = {"grant_type": "client_credentials"}
    for _ in range(3):
        failed = await owner.post("/oauth/token", data=grant, auth=(target, "pcs_guess"))
        oauth_error(failed, 401, "invalid_client")
    locked = await owner.post("/oauth/token", data=grant, auth=(target, secret))
    oauth_error(locked, 429, "invalid_client")
    assert 1 <= int(locked.headers["retry-after"]) <= 300
    introspection = await owner.post(
        "/oauth/introspect", data={"token": "x"}, auth=(target, secret)
    )
    assert introspection.status_code == 429
    other = await owner.post("/oauth/token", data=grant, auth=(bystander, bystander_secret))
    assert other.status_code == 200
    # Whoever knows the client id can't lock the client out from another address.
    elsewhere = httpx.ASGITransport(app=app, client=("203.0.113.9", 40000))
    async with httpx.AsyncClient(transport=elsewhere, base_url=BASE) as client:
        legitimate = await client.post("/oauth/token", data=grant, auth=(target, secret))
    assert legitimate.status_code == 200, legitimate.text


async def test_disabled_clients_and_suspended_consumers_get_no_tokens(
    owner: httpx.AsyncClient,
) -> None:
    await consumer(owner)
    client_id, secret = await register(owner)
    grant = {"grant_type": "client_credentials"}
    issued = await owner.post("/oauth/token", data=grant, auth=(client_id, secret))
    token = issued.json()["access_token"]

    async def active() -> bool:
        response = await owner.post(
            "/oauth/introspect", data={"token": token}, auth=(client_id, secret)
        )
        assert response.status_code == 200
        return bool(response.json()["active"])

    assert await active()
    await owner.patch(f"/admin/v1/oauth-clients/{client_id}", json={"status": "disabled"})
    refused = await owner.post("/oauth/token", data=grant, auth=(client_id, secret))
    assert "disabled" in oauth_error(refused, 400, "unauthorized_client")
    assert not await active()
    await owner.patch(f"/admin/v1/oauth-clients/{client_id}", json={"status": "active"})
    assert await active()
    suspended = await owner.patch("/admin/v1/consumers/acme", json={"status": "suspended"})
    assert suspended.status_code == 200, suspended.text
    refused = await owner.post("/oauth/token", data=grant, auth=(client_id, secret))
    assert "suspended" in oauth_error(refused, 400, "unauthorized_client")
    assert not await active()


async def test_introspection_and_revocation_see_only_the_callers_own_tokens(
    owner: httpx.AsyncClient, app: FastAPI
) -> None:
    await consumer(owner)
    await consumer(owner, "other")
    client_id, secret = await register(owner, allowed_scopes=["orders:read"])
    other_id, other_secret = await register(owner, "other")
    async with (
        oauth_client(app, client_id, secret, "client_secret_basic") as mine,
        oauth_client(app, other_id, other_secret, "client_secret_post") as theirs,
    ):
        token = (await mine.fetch_token(f"{BASE}/oauth/token", grant_type="client_credentials"))[
            "access_token"
        ]
        url = f"{BASE}/oauth/introspect"
        seen = await mine.introspect_token(url, token=token)
        assert seen.status_code == 200
        assert seen.headers["cache-control"] == "no-store"
        body = seen.json()
        assert body["active"] is True
        assert body["client_id"] == client_id
        assert body["sub"] == body["username"] == "acme"
        assert body["scope"] == "orders:read"
        assert body["token_type"] == "Bearer"
        assert body["iss"] == ISSUER
        assert body["aud"] == AUDIENCE
        assert body["exp"] > time.time()
        assert (await theirs.introspect_token(url, token=token)).json() == {"active": False}
        for junk in ("not-a-jwt", token[:-4] + "AAAA", token.replace(".", "x", 1)):
            assert (await mine.introspect_token(url, token=junk)).json() == {"active": False}

        revoke = f"{BASE}/oauth/revoke"
        foreign = await theirs.revoke_token(revoke, token=token)
        assert foreign.status_code == 200
        assert (await mine.introspect_token(url, token=token)).json()["active"] is True
        revoked = await mine.revoke_token(revoke, token=token, token_type_hint="access_token")
        assert revoked.status_code == 200
        assert revoked.headers["cache-control"] == "no-store"
        assert (await mine.introspect_token(url, token=token)).json() == {"active": False}
        assert (await mine.revoke_token(revoke, token=token)).status_code == 200
        assert (await mine.revoke_token(revoke, token="unknown")).status_code == 200

    missing = await owner.post("/oauth/revoke", data={}, auth=(client_id, secret))
    oauth_error(missing, 400, "invalid_request")
    anonymous_revoke = await owner.post("/oauth/revoke", data={"token": token})
    oauth_error(anonymous_revoke, 401, "invalid_client")
    anonymous_introspect = await owner.post("/oauth/introspect", data={"token": token})
    oauth_error(anonymous_introspect, 401, "invalid_client")


async def test_expired_and_foreign_tokens_are_inactive(
    owner: httpx.AsyncClient, app: FastAPI
) -> None:
    await consumer(owner)
    client_id, secret = await register(owner)
    await owner.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
    )
    server: OAuthServer = app.state.oauth_server
    signer = await server.keys.signer()
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "sub": "acme",
        "aud": AUDIENCE,
        "client_id": client_id,
        "iat": now - 120,
        "exp": now - 60,
        "jti": "expired",
    }
    headers = {"kid": signer.kid, "typ": "at+jwt"}
    expired = jwt.encode(claims, signer.key, algorithm="ES256", headers=headers)
    wrong_issuer = jwt.encode(
        {**claims, "exp": now + 60, "iss": "https://evil.test"},
        signer.key,
        algorithm="ES256",
        headers=headers,
    )
    wrong_typ = jwt.encode(
        {**claims, "exp": now + 60}, signer.key, algorithm="ES256", headers={"kid": signer.kid}
    )
    for token in (expired, wrong_issuer, wrong_typ):
        response = await owner.post(
            "/oauth/introspect", data={"token": token}, auth=(client_id, secret)
        )
        assert response.json() == {"active": False}


async def test_metadata_document(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get("/.well-known/oauth-authorization-server")
    assert response.status_code == 200
    assert response.headers["cache-control"].startswith("public")
    meta = response.json()
    assert meta["issuer"] == ISSUER
    assert meta["token_endpoint"] == f"{ISSUER}/oauth/token"
    assert meta["jwks_uri"] == f"{ISSUER}/.well-known/jwks.json"
    assert meta["introspection_endpoint"] == f"{ISSUER}/oauth/introspect"
    assert meta["revocation_endpoint"] == f"{ISSUER}/oauth/revoke"
    assert meta["grant_types_supported"] == ["client_credentials"]
    assert meta["response_types_supported"] == []
    for field in (
        "token_endpoint_auth_methods_supported",
        "introspection_endpoint_auth_methods_supported",
        "revocation_endpoint_auth_methods_supported",
    ):
        assert meta[field] == ["client_secret_basic", "client_secret_post"]
