"""`/admin/v1/ws`: rooms and presence on the real control plane (granian), driven by the
`websockets` client: authentication (header, first message, refusals and timeout),
subscribe/resume per room without loss or repeat, organization isolation, RBAC, bad
messages, token revocation, presence with ETag notices after a REST PATCH, and no hub
stream left behind after abrupt disconnects."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from support.live_events import publish, signed_in
from support.postgres import PostgresServer
from support.servers import ControlPlane, control_plane
from support.threaded_upstream import eventually

HEARTBEAT = 0.3
ENV = {
    "PORTCULLIS_STREAM_HEARTBEAT_SECONDS": str(HEARTBEAT),
    "PORTCULLIS_STREAM_RECHECK_SECONDS": str(HEARTBEAT),
    "PORTCULLIS_WS_AUTH_TIMEOUT": "0.5",
    "PORTCULLIS_WS_MAX_MESSAGE_BYTES": "1024",
    "PORTCULLIS_WS_MAX_ROOMS": "3",
    "PORTCULLIS_PRESENCE_TTL": "1.5",
    "PORTCULLIS_METRICS_PUBLIC": "true",
}


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def plane(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    """One control plane per store for the module; tests keep apart by their own users,
    organizations, entities and event positions."""
    if request.param == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        database_url = server.create_database(
            template=request.getfixturevalue("migrated_postgres_template")
        )
    else:
        path = tmp_path_factory.mktemp("ws") / "admin.db"
        shutil.copyfile(request.getfixturevalue("migrated_template"), path)
        database_url = f"sqlite+aiosqlite:///{path}"
    with control_plane(database_url, env=ENV) as cp:
        yield cp


def ws_url(plane: ControlPlane) -> str:
    return plane.url.replace("http://", "ws://") + "/admin/v1/ws"


@pytest.fixture
async def owner(plane: ControlPlane) -> str:
    return str(await signed_in(plane, f"owner-{uuid.uuid4().hex[:8]}@example.com"))


@pytest.fixture
async def rest(plane: ControlPlane, owner: str) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"authorization": f"Bearer {owner}"}
    async with httpx.AsyncClient(base_url=plane.url, headers=headers, timeout=10) as c:
        yield c


def opened(plane: ControlPlane, token: str | None = None) -> Any:
    headers = {"authorization": f"Bearer {token}"} if token is not None else {}
    return connect(ws_url(plane), additional_headers=headers, open_timeout=10)


async def recv(ws: ClientConnection, *, skip: tuple[str, ...] = ("heartbeat",)) -> dict[str, Any]:
    """The next message that is not a heartbeat (bounded by a deadline)."""
    async with asyncio.timeout(15):
        while True:
            message: dict[str, Any] = json.loads(await ws.recv())
            if message["type"] not in skip:
                return message


async def send(ws: ClientConnection, **message: Any) -> None:
    await ws.send(json.dumps(message))


async def closed_with(ws: ClientConnection) -> tuple[int, list[dict[str, Any]]]:
    """Read until the server closes; its close code and what came before."""
    seen = []
    closing = None
    async with asyncio.timeout(15):
        try:
            while True:
                seen.append(json.loads(await ws.recv()))
        except ConnectionClosed as exc:
            closing = exc.rcvd
    assert closing is not None, "closed without a close frame"
    return closing.code, seen


async def organization(rest: httpx.AsyncClient, name: str) -> str:
    created = await rest.post("/admin/v1/organizations", json={"name": name})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def test_header_auth_subscribe_and_resume_after_a_cut_without_loss_or_repeat(
    plane: ControlPlane, owner: str, rest: httpx.AsyncClient
) -> None:
    org = await organization(rest, f"resume-{uuid.uuid4().hex[:6]}")
    room = f"organization:{org}"
    async with opened(plane, owner) as ws:
        welcome = await recv(ws)
        await send(ws, type="subscribe", room=room, types=["key.*"], id="s1")
        subscribed = await recv(ws)
        published = await publish(plane.database_url, 30, organization_id=org)
        first = [await recv(ws) for _ in range(10)]
        ws.transport.abort()  # cut off: no close handshake
    assert welcome["type"] == "welcome"
    assert welcome["actor"].startswith("user:owner-")
    assert subscribed == {
        "type": "subscribed",
        "room": room,
        "position": subscribed["position"],
        "id": "s1",
    }
    assert [m["type"] for m in first] == ["event"] * 10
    assert {m["room"] for m in first} == {room}
    assert [m["position"] for m in first] == [e.id for e in published[:10]]
    assert first[3]["event"]["subject"] == "key:k3"

    async with opened(plane) as ws:  # first-message auth this time
        await send(ws, type="auth", token=owner)
        assert (await recv(ws))["type"] == "welcome"
        await send(ws, type="subscribe", room=room, after=first[-1]["position"])
        assert (await recv(ws))["position"] == first[-1]["position"]
        rest_of = [await recv(ws) for _ in range(20)]
        await send(ws, type="unsubscribe", room=room)
        unsubscribed = await recv(ws)
    assert [m["position"] for m in rest_of] == [e.id for e in published[10:]]
    assert unsubscribed == {"type": "unsubscribed", "room": room, "position": published[-1].id}


async def test_authentication_refusals_have_their_close_codes(
    plane: ControlPlane, owner: str
) -> None:
    async with opened(plane, "not-a-token") as ws:
        bad_header = await closed_with(ws)
    async with opened(plane) as ws:
        await send(ws, type="auth", token="nope")
        bad_message = await closed_with(ws)
    async with opened(plane) as ws:
        await send(ws, type="subscribe", room="alerts")
        not_auth_first = await closed_with(ws)
    async with opened(plane) as ws:
        silent = await closed_with(ws)  # nothing within ws_auth_timeout
    assert bad_header == (4401, [])
    assert bad_message == (4401, [])
    assert not_auth_first == (4401, [])
    assert silent == (4408, [])


async def test_bad_messages_get_error_frames_or_close_codes(
    plane: ControlPlane, owner: str
) -> None:
    async with opened(plane, owner) as ws:
        await recv(ws)
        await send(ws, type="dance", id=7)
        unknown = await recv(ws)
        await send(ws, type="subscribe", room="nowhere", id=8)
        bad_room = await recv(ws)
        await send(ws, type="subscribe", room="alerts", types=["key.nope"])
        bad_types = await recv(ws)
        await send(ws, type="subscribe", room="alerts", after=-1)
        bad_after = await recv(ws)
        await send(ws, type="ping", id="p")
        pong = await recv(ws)
        for room in ("alerts", "config", "consumer:a"):
            await send(ws, type="subscribe", room=room)
            assert (await recv(ws))["type"] == "subscribed"
        await send(ws, type="subscribe", room="consumer:b")
        too_many = await recv(ws)
        await send(ws, type="subscribe", room="alerts")
        twice = await recv(ws)
        await ws.send("{not json")
        malformed = await closed_with(ws)
    async with opened(plane, owner) as ws:
        await recv(ws)
        await ws.send(json.dumps({"type": "ping", "pad": "x" * 2000}))
        too_big = await closed_with(ws)
    assert unknown["status"] == 400
    assert unknown["code"] == "unknown-type"
    assert unknown["id"] == 7
    assert (bad_room["status"], bad_room["id"]) == (422, 8)
    assert "'nowhere' is not a room" in bad_room["errors"][0]["detail"]
    assert bad_types["status"] == 422
    assert "key.nope" in json.dumps(bad_types)
    assert (bad_after["status"], bad_after["field"]) == (422, "after")
    assert pong == {"type": "pong", "id": "p"}
    assert (too_many["status"], too_many["code"]) == (429, "too-many-rooms")
    assert (twice["status"], twice["code"]) == (409, "already-subscribed")
    assert malformed[0] == 4400
    assert too_big[0] == 1009


async def test_an_organization_admin_gets_its_organization_only(
    plane: ControlPlane, rest: httpx.AsyncClient
) -> None:
    suffix = uuid.uuid4().hex[:6]
    acme = await organization(rest, f"acme-{suffix}")
    globex = await organization(rest, f"globex-{suffix}")
    token = await signed_in(plane, f"acme-{suffix}@example.com", acme)
    async with opened(plane, token) as ws:
        await recv(ws)
        await send(ws, type="subscribe", room=f"organization:globex-{suffix}")
        other = await recv(ws)
        await send(ws, type="subscribe", room="key:k0", types=["key.created"])
        assert (await recv(ws))["type"] == "subscribed"
        await publish(plane.database_url, 1, organization_id=globex)
        await publish(plane.database_url, 1)  # gateway-wide: for unlimited admins
        mine = await publish(plane.database_url, 1, organization_id=acme)
        got = await recv(ws)
    assert (other["status"], other["code"]) == (404, "not-found")
    assert got["position"] == mine[0].id
    assert got["event"]["organization_id"] == acme


async def test_a_token_without_the_permission_is_refused_per_room(
    plane: ControlPlane, rest: httpx.AsyncClient
) -> None:
    created = await rest.post("/admin/v1/tokens", json={"name": "cfg", "scopes": ["config:read"]})
    assert created.status_code == 201, created.text
    async with opened(plane, created.json()["token"]) as ws:
        await recv(ws)
        await send(ws, type="subscribe", room="alerts")
        alerts = await recv(ws)
        await send(ws, type="subscribe", room="traffic")
        traffic = await recv(ws)
    assert (alerts["status"], alerts["required_permission"]) == (403, "alerts:read")
    assert (traffic["status"], traffic["required_permission"]) == (403, "analytics:read")


async def test_revoking_the_token_closes_its_socket(
    plane: ControlPlane, rest: httpx.AsyncClient
) -> None:
    created = await rest.post("/admin/v1/tokens", json={"name": "live", "scopes": ["alerts:read"]})
    assert created.status_code == 201, created.text
    token = created.json()
    async with opened(plane, token["token"]) as ws:
        await recv(ws)
        await send(ws, type="subscribe", room="config")
        await recv(ws)
        revoked = await rest.delete(f"/admin/v1/tokens/{token['id']}")
        assert revoked.status_code == 204, revoked.text
        code, seen = await closed_with(ws)
    assert code == 4401
    assert seen[-1]["type"] == "closed"
    assert "no longer valid" in seen[-1]["reason"]


async def test_the_traffic_room_streams_the_live_traffic_frames_and_resumes(
    plane: ControlPlane, owner: str
) -> None:
    async with opened(plane, owner) as ws:
        await recv(ws)
        await send(ws, type="subscribe", room="traffic")
        subscribed = await recv(ws)
        first = await recv(ws)
        await send(ws, type="unsubscribe", room="traffic")
        await recv(ws, skip=("heartbeat", "traffic"))
        # Resuming from before the first frame replays it from the node's ring.
        await send(ws, type="subscribe", room="traffic", after=first["position"] - 1)
        await recv(ws)
        again = await recv(ws)
    assert subscribed["type"] == "subscribed"
    assert first["type"] == "traffic"
    assert first["room"] == "traffic"
    assert first["position"] == first["traffic"]["second"]
    assert abs(first["position"] - time.time()) < 30
    assert "totals" in first["traffic"]
    assert again["position"] == first["position"]


async def gauges(plane: ControlPlane) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=plane.url, timeout=10) as c:
        text = (await c.get("/metrics")).text
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name.startswith(("portcullis_stream_open", "portcullis_ws_", "portcullis_presence_")):
            found[name] = float(value)
    return found


async def test_abrupt_disconnects_leave_no_stream_room_or_presence_behind(
    plane: ControlPlane, owner: str, rest: httpx.AsyncClient
) -> None:
    await rest.post("/admin/v1/services", json={"name": "leaky", "url": "http://127.0.0.1:9"})
    before = await gauges(plane)
    sockets = []
    for _ in range(20):
        ws = await opened(plane, owner)
        await recv(ws)
        await send(ws, type="subscribe", room="alerts")
        await send(ws, type="subscribe", room="config", after=0)
        await send(ws, type="presence.join", resource="service:leaky")
        sockets.append(ws)
    for ws in sockets:
        for _ in range(3):
            await recv(ws, skip=("heartbeat", "reset", "event"))
    during = await gauges(plane)
    for ws in sockets:
        ws.transport.abort()

    async def released() -> bool:
        now = await gauges(plane)
        return all(
            now[k] == before[k]
            for k in (
                "portcullis_stream_open",
                "portcullis_ws_connections",
                "portcullis_ws_rooms",
                "portcullis_presence_entries",
            )
        )

    await eventually(released, timeout=15)
    assert during["portcullis_stream_open"] >= before["portcullis_stream_open"] + 40
    assert during["portcullis_ws_rooms"] == before["portcullis_ws_rooms"] + 40
    assert during["portcullis_presence_entries"] == before["portcullis_presence_entries"] + 20


async def test_presence_join_leave_and_the_new_etag_after_another_admins_patch(
    plane: ControlPlane, owner: str, rest: httpx.AsyncClient
) -> None:
    name = f"pay-{uuid.uuid4().hex[:6]}"
    created = await rest.post(
        "/admin/v1/services", json={"name": name, "url": "http://127.0.0.1:9"}
    )
    assert created.status_code == 201, created.text
    resource = f"service:{name}"
    other = await signed_in(plane, f"editor-{uuid.uuid4().hex[:6]}@example.com")
    async with opened(plane, owner) as alice, opened(plane, other) as bob:
        await recv(alice)
        await recv(bob)
        await send(alice, type="presence.join", resource=resource)
        alone = await recv(alice)
        await send(bob, type="presence.join", resource=resource, state="editing")
        both = await recv(alice)
        await recv(bob)
        headers = {"authorization": f"Bearer {other}", "if-match": created.headers["etag"]}
        patched = await rest.patch(
            f"/admin/v1/services/{name}", json={"tags": ["edited"]}, headers=headers
        )
        assert patched.status_code == 200, patched.text
        changed = await recv(alice)
        bob.transport.abort()
        left = await recv(alice)
        await send(alice, type="presence.join", resource="service:nope")
        missing = await recv(alice)
    assert alone["type"] == "presence"
    assert alone["etag"] == created.headers["etag"]
    assert [m["state"] for m in alone["members"]] == ["viewing"]
    assert [m["state"] for m in both["members"]] == ["viewing", "editing"]
    assert both["members"][1]["actor"].startswith("user:editor-")
    assert both["members"][0]["actor"] == alone["members"][0]["actor"]
    assert changed["type"] == "changed"
    assert changed["etag"] == patched.headers["etag"] != created.headers["etag"]
    assert changed["by"].startswith("user:editor-")
    assert [m["state"] for m in left["members"]] == ["viewing"]
    assert (missing["status"], missing["code"]) == (404, "not-found")
