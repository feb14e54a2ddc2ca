"""DELETE /admin/v1/cache on the admin app: the purge event, the audit entry, scoping."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from portcullis.cache import PurgeScope
from portcullis.services.rbac import Role
from portcullis.services.state import AdminState
from portcullis.store.identity_tables import IdentityEventRow

ClientFactory = Callable[..., Awaitable[httpx.AsyncClient]]


async def purge_events(app: FastAPI) -> list[str]:
    state: AdminState = app.state.admin
    async with state.engine.connect() as conn:
        rows = await conn.execute(
            select(IdentityEventRow.subject)
            .where(IdentityEventRow.kind == "cache-purge")
            .order_by(IdentityEventRow.seq)
        )
        return list(rows.scalars())


async def test_purges_append_one_event_and_one_audit_entry(
    app: FastAPI, owner: httpx.AsyncClient
) -> None:
    everything = await owner.delete("/admin/v1/cache")
    assert everything.status_code == 202, everything.text
    assert everything.json() == {
        "route": None,
        "path": None,
        "path_prefix": None,
        "backend": "memory",
        "deleted": None,
    }
    by_path = await owner.delete(
        "/admin/v1/cache", params={"route": "orders", "path": "/orders/caf\u00e9"}
    )
    assert by_path.status_code == 202, by_path.text
    prefix = await owner.delete("/admin/v1/cache", params={"path_prefix": "/orders/"})
    assert prefix.status_code == 202, prefix.text
    subjects = await purge_events(app)
    assert [PurgeScope.from_subject(s) for s in subjects] == [
        PurgeScope(),
        PurgeScope.of(route="orders", path="/orders/caf\u00e9"),
        PurgeScope.of(path_prefix="/orders/"),
    ]
    audit = await owner.get("/admin/v1/audit-events", params={"resource_type": "cache"})
    items = audit.json()["items"]
    assert len(items) == 3
    assert {i["action"] for i in items} == {"purge"}
    assert {i["resource_id"] for i in items} == {None, "orders"}
    assert {i["status"] for i in items} == {202}


async def test_invalid_purges_are_refused_without_an_event(
    app: FastAPI, owner: httpx.AsyncClient, client_for: ClientFactory
) -> None:
    for params in (
        {"path": "/a", "path_prefix": "/a"},
        {"path": "relative"},
        {"route": "bad name"},
    ):
        refused = await owner.delete("/admin/v1/cache", params=params)
        assert refused.status_code == 422, (params, refused.text)
        assert refused.headers["content-type"] == "application/problem+json"
    viewer = await client_for(Role.VIEWER)
    assert (await viewer.delete("/admin/v1/cache")).status_code == 403
    assert await purge_events(app) == []


async def test_organization_admins_purge_only_their_routes(
    app: FastAPI, owner: httpx.AsyncClient, client_for: ClientFactory
) -> None:
    ids = {}
    for name in ("acme", "globex"):
        created = await owner.post("/admin/v1/organizations", json={"name": name})
        assert created.status_code == 201, created.text
        ids[name] = created.json()["id"]
    for body in (
        {"name": "svc", "url": "http://upstream.test"},
        {"name": "a-route", "service": "svc", "paths": ["/a"], "organization": "acme"},
        {"name": "g-route", "service": "svc", "paths": ["/g"], "organization": "globex"},
    ):
        path = "/admin/v1/routes" if "paths" in body else "/admin/v1/services"
        created = await owner.post(path, json=body)
        assert created.status_code == 201, created.text
    acme = await client_for(Role.OPERATOR, ids["acme"])
    assert (await acme.delete("/admin/v1/cache")).status_code == 403
    assert (await acme.delete("/admin/v1/cache", params={"path": "/a"})).status_code == 403
    foreign = await acme.delete("/admin/v1/cache", params={"route": "g-route"})
    assert foreign.status_code == 404
    own = await acme.delete("/admin/v1/cache", params={"route": "a-route", "path": "/a/1"})
    assert own.status_code == 202, own.text
    assert await purge_events(app) == [PurgeScope.of(route="a-route", path="/a/1").subject()]
