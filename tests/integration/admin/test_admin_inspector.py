"""The request inspector's control plane on the admin app and a real store: starting and
stopping captures (problems naming fields, one active capture per route, audit without
captured content), organization scoping, the store's cap on count and time box, the
developer's view (their consumers' exchanges only) and retention."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from portcullis.proxy.inspector import active_sessions, write_exchanges
from portcullis.runtime.captures import CapturedExchange
from portcullis.services.errors import ServiceError
from portcullis.services.inspector import DeveloperInspector, purge_captures
from portcullis.services.portal import Developer
from portcullis.services.portal_apps import AppConsumer
from portcullis.services.rbac import Role
from portcullis.services.state import AdminState

ClientFactory = Callable[..., Awaitable[httpx.AsyncClient]]


async def _entities(owner: httpx.AsyncClient) -> None:
    for body in (
        {"name": "svc", "url": "http://upstream.test"},
        {"name": "a-route", "service": "svc", "paths": ["/a"], "organization": "acme"},
        {"name": "g-route", "service": "svc", "paths": ["/g"], "organization": "globex"},
    ):
        path = "/admin/v1/routes" if "paths" in body else "/admin/v1/services"
        created = await owner.post(path, json=body)
        assert created.status_code == 201, created.text


def _exchange(session_id: str, consumer: str | None, at: float, **extra: Any) -> CapturedExchange:
    fields: dict[str, Any] = {
        "session_id": session_id,
        "route": "a-route",
        "captured_at": at,
        "request_id": "rid",
        "method": "POST",
        "path": "/a/1",
        "query": "x=1",
        "request_headers": [["authorization", "Bearer [redacted]"]],
        "response_headers": [["content-type", "text/plain"]],
        "status": 200,
        "latency_ms": 1.5,
        "consumer": consumer,
        "credential_id": None,
        "request_body": "é".encode() * 512,  # 1024 bytes, cut from a longer body
        "request_body_size": 1500,
        "response_body": b"\xff\x00",
        "response_body_size": 2,
    }
    return CapturedExchange(**(fields | extra))


class _Portal:
    """`PortalApps.consumers_of` for two developers (the portal's own tests cover it)."""

    async def consumers_of(self, developer: Developer) -> list[AppConsumer]:
        apps = {"dev-1": ["alice-app"], "dev-2": ["bob-app"]}.get(developer.id, [])
        return [AppConsumer(f"app-{c}", c, "team", c, "acme", None) for c in apps]


def _developer(developer_id: str) -> Developer:
    return Developer(
        developer_id, f"{developer_id}@example.com", developer_id, True, datetime.now(UTC)
    )


async def test_captures_start_stop_scope_and_audit(
    app: FastAPI, owner: httpx.AsyncClient, client_for: ClientFactory, orgs: dict[str, str]
) -> None:
    await _entities(owner)
    state: AdminState = app.state.admin
    base = "/admin/v1/routes/a-route/captures"
    bad = await owner.post(base, json={"duration_seconds": 3600, "sample_rate": 0})
    assert bad.status_code == 422
    assert bad.headers["content-type"] == "application/problem+json"
    assert {e["pointer"] for e in bad.json()["errors"]} == {
        "#/duration_seconds",
        "#/sample_rate",
    }
    versions_before = (await owner.get("/admin/v1/config/versions")).json()
    started = await owner.post(base, json={"duration_seconds": 60, "max_count": 5})
    assert started.status_code == 201, started.text
    capture = started.json()
    assert capture["active"] is True
    assert capture["sample_rate"] == 1.0
    # A capture is not a config change.
    assert (await owner.get("/admin/v1/config/versions")).json() == versions_before
    again = await owner.post(base, json={})
    assert again.status_code == 409
    assert again.json()["capture_id"] == capture["id"]
    assert [s.id for s in await active_sessions(state.engine, datetime.now(UTC))] == [capture["id"]]

    acme = await client_for(Role.OPERATOR, orgs["acme"])
    globex = await client_for(Role.OPERATOR, orgs["globex"])
    viewer = await client_for(Role.VIEWER)
    assert (await viewer.post(base, json={})).status_code == 403
    assert (await viewer.get(base)).status_code == 200
    assert [c["id"] for c in (await acme.get(base)).json()] == [capture["id"]]
    for client in (globex,):
        assert (await client.get(base)).status_code == 404
        assert (await client.get(f"{base}/{capture['id']}")).status_code == 404
        assert (await client.post(f"{base}/{capture['id']}/stop")).status_code == 404
        assert (await client.get(f"{base}/{capture['id']}/exchanges")).status_code == 404
        assert (await client.post(base, json={})).status_code == 404

    now = time.time()
    written = await write_exchanges(
        state.engine,
        [_exchange(capture["id"], "alice-app", now), _exchange(capture["id"], None, now)],
        lambda: datetime.now(UTC),
    )
    assert written == 2
    listed = (await acme.get(f"{base}/{capture['id']}/exchanges")).json()["items"]
    assert [e["consumer"] for e in listed] == [None, "alice-app"]  # newest first
    newer = await acme.get(f"{base}/{capture['id']}/exchanges", params={"after": listed[1]["id"]})
    assert [e["id"] for e in newer.json()["items"]] == [listed[0]["id"]]
    one = await acme.get(f"/admin/v1/inspector/exchanges/{listed[1]['id']}")
    assert one.status_code == 200, one.text
    detail = one.json()
    assert detail["request_body"] == {
        "encoding": "utf-8",
        "data": "é" * 512,
        "size": 1500,
        "truncated": True,
    }
    assert detail["response_body"]["encoding"] == "base64"
    assert detail["request_headers"] == [["authorization", "Bearer [redacted]"]]
    hidden = await globex.get(f"/admin/v1/inspector/exchanges/{listed[1]['id']}")
    assert hidden.status_code == 404

    stopped = await acme.post(f"{base}/{capture['id']}/stop")
    assert stopped.json()["active"] is False
    assert stopped.json()["stop_reason"] == "stopped"
    # Rows a worker recorded after the stop are not stored.
    late = [_exchange(capture["id"], "alice-app", time.time() + 1)]
    assert await write_exchanges(state.engine, late, lambda: datetime.now(UTC)) == 0

    audit = (await owner.get("/admin/v1/audit-events", params={"resource_type": "capture"})).json()
    events = sorted(audit["items"], key=lambda e: e["action"])
    assert [(e["action"], e["resource_id"]) for e in events] == [
        ("start", f"a-route/{capture['id']}"),
        ("stop", f"a-route/{capture['id']}"),
    ]
    assert "alice-app" not in str(audit)
    assert "Bearer" not in str(audit)


async def test_the_store_caps_a_capture_and_the_developer_sees_only_their_consumers(
    app: FastAPI, owner: httpx.AsyncClient, orgs: dict[str, str]
) -> None:
    await _entities(owner)
    state: AdminState = app.state.admin
    started = await owner.post("/admin/v1/routes/a-route/captures", json={"max_count": 3})
    capture = started.json()
    now = time.time()
    batch = [_exchange(capture["id"], c, now) for c in ("alice-app", "bob-app", "bob-app")]
    batch.append(_exchange(capture["id"], "alice-app", now))
    assert await write_exchanges(state.engine, batch, lambda: datetime.now(UTC)) == 3
    full = (await owner.get(f"/admin/v1/routes/a-route/captures/{capture['id']}")).json()
    assert (full["captured"], full["active"], full["stop_reason"]) == (3, False, "full")
    assert await active_sessions(state.engine, datetime.now(UTC)) == []

    developer = DeveloperInspector(state.engine, _Portal())
    mine = (await developer.exchanges(_developer("dev-1"))).items
    assert [e.consumer for e in mine] == ["alice-app"]
    assert {e.consumer for e in (await developer.exchanges(_developer("dev-2"))).items} == {
        "bob-app"
    }
    assert (await developer.exchanges(_developer("stranger"))).items == []
    theirs = (await developer.exchanges(_developer("dev-2"))).items[0].id
    with pytest.raises(ServiceError) as refused:
        await developer.exchange(_developer("dev-1"), theirs)
    assert refused.value.kind.status == 404
    assert (await developer.exchange(_developer("dev-2"), theirs)).consumer == "bob-app"

    assert await purge_captures(state.engine, datetime.now(UTC) - timedelta(days=1)) == 0
    assert await purge_captures(state.engine, datetime.now(UTC) + timedelta(seconds=1)) == 1
    assert (await developer.exchanges(_developer("dev-2"))).items == []


async def test_the_graph_starts_lists_and_refuses_like_rest(
    owner: httpx.AsyncClient, orgs: dict[str, str]
) -> None:
    await _entities(owner)

    async def graph(document: str) -> dict[str, Any]:
        answer = await owner.post("/graphql", json={"query": document})
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        assert "errors" not in body, body
        return body["data"]

    started = await graph(
        'mutation { startCapture(route: "a-route", durationSeconds: 30, sampleRate: 0.5) '
        "{ __typename ... on Capture { id active sampleRate } } }"
    )
    capture = started["startCapture"]
    assert capture["__typename"] == "Capture"
    assert (capture["active"], capture["sampleRate"]) == (True, 0.5)
    refused = await graph(
        'mutation { startCapture(route: "a-route", maxCount: 5000) '
        "{ __typename ... on ValidationProblem { errors { pointer } } } }"
    )
    assert refused["startCapture"]["errors"] == [{"pointer": "#/max_count"}]
    listed = await graph('{ captures(route: "a-route") { id route } }')
    assert listed["captures"] == [{"id": capture["id"], "route": "a-route"}]
    stopped = await graph(
        f'mutation {{ stopCapture(route: "a-route", id: "{capture["id"]}") '
        "{ ... on Capture { active stopReason } } }"
    )
    assert stopped["stopCapture"] == {"active": False, "stopReason": "stopped"}
