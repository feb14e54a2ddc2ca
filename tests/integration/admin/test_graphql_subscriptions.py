"""GraphQL subscriptions on `/graphql`, on the real control plane (granian): over
WebSocket (graphql-transport-ws) driven by PyPI `gql`, the npm `graphql-ws` client and
raw `websockets` for every close code; over SSE (graphql-sse, distinct connections)
driven by httpx and the npm `graphql-sse` client. Order and resume by position, org
isolation, RBAC, revocation, shared document limits and stream cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from gql import Client
from gql.graphql_request import GraphQLRequest
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport
from httpx_sse import aconnect_sse
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from portcullis.events.retention import purge_events
from portcullis.store.engine import create_engine
from support.live_events import STORES, module_store, publish, signed_in
from support.servers import ControlPlane, control_plane

NODE_TOOLS = Path(__file__).resolve().parents[2] / "node"
RECHECK = 0.3
MAX_STREAMS = 6
SUBSCRIPTION = """
subscription Live($after: ID, $organization: String, $types: [String!]) {
  events(types: $types, after: $after, organization: $organization) {
    position
    event { id kind subject organizationId }
    reset { reason requested resumeAfter }
  }
}
"""
KEYS = {"types": ["key.*"]}


@pytest.fixture(scope="module", params=STORES)
def plane(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    """One control plane per store for the module; tests keep apart by their own users,
    organizations and positions. Few streams allowed, so a leaked one shows."""
    database_url = module_store(request, tmp_path_factory)
    env = {
        # No events kept in memory: a resume below the retention horizon must find them
        # gone (the hub's buffer would still serve them, rightly; hub unit tests cover it).
        "PORTCULLIS_STREAM_BUFFER_EVENTS": "0",
        "PORTCULLIS_STREAM_HEARTBEAT_SECONDS": str(RECHECK),
        "PORTCULLIS_STREAM_RECHECK_SECONDS": str(RECHECK),
        "PORTCULLIS_STREAM_MAX_CLIENTS": str(MAX_STREAMS),
        "PORTCULLIS_GRAPHQL_WS_INIT_TIMEOUT": "0.5",
    }
    with control_plane(database_url, env=env) as cp:
        yield cp


def ws_url(plane: ControlPlane) -> str:
    return plane.url.replace("http://", "ws://") + "/graphql"


@pytest.fixture
async def token(plane: ControlPlane) -> str:
    return await signed_in(plane, f"owner-{uuid.uuid4().hex[:8]}@example.com")


def transport(plane: ControlPlane, token: str) -> WebsocketsTransport:
    return WebsocketsTransport(
        url=ws_url(plane),
        init_payload={"authorization": f"Bearer {token}"},
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
    )


async def collect(
    plane: ControlPlane, token: str, n: int, **variables: Any
) -> list[dict[str, Any]]:
    """The first `n` items of an `events` subscription, over `gql`'s websockets."""
    request = GraphQLRequest(SUBSCRIPTION, variable_values={**KEYS, **variables})
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(30), Client(transport=transport(plane, token)) as session:
        async for result in session.subscribe(request):
            got.append(result["events"])
            if len(got) == n:
                break
    return got


async def test_gql_receives_events_in_order_and_resumes_after_reconnects(
    plane: ControlPlane, token: str
) -> None:
    start = (await publish(plane.database_url, 1))[0].id
    published = await publish(plane.database_url, 30)
    seen: list[int] = []
    # Cut off three times; each reconnect resumes after the last position seen.
    for n in (7, 11, 12):
        items = await collect(plane, token, n, after=str(seen[-1] if seen else start))
        seen += [int(item["position"]) for item in items]
        assert all(int(i["event"]["id"]) == int(i["position"]) for i in items)
    assert seen == [e.id for e in published]  # 0 missed, 0 duplicates
    assert items[0]["event"]["kind"] == "key.created"


async def test_events_published_while_subscribed_arrive_live(
    plane: ControlPlane, token: str
) -> None:
    request = GraphQLRequest(SUBSCRIPTION, variable_values=KEYS)
    async with asyncio.timeout(30), Client(transport=transport(plane, token)) as session:
        results = session.subscribe(request)
        consumer = asyncio.ensure_future(anext(results))
        # No item before publishing: wait until the stream opened, by publishing until
        # the first item arrives (an event before the stream opened is not delivered).
        published = []
        while not consumer.done():
            published += await publish(plane.database_url, 1)
            await asyncio.wait((consumer,), timeout=0.2)
        first = int(consumer.result()["events"]["position"])
        published += await publish(plane.database_url, 3)
        later = [e.id for e in published if e.id > first]
        rest = [int((await anext(results))["events"]["position"]) for _ in later]
        await results.aclose()
    assert first in [e.id for e in published]
    assert rest == later


async def test_a_position_before_retention_starts_with_a_reset(
    plane: ControlPlane, token: str
) -> None:
    published = await publish(plane.database_url, 3)
    engine = create_engine(plane.database_url)
    try:
        await purge_events(engine, older_than=datetime.now(UTC) + timedelta(days=1))
    finally:
        await engine.dispose()
    # The newest event survives the purge: ours, unless the server recorded one since
    # (a sign-in); then the next of ours comes after the reset.
    fresh = await publish(plane.database_url, 1)
    reset, newest = await collect(plane, token, 2, after=str(published[0].id))
    assert reset["event"] is None
    assert reset["reset"]["reason"] == "retention"
    assert reset["reset"]["requested"] == str(published[0].id)
    assert reset["position"] == reset["reset"]["resumeAfter"]
    assert int(reset["position"]) >= published[1].id
    assert int(newest["position"]) in (published[2].id, fresh[0].id)
    assert int(newest["position"]) > int(reset["position"])


async def test_an_organization_admin_subscribes_to_its_organization_only(
    plane: ControlPlane, token: str
) -> None:
    headers = {"authorization": f"Bearer {token}"}
    orgs = {}
    async with httpx.AsyncClient(base_url=plane.url, headers=headers) as client:
        for name in ("acme", "globex"):
            name = f"{name}-{uuid.uuid4().hex[:6]}"
            created = await client.post("/admin/v1/organizations", json={"name": name})
            assert created.status_code == 201, created.text
            orgs[name.split("-")[0]] = (created.json()["id"], name)
    acme = await signed_in(plane, f"acme-{uuid.uuid4().hex[:6]}@example.com", orgs["acme"][0])
    start = (await publish(plane.database_url, 1))[0].id
    mine = await publish(plane.database_url, 1, organization_id=orgs["acme"][0])
    await publish(plane.database_url, 1, organization_id=orgs["globex"][0])
    await publish(plane.database_url, 1)  # gateway-wide: unlimited admins only
    mine += await publish(plane.database_url, 1, organization_id=orgs["acme"][0])
    got = await collect(plane, acme, 2, after=str(start))
    assert [int(g["position"]) for g in got] == [e.id for e in mine]
    assert {g["event"]["organizationId"] for g in got} == {orgs["acme"][0]}
    # Naming another organization is "not found", as in REST.
    with pytest.raises(TransportQueryError) as refused:
        await collect(plane, acme, 1, organization=orgs["globex"][1])
    assert refused.value.errors is not None
    assert refused.value.errors[0]["extensions"]["status"] == 404


async def test_a_token_without_alerts_read_is_refused_as_in_rest(
    plane: ControlPlane, token: str
) -> None:
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=plane.url, headers=headers) as client:
        created = await client.post(
            "/admin/v1/tokens", json={"name": "cfg", "scopes": ["config:read"]}
        )
        assert created.status_code == 201, created.text
        rest = await client.get(
            "/admin/v1/stream",
            headers={"authorization": f"Bearer {created.json()['token']}"},
        )
    with pytest.raises(TransportQueryError) as refused:
        await collect(plane, created.json()["token"], 1)
    assert rest.status_code == 403
    assert refused.value.errors is not None
    extensions = refused.value.errors[0]["extensions"]
    assert (extensions["code"], extensions["status"]) == ("FORBIDDEN", 403)
    assert extensions["required_permission"] == "alerts:read"


async def revocable(plane: ControlPlane, token: str) -> tuple[str, str]:
    """A new API token with alerts:read (its secret, its id)."""
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=plane.url, headers=headers) as client:
        created = await client.post(
            "/admin/v1/tokens", json={"name": "dash", "scopes": ["alerts:read"]}
        )
    assert created.status_code == 201, created.text
    return str(created.json()["token"]), str(created.json()["id"])


async def revoke(plane: ControlPlane, token: str, token_id: str) -> None:
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=plane.url, headers=headers) as client:
        revoked = await client.delete(f"/admin/v1/tokens/{token_id}")
    assert revoked.status_code == 204, revoked.text


async def test_revoking_the_token_closes_its_websocket_with_4403(
    plane: ControlPlane, token: str
) -> None:
    secret, token_id = await revocable(plane, token)
    async with connected(plane, secret) as ws:
        await ws.send(json.dumps(subscribe("s1")))
        await revoke(plane, token, token_id)
        code, reason = await closed_with(ws)
    assert code == 4403
    assert "no longer valid" in (reason or "")


async def test_traffic_frames_come_every_second_and_resume_from_the_kept_ones(
    plane: ControlPlane, token: str
) -> None:
    """No data plane runs: LiveTraffic still emits a frame per second (workers 0)."""
    query = "subscription T($after: Int) { traffic(after: $after) { second workers totals } }"
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(30), Client(transport=transport(plane, token)) as session:
        async for result in session.subscribe(GraphQLRequest(query)):
            got.append(result["traffic"])
            if len(got) == 2:
                break
        # Resuming after the first second gets the second one again (kept), then on.
        request = GraphQLRequest(query, variable_values={"after": got[0]["second"]})
        async for result in session.subscribe(request):
            got.append(result["traffic"])
            if len(got) == 4:
                break
    first = got[0]["second"]
    assert [g["second"] for g in got] == [first, first + 1, first + 1, first + 2]
    assert got[0]["workers"] == 0
    assert got[0]["totals"]["requests"] == 0


async def test_a_traffic_subscription_needs_analytics_read_only_and_keeps_running(
    plane: ControlPlane, token: str
) -> None:
    """Re-checked every RECHECK seconds against its own permission, not alerts:read."""
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=plane.url, headers=headers) as client:
        created = await client.post(
            "/admin/v1/tokens", json={"name": "traffic", "scopes": ["analytics:read"]}
        )
    assert created.status_code == 201, created.text
    query = GraphQLRequest("subscription { traffic { second } }")
    seconds = []
    async with (
        asyncio.timeout(30),
        Client(transport=transport(plane, created.json()["token"])) as session,
    ):
        async for result in session.subscribe(query):
            seconds.append(result["traffic"]["second"])
            if len(seconds) == 3:  # two seconds: several re-checks
                break
    assert seconds == [seconds[0], seconds[0] + 1, seconds[0] + 2]


# --- graphql-transport-ws with a raw client: every close code ---------------------


def subscribe(id: str, query: str = SUBSCRIPTION, **variables: Any) -> dict[str, Any]:
    return {
        "id": id,
        "type": "subscribe",
        "payload": {"query": query, "variables": {**KEYS, **variables}},
    }


SUBPROTOCOL = Subprotocol("graphql-transport-ws")


def init(token: str | None) -> str:
    return json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})


@asynccontextmanager
async def connected(
    plane: ControlPlane, token: str | None, *, acknowledged: bool = True
) -> AsyncIterator[ClientConnection]:
    """A raw graphql-transport-ws connection; initialised and acknowledged by default."""
    async with websockets.connect(ws_url(plane), subprotocols=[SUBPROTOCOL]) as ws:
        if acknowledged:
            await ws.send(init(token))
            ack = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert ack["type"] == "connection_ack", ack
        yield ws


async def closed_with(ws: ClientConnection) -> tuple[int | None, str | None]:
    """The close code and reason once the server closed (messages before are dropped)."""
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(10):
            async for _ in ws:
                pass
    return ws.close_code, ws.close_reason


async def test_an_invalid_message_closes_with_4400(plane: ControlPlane, token: str) -> None:
    async with connected(plane, token) as ws:
        await ws.send("{not json")
        assert await closed_with(ws) == (4400, "Message is not JSON")
    async with connected(plane, token) as ws:
        await ws.send(json.dumps({"type": "next", "id": "1", "payload": {}}))
        assert (await closed_with(ws))[0] == 4400
    async with connected(plane, token) as ws:
        await ws.send(json.dumps({"type": "subscribe", "payload": {"query": "{__typename}"}}))
        assert (await closed_with(ws))[0] == 4400


async def test_subscribing_before_the_ack_closes_with_4401(plane: ControlPlane) -> None:
    async with connected(plane, None, acknowledged=False) as ws:
        await ws.send(json.dumps(subscribe("s1")))
        assert await closed_with(ws) == (4401, "Unauthorized")


async def test_a_bad_token_closes_with_4403_and_the_header_is_accepted(
    plane: ControlPlane, token: str
) -> None:
    async with connected(plane, None, acknowledged=False) as ws:
        init = {"type": "connection_init", "payload": {"authorization": "Bearer nope"}}
        await ws.send(json.dumps(init))
        assert await closed_with(ws) == (4403, "Forbidden")
    # The upgrade request's Authorization header serves when the payload has none.
    async with websockets.connect(
        ws_url(plane),
        subprotocols=[SUBPROTOCOL],
        additional_headers={"authorization": f"Bearer {token}"},
    ) as ws:
        await ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "connection_ack"


async def test_no_init_within_the_timeout_closes_with_4408(plane: ControlPlane) -> None:
    async with connected(plane, None, acknowledged=False) as ws:
        assert await closed_with(ws) == (4408, "Connection initialisation timeout")


async def test_a_duplicate_subscription_id_closes_with_4409(
    plane: ControlPlane, token: str
) -> None:
    async with connected(plane, token) as ws:
        await ws.send(json.dumps(subscribe("dup")))
        await ws.send(json.dumps(subscribe("dup")))
        assert await closed_with(ws) == (4409, "Subscriber for dup already exists")


async def test_a_second_init_closes_with_4429(plane: ControlPlane, token: str) -> None:
    async with connected(plane, token) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert await closed_with(ws) == (4429, "Too many initialisation requests")


async def test_without_the_subprotocol_the_socket_closes_with_4406(plane: ControlPlane) -> None:
    async with websockets.connect(ws_url(plane)) as ws:
        assert await closed_with(ws) == (4406, "Subprotocol not acceptable")


async def test_ping_queries_complete_and_limits_over_the_socket(
    plane: ControlPlane, token: str
) -> None:
    async with connected(plane, token) as ws:
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv()) == {"type": "pong"}
        # A query: one `next`, then `complete`.
        query = {"id": "q", "type": "subscribe", "payload": {"query": "{ __typename }"}}
        await ws.send(json.dumps(query))
        assert json.loads(await ws.recv()) == {
            "id": "q",
            "type": "next",
            "payload": {"data": {"__typename": "Query"}},
        }
        assert json.loads(await ws.recv()) == {"id": "q", "type": "complete"}
        # The HTTP face's limits hold on the socket: too deep once the fragment is
        # expanded (each definition alone is within the limit), so it never runs.
        deep = (
            "{ services { nodes { routes { nodes { service { routes { nodes { ...F } } } } } } } }"
            " fragment F on Route { service { routes { nodes { service { routes { nodes"
            " { name } } } } } } }"
        )
        await ws.send(json.dumps({"id": "d", "type": "subscribe", "payload": {"query": deep}}))
        error = json.loads(await ws.recv())
        assert (error["id"], error["type"]) == ("d", "error")
        assert error["payload"][0]["extensions"]["code"] == "LIMIT_EXCEEDED"
        assert error["payload"][0]["extensions"]["limit"] == "depth"
        # A subscription the client completes stops; its id may then be used again
        # (4409 otherwise), and the new one answers.
        before, target = await publish(plane.database_url, 2)
        await ws.send(json.dumps(subscribe("s")))
        await ws.send(json.dumps({"id": "s", "type": "complete"}))
        await ws.send(json.dumps(subscribe("s", after=str(before.id))))
        item = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert (item["id"], item["type"]) == ("s", "next")
    assert item["payload"]["data"]["events"]["position"] == str(target.id)


async def test_http_refuses_a_subscription_and_names_the_streaming_transports(
    plane: ControlPlane, token: str
) -> None:
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=plane.url, headers=headers) as client:
        response = await client.post("/graphql", json={"query": SUBSCRIPTION})
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "STREAMING_TRANSPORT_REQUIRED"


async def test_abrupt_disconnects_leave_no_stream_open(plane: ControlPlane, token: str) -> None:
    """The process serves MAX_STREAMS streams at most (some its own, e.g. presence's):
    after many abrupt disconnects mid-subscription, as many streams open as before."""
    before, _ = await publish(plane.database_url, 2)
    # Resuming after `before`, a stream's first item is the event after it: once it
    # arrived, the stream is open.
    opened = subscribe("s", after=str(before.id))
    async with connected(plane, token) as ws:
        free = await capacity(ws, opened)
    assert free >= 1
    for _ in range(3 * MAX_STREAMS):
        ws = await websockets.connect(ws_url(plane), subprotocols=[SUBPROTOCOL])
        await ws.send(init(token))
        await ws.recv()
        await ws.send(json.dumps(opened))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "next"
        ws.transport.abort()  # mid-subscription, no close handshake
    deadline = asyncio.get_running_loop().time() + 10
    async with connected(plane, token) as ws:
        # The server hears of the aborts asynchronously: retry to a deadline.
        while (now := await capacity(ws, opened)) < free:
            assert asyncio.get_running_loop().time() < deadline, (now, free)


async def capacity(ws: ClientConnection, opened: dict[str, Any]) -> int:
    """How many of MAX_STREAMS subscriptions open on `ws` (then completed again)."""
    for i in range(MAX_STREAMS):
        await ws.send(json.dumps({**opened, "id": f"full{i}"}))
    firsts: list[dict[str, Any]] = []  # each one's first `next`: its event, or the refusal
    while len(firsts) < MAX_STREAMS:
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if message["type"] == "next":
            firsts.append(message)
    await close_all(ws, MAX_STREAMS)
    return sum(1 for m in firsts if "errors" not in m["payload"])


async def close_all(ws: ClientConnection, n: int) -> None:
    """Complete subscriptions full0..full<n> and drain what the refused ones still send."""
    for i in range(n):
        await ws.send(json.dumps({"id": f"full{i}", "type": "complete"}))
    await ws.send(json.dumps({"type": "ping"}))
    while json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] != "pong":
        pass


# --- graphql-sse ------------------------------------------------------------------


async def test_graphql_sse_streams_next_events_and_resumes(plane: ControlPlane, token: str) -> None:
    start = (await publish(plane.database_url, 1))[0].id
    published = await publish(plane.database_url, 5)
    headers = {"authorization": f"Bearer {token}", "accept": "text/event-stream"}
    body = {"query": SUBSCRIPTION, "variables": {**KEYS, "after": str(start)}}
    async with (
        httpx.AsyncClient(base_url=plane.url, headers=headers, timeout=10) as client,
        aconnect_sse(client, "POST", "/graphql", json=body) as source,
    ):
        assert source.response.headers["content-type"].startswith("text/event-stream")
        got = []
        async with asyncio.timeout(20):
            async for event in source.aiter_sse():
                assert event.event == "next"
                got.append(event.json()["data"]["events"])
                if len(got) == 3:
                    break
        # Resume from the last position, with GET this time.
        params = {
            "query": SUBSCRIPTION,
            "variables": json.dumps({**KEYS, "after": got[-1]["position"]}),
        }
        async with aconnect_sse(client, "GET", "/graphql", params=params) as again:
            async with asyncio.timeout(20):
                async for event in again.aiter_sse():
                    got.append(event.json()["data"]["events"])
                    if len(got) == 5:
                        break
    assert [int(g["position"]) for g in got] == [e.id for e in published]


async def test_graphql_sse_reports_refusals_on_the_stream_and_http_errors_as_http(
    plane: ControlPlane, token: str
) -> None:
    headers = {"authorization": f"Bearer {token}", "accept": "text/event-stream"}
    async with httpx.AsyncClient(base_url=plane.url, headers=headers, timeout=10) as client:
        # A document refused before execution: on the stream, then complete (the protocol).
        invalid = await client.post("/graphql", json={"query": "subscription { nope }"})
        query = await client.post("/graphql", json={"query": "{ __typename }"})
        anonymous = await client.post(
            "/graphql", json={"query": SUBSCRIPTION}, headers={"authorization": ""}
        )
    assert invalid.status_code == 200
    assert invalid.text.startswith('event: next\ndata: {"errors":')
    assert "GRAPHQL_VALIDATION_FAILED" in invalid.text
    assert invalid.text.endswith("event: complete\ndata:\n\n")
    assert query.text == (
        'event: next\ndata: {"data":{"__typename":"Query"}}\n\nevent: complete\ndata:\n\n'
    )
    assert anonymous.status_code == 401
    assert anonymous.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_graphql_sse_ends_when_the_token_is_revoked(plane: ControlPlane, token: str) -> None:
    secret, token_id = await revocable(plane, token)
    headers = {"authorization": f"Bearer {secret}", "accept": "text/event-stream"}
    async with (
        httpx.AsyncClient(base_url=plane.url, headers=headers, timeout=10) as client,
        client.stream("POST", "/graphql", json={"query": SUBSCRIPTION}) as response,
    ):
        lines = response.aiter_lines()
        assert await anext(lines) == ": stream open"
        await revoke(plane, token, token_id)
        async with asyncio.timeout(10):
            text = "\n".join([line async for line in lines])
    assert "no longer valid" in text
    assert text.rstrip("\n").endswith("event: complete\ndata:")


# --- the npm clients ------------------------------------------------------------------


async def node_client(mode: str, url: str, token: str, after: str, count: int) -> list[Any]:
    process = await asyncio.create_subprocess_exec(
        "node",
        str(NODE_TOOLS / "graphql_stream_client.mjs"),
        mode,
        url,
        token,
        after,
        str(count),
        cwd=NODE_TOOLS,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return [json.loads(line) for line in out.decode().splitlines()]


@pytest.mark.parametrize("mode", ["ws", "sse"])
async def test_the_npm_clients_resume_across_a_reconnect(
    plane: ControlPlane, token: str, mode: str
) -> None:
    url = ws_url(plane) if mode == "ws" else plane.url + "/graphql"
    start = (await publish(plane.database_url, 1))[0].id
    published = await publish(plane.database_url, 8)
    first = await node_client(mode, url, token, str(start), 5)
    assert first[-1] == {"done": True, "seen": 5}, first
    rest = await node_client(mode, url, token, first[-2]["position"], 3)
    positions = [int(item["position"]) for item in first[:-1] + rest[:-1]]
    assert positions == [e.id for e in published]


async def test_the_npm_graphql_ws_client_sees_4403_for_a_bad_token(plane: ControlPlane) -> None:
    lines = await node_client("ws", ws_url(plane), "not-a-token", "", 1)
    assert lines[0]["code"] == 4403, lines
