"""The audit log records every mutation, hides secrets, filters, pages and exports."""

from __future__ import annotations

import csv
import io
import json

import httpx
from admin_support import PASSWORD
from fastapi import FastAPI
from sqlalchemy import text

from portcullis.services.state import AdminState
from portcullis.store.engine import write_transaction


async def test_mutations_are_recorded_with_who_what_where(owner: httpx.AsyncClient) -> None:
    headers = {"X-Request-Id": "req-123"}
    await owner.post(
        "/admin/v1/services", json={"name": "orders", "url": "http://127.0.0.1:1"}, headers=headers
    )
    await owner.patch("/admin/v1/services/orders", json={"path": "/v2"})
    await owner.delete("/admin/v1/services/orders")
    events = (await owner.get("/admin/v1/audit-events?resource_type=service")).json()["items"]
    assert [e["action"] for e in events] == ["delete", "update", "create"]
    created = events[-1]
    assert created["actor"] == "user:owner-0@example.com"
    assert created["resource_id"] == "orders"
    assert created["request_id"] == "req-123"
    assert created["client_ip"] == "198.51.100.8"
    assert created["status"] == 201
    assert created["config_version"] == 1
    assert created["diff"]["before"] is None
    assert created["diff"]["after"]["url"] == "http://127.0.0.1:1"
    update = events[1]
    assert update["diff"]["changes"] == [{"path": "/path", "old": "/", "new": "/v2"}]
    assert update["request_id"] != "req-123"
    assert events[0]["diff"]["after"] is None


async def test_secrets_never_reach_the_log(owner: httpx.AsyncClient) -> None:
    await owner.post(
        "/admin/v1/admin-users",
        json={"email": "new@example.com", "password": PASSWORD, "role": "viewer"},
    )
    token = (
        await owner.post("/admin/v1/tokens", json={"name": "t", "scopes": ["config:read"]})
    ).json()["token"]
    user_id = (await owner.get("/admin/v1/admin-users?sort=-email")).json()["items"][1]["id"]
    await owner.patch(f"/admin/v1/admin-users/{user_id}", json={"password": "another " + PASSWORD})
    export = await owner.get("/admin/v1/audit-events/export?format=jsonl")
    assert export.status_code == 200
    assert PASSWORD not in export.text
    assert token not in export.text
    assert token[12:] not in export.text
    actions = [json.loads(line)["resource_type"] for line in export.text.splitlines()]
    assert actions == ["session", "admin_user", "api_token", "admin_user"]


async def test_filters_and_pagination(owner: httpx.AsyncClient) -> None:
    for i in range(5):
        await owner.post("/admin/v1/consumers", json={"username": f"c{i}"})
    first = await owner.get("/admin/v1/audit-events?limit=2&action=create")
    page = first.json()
    assert [e["resource_id"] for e in page["items"]] == ["c4", "c3"]
    rest = (await owner.get(page["next"])).json()
    assert [e["resource_id"] for e in rest["items"]] == ["c2", "c1"]
    only = (await owner.get("/admin/v1/audit-events?resource_id=c0")).json()["items"]
    assert len(only) == 1
    none = (await owner.get("/admin/v1/audit-events?actor=user:nobody")).json()["items"]
    assert none == []
    future = (await owner.get("/admin/v1/audit-events?since=2999-01-01T00:00:00Z")).json()
    assert future["items"] == []
    assert (await owner.get("/admin/v1/audit-events?cursor=x")).status_code == 400


async def test_log_is_append_only(owner: httpx.AsyncClient) -> None:
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        response = await owner.request(method, "/admin/v1/audit-events", json={})
        assert response.status_code == 405


async def test_csv_export_streams_every_event_oldest_first(owner: httpx.AsyncClient) -> None:
    for name in ("=cmd", "b"):
        await owner.post("/admin/v1/consumers", json={"username": name.lstrip("=") + "x"})
    await owner.post("/admin/v1/consumers", json={"username": "c", "custom_id": "=1+2"})
    response = await owner.get("/admin/v1/audit-events/export?format=csv&resource_type=consumer")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["resource_id"] for r in rows] == ["cmdx", "bx", "c"]
    diff = json.loads(rows[2]["diff"])
    assert diff["after"]["custom_id"] == "=1+2"
    bad = await owner.get("/admin/v1/audit-events/export?format=xml")
    assert bad.status_code == 422


async def test_logins_are_recorded(owner: httpx.AsyncClient, anonymous: httpx.AsyncClient) -> None:
    failed = await anonymous.post(
        "/admin/v1/auth/login", json={"email": "owner-0@example.com", "password": "wrong!"}
    )
    assert failed.status_code == 401
    events = (await owner.get("/admin/v1/audit-events?resource_type=session")).json()["items"]
    assert [(e["action"], e["status"], e["client_ip"]) for e in events] == [
        ("login_failed", 401, "198.51.100.7"),
        ("login", 200, "198.51.100.8"),
    ]
    assert all(e["actor"] == "user:owner-0@example.com" for e in events)
    assert "wrong!" not in (await owner.get("/admin/v1/audit-events/export")).text


async def test_a_change_whose_audit_record_fails_is_not_applied(
    owner: httpx.AsyncClient, app: FastAPI
) -> None:
    """The config change and its audit event commit in one transaction, or neither does."""
    assert (
        await owner.post("/admin/v1/services", json={"name": "kept", "url": "http://k"})
    ).status_code == 201
    assert (await owner.patch("/admin/v1/services/kept", json={"tags": ["v2"]})).status_code == 200
    state: AdminState = app.state.admin
    version = await state.editor.repository.current_version()
    async with write_transaction(state.engine) as conn:
        await conn.execute(
            text(
                "CREATE TRIGGER refuse_audit BEFORE INSERT ON admin_audit_events "
                "BEGIN SELECT RAISE(ABORT, 'audit log unavailable'); END"
            )
        )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://admin", headers=owner.headers
    ) as client:
        attempts = [
            await client.post("/admin/v1/services", json={"name": "lost", "url": "http://l"}),
            await client.patch("/admin/v1/services/kept", json={"tags": ["x"]}),
            await client.delete("/admin/v1/services/kept"),
            await client.put("/admin/v1/config", json={"services": []}),
            await client.post("/admin/v1/config/rollback", json={"version": 1}),
        ]
    assert [r.status_code for r in attempts] == [500] * 5
    assert all("audit log unavailable" not in r.text for r in attempts)
    assert await state.editor.repository.current_version() == version
    async with write_transaction(state.engine) as conn:
        await conn.execute(text("DROP TRIGGER refuse_audit"))
    assert (await owner.get("/admin/v1/services/lost")).status_code == 404
    assert (await owner.get("/admin/v1/services/kept")).json()["tags"] == ["v2"]
    events = (await owner.get("/admin/v1/audit-events?resource_type=service")).json()["items"]
    assert [(e["action"], e["resource_id"]) for e in events] == [
        ("update", "kept"),
        ("create", "kept"),
    ]
    assert (await owner.get("/admin/v1/audit-events?resource_type=config")).json()["items"] == []
