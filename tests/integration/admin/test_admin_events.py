"""The platform event log through the admin API: events of every path that changes the
config, scoped per organization for organization-limited admins; alert rules' `notify`."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import FastAPI

from portcullis.services.rbac import Role
from portcullis.store.engine import write_transaction
from portcullis.webhooks.endpoints import NewEndpoint, create_endpoint

ClientFactory = Callable[..., Awaitable[httpx.AsyncClient]]  # the `client_for` fixture


async def _events(client: httpx.AsyncClient, query: str = "") -> list[dict[str, Any]]:
    response = await client.get(f"/admin/v1/events?limit=200{query}")
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_creating_a_consumer_through_the_api_records_consumer_created(
    owner: httpx.AsyncClient, orgs: dict[str, str]
) -> None:
    created = await owner.post(
        "/admin/v1/consumers", json={"username": "acme-app", "organization": "acme"}
    )
    assert created.status_code == 201, created.text
    events = await _events(owner, "&kind=consumer.created&kind=config.applied")
    assert [(e["kind"], e["subject"]) for e in events][-2:] == [
        ("config.applied", events[-2]["subject"]),
        ("consumer.created", "consumer:acme-app"),
    ]
    applied, consumer = events[-2:]
    assert applied["data"]["changes"] == {"consumers": {"added": 1, "removed": 0, "changed": 0}}
    assert applied["data"]["author"]
    assert applied["organization_id"] is None
    assert consumer["organization_id"] == orgs["acme"]
    assert consumer["data"]["organization"] == "acme"


async def test_an_organization_admin_reads_its_own_events_only(
    owner: httpx.AsyncClient, client_for: ClientFactory, orgs: dict[str, str]
) -> None:
    for org in ("acme", "globex"):
        made = await owner.post(
            "/admin/v1/consumers", json={"username": f"{org}-app", "organization": org}
        )
        assert made.status_code == 201, made.text
        key = await owner.post(f"/admin/v1/consumers/{org}-app/keys", json={"name": org})
        assert key.status_code == 201, key.text
    everything = await _events(owner)
    assert {e["organization_id"] for e in everything} == {None, orgs["acme"], orgs["globex"]}

    for role in (Role.ADMIN, Role.VIEWER):
        member = await client_for(role, orgs["acme"])
        mine = await _events(member)
        assert [(e["kind"], e["subject"]) for e in mine] == [
            ("consumer.created", "consumer:acme-app"),
            ("key.created", mine[1]["subject"]),
        ]
        assert {e["organization_id"] for e in mine} == {orgs["acme"]}
        # Filters narrow the organization's events; they never widen them.
        assert await _events(member, "&subject=consumer:globex-app") == []
        assert await _events(member, "&kind=config.applied") == []
        # Gateway-wide events stay with unlimited admins.
        assert "globex" not in str(mine)


async def test_alert_rule_notify_is_validated_and_shown(
    app: FastAPI, owner: httpx.AsyncClient
) -> None:
    engine = app.state.admin.engine
    async with write_transaction(engine) as conn:
        endpoint, _ = await create_endpoint(
            conn,
            app.state.admin.secret,
            NewEndpoint("https://hooks.example.com/alerts", ["key.*"]),
            datetime.now(UTC),
        )
    rule = {"name": "errors", "kind": "error_rate", "threshold": 0.5}
    refused = await owner.post(
        "/admin/v1/alert-rules", json={**rule, "notify": {"webhooks": [endpoint, "ep_nope"]}}
    )
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert [e["pointer"] for e in refused.json()["errors"]] == ["#/notify/webhooks/1"]
    assert "ep_nope" in refused.json()["errors"][0]["detail"]

    created = await owner.post(
        "/admin/v1/alert-rules", json={**rule, "notify": {"webhooks": [endpoint]}}
    )
    assert created.status_code == 201, created.text
    assert created.json()["notify"] == {"webhooks": [endpoint]}
    patched = await owner.patch(
        "/admin/v1/alert-rules/errors",
        content=json.dumps({"notify": {"webhooks": ["ep_gone"]}}),
        headers={"content-type": "application/merge-patch+json"},
    )
    assert patched.status_code == 422, patched.text
    assert [e["pointer"] for e in patched.json()["errors"]] == ["#/notify/webhooks/0"]
    cleared = await owner.patch(
        "/admin/v1/alert-rules/errors",
        content=json.dumps({"notify": None}),
        headers={"content-type": "application/merge-patch+json"},
    )
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["notify"] is None
