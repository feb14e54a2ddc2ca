"""The tenant-isolation matrix: two organizations, every role, every admin endpoint.

Each organization ("alpha", "bravo") owns one of every resource: gateway entities,
an API key, an OAuth client, an admin user, an API token, upstream health. An
admin limited to one organization, in each role, calls every endpoint of the app
aimed at the *other* organization (its ids in the path, its names in filters and
bodies) and the test asserts no cross-tenant effect:

- `ITEM`: the other tenant's resource answers 403/404 (never 2xx), whatever the method;
- `CREATE`: creating into (or referring to) the other tenant is refused;
- `LIST`: listing, filtering and exporting answer without the other tenant's names;
- `UNLIMITED`: deployment-wide operations are 403 for limited admins;
- `OWN`/`GLOBAL`: the caller's own things / data of no tenant: no other tenant's names;
- `PUBLIC`: sign-in endpoints, nothing of a tenant to isolate.

Afterwards the other tenant's state, as an unlimited owner sees it, is unchanged.
Controls make the test able to fail: the owner's reads of the same requests do
return the other tenant's data. Like the RBAC matrix beside it, the table must
list every route the app has (read from the app's route table), so an endpoint
added without a declared isolation expectation fails here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from admin_support import upstream_health_reporter
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy import select

from portcullis.proxy.inspector import write_exchanges
from portcullis.runtime.captures import CapturedExchange
from portcullis.runtime.heartbeat import NodeHeartbeat
from portcullis.services.rbac import Role
from portcullis.store.inspector_tables import CapturedExchangeRow
from support.tls import CertificateAuthority

ClientFactory = Callable[..., Awaitable[httpx.AsyncClient]]  # the `client_for` fixture
ORGS = ("alpha", "bravo")
_CA = CertificateAuthority()
CERTS = {o: _CA.issue(f"{o}.example.test") for o in (*ORGS, "x")}
MERGE_PATCH = {"content-type": "application/merge-patch+json"}
RULE = {"name": "rule", "kind": "error_rate", "threshold": 0.5, "window_seconds": 60}


@dataclass(frozen=True)
class Expect:
    kind: str  # ITEM, CREATE, LIST, STREAM, UNLIMITED, OWN, GLOBAL, PUBLIC
    # LIST: query strings to try (filters aimed at the other tenant); "" is the plain list.
    # STREAM: a live stream (never ends): only the queries aimed at the other tenant are
    # tried, and must be refused as not found (test_event_stream checks what flows).
    queries: tuple[str, ...] = ("",)
    # The owner's response to the same request shows the other tenant (the control).
    control: bool = False


ITEM, CREATE, UNLIMITED, OWN, GLOBAL, PUBLIC = (
    Expect("ITEM"),
    Expect("CREATE"),
    Expect("UNLIMITED"),
    Expect("OWN"),
    Expect("GLOBAL"),
    Expect("PUBLIC"),
)
ITEM_READ = Expect("ITEM", control=True)


def LIST(*queries: str, control: bool = True) -> Expect:
    return Expect("LIST", ("", *queries), control)


# The OpenAPI description of each tenant's API version (the catalogue's reads need one).
DESCRIPTION: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "tenant api", "version": "1"},
    "paths": {"/items": {"get": {"responses": {"200": {"description": "the items"}}}}},
}

ENTITY_FILTERS = {
    "services": ("?upstream={o}-up",),
    "upstreams": (),
    "routes": ("?service={o}-svc",),
    "consumers": (),
    "plugins": ("?route={o}-route",),
    "plans": (),
    "boosts": (),
    "overrides": ("?consumer={o}-app",),
    "apis": (),
    "certificates": (),
}
TABLE: dict[tuple[str, str], Expect] = {}
for _collection, _filters in ENTITY_FILTERS.items():
    _base = f"/admin/v1/{_collection}"
    TABLE |= {
        ("GET", _base): LIST("?organization={o}", *_filters),
        ("POST", _base): CREATE,
        ("GET", _base + "/{id}"): ITEM_READ,
        ("PUT", _base + "/{id}"): ITEM,
        ("PATCH", _base + "/{id}"): ITEM,
        ("DELETE", _base + "/{id}"): ITEM,
    }
_targets = "/admin/v1/upstreams/{upstream}/targets"
TABLE |= {
    ("GET", _targets): ITEM_READ,  # the other tenant's upstream: 404 as a whole
    ("POST", _targets): ITEM,
    ("GET", _targets + "/{id}"): ITEM_READ,
    ("PUT", _targets + "/{id}"): ITEM,
    ("PATCH", _targets + "/{id}"): ITEM,
    ("DELETE", _targets + "/{id}"): ITEM,
    ("GET", "/admin/v1/config"): LIST(control=True),
    ("PUT", "/admin/v1/config"): UNLIMITED,
    ("POST", "/admin/v1/config/diff"): UNLIMITED,
    ("GET", "/admin/v1/config/versions"): UNLIMITED,
    ("GET", "/admin/v1/config/versions/{version}"): UNLIMITED,
    ("POST", "/admin/v1/config/rollback"): UNLIMITED,
    ("POST", "/admin/v1/auth/login"): PUBLIC,
    ("POST", "/admin/v1/auth/refresh"): PUBLIC,
    ("POST", "/admin/v1/auth/logout"): PUBLIC,
    ("GET", "/admin/v1/auth/me"): OWN,
    ("POST", "/admin/v1/auth/password"): OWN,
    ("GET", "/admin/v1/schemas/plugins"): GLOBAL,
    ("GET", "/admin/v1/schemas/plugins/{name}"): GLOBAL,
    ("GET", "/admin/v1/event-types"): GLOBAL,
    ("GET", "/admin/v1/admin-users"): LIST(),
    ("POST", "/admin/v1/admin-users"): CREATE,
    ("GET", "/admin/v1/admin-users/{user_id}"): ITEM_READ,
    ("PATCH", "/admin/v1/admin-users/{user_id}"): ITEM,
    ("DELETE", "/admin/v1/admin-users/{user_id}"): ITEM,
    ("POST", "/admin/v1/tokens"): OWN,
    ("GET", "/admin/v1/tokens"): LIST(),
    ("DELETE", "/admin/v1/tokens/{token_id}"): ITEM,
    ("GET", "/admin/v1/organizations"): LIST(),
    ("POST", "/admin/v1/organizations"): UNLIMITED,
    ("GET", "/admin/v1/organizations/{org_id}"): ITEM_READ,
    ("PATCH", "/admin/v1/organizations/{org_id}"): ITEM,
    ("DELETE", "/admin/v1/organizations/{org_id}"): ITEM,
    ("GET", "/admin/v1/audit-events"): LIST("?resource_id={o}-svc", "?resource_type=consumer"),
    ("GET", "/admin/v1/audit-events/export"): LIST("?format=csv", "?resource_id={o}-app"),
    ("POST", "/admin/v1/consumers/{username}/oauth-clients"): ITEM,
    ("GET", "/admin/v1/consumers/{username}/oauth-clients"): ITEM_READ,
    ("GET", "/admin/v1/oauth-clients/{client_id}"): ITEM_READ,
    ("PATCH", "/admin/v1/oauth-clients/{client_id}"): ITEM,
    ("DELETE", "/admin/v1/oauth-clients/{client_id}"): ITEM,
    ("POST", "/admin/v1/oauth-clients/{client_id}/rotate-secret"): ITEM,
    # basic-auth, hmac-auth and mtls-auth credentials (admin/routers/credentials.py).
    **{
        entry: expect
        for kind in ("basic-auth", "hmac-auth", "mtls-auth")
        for entry, expect in (
            (("POST", f"/admin/v1/consumers/{{username}}/{kind}"), ITEM),
            (("GET", f"/admin/v1/consumers/{{username}}/{kind}"), ITEM_READ),
            (("GET", f"/admin/v1/consumers/{{username}}/{kind}/{{credential_id}}"), ITEM_READ),
            (("DELETE", f"/admin/v1/consumers/{{username}}/{kind}/{{credential_id}}"), ITEM),
            (("POST", f"/admin/v1/consumers/{{username}}/{kind}/{{credential_id}}/rotate"), ITEM),
        )
        if not (kind == "mtls-auth" and entry[1].endswith("/rotate"))
    },
    ("GET", "/admin/v1/oauth/signing-keys"): GLOBAL,
    ("POST", "/admin/v1/oauth/signing-keys/rotate"): UNLIMITED,
    ("POST", "/admin/v1/consumers/{username}/keys"): ITEM,
    ("GET", "/admin/v1/consumers/{username}/keys"): ITEM_READ,
    ("GET", "/admin/v1/keys"): LIST("?organization={o}", "?consumer={o}-app"),
    ("GET", "/admin/v1/keys/export"): LIST("?organization={o}", "?format=jsonl"),
    ("POST", "/admin/v1/keys/import"): CREATE,
    ("GET", "/admin/v1/keys/{key_id}"): ITEM_READ,
    ("PATCH", "/admin/v1/keys/{key_id}"): ITEM,
    ("DELETE", "/admin/v1/keys/{key_id}"): ITEM,
    ("POST", "/admin/v1/keys/{key_id}/rotate"): ITEM,
    ("POST", "/admin/v1/keys/{key_id}/revoke"): ITEM,
    ("POST", "/admin/v1/keys/{key_id}/suspend"): ITEM,
    ("POST", "/admin/v1/keys/{key_id}/resume"): ITEM,
    ("GET", "/admin/v1/data-plane/nodes"): GLOBAL,
    # The other tenant's API (its version v1 exists): not found, not a 409 about its document.
    ("POST", "/admin/v1/apis/{api}/versions/{version}/sdk"): ITEM,
    ("GET", "/admin/v1/apis/{api}/versions/{version}/openapi"): ITEM_READ,
    ("PUT", "/admin/v1/apis/{api}/versions/{version}/openapi"): ITEM,
    ("GET", "/admin/v1/apis/{api}/diff"): ITEM_READ,
    ("GET", "/admin/v1/data-plane/upstreams"): Expect("LIST", ("",), control=True),
    ("GET", "/admin/v1/consumers/{username}/usage"): ITEM_READ,
    ("GET", "/admin/v1/keys/{key_id}/usage"): ITEM_READ,
    ("DELETE", "/admin/v1/cache"): Expect("CREATE"),  # a purge of the other's route: refused
    # Analytics: no traffic in this world, so the owner's answers are empty too (no control).
    ("GET", "/admin/v1/analytics/usage"): LIST(
        "?route={o}-route", "?consumer={o}-app", control=False
    ),
    ("GET", "/admin/v1/analytics/usage/export"): LIST("?consumer={o}-app", control=False),
    ("GET", "/admin/v1/analytics/top/endpoints"): LIST("?service={o}-svc", control=False),
    ("GET", "/admin/v1/analytics/top/consumers"): LIST("?route={o}-route", control=False),
    ("GET", "/admin/v1/analytics/errors"): LIST("?route={o}-route", control=False),
    ("GET", "/admin/v1/analytics/latency"): LIST("?route={o}-route", control=False),
    ("GET", "/admin/v1/analytics/realtime"): LIST(control=False),
    ("GET", "/admin/v1/analytics/live"): LIST(control=False),
    ("GET", "/admin/v1/analytics/consumers/{consumer}/usage"): Expect("LIST", ("",)),
    ("GET", "/admin/v1/analytics/apis/{api}/versions"): ITEM_READ,
    ("GET", "/admin/v1/analytics/apis/{api}/versions/{version}/callers"): ITEM_READ,
    ("GET", "/admin/v1/alert-rules"): UNLIMITED,
    ("POST", "/admin/v1/alert-rules"): UNLIMITED,
    ("GET", "/admin/v1/alert-rules/{name}"): UNLIMITED,
    ("PUT", "/admin/v1/alert-rules/{name}"): UNLIMITED,
    ("PATCH", "/admin/v1/alert-rules/{name}"): UNLIMITED,
    ("DELETE", "/admin/v1/alert-rules/{name}"): UNLIMITED,
    ("GET", "/admin/v1/alerts"): UNLIMITED,
    ("GET", "/admin/v1/anomalies"): UNLIMITED,
    # A limited admin reads its organization's events (key, consumer, quota), no other's.
    ("GET", "/admin/v1/events"): LIST(
        "?limit=200", "?subject=consumer:{o}-app&limit=200", "?kind=consumer.created&limit=200"
    ),
    ("GET", "/admin/v1/stream"): Expect("STREAM", ("?organization={o}",)),
    ("POST", "/admin/v1/webhooks"): CREATE,
    ("GET", "/admin/v1/webhooks"): LIST("?organization={o}", "?event_type=key.revoked"),
    # Deliveries name endpoints, not organizations: test_admin_webhooks checks them by id.
    ("GET", "/admin/v1/webhooks/deliveries"): LIST("?event_type=webhook.test", control=False),
    ("GET", "/admin/v1/webhooks/{endpoint_id}"): ITEM_READ,
    ("PATCH", "/admin/v1/webhooks/{endpoint_id}"): ITEM,
    ("DELETE", "/admin/v1/webhooks/{endpoint_id}"): ITEM,
    ("POST", "/admin/v1/webhooks/{endpoint_id}/enable"): ITEM,
    ("POST", "/admin/v1/webhooks/{endpoint_id}/disable"): ITEM,
    ("POST", "/admin/v1/webhooks/{endpoint_id}/rotate-secret"): ITEM,
    ("GET", "/admin/v1/webhooks/{endpoint_id}/deliveries"): ITEM_READ,
    ("GET", "/admin/v1/webhooks/{endpoint_id}/deliveries/export"): ITEM_READ,
    ("POST", "/admin/v1/webhooks/{endpoint_id}/deliveries/{message_id}/replay"): ITEM,
    ("POST", "/admin/v1/webhooks/{endpoint_id}/replay-failed"): ITEM,
    ("POST", "/admin/v1/webhooks/{endpoint_id}/test"): ITEM,
    # The request inspector: each tenant's route has a capture with one exchange.
    ("POST", "/admin/v1/routes/{route}/captures"): ITEM,
    ("GET", "/admin/v1/routes/{route}/captures"): ITEM_READ,
    ("GET", "/admin/v1/routes/{route}/captures/{capture_id}"): ITEM_READ,
    ("POST", "/admin/v1/routes/{route}/captures/{capture_id}/stop"): ITEM,
    ("GET", "/admin/v1/routes/{route}/captures/{capture_id}/exchanges"): ITEM_READ,
    ("GET", "/admin/v1/inspector/exchanges/{exchange_id}"): ITEM_READ,
    # The developer portal's operator side. Developers are deployment-wide: only an
    # unlimited admin manages them. Applications and access requests are scoped to their
    # API's organization; this world holds none (the portal's own matrix,
    # tests/integration/portal/test_portal_isolation.py, makes them), so these rows check
    # the refusals and that nothing of the other tenant is listed.
    ("GET", "/admin/v1/portal/developers"): UNLIMITED,
    ("POST", "/admin/v1/portal/developers/{developer_id}/suspend"): UNLIMITED,
    ("POST", "/admin/v1/portal/developers/{developer_id}/resume"): UNLIMITED,
    ("GET", "/admin/v1/portal/applications"): LIST(control=False),
    ("GET", "/admin/v1/portal/access-requests"): LIST("?status=approved", control=False),
    ("POST", "/admin/v1/portal/access-requests/{request_id}/approve"): ITEM,
    ("POST", "/admin/v1/portal/access-requests/{request_id}/reject"): ITEM,
}


def test_table_covers_every_admin_route(app: FastAPI) -> None:
    """Read from the app's route table: a new endpoint must declare its isolation."""
    routes = {
        (method, context.path)
        for context in iter_route_contexts(app.routes)
        if isinstance(context.original_route, APIRoute) and context.path.startswith("/admin/v1")
        for method in context.methods or ()
        if method != "HEAD"
    }
    assert routes, "no admin routes found"
    missing = routes - set(TABLE)
    assert not missing, f"endpoints without an isolation expectation: {sorted(missing)}"
    assert set(TABLE) <= routes, f"stale entries: {sorted(set(TABLE) - routes)}"


# ---------------------------------------------------------------------------- the world


@dataclass
class World:
    org_ids: dict[str, str]
    # per organization: placeholder -> value (ids of its resources)
    ids: dict[str, dict[str, str]]
    plugins: dict[str, str]
    beat: NodeHeartbeat


async def _ok(response: httpx.Response) -> Any:
    assert response.status_code in (200, 201, 202, 204), response.text
    return response.json() if response.content else None


async def _captured(app: FastAPI, capture_id: str, route: str, consumer: str) -> int:
    """The id of one exchange stored for the capture (as a data-plane worker writes it)."""
    exchange = CapturedExchange(
        capture_id, route, time.time(), "rid", "GET", f"/{route}", "", [], [], 200, 1.0,
        consumer, None, None, None, None, None,
    )  # fmt: skip
    engine = app.state.admin.engine
    assert await write_exchanges(engine, [exchange], lambda: datetime.now(UTC)) == 1
    async with engine.connect() as conn:
        found = await conn.scalar(
            select(CapturedExchangeRow.id).where(CapturedExchangeRow.session_id == capture_id)
        )
    return int(found)


async def _build(app: FastAPI, owner: httpx.AsyncClient, client_for: ClientFactory) -> World:
    org_ids = {}
    for org in ORGS:
        org_ids[org] = (await _ok(await owner.post("/admin/v1/organizations", json={"name": org})))[
            "id"
        ]
    ids: dict[str, dict[str, str]] = {}
    plugins: dict[str, str] = {}
    for o in ORGS:
        for path, body in (
            ("upstreams", {"name": f"{o}-up", "targets": [{"target": "10.0.0.1:80"}]}),
            ("services", {"name": f"{o}-svc", "upstream": f"{o}-up"}),
            ("routes", {"name": f"{o}-route", "service": f"{o}-svc", "paths": [f"/{o}"]}),
            ("plans", {"name": f"{o}-plan", "limits": [{"limit": 10, "period": "1s"}]}),
            ("consumers", {"username": f"{o}-app", "plan": f"{o}-plan",
                           "metadata": {"contact": f"{o}-contact"}}),
            ("boosts", {"name": f"{o}-boost", "multiplier": 2, "target": {"consumer": f"{o}-app"},
                        "local": {"date": "2027-12-31", "start": "10:00", "end": "11:00",
                                  "timezone": "UTC"}}),
            ("overrides", {"name": f"{o}-override", "consumer": f"{o}-app", "multiplier": 2,
                           "expires_at": "2027-12-01T00:00:00Z", "reason": f"{o} launch"}),
            ("apis", {"name": f"{o}-api", "versions": [{"name": "v1", "routes": [f"{o}-route"],
                                                        "openapi": DESCRIPTION}]}),
            ("certificates", {"name": f"{o}-cert", "cert": CERTS[o].cert, "key": CERTS[o].key,
                              "snis": [f"{o}.example.test"]}),
        ):  # fmt: skip
            await _ok(await owner.post(f"/admin/v1/{path}", json={**body, "organization": o}))
        plugin = await _ok(
            await owner.post(
                "/admin/v1/plugins",
                json={
                    "name": "request-size-limit",
                    "route": f"{o}-route",
                    "organization": o,
                    "config": {"max_bytes": 1024},
                },
            )
        )
        key = await _ok(await owner.post(f"/admin/v1/consumers/{o}-app/keys", json={"name": o}))
        hook = await _ok(
            await owner.post(
                "/admin/v1/webhooks",
                json={
                    "url": f"https://{o}.hooks.invalid/in",
                    "event_types": ["key.*"],
                    "description": f"{o} hook",
                    "organization": o,
                    "consumer": f"{o}-app",
                },
            )
        )
        test = await _ok(await owner.post(f"/admin/v1/webhooks/{hook['id']}/test"))
        client = await _ok(
            await owner.post(f"/admin/v1/consumers/{o}-app/oauth-clients", json={"name": o})
        )
        credentials = {
            kind: (await _ok(await owner.post(f"/admin/v1/consumers/{o}-app/{kind}", json=body)))[
                "id"
            ]
            for kind, body in (
                ("basic-auth", {}),
                ("hmac-auth", {}),
                ("mtls-auth", {"match": f"dns:{o}.clients.example"}),
            )
        }
        user = await _ok(
            await owner.post(
                "/admin/v1/admin-users",
                json={
                    "email": f"{o}-user@example.com",
                    "password": "correct horse battery staple",
                    "role": "operator",
                    "organization_id": org_ids[o],
                },
            )
        )
        member: httpx.AsyncClient = await client_for(Role.OPERATOR, org_ids[o])
        token = await _ok(
            await member.post(
                "/admin/v1/tokens", json={"name": f"{o}-ci", "scopes": ["config:read"]}
            )
        )
        capture = await _ok(
            await owner.post(f"/admin/v1/routes/{o}-route/captures", json={"max_count": 5})
        )
        exchange = await _captured(app, capture["id"], f"{o}-route", f"{o}-app")
        ids[o] = {
            "{route}": f"{o}-route",
            "{capture_id}": capture["id"],
            "{exchange_id}": str(exchange),
            "{upstream}": f"{o}-up",
            "{username}": f"{o}-app",
            "{consumer}": f"{o}-app",
            "{key_id}": key["id"],
            "{client_id}": client["client_id"],
            "{user_id}": user["id"],
            "{token_id}": token["id"],
            "{org_id}": org_ids[o],
            "{endpoint_id}": hook["id"],
            "{message_id}": test["message_id"],
            "{api}": f"{o}-api",
            **{f"{{{kind}}}": cid for kind, cid in credentials.items()},
        }
        plugins[o] = plugin["id"]
    await _ok(await owner.post("/admin/v1/alert-rules", json=RULE))
    beat = upstream_health_reporter(app.state.admin.engine, [f"{o}-up" for o in ORGS])
    assert await beat.beat()
    return World(org_ids, ids, plugins, beat)


ENTITY_IDS = {
    "services": "{o}-svc",
    "upstreams": "{o}-up",
    "routes": "{o}-route",
    "consumers": "{o}-app",
    "plans": "{o}-plan",
    "boosts": "{o}-boost",
    "overrides": "{o}-override",
    "apis": "{o}-api",
    "certificates": "{o}-cert",
}


def _path(template: str, world: World, o: str) -> str:
    path = template
    for kind in ("basic-auth", "hmac-auth", "mtls-auth"):
        if f"/{kind}/{{credential_id}}" in path:
            path = path.replace("{credential_id}", world.ids[o][f"{{{kind}}}"])
    for placeholder, value in world.ids[o].items():
        path = path.replace(placeholder, quote(value, safe=""))
    if "/targets/{id}" in path:
        return path.replace("{id}", "10.0.0.1:80")
    if template.startswith(("/admin/v1/apis/{api}/", "/admin/v1/analytics/apis/{api}/")):
        path = path.replace("{version}", "v1")
        if template.endswith("/sdk"):
            return path + "?lang=python"
        return path + "?base=v1&head=v1" if template.endswith("/diff") else path
    collection = template.split("/")[3]
    if "{id}" in path:
        entity = world.plugins[o] if collection == "plugins" else ENTITY_IDS[collection]
        path = path.replace("{id}", quote(entity.format(o=o), safe=""))
    return path.replace("{version}", "1").replace("{name}", "rule")


async def _request(
    client: httpx.AsyncClient, owner: httpx.AsyncClient, method: str, template: str, path: str,
    world: World, o: str,
) -> httpx.Response:  # fmt: skip
    """The request a tenant's admin would make to reach the other tenant `o`."""
    if method in ("GET", "DELETE"):
        if template == "/admin/v1/cache":
            return await client.delete(path, params={"route": f"{o}-route"})
        return await client.request(method, path)
    if template == "/admin/v1/keys/import":
        csv = f"consumer,name\r\n{o}-app,stolen\r\n"
        return await client.post(path, content=csv, headers={"content-type": "text/csv"})
    if template.endswith("/versions/{version}/openapi"):
        return await client.put(
            path, json={**DESCRIPTION, "info": {"title": "pwned", "version": "1"}}
        )
    if template == "/admin/v1/alert-rules/{name}" and method == "PUT":
        return await client.put(path, json={k: v for k, v in RULE.items() if k != "name"})
    plugin = template.startswith("/admin/v1/plugins")
    change: dict[str, Any] = {"enabled": False} if plugin else {"tags": ["pwned"]}
    if method == "PUT":
        current = (await owner.get(path)).json()  # a valid replacement of the other's entity
        current.pop("id", None)
        return await client.put(path, json={**current, **change})
    if method == "PATCH":
        body: dict[str, Any] = {"name": "pwned"}
        if template.startswith("/admin/v1/admin-users"):
            body = {"disabled": True}
        elif template.endswith("/targets/{id}"):
            body = {"weight": 7}
        elif not template.startswith(("/admin/v1/keys", "/admin/v1/oauth", "/admin/v1/org")):
            body = change
        return await client.patch(path, content=json.dumps(body), headers=MERGE_PATCH)
    # POST: create into the other tenant, or act on its resource.
    collection = template.split("/")[3]
    creates: dict[str, dict[str, Any]] = {
        "services": {"name": "x-svc", "url": "http://x", "organization": o},
        "upstreams": {"name": "x-up", "targets": [{"target": "10.0.0.9:80"}], "organization": o},
        "routes": {"name": "x-route", "service": f"{o}-svc", "paths": ["/x"]},
        "consumers": {"username": "x-app", "organization": o},
        "plugins": {"name": "request-size-limit", "route": f"{o}-route",
                    "config": {"max_bytes": 1}},
        "plans": {"name": "x-plan", "limits": [{"limit": 1, "period": "1s"}], "organization": o},
        "boosts": {"name": "x-boost", "multiplier": 2, "target": {"consumer": f"{o}-app"},
                   "local": {"date": "2027-12-31", "start": "10:00", "end": "11:00",
                             "timezone": "UTC"}},
        "overrides": {"name": "x-override", "consumer": f"{o}-app", "multiplier": 9,
                      "expires_at": "2027-12-01T00:00:00Z", "reason": "x"},
        "apis": {"name": "x-api", "versions": [{"name": "v1"}], "organization": o},
        "certificates": {"name": "x-cert", "cert": CERTS["x"].cert, "key": CERTS["x"].key,
                         "organization": o},
        "admin-users": {"email": "x@example.com", "password": "correct horse battery staple",
                        "role": "viewer", "organization_id": world.org_ids[o]},
        "upstreams/targets": {"target": "10.0.0.9:80"},
        "webhooks": {"url": "https://x.hooks.invalid/", "event_types": ["*"], "organization": o},
    }  # fmt: skip
    if template.endswith("/targets"):
        return await client.post(path, json=creates["upstreams/targets"])
    # Valid bodies, so the answer is about who may call, not about the body.
    valid: dict[str, dict[str, Any]] = {
        "/admin/v1/organizations": {"name": "x-org"},
        "/admin/v1/alert-rules": RULE,
        "/admin/v1/config/rollback": {"version": 1},
    }
    if template in valid:
        return await client.post(path, json=valid[template])
    if template == f"/admin/v1/{collection}" and collection in creates:
        return await client.post(path, json=creates[collection])
    body = {"reason": "pwned"} if template.endswith(("/revoke", "/suspend", "/reject")) else {}
    if template.endswith(("/keys", "/oauth-clients")):
        body = {"name": "stolen"}
    if template.endswith("/mtls-auth"):
        body = {"match": "dns:stolen.example"}
    return await client.post(path, json=body)


async def _tenant_state(owner: httpx.AsyncClient, world: World, o: str) -> dict[str, Any]:
    """Everything of organization `o`, as an unlimited owner reads it."""
    config = (await owner.get("/admin/v1/config")).json()
    users = (await owner.get("/admin/v1/admin-users?limit=200")).json()["items"]
    tokens = (await owner.get("/admin/v1/tokens?limit=200")).json()["items"]
    members = {u["id"] for u in users if u["organization_id"] == world.org_ids[o]}
    return {
        "entities": {
            name: [e for e in value if isinstance(e, dict) and e.get("organization") == o]
            for name, value in config.items()
            if isinstance(value, list)
        },
        "keys": (await owner.get(f"/admin/v1/keys?organization={o}")).json()["items"],
        "clients": (await owner.get(f"/admin/v1/consumers/{o}-app/oauth-clients")).json(),
        "credentials": [
            (await owner.get(f"/admin/v1/consumers/{o}-app/{kind}")).json()
            for kind in ("basic-auth", "hmac-auth", "mtls-auth")
        ],
        "users": [u for u in users if u["id"] in members],
        "tokens": [t for t in tokens if t["user_id"] in members],
        "organization": (await owner.get(f"/admin/v1/organizations/{world.org_ids[o]}")).json(),
        # Without the run of failures, which the delivery worker moves on its own.
        "webhooks": [
            {k: v for k, v in hook.items() if k != "failing_since"}
            for hook in (await owner.get(f"/admin/v1/webhooks?organization={o}")).json()["items"]
        ],
    }


ROLES = (Role.OWNER, Role.ADMIN, Role.OPERATOR, Role.VIEWER)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("mine", "theirs"), [ORGS, tuple(reversed(ORGS))])
async def test_no_cross_tenant_effect(
    app: FastAPI,
    owner: httpx.AsyncClient,
    client_for: ClientFactory,
    role: Role,
    mine: str,
    theirs: str,
) -> None:
    world = await _build(app, owner, client_for)
    before = await _tenant_state(owner, world, theirs)
    client = await client_for(role, world.org_ids[mine])
    failures: list[str] = []
    controls = 0
    for (method, template), expect in sorted(TABLE.items()):
        if expect.kind == "PUBLIC":
            continue
        path = _path(template, world, theirs)
        queries = expect.queries if expect.kind in ("LIST", "STREAM") else ("",)
        for query in queries:
            url = path + query.format(o=theirs)
            if template == "/admin/v1/data-plane/upstreams":
                assert await world.beat.beat()  # fresh health reports for this read
            response = await _request(client, owner, method, template, url, world, theirs)
            status, where = response.status_code, f"{method} {url}"
            if status >= 500:
                failures.append(f"{where}: {status} {response.text[:200]}")
            elif expect.kind == "ITEM" and status not in (403, 404):
                failures.append(f"{where}: expected 403/404, got {status}")
            elif expect.kind == "CREATE" and status not in (403, 404, 422):
                failures.append(f"{where}: expected a refusal, got {status} {response.text[:200]}")
            elif expect.kind == "STREAM" and status != 404:
                failures.append(f"{where}: expected 404, got {status} {response.text[:200]}")
            elif expect.kind == "UNLIMITED" and status != 403:
                failures.append(f"{where}: expected 403, got {status}")
            elif status < 300 and theirs in response.text:
                failures.append(f"{where}: {status} shows {theirs!r}: {response.text[:300]}")
            if expect.control and method == "GET":
                # The same request by the owner does reach the other tenant's data.
                seen = await owner.get(url)
                shown = expect.kind != "LIST" or theirs in seen.text
                if seen.status_code != 200 or not shown:
                    failures.append(f"control {where}: the owner gets {seen.status_code}")
                controls += 1
    after = await _tenant_state(owner, world, theirs)
    assert not failures, "\n".join(failures)
    assert controls >= 30
    assert after == before
