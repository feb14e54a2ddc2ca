"""Admin API for API keys: lifecycle, conditions, import/export, tenancy, secrecy."""

from __future__ import annotations

import csv
import io
import json
import logging
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from admin_support import PASSWORD
from fastapi import FastAPI
from sqlalchemy import text

from portcullis.identity.events import EventKind, IdentityEventFeed
from portcullis.identity.key_repository import KeyRepository
from portcullis.identity.keys import Environment, generate_key, parse_key
from portcullis.services.admin_auth import AuthService
from portcullis.services.rbac import Role

PROBLEM = "application/problem+json"
FUTURE = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)


async def consumer(
    client: httpx.AsyncClient, username: str, organization: str | None = None
) -> None:
    body: dict[str, str] = {"username": username}
    if organization is not None:
        body["organization"] = organization
    response = await client.post("/admin/v1/consumers", json=body)
    assert response.status_code == 201, response.text


async def create_key(client: httpx.AsyncClient, username: str = "acme", **body: object) -> dict:  # type: ignore[type-arg]
    response = await client.post(
        f"/admin/v1/consumers/{username}/keys", json={"name": "main", **body}
    )
    assert response.status_code == 201, response.text
    data: dict = response.json()  # type: ignore[type-arg]
    return data


async def dump_store(app: FastAPI) -> str:
    out = []
    async with app.state.admin.engine.connect() as conn:
        names = await conn.run_sync(lambda c: c.dialect.get_table_names(c))
        for name in names:
            rows = (await conn.execute(text(f'SELECT * FROM "{name}"'))).all()
            out.append(f"{name}: {rows!r}")
    return "\n".join(out)


async def test_create_show_and_list(owner: httpx.AsyncClient, app: FastAPI) -> None:
    await consumer(owner, "acme")
    response = await owner.post(
        "/admin/v1/consumers/acme/keys",
        json={
            "name": "checkout",
            "environment": "staging",
            "scopes": ["orders:read", "orders:write"],
            "expires_at": FUTURE.isoformat(),
            "allowed_origins": ["HTTPS://App.Example.com:443"],
            "ip_allowlist": ["203.0.113.0/24", "2001:db8::/32"],
            "plan": "gold",
            "metadata": {"team": "payments", "tier": 2},
        },
    )
    assert response.status_code == 201, response.text
    created = response.json()
    key = created.pop("key")
    parsed = parse_key(key)
    assert parsed is not None
    assert parsed.id == created["id"]
    assert parsed.environment is Environment.staging
    assert response.headers["location"] == f"/admin/v1/keys/{created['id']}"
    assert response.headers["cache-control"] == "no-store"
    assert key.startswith(created["prefix"] + "_")
    assert created["allowed_origins"] == ["https://app.example.com"]
    assert created["state"] == "active"
    assert created["created_by"] == "user:owner-0@example.com"

    shown = await owner.get(f"/admin/v1/keys/{created['id']}")
    assert shown.status_code == 200
    assert shown.json() == created
    assert "key" not in shown.json()
    assert key not in shown.text
    assert shown.headers["etag"] == response.headers["etag"]

    # The data plane finds the record by the key's hash.
    repo = KeyRepository(app.state.admin.engine, app.state.admin.secret)
    record = await repo.find_by_hash(app.state.admin.secret.hash_credential(key))
    assert record is not None
    assert record.scopes == frozenset({"orders:read", "orders:write"})

    for path in ("/admin/v1/keys", "/admin/v1/consumers/acme/keys"):
        listed = await owner.get(path)
        assert listed.status_code == 200
        assert listed.json() == {"items": [created], "next": None}
    missing = await owner.get("/admin/v1/keys/nope")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == PROBLEM

    # The display prefix lists show names the key as the CLI accepts it; a whole key in
    # a URL is refused without being echoed.
    by_prefix = await owner.get(f"/admin/v1/keys/{created['prefix']}")
    assert by_prefix.status_code == 200, by_prefix.text
    assert by_prefix.json() == created
    suspended = await owner.post(
        f"/admin/v1/keys/{created['prefix']}/suspend", json={"reason": "by prefix"}
    )
    assert suspended.status_code == 200, suspended.text
    assert suspended.json()["state"] == "suspended"
    whole = await owner.get(f"/admin/v1/keys/{key}")
    assert whole.status_code == 400
    assert whole.headers["content-type"] == PROBLEM
    assert created["id"] in whole.json()["detail"]
    assert key not in whole.text


async def test_pagination_filters_and_sort(owner: httpx.AsyncClient) -> None:
    await consumer(owner, "acme")
    await consumer(owner, "globex")
    ids = []
    for i in range(5):
        ids.append((await create_key(owner, "acme" if i % 2 else "globex", name=f"k{i}"))["id"])
    seen = []
    url: str | None = "/admin/v1/keys?limit=2&sort=name"
    while url is not None:
        page = await owner.get(url)
        assert page.status_code == 200, page.text
        body = page.json()
        seen += [k["name"] for k in body["items"]]
        if body["next"] is not None:
            assert page.headers["link"] == f'<{body["next"]}>; rel="next"'
        url = body["next"]
    assert seen == ["k0", "k1", "k2", "k3", "k4"]
    newest = await owner.get("/admin/v1/keys?limit=1")
    assert newest.json()["items"][0]["id"] == ids[-1]

    acme = (await owner.get("/admin/v1/keys?consumer=acme")).json()["items"]
    assert sorted(k["name"] for k in acme) == ["k1", "k3"]
    await owner.post(f"/admin/v1/keys/{ids[0]}/suspend", json={"reason": "test"})
    suspended = (await owner.get("/admin/v1/keys?status=suspended")).json()["items"]
    assert [k["id"] for k in suspended] == [ids[0]]
    by_name = (await owner.get("/admin/v1/consumers/globex/keys?name=k2")).json()["items"]
    assert [k["id"] for k in by_name] == [ids[2]]
    assert (await owner.get("/admin/v1/keys?environment=staging")).json()["items"] == []

    bad_sort = await owner.get("/admin/v1/keys?sort=key_hash")
    assert bad_sort.status_code == 422
    bad_cursor = await owner.get("/admin/v1/keys?cursor=xyz")
    assert bad_cursor.status_code == 400
    assert bad_cursor.json()["type"].endswith("/invalid-cursor")
    other_sort = await owner.get(
        "/admin/v1/keys?sort=-name&cursor="
        + (await owner.get("/admin/v1/keys?limit=1&sort=name")).json()["next"].split("cursor=")[1]
    )
    assert other_sort.status_code == 400
    unknown_filter = await owner.get("/admin/v1/keys?colour=red")
    assert unknown_filter.status_code == 422
    assert (await owner.get("/admin/v1/consumers/ghost/keys")).status_code == 404


async def test_invalid_input_is_a_422_naming_the_field(owner: httpx.AsyncClient) -> None:
    await consumer(owner, "acme")
    cases = [
        ({"ip_allowlist": ["10.0.0.1/8"]}, "#/ip_allowlist", "did you mean 10.0.0.0/8"),
        ({"ip_allowlist": ["not-an-ip"]}, "#/ip_allowlist", "not an IP network"),
        ({"allowed_origins": ["https://x.example/path"]}, "#/allowed_origins", "not an origin"),
        ({"scopes": ["has space"]}, "#/scopes", "not a scope"),
        ({"expires_at": "2020-01-01T00:00:00Z"}, "#/expires_at", "in the future"),
        ({"expires_at": "2030-01-01T00:00:00"}, "#/expires_at", "timezone"),
        ({"environment": "prod"}, "#/environment", ""),
        ({"hash": "x"}, "#/hash", ""),
    ]
    for extra, pointer, detail in cases:
        response = await owner.post("/admin/v1/consumers/acme/keys", json={"name": "k", **extra})
        assert response.status_code == 422, (extra, response.text)
        assert response.headers["content-type"] == PROBLEM
        errors = response.json()["errors"]
        assert errors[0]["pointer"] == pointer, errors
        assert detail in errors[0]["detail"], errors
    unknown = await owner.post("/admin/v1/consumers/ghost/keys", json={"name": "k"})
    assert unknown.status_code == 404
    assert "ghost" in unknown.json()["detail"]
    assert (await owner.get("/admin/v1/keys")).json()["items"] == []


async def test_patch_with_if_match_and_merge_patch(owner: httpx.AsyncClient, app: FastAPI) -> None:
    await consumer(owner, "acme")
    created = await create_key(owner, scopes=["a"], metadata={"team": "x", "keep": True})
    key_id = created["id"]
    etag = (await owner.get(f"/admin/v1/keys/{key_id}")).headers["etag"]

    # Traffic on the key (last_used_at) does not change its ETag.
    repo = KeyRepository(app.state.admin.engine, app.state.admin.secret)
    await repo.touch_used({key_id: datetime.now(UTC)})
    used = await owner.get(f"/admin/v1/keys/{key_id}")
    assert used.json()["last_used_at"] is not None
    assert used.headers["etag"] == etag

    patched = await owner.patch(
        f"/admin/v1/keys/{key_id}",
        json={"scopes": ["b", "c"], "metadata": {"team": None, "new": 1}, "plan": "silver"},
        headers={"If-Match": etag, "Content-Type": "application/merge-patch+json"},
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["scopes"] == ["b", "c"]
    assert body["metadata"] == {"keep": True, "new": 1}
    assert body["plan"] == "silver"
    assert patched.headers["etag"] != etag
    stale = await owner.patch(
        f"/admin/v1/keys/{key_id}", json={"name": "x"}, headers={"If-Match": etag}
    )
    assert stale.status_code == 412
    fixed = await owner.patch(f"/admin/v1/keys/{key_id}", json={"environment": "development"})
    assert fixed.status_code == 422
    assert fixed.json()["errors"][0]["pointer"] == "#/environment"
    bad = await owner.patch(f"/admin/v1/keys/{key_id}", json={"ip_allowlist": ["::1/129"]})
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["pointer"] == "#/ip_allowlist"
    assert (await owner.patch("/admin/v1/keys/nope", json={"name": "x"})).status_code == 404


async def test_rotate_suspend_resume_revoke_delete(owner: httpx.AsyncClient, app: FastAPI) -> None:
    await consumer(owner, "acme")
    created = await create_key(owner, scopes=["s"])
    old_id = created["id"]
    etag = (await owner.get(f"/admin/v1/keys/{old_id}")).headers["etag"]
    assert (
        await owner.post(f"/admin/v1/keys/{old_id}/rotate", json={}, headers={"If-Match": '"x"'})
    ).status_code == 412
    rotated = await owner.post(
        f"/admin/v1/keys/{old_id}/rotate", json={"grace_seconds": 3600}, headers={"If-Match": etag}
    )
    assert rotated.status_code == 201, rotated.text
    body = rotated.json()
    new_key = body.pop("key")
    previous = body.pop("previous")
    assert parse_key(new_key) is not None
    assert rotated.headers["location"] == f"/admin/v1/keys/{body['id']}"
    assert rotated.headers["cache-control"] == "no-store"
    assert body["rotated_from"] == old_id
    assert body["scopes"] == ["s"]
    assert previous["replaced_by"] == body["id"]
    assert previous["state"] == "grace"
    grace_until = datetime.fromisoformat(previous["grace_until"])
    assert timedelta(minutes=59) < grace_until - datetime.now(UTC) <= timedelta(hours=1)
    again = await owner.post(f"/admin/v1/keys/{old_id}/rotate", json={})
    assert again.status_code == 409
    assert again.json()["type"].endswith("/key-state-conflict")
    now = await owner.post(f"/admin/v1/keys/{body['id']}/rotate", json={"grace_seconds": 0})
    assert now.json()["previous"]["state"] == "replaced"
    too_long = await owner.post(
        f"/admin/v1/keys/{now.json()['id']}/rotate", json={"grace_seconds": 10**9}
    )
    assert too_long.status_code == 422

    key_id = now.json()["id"]
    no_reason = await owner.post(f"/admin/v1/keys/{key_id}/suspend", json={})
    assert no_reason.status_code == 422
    suspended = await owner.post(f"/admin/v1/keys/{key_id}/suspend", json={"reason": "unpaid"})
    assert suspended.status_code == 200
    assert (suspended.json()["status"], suspended.json()["status_reason"]) == (
        "suspended",
        "unpaid",
    )
    assert (
        await owner.post(f"/admin/v1/keys/{key_id}/suspend", json={"reason": "x"})
    ).status_code == 409
    resumed = await owner.post(
        f"/admin/v1/keys/{key_id}/resume", headers={"If-Match": suspended.headers["etag"]}
    )
    assert resumed.status_code == 200
    assert resumed.json()["state"] == "active"
    assert (await owner.post(f"/admin/v1/keys/{key_id}/resume")).status_code == 409
    revoked = await owner.post(f"/admin/v1/keys/{key_id}/revoke", json={"reason": "leaked"})
    assert revoked.json()["state"] == "revoked"
    assert (await owner.patch(f"/admin/v1/keys/{key_id}", json={"name": "x"})).status_code == 409

    other = (await create_key(owner, name="other"))["id"]
    etag = (await owner.get(f"/admin/v1/keys/{other}")).headers["etag"]
    assert (
        await owner.delete(f"/admin/v1/keys/{other}", headers={"If-Match": '"no"'})
    ).status_code == 412
    deleted = await owner.delete(
        f"/admin/v1/keys/{other}?reason=offboarded", headers={"If-Match": etag}
    )
    assert deleted.status_code == 204
    gone = (await owner.get(f"/admin/v1/keys/{other}")).json()
    assert (gone["status"], gone["status_reason"]) == ("revoked", "offboarded")
    assert (await owner.delete(f"/admin/v1/keys/{other}")).status_code == 409

    # Every change was announced to the data plane, in the same transaction.
    events = await IdentityEventFeed(app.state.admin.engine).since(0)
    assert {e.kind for e in events} == {EventKind.KEY}
    assert len(events) == 1 + 2 * 2 + 3 + 1 + 1  # create, 2 rotations, 3 changes, create, delete


async def test_import_csv_all_or_nothing(owner: httpx.AsyncClient, app: FastAPI) -> None:
    await consumer(owner, "acme")
    await consumer(owner, "globex")
    _, supplied = generate_key(Environment.production)
    document = (
        "consumer,name,scopes,expires_at,ip_allowlist,metadata,key\r\n"
        f'acme,gen,a b,{FUTURE.isoformat()},10.0.0.0/8,"{{""n"": 1}}",\r\n'
        f"globex,ported,,,,,{supplied}\r\n"
    )
    csv_headers = {"Content-Type": "text/csv"}
    dry = await owner.post(
        "/admin/v1/keys/import?dry_run=true", content=document, headers=csv_headers
    )
    assert dry.status_code == 200, dry.text
    assert dry.json()["created"] == 0
    assert (await owner.get("/admin/v1/keys")).json()["items"] == []

    imported = await owner.post("/admin/v1/keys/import", content=document, headers=csv_headers)
    assert imported.status_code == 201, imported.text
    assert imported.headers["cache-control"] == "no-store"
    items = imported.json()["items"]
    assert imported.json()["created"] == 2
    assert [i["row"] for i in items] == [1, 2]
    assert parse_key(items[0]["key"]) is not None
    assert "key" not in items[1]
    assert supplied not in imported.text
    repo = KeyRepository(app.state.admin.engine, app.state.admin.secret)
    record = await repo.find_by_hash(app.state.admin.secret.hash_credential(supplied))
    assert record is not None
    assert record.consumer == "globex"

    bad = (
        "consumer,name,scopes,ip_allowlist,key\n"
        "acme,ok,,,\n"
        "ghost,x,,,\n"
        'acme,,"a ""b",10.0.0.1/8,\n'
        f"acme,dup,,,{supplied}\n"
        "acme,short,,,tooshort\n"
    )
    rejected = await owner.post("/admin/v1/keys/import", content=bad, headers=csv_headers)
    assert rejected.status_code == 422, rejected.text
    errors = rejected.json()["errors"]
    pointers = [e["pointer"] for e in errors]
    assert "#/rows/3/name" in pointers
    assert "#/rows/3/scopes" in pointers
    assert "#/rows/3/ip_allowlist" in pointers
    assert "#/rows/5/key" in pointers
    assert "tooshort" not in rejected.text
    # Parse errors come first; consumers and stored duplicates are checked once it parses.
    fixed = bad.replace('acme,,"a ""b",10.0.0.1/8,\n', "").replace("acme,short,,,tooshort\n", "")
    rejected = await owner.post("/admin/v1/keys/import", content=fixed, headers=csv_headers)
    assert [e["pointer"] for e in rejected.json()["errors"]] == ["#/rows/2/consumer"]
    fixed = fixed.replace("ghost,x,,,\n", "")
    rejected = await owner.post("/admin/v1/keys/import", content=fixed, headers=csv_headers)
    assert rejected.json()["errors"] == [
        {"pointer": "#/rows/2/key", "detail": "row 2: key: this key is already stored"}
    ]
    assert supplied not in rejected.text
    assert len((await owner.get("/admin/v1/keys")).json()["items"]) == 2

    header_only = await owner.post(
        "/admin/v1/keys/import", content="consumer,nme\n", headers=csv_headers
    )
    assert [e["pointer"] for e in header_only.json()["errors"]] == ["#/rows/0/nme", "#/rows/0/name"]
    as_json = await owner.post("/admin/v1/keys/import", json={"consumer": "acme"})
    assert as_json.status_code == 415
    latin = await owner.post(
        "/admin/v1/keys/import", content="consumer,name\nacme,caf\xe9\n".encode("latin-1"),
        headers=csv_headers,
    )  # fmt: skip
    assert latin.status_code == 422


async def test_export_streams_metadata_only(owner: httpx.AsyncClient, app: FastAPI) -> None:
    await consumer(owner, "acme")
    keys = [await create_key(owner, name=f"k{i}", metadata={"i": i}) for i in range(3)]
    exported = await owner.get("/admin/v1/keys/export")
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert sorted(r["id"] for r in rows) == sorted(k["id"] for k in keys)
    assert rows[0]["consumer"] == "acme"
    jsonl = await owner.get("/admin/v1/keys/export?format=jsonl&name=k1")
    assert jsonl.headers["content-type"].startswith("application/jsonl")
    lines = [json.loads(line) for line in jsonl.text.splitlines()]
    assert [line["name"] for line in lines] == ["k1"]
    assert lines[0]["metadata"] == {"i": 1}
    async with app.state.admin.engine.connect() as conn:
        hashes = [h for (h,) in (await conn.execute(text("SELECT key_hash FROM api_keys"))).all()]
    for key in keys:
        assert key["key"] not in exported.text
        assert key["key"] not in jsonl.text
    assert not any(h in exported.text for h in hashes)
    assert (await owner.get("/admin/v1/keys/export?format=xml")).status_code == 422


async def test_organization_limited_admins_see_only_their_keys(
    owner: httpx.AsyncClient, anonymous: httpx.AsyncClient, auth: AuthService
) -> None:
    org_a = (await owner.post("/admin/v1/organizations", json={"name": "org-a"})).json()["id"]
    await owner.post("/admin/v1/organizations", json={"name": "org-b"})
    await consumer(owner, "alpha", "org-a")
    await consumer(owner, "beta", "org-b")
    mine = await create_key(owner, "alpha", name="mine")
    theirs = await create_key(owner, "beta", name="theirs")
    await auth.create_user("limited@example.com", PASSWORD, Role.ADMIN, org_a)
    login = await anonymous.post(
        "/admin/v1/auth/login", json={"email": "limited@example.com", "password": PASSWORD}
    )
    anonymous.headers["authorization"] = f"Bearer {login.json()['access_token']}"
    limited = anonymous

    listed = (await limited.get("/admin/v1/keys")).json()["items"]
    assert [k["id"] for k in listed] == [mine["id"]]
    assert (await limited.get("/admin/v1/keys?organization=org-b")).json()["items"] == []
    assert (await limited.get(f"/admin/v1/keys/{theirs['id']}")).status_code == 404
    for method, path, body in (
        ("POST", f"/admin/v1/keys/{theirs['id']}/revoke", {"reason": "x"}),
        ("POST", f"/admin/v1/keys/{theirs['id']}/rotate", {}),
        ("PATCH", f"/admin/v1/keys/{theirs['id']}", {"name": "x"}),
        ("DELETE", f"/admin/v1/keys/{theirs['id']}", None),
        ("POST", "/admin/v1/consumers/beta/keys", {"name": "x"}),
        ("GET", "/admin/v1/consumers/beta/keys", None),
    ):
        response = await limited.request(method, path, json=body)
        assert response.status_code == 404, (method, path, response.text)
    assert (await owner.get(f"/admin/v1/keys/{theirs['id']}")).json()["state"] == "active"
    assert (await create_key(limited, "alpha", name="new"))["organization"] == "org-a"
    export = (await limited.get("/admin/v1/keys/export?format=jsonl")).text
    assert theirs["id"] not in export
    assert mine["id"] in export
    rejected = await limited.post(
        "/admin/v1/keys/import",
        content="consumer,name\nalpha,ok\nbeta,no\n",
        headers={"Content-Type": "text/csv"},
    )
    assert rejected.status_code == 422
    assert rejected.json()["errors"][0]["pointer"] == "#/rows/2/consumer"


async def test_viewers_read_but_cannot_change_keys(client_for, owner: httpx.AsyncClient) -> None:  # type: ignore[no-untyped-def]
    await consumer(owner, "acme")
    created = await create_key(owner)
    viewer: httpx.AsyncClient = await client_for(Role.VIEWER)
    assert (await viewer.get(f"/admin/v1/keys/{created['id']}")).status_code == 200
    denied = await viewer.post(f"/admin/v1/keys/{created['id']}/revoke", json={"reason": "x"})
    assert denied.status_code == 403
    assert denied.json()["required_permission"] == "credentials:write"


async def test_mutations_are_audited_and_no_key_material_is_stored_or_logged(
    owner: httpx.AsyncClient,
    app: FastAPI,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    await consumer(owner, "acme")
    created = await create_key(owner, scopes=["a"])
    key_id = created["id"]
    rotated = (await owner.post(f"/admin/v1/keys/{key_id}/rotate", json={})).json()
    await owner.patch(f"/admin/v1/keys/{rotated['id']}", json={"name": "renamed"})
    await owner.post(f"/admin/v1/keys/{rotated['id']}/suspend", json={"reason": "r"})
    await owner.post(f"/admin/v1/keys/{rotated['id']}/resume")
    await owner.post(f"/admin/v1/keys/{rotated['id']}/revoke", json={"reason": "r"})
    _, supplied = generate_key(Environment.production)
    imported = await owner.post(
        "/admin/v1/keys/import",
        content=f"consumer,name,key\nacme,gen,\nacme,ported,{supplied}\n",
        headers={"Content-Type": "text/csv"},
    )
    generated = imported.json()["items"][0]["key"]
    # A rejected import must not echo the key it was given either.
    await owner.post(
        "/admin/v1/keys/import",
        content=f"consumer,name,key\nghost,x,{supplied}x\n",
        headers={"Content-Type": "text/csv"},
    )

    events = (await owner.get("/admin/v1/audit-events?resource_type=api_key&limit=50")).json()
    actions = [(e["action"], e["resource_id"]) for e in reversed(events["items"])]
    assert actions == [
        ("create", key_id),
        ("rotate", key_id),
        ("create", rotated["id"]),
        ("update", rotated["id"]),
        ("suspend", rotated["id"]),
        ("resume", rotated["id"]),
        ("revoke", rotated["id"]),
        ("import", None),
    ]
    assert all(e["actor"] == "user:owner-0@example.com" for e in events["items"])
    update = events["items"][4]
    assert {"path": "/name", "old": "main", "new": "renamed"} in update["diff"]["changes"]

    audit_text = (await owner.get("/admin/v1/audit-events/export?format=jsonl")).text
    store = await dump_store(app)
    captured = capfd.readouterr()
    # Everything logged, down to the database driver's DEBUG lines with SQL parameters:
    # keys never reach SQL, only their hashes do.
    logs = caplog.text + captured.out + captured.err
    logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)
    logged += captured.out + captured.err
    async with app.state.admin.engine.connect() as conn:
        hashes = [h for (h,) in (await conn.execute(text("SELECT key_hash FROM api_keys"))).all()]
    for full in (created["key"], rotated["key"], generated, supplied):
        prefix = full.rsplit("_", 1)[0]
        secret_part = full[len(prefix) + 1 :]
        for haystack in (audit_text, store, logs):
            assert full not in haystack
            assert secret_part not in haystack
    for key_hash in hashes:
        assert key_hash not in audit_text
        assert key_hash not in logged


async def test_idempotent_retries_never_store_a_key(owner: httpx.AsyncClient, app: FastAPI) -> None:
    """Responses that show a key once are marked no-store; the idempotency layer must obey."""
    await consumer(owner, "acme")
    shown = []
    created = await owner.post(
        "/admin/v1/consumers/acme/keys", json={"name": "k"}, headers={"Idempotency-Key": "one"}
    )
    assert created.status_code == 201, created.text
    shown.append(created.json()["key"])
    rotated = await owner.post(
        f"/admin/v1/keys/{created.json()['id']}/rotate",
        json={},
        headers={"Idempotency-Key": "two"},
    )
    shown.append(rotated.json()["key"])
    imported = await owner.post(
        "/admin/v1/keys/import",
        content="consumer,name\nacme,bulk\n",
        headers={"Content-Type": "text/csv", "Idempotency-Key": "three"},
    )
    shown.append(imported.json()["items"][0]["key"])
    store = await dump_store(app)
    for key in shown:
        assert key not in store
        assert key.rsplit("_", 1)[1] not in store


async def test_idempotent_retry_replays_the_same_key(owner: httpx.AsyncClient) -> None:
    """The sealed stored response is replayed: a retry must not mint a second key."""
    await consumer(owner, "acme")
    first = await owner.post(
        "/admin/v1/consumers/acme/keys", json={"name": "k"}, headers={"Idempotency-Key": "r1"}
    )
    again = await owner.post(
        "/admin/v1/consumers/acme/keys", json={"name": "k"}, headers={"Idempotency-Key": "r1"}
    )
    assert first.status_code == again.status_code == 201
    assert again.json()["key"] == first.json()["key"]
    listed = await owner.get("/admin/v1/consumers/acme/keys")
    assert len(listed.json()["items"]) == 1
