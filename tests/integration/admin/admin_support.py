"""Shared data of the admin API tests: the test password and the RBAC matrix tables."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.analytics.health import HEALTH_FORMAT
from portcullis.runtime.heartbeat import NodeHeartbeat
from portcullis.services.rbac import Role
from support.admin_session import TEST_PASSWORD_HASHER as TEST_PASSWORD_HASHER

PASSWORD = "correct horse battery staple"
# TEST_PASSWORD_HASHER (support/admin_session.py): the in-process `app` fixture hashes
# with it too, as nearly every admin test signs one in.
READ, WRITE = "config:read", "config:write"
# What the `client_for` fixture gives: a signed-in client for a role (and organization).
ClientFactory = Callable[..., Awaitable[httpx.AsyncClient]]

ENDPOINTS: list[tuple[str, str, str]] = []
for base in (
    "/admin/v1/services",
    "/admin/v1/upstreams",
    "/admin/v1/routes",
    "/admin/v1/consumers",
    "/admin/v1/plugins",
    "/admin/v1/plans",
    "/admin/v1/boosts",
    "/admin/v1/overrides",
    "/admin/v1/apis",
    "/admin/v1/certificates",
    "/admin/v1/upstreams/{upstream}/targets",
):
    ENDPOINTS += [
        ("GET", base, READ),
        ("POST", base, WRITE),
        ("GET", base + "/{id}", READ),
        ("PUT", base + "/{id}", WRITE),
        ("PATCH", base + "/{id}", WRITE),
        ("DELETE", base + "/{id}", WRITE),
    ]
ENDPOINTS += [
    ("GET", "/admin/v1/config", READ),
    ("PUT", "/admin/v1/config", WRITE),
    ("POST", "/admin/v1/config/diff", READ),
    ("GET", "/admin/v1/config/versions", READ),
    ("GET", "/admin/v1/config/versions/{version}", READ),
    ("POST", "/admin/v1/config/rollback", WRITE),
    ("GET", "/admin/v1/schemas/plugins", READ),
    ("GET", "/admin/v1/schemas/plugins/{name}", READ),
    ("GET", "/admin/v1/event-types", READ),
    ("POST", "/admin/v1/auth/login", "public"),
    ("POST", "/admin/v1/auth/refresh", "public"),
    ("POST", "/admin/v1/auth/logout", "public"),
    ("GET", "/admin/v1/auth/me", "authenticated"),
    ("POST", "/admin/v1/auth/password", "authenticated"),
    ("GET", "/admin/v1/admin-users", "admins:read"),
    ("POST", "/admin/v1/admin-users", "admins:write"),
    ("GET", "/admin/v1/admin-users/{user_id}", "admins:read"),
    ("PATCH", "/admin/v1/admin-users/{user_id}", "admins:write"),
    ("DELETE", "/admin/v1/admin-users/{user_id}", "admins:write"),
    ("POST", "/admin/v1/tokens", "tokens:write"),
    ("GET", "/admin/v1/tokens", "tokens:read"),
    ("DELETE", "/admin/v1/tokens/{token_id}", "tokens:write"),
    ("GET", "/admin/v1/organizations", "orgs:read"),
    ("POST", "/admin/v1/organizations", "orgs:write"),
    ("GET", "/admin/v1/organizations/{org_id}", "orgs:read"),
    ("PATCH", "/admin/v1/organizations/{org_id}", "orgs:write"),
    ("DELETE", "/admin/v1/organizations/{org_id}", "orgs:write"),
    ("GET", "/admin/v1/audit-events", "audit:read"),
    ("GET", "/admin/v1/audit-events/export", "audit:read"),
    ("POST", "/admin/v1/consumers/{username}/oauth-clients", "credentials:write"),
    ("GET", "/admin/v1/consumers/{username}/oauth-clients", "credentials:read"),
    ("GET", "/admin/v1/oauth-clients/{client_id}", "credentials:read"),
    ("PATCH", "/admin/v1/oauth-clients/{client_id}", "credentials:write"),
    ("DELETE", "/admin/v1/oauth-clients/{client_id}", "credentials:write"),
    ("POST", "/admin/v1/oauth-clients/{client_id}/rotate-secret", "credentials:write"),
    ("GET", "/admin/v1/oauth/signing-keys", "credentials:read"),
    ("POST", "/admin/v1/oauth/signing-keys/rotate", "credentials:write"),
    ("POST", "/admin/v1/consumers/{username}/keys", "credentials:write"),
    ("GET", "/admin/v1/consumers/{username}/keys", "credentials:read"),
    ("GET", "/admin/v1/keys", "credentials:read"),
    ("GET", "/admin/v1/keys/export", "credentials:read"),
    ("POST", "/admin/v1/keys/import", "credentials:write"),
    ("GET", "/admin/v1/keys/{key_id}", "credentials:read"),
    ("PATCH", "/admin/v1/keys/{key_id}", "credentials:write"),
    ("DELETE", "/admin/v1/keys/{key_id}", "credentials:write"),
    ("POST", "/admin/v1/keys/{key_id}/rotate", "credentials:write"),
    ("POST", "/admin/v1/keys/{key_id}/revoke", "credentials:write"),
    ("POST", "/admin/v1/keys/{key_id}/suspend", "credentials:write"),
    ("POST", "/admin/v1/keys/{key_id}/resume", "credentials:write"),
    ("GET", "/admin/v1/data-plane/nodes", READ),
    ("POST", "/admin/v1/apis/{api}/versions/{version}/sdk", READ),
    ("GET", "/admin/v1/consumers/{username}/usage", "credentials:read"),
    ("GET", "/admin/v1/keys/{key_id}/usage", "credentials:read"),
    ("DELETE", "/admin/v1/cache", WRITE),
    ("GET", "/admin/v1/analytics/usage", "analytics:read"),
    ("GET", "/admin/v1/analytics/usage/export", "analytics:read"),
    ("GET", "/admin/v1/analytics/top/endpoints", "analytics:read"),
    ("GET", "/admin/v1/analytics/top/consumers", "analytics:read"),
    ("GET", "/admin/v1/analytics/errors", "analytics:read"),
    ("GET", "/admin/v1/analytics/latency", "analytics:read"),
    ("GET", "/admin/v1/analytics/realtime", "analytics:read"),
    ("GET", "/admin/v1/analytics/live", "analytics:read"),
    ("GET", "/admin/v1/analytics/consumers/{consumer}/usage", "analytics:read"),
    ("GET", "/admin/v1/analytics/apis/{api}/versions", "analytics:read"),
    ("GET", "/admin/v1/analytics/apis/{api}/versions/{version}/callers", "analytics:read"),
    ("GET", "/admin/v1/data-plane/upstreams", READ),
    ("GET", "/admin/v1/alert-rules", "alerts:read"),
    ("POST", "/admin/v1/alert-rules", "alerts:write"),
    ("GET", "/admin/v1/alert-rules/{name}", "alerts:read"),
    ("PUT", "/admin/v1/alert-rules/{name}", "alerts:write"),
    ("PATCH", "/admin/v1/alert-rules/{name}", "alerts:write"),
    ("DELETE", "/admin/v1/alert-rules/{name}", "alerts:write"),
    ("GET", "/admin/v1/alerts", "alerts:read"),
    ("GET", "/admin/v1/anomalies", "alerts:read"),
    ("GET", "/admin/v1/events", "alerts:read"),
    ("GET", "/admin/v1/stream", "alerts:read"),
    ("POST", "/admin/v1/webhooks", "webhooks:write"),
    ("GET", "/admin/v1/webhooks", "webhooks:read"),
    ("GET", "/admin/v1/webhooks/deliveries", "webhooks:read"),
    ("GET", "/admin/v1/webhooks/{endpoint_id}", "webhooks:read"),
    ("PATCH", "/admin/v1/webhooks/{endpoint_id}", "webhooks:write"),
    ("DELETE", "/admin/v1/webhooks/{endpoint_id}", "webhooks:write"),
    ("POST", "/admin/v1/webhooks/{endpoint_id}/enable", "webhooks:write"),
    ("POST", "/admin/v1/webhooks/{endpoint_id}/disable", "webhooks:write"),
    ("POST", "/admin/v1/webhooks/{endpoint_id}/rotate-secret", "webhooks:write"),
    ("GET", "/admin/v1/webhooks/{endpoint_id}/deliveries", "webhooks:read"),
    ("GET", "/admin/v1/webhooks/{endpoint_id}/deliveries/export", "webhooks:read"),
    ("POST", "/admin/v1/webhooks/{endpoint_id}/deliveries/{message_id}/replay", "webhooks:write"),
    ("POST", "/admin/v1/webhooks/{endpoint_id}/replay-failed", "webhooks:write"),
    ("POST", "/admin/v1/webhooks/{endpoint_id}/test", "webhooks:write"),
    ("PUT", "/admin/v1/apis/{api}/versions/{version}/openapi", WRITE),
    ("GET", "/admin/v1/apis/{api}/versions/{version}/openapi", READ),
    ("GET", "/admin/v1/apis/{api}/diff", READ),
]
# basic-auth, hmac-auth and mtls-auth credentials (admin/routers/credentials.py).
for _kind in ("basic-auth", "hmac-auth", "mtls-auth"):
    _base = "/admin/v1/consumers/{username}/" + _kind
    ENDPOINTS += [
        ("POST", _base, "credentials:write"),
        ("GET", _base, "credentials:read"),
        ("GET", _base + "/{credential_id}", "credentials:read"),
        ("DELETE", _base + "/{credential_id}", "credentials:write"),
    ]
    if _kind != "mtls-auth":
        ENDPOINTS.append(("POST", _base + "/{credential_id}/rotate", "credentials:write"))

_EVERYTHING = {
    READ,
    WRITE,
    "audit:read",
    "admins:read",
    "admins:write",
    "credentials:read",
    "credentials:write",
    "tokens:read",
    "tokens:write",
    "orgs:read",
    "orgs:write",
    "analytics:read",
    "alerts:read",
    "alerts:write",
    "webhooks:read",
    "webhooks:write",
    "portal:read",
    "portal:write",
}
ROLE_GRANTS: dict[Role, set[str]] = {
    Role.OWNER: _EVERYTHING,
    Role.ADMIN: _EVERYTHING,
    Role.OPERATOR: {
        READ,
        WRITE,
        "audit:read",
        "orgs:read",
        "tokens:read",
        "tokens:write",
        "credentials:read",
        "credentials:write",
        "analytics:read",
        "alerts:read",
        "alerts:write",
        "webhooks:read",
        "webhooks:write",
        "portal:read",
        "portal:write",
    },
    Role.VIEWER: {
        READ,
        "audit:read",
        "orgs:read",
        "credentials:read",
        "analytics:read",
        "alerts:read",
        "webhooks:read",
        "portal:read",
    },
}


def concrete(path: str) -> str:
    """A request path for a route template (ids that do not exist: 404 is fine here)."""
    return (
        path.replace("{upstream}", "nope")
        .replace("{version}", "1")
        .replace("{api}", "nope")
        .replace("{id}", "nope")
        .replace("{user_id}", "nope")
        .replace("{token_id}", "nope")
        .replace("{org_id}", "nope")
        .replace("{username}", "nope")
        .replace("{key_id}", "nope")
        .replace("{client_id}", "nope")
        .replace("{credential_id}", "nope")
        .replace("{consumer}", "nope")
        .replace("{name}", "nope")
        .replace("{endpoint_id}", "nope")
        .replace("{message_id}", "nope")
        .replace("{api}", "nope")
        # A live stream never ends: an unknown kind makes an allowed caller's request a 422.
        .replace("/admin/v1/stream", "/admin/v1/stream?types=key.nope")
    )


def upstream_health_reporter(engine: AsyncEngine, upstreams: list[str]) -> NodeHeartbeat:
    """A data-plane worker's heartbeat reporting every upstream healthy (call `beat()`)."""
    report = {
        "v": HEALTH_FORMAT,
        "upstreams": {name: {"10.0.0.1:80": [True, "closed"]} for name in upstreams},
    }
    return NodeHeartbeat(
        engine, node_name="dp", version=lambda: 1, interval=5, health=lambda: json.dumps(report)
    )


@asynccontextmanager
async def signed_in(app: FastAPI, *, create: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    """A client of `app` signed in as the owner (created first unless `create` is off)."""
    async with app.router.lifespan_context(app):
        if create:
            await app.state.authenticator.create_user("o@example.com", PASSWORD, Role.OWNER)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
            login = await client.post(
                "/admin/v1/auth/login", json={"email": "o@example.com", "password": PASSWORD}
            )
            assert login.status_code == 200, login.text
            client.headers["authorization"] = f"Bearer {login.json()['access_token']}"
            yield client
