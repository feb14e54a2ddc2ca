"""Tenant isolation of the control plane (issue 12, items 1, 3, 5 and 6).

Organizations are referenced by id in the store, so a rename can't hand one
tenant's credentials to another; admin API tokens, the audit log and upstream
health are scoped to the caller's organization; audit events redact what the
models mark secret, whatever the key is called.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
from admin_support import upstream_health_reporter
from fastapi import FastAPI

from portcullis.services.rbac import Role

ClientFactory = Callable[..., Awaitable[httpx.AsyncClient]]  # the `client_for` fixture
SECRET = "Bearer s3cr3t-upstream-credential"


async def _created(client: httpx.AsyncClient, path: str, body: dict[str, object]) -> dict:  # type: ignore[type-arg]
    response = await client.post(path, json=body)
    assert response.status_code == 201, response.text
    data: dict = response.json()  # type: ignore[type-arg]
    return data


# ---------------------------------------------------------------------------- item 1


async def test_renaming_an_organization_keeps_its_keys_and_clients(
    owner: httpx.AsyncClient, client_for: ClientFactory, orgs: dict[str, str]
) -> None:
    """The attack: B is renamed, A takes B's old name, and A's admin goes after B's keys."""
    await _created(owner, "/admin/v1/consumers", {"username": "g-app", "organization": "globex"})
    key = await _created(owner, "/admin/v1/consumers/g-app/keys", {"name": "main"})
    client = await _created(owner, "/admin/v1/consumers/g-app/oauth-clients", {"name": "main"})
    assert key["organization"] == "globex"

    renamed = await owner.patch(f"/admin/v1/organizations/{orgs['globex']}", json={"name": "gx"})
    assert renamed.status_code == 200, renamed.text
    taken = await owner.patch(f"/admin/v1/organizations/{orgs['acme']}", json={"name": "globex"})
    assert taken.status_code == 200, taken.text

    acme = await client_for(Role.ADMIN, orgs["acme"])  # now called "globex"
    got = {}
    for method, path, body in (
        ("GET", f"/admin/v1/keys/{key['id']}", None),
        ("POST", f"/admin/v1/keys/{key['id']}/suspend", {"reason": "mine now"}),
        ("POST", f"/admin/v1/keys/{key['id']}/revoke", {"reason": "mine now"}),
        ("DELETE", f"/admin/v1/keys/{key['id']}", None),
        ("GET", f"/admin/v1/keys/{key['id']}/usage", None),
        ("GET", f"/admin/v1/oauth-clients/{client['client_id']}", None),
        ("PATCH", f"/admin/v1/oauth-clients/{client['client_id']}", {"status": "disabled"}),
        ("DELETE", f"/admin/v1/oauth-clients/{client['client_id']}", None),
    ):
        response = await acme.request(method, path, json=body)
        got[f"{method} {path}"] = response.status_code
    assert set(got.values()) == {404}, got
    assert (await acme.get("/admin/v1/keys")).json()["items"] == []
    assert (await acme.get("/admin/v1/keys?organization=globex")).json()["items"] == []
    assert key["id"] not in (await acme.get("/admin/v1/keys/export?format=jsonl")).text
    assert (await owner.get(f"/admin/v1/keys/{key['id']}")).json()["state"] == "active"
    shown = (await owner.get(f"/admin/v1/oauth-clients/{client['client_id']}")).json()
    assert shown["status"] == "active"

    # The keys and clients follow their organization: relabelled, same id.
    shown = (await owner.get(f"/admin/v1/keys/{key['id']}")).json()
    assert (shown["organization"], shown["organization_id"]) == ("gx", orgs["globex"])
    shown = (await owner.get(f"/admin/v1/oauth-clients/{client['client_id']}")).json()
    assert (shown["organization"], shown["organization_id"]) == ("gx", orgs["globex"])

    # globex's own admin still manages them under the new name.
    globex = await client_for(Role.ADMIN, orgs["globex"])
    assert [k["id"] for k in (await globex.get("/admin/v1/keys")).json()["items"]] == [key["id"]]
    suspended = await globex.post(f"/admin/v1/keys/{key['id']}/suspend", json={"reason": "ok"})
    assert suspended.status_code == 200, suspended.text


# ---------------------------------------------------------------------------- item 3


async def test_limited_admins_see_and_revoke_only_their_organizations_tokens(
    owner: httpx.AsyncClient, client_for: ClientFactory, orgs: dict[str, str]
) -> None:
    owners_token = await _created(
        owner, "/admin/v1/tokens", {"name": "owner-ci", "scopes": ["config:read"]}
    )
    globex_op = await client_for(Role.OPERATOR, orgs["globex"])
    globex_token = await _created(
        globex_op, "/admin/v1/tokens", {"name": "globex-ci", "scopes": ["config:read"]}
    )
    acme_op = await client_for(Role.OPERATOR, orgs["acme"])
    acme_token = await _created(
        acme_op, "/admin/v1/tokens", {"name": "acme-ci", "scopes": ["config:read"]}
    )
    acme_admin = await client_for(Role.ADMIN, orgs["acme"])

    listed = {t["id"] for t in (await acme_admin.get("/admin/v1/tokens")).json()["items"]}
    assert listed == {acme_token["id"]}
    for foreign in (owners_token, globex_token):
        revoked = await acme_admin.delete(f"/admin/v1/tokens/{foreign['id']}")
        assert revoked.status_code == 404, revoked.text
    everything = {t["id"]: t for t in (await owner.get("/admin/v1/tokens")).json()["items"]}
    assert everything[owners_token["id"]]["revoked_at"] is None
    assert everything[globex_token["id"]]["revoked_at"] is None
    # Within the organization, an admin still manages its users' tokens.
    assert (await acme_admin.delete(f"/admin/v1/tokens/{acme_token['id']}")).status_code == 204


# ---------------------------------------------------------------------------- item 5


async def test_audit_log_shows_limited_admins_only_their_organization(
    owner: httpx.AsyncClient, client_for: ClientFactory, orgs: dict[str, str]
) -> None:
    await _created(
        owner,
        "/admin/v1/consumers",
        {"username": "g-app", "organization": "globex", "metadata": {"contact": "cfo@globex"}},
    )
    globex = await client_for(Role.ADMIN, orgs["globex"])
    await _created(
        globex,
        "/admin/v1/admin-users",
        {
            "email": "hidden@globex.example",
            "password": "correct horse battery staple",
            "role": "viewer",
            "organization_id": orgs["globex"],
        },
    )
    acme = await client_for(Role.VIEWER, orgs["acme"])
    acme_admin = await client_for(Role.ADMIN, orgs["acme"])
    await _created(acme_admin, "/admin/v1/consumers", {"username": "a-app"})

    listed = await acme.get("/admin/v1/audit-events")
    assert listed.status_code == 200, listed.text
    for leak in ("cfo@globex", "hidden@globex.example", "g-app"):
        assert leak not in listed.text
    items = listed.json()["items"]
    # Their consumer, and their organization's creation.
    assert [e["resource_id"] for e in items] == ["a-app", orgs["acme"]]
    assert {e["organization_id"] for e in items} == {orgs["acme"]}
    for fmt in ("jsonl", "csv"):
        export = await acme.get(f"/admin/v1/audit-events/export?format={fmt}")
        assert export.status_code == 200
        for leak in ("cfo@globex", "hidden@globex.example", "g-app"):
            assert leak not in export.text, fmt
    filtered = await acme.get("/admin/v1/audit-events?resource_id=g-app")
    assert filtered.json()["items"] == []
    # globex's admin sees globex's events; the owner sees everything.
    theirs = (await globex.get("/admin/v1/audit-events")).json()["items"]
    assert {e["resource_id"] for e in theirs} >= {"g-app"}
    assert "a-app" not in {e["resource_id"] for e in theirs}
    assert len((await owner.get("/admin/v1/audit-events")).json()["items"]) >= 5


async def test_audit_redacts_what_the_models_mark_secret(owner: httpx.AsyncClient) -> None:
    await _created(owner, "/admin/v1/services", {"name": "svc", "url": "http://127.0.0.1:1"})
    plugin = await _created(
        owner,
        "/admin/v1/plugins",
        {
            "name": "request-transformer",
            "service": "svc",
            "config": {
                "headers": {"set": {"Authorization": SECRET, "X-Env": "prod"}},
                "query": {"add": {"api_key": "q-s3cr3t"}},
                "body": {"set": {"client.credentials": "b-s3cr3t"}},
            },
        },
    )
    jwt = {
        "name": "jwt-auth",
        "service": "svc",
        "config": {"keys": [{"kid": "k1", "algorithm": "HS256", "secret": "h" * 40}]},
    }
    await _created(owner, "/admin/v1/plugins", jwt)
    changed = await owner.patch(
        f"/admin/v1/plugins/{plugin['id']}",
        json={"config": {"headers": {"set": {"Authorization": SECRET + "-2", "X-Env": "prod"}}}},
    )
    assert changed.status_code == 200, changed.text
    exported = (await owner.get("/admin/v1/config")).json()
    exported["services"][0]["tags"] = ["imported"]  # a whole-config import records it all
    replaced = await owner.put("/admin/v1/config", json=exported)
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["created"] is True

    events = await owner.get("/admin/v1/audit-events?limit=100")
    export = await owner.get("/admin/v1/audit-events/export?format=csv")
    for text in (events.text, export.text):
        for secret in ("s3cr3t", "h" * 40):
            assert secret not in text
    update = next(
        e
        for e in events.json()["items"]
        if e["resource_type"] == "plugin" and e["action"] == "update"
    )
    # The change still shows, as a change of a secret; header names stay readable.
    assert {
        "path": "/config/headers/set/Authorization",
        "old": "[redacted]",
        "new": "[redacted]",
    } in update["diff"]["changes"]
    assert update["diff"]["after"]["config"]["headers"]["set"] == {
        "Authorization": "[redacted]",
        "X-Env": "[redacted]",
    }
    created = next(
        e
        for e in events.json()["items"]
        if e["resource_type"] == "plugin"
        and e["resource_id"] == plugin["id"]
        and e["action"] == "create"
    )
    assert created["diff"]["after"]["config"]["query"]["add"] == {"api_key": "[redacted]"}
    assert created["diff"]["after"]["service"] == "svc"


# ---------------------------------------------------------------------------- item 6


async def test_upstream_health_and_name_conflicts_do_not_leak_other_tenants(
    app: FastAPI, owner: httpx.AsyncClient, client_for: ClientFactory, orgs: dict[str, str]
) -> None:
    for org, prefix in (("acme", "a"), ("globex", "g")):
        await _created(
            owner,
            "/admin/v1/upstreams",
            {
                "name": f"{prefix}-up",
                "organization": org,
                "targets": [{"target": "10.0.0.1:80"}],
            },
        )
        await _created(
            owner,
            "/admin/v1/services",
            {"name": f"{prefix}-svc", "url": "http://10.0.0.2", "organization": org},
        )
    upstreams = ["a-svc@url", "a-up", "g-svc@url", "g-up"]
    beat = upstream_health_reporter(app.state.admin.engine, upstreams)
    assert await beat.beat()

    everything = (await owner.get("/admin/v1/data-plane/upstreams")).json()
    assert [u["name"] for u in everything["upstreams"]] == upstreams
    acme = await client_for(Role.VIEWER, orgs["acme"])
    mine = await acme.get("/admin/v1/data-plane/upstreams")
    assert mine.status_code == 200, mine.text
    assert [u["name"] for u in mine.json()["upstreams"]] == ["a-svc@url", "a-up"]

    # A name taken by another tenant: refused (names are gateway-wide), without saying
    # that it exists or whose it is.
    operator = await client_for(Role.OPERATOR, orgs["acme"])
    taken = await operator.post("/admin/v1/services", json={"name": "g-svc", "url": "http://x"})
    assert taken.status_code == 409
    detail = taken.json()["detail"]
    assert "not available" in detail
    assert "exists" not in detail
    assert "globex" not in taken.text
    own = await operator.post("/admin/v1/services", json={"name": "a-svc", "url": "http://x"})
    assert own.status_code == 409
    assert own.json()["detail"] == detail.replace("g-svc", "a-svc")
