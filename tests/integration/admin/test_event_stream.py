"""`GET /admin/v1/stream`: live platform events as server-sent events, on the real control
plane (granian) read with `httpx-sse`: ids, order, resume with Last-Event-ID, scope,
retention resets, heartbeats, and bad input refused by name."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from httpx_sse import ServerSentEvent, aconnect_sse

from portcullis.events.retention import purge_events
from portcullis.store.engine import create_engine
from support.live_events import STORES, module_store, publish, signed_in
from support.servers import ControlPlane, control_plane

HEARTBEAT = 0.3


@pytest.fixture(scope="module", params=STORES)
def plane(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    """One control plane per store for the module (starting one takes seconds); the tests
    keep apart by their own users, organizations and event positions."""
    database_url = module_store(request, tmp_path_factory)
    env = {
        # No events kept in memory: every resume reads the store (the retention test needs
        # the deleted events gone from memory too; hub unit tests cover the buffer).
        "PORTCULLIS_STREAM_BUFFER_EVENTS": "0",
        "PORTCULLIS_STREAM_HEARTBEAT_SECONDS": str(HEARTBEAT),
        "PORTCULLIS_STREAM_RECHECK_SECONDS": str(HEARTBEAT),
    }
    with control_plane(database_url, env=env) as cp:
        yield cp


@pytest.fixture
async def client(plane: ControlPlane) -> AsyncIterator[httpx.AsyncClient]:
    token = await signed_in(plane, f"owner-{uuid.uuid4().hex[:8]}@example.com")
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=plane.url, headers=headers, timeout=10) as c:
        yield c


async def take(events: AsyncIterator[ServerSentEvent], n: int) -> list[ServerSentEvent]:
    """The next `n` events (heartbeats keep the connection alive: bounded by a deadline)."""
    got: list[ServerSentEvent] = []
    async with asyncio.timeout(30):
        async for sse in events:
            if not sse.data:
                continue  # the opening `retry:` block (httpx-sse yields it; browsers don't)
            got.append(sse)
            if len(got) == n:
                break
    return got


async def test_events_flow_live_in_order_and_resume_exactly_after_a_cut(
    plane: ControlPlane, client: httpx.AsyncClient
) -> None:
    async with aconnect_sse(client, "GET", "/admin/v1/stream?types=key.*") as source:
        response = source.response
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache, no-transform"
        assert "content-encoding" not in response.headers
        events = source.aiter_sse()
        opening = await anext(events)
        published = await publish(plane.database_url, 30)
        first = await take(events, 10)
    assert [int(e.id) for e in first] == [e.id for e in published[:10]]
    assert {e.event for e in first} == {"key.created"}
    assert opening.retry == 2000
    assert first[3].json()["subject"] == "key:k3"

    # Cut off after ten: resuming from the last id seen gets the other twenty, once each.
    headers = {"last-event-id": first[-1].id}
    async with aconnect_sse(client, "GET", "/admin/v1/stream", headers=headers) as source:
        rest = await take(source.aiter_sse(), 20)
    assert [int(e.id) for e in rest] == [e.id for e in published[10:]]


async def test_an_organization_admin_streams_only_its_organization(
    plane: ControlPlane, client: httpx.AsyncClient
) -> None:
    orgs = {}
    for name in ("acme", "globex"):
        created = await client.post("/admin/v1/organizations", json={"name": name})
        assert created.status_code == 201, created.text
        orgs[name] = created.json()["id"]
    token = await signed_in(plane, "acme-admin@example.com", orgs["acme"])
    headers = {"authorization": f"Bearer {token}"}
    async with (
        httpx.AsyncClient(base_url=plane.url, headers=headers, timeout=10) as acme,
        aconnect_sse(acme, "GET", "/admin/v1/stream?types=key.created") as source,
    ):
        events = source.aiter_sse()
        mine = await publish(plane.database_url, 1, organization_id=orgs["acme"])
        await publish(plane.database_url, 1, organization_id=orgs["globex"])
        await publish(plane.database_url, 1)  # gateway-wide: for unlimited admins
        mine += await publish(plane.database_url, 1, organization_id=orgs["acme"])
        got = await take(events, 2)
        # The owner narrows a stream to an organization by name, as a room.
        url = "/admin/v1/stream?types=key.created&resource=organization:globex"
        async with aconnect_sse(client, "GET", url) as by_room:
            theirs = await publish(plane.database_url, 1, organization_id=orgs["globex"])
            (room_event,) = await take(by_room.aiter_sse(), 1)
        # Naming the other organization is "not found", as everywhere else.
        other = await acme.get("/admin/v1/stream", params={"organization": "globex"})
        other_room = await acme.get("/admin/v1/stream", params={"resource": "organization:globex"})
    assert [int(e.id) for e in got] == [e.id for e in mine]
    assert int(room_event.id) == theirs[0].id
    assert other.status_code == 404
    assert other_room.status_code == 404
    assert other.json()["detail"] == "no organization 'globex'"


async def test_resuming_from_before_retention_starts_with_an_explicit_reset(
    plane: ControlPlane, client: httpx.AsyncClient
) -> None:
    published = await publish(plane.database_url, 5)
    engine = create_engine(plane.database_url)
    try:
        # Everything is past retention (this test's and earlier tests' events); the newest
        # event is always kept.
        assert await purge_events(engine, older_than=datetime.now(UTC) + timedelta(days=1)) >= 4
    finally:
        await engine.dispose()
    url = f"/admin/v1/stream?after={published[0].id}"
    async with aconnect_sse(client, "GET", url) as source:
        reset, newest = await take(source.aiter_sse(), 2)
    assert reset.event == "reset"
    assert reset.json()["reason"] == "retention"
    assert int(reset.id) == reset.json()["resume_after"] == published[3].id
    assert int(newest.id) == published[4].id


async def test_an_idle_stream_sends_heartbeat_comments(client: httpx.AsyncClient) -> None:
    async with client.stream("GET", "/admin/v1/stream") as response:
        lines = response.aiter_lines()
        seen = [await anext(lines) for _ in range(6)]
    assert seen[:2] == ["retry: 2000", ""]
    assert ": heartbeat" in seen


async def test_revoking_the_token_ends_its_open_stream(
    plane: ControlPlane, client: httpx.AsyncClient
) -> None:
    created = await client.post(
        "/admin/v1/tokens", json={"name": "dashboard", "scopes": ["alerts:read"]}
    )
    assert created.status_code == 201, created.text
    token = created.json()
    headers = {"authorization": f"Bearer {token['token']}"}
    async with (
        httpx.AsyncClient(base_url=plane.url, headers=headers, timeout=10) as holder,
        aconnect_sse(holder, "GET", "/admin/v1/stream?types=key.created") as source,
    ):
        events = source.aiter_sse()
        await publish(plane.database_url, 1)
        (before,) = await take(events, 1)
        revoked = await client.delete(f"/admin/v1/tokens/{token['id']}")
        assert revoked.status_code == 204, revoked.text
        (closed,) = await take(events, 1)
        # The server ended the stream: nothing follows the `closed` event.
        assert [e async for e in events] == []
    assert before.event == "key.created"
    assert closed.event == "closed"
    assert "no longer valid" in closed.json()["reason"]


async def test_bad_input_is_refused_by_name(client: httpx.AsyncClient) -> None:
    bad_kind = await client.get("/admin/v1/stream", params={"types": "key.nope"})
    bad_room = await client.get("/admin/v1/stream", params={"resource": "nowhere"})
    bad_position = await client.get("/admin/v1/stream", headers={"last-event-id": "ten"})
    anonymous = await client.get("/admin/v1/stream", headers={"authorization": ""})
    for response in (bad_kind, bad_room, bad_position):
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
    assert "query parameter 'types'" in bad_kind.text
    assert "query parameter 'resource'" in bad_room.text
    assert "Last-Event-ID" in bad_position.text
    assert anonymous.status_code == 401
