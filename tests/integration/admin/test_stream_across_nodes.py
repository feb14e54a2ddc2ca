"""Live streams across control-plane nodes (issue 17's resume proof): two granian control
planes on one PostgreSQL store and one Redis. A client reading a numbered stream of
10,000 events through `httpx-sse` is cut off several times and once moved to the other
node right after SIGKILL of the one it was on, and gets every event once, in order
(checked by position). An event published on the bus of one node reaches a client of
the other at once, through Redis: the nodes poll the log only every 10 s."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from httpx_sse import aconnect_sse

from portcullis.events.bus import RedisBus, record_events
from portcullis.store.engine import create_engine, write_transaction
from support.live_streams import PLANE_ENV, key_created, signed_in
from support.postgres import PostgresServer
from support.redis import RedisServer
from support.servers import ControlPlane, control_planes

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

EVENTS = 10_000
BATCH = 20
# The nodes tail the log this seldom: what arrives sooner came through the bus.
POLL_INTERVAL = 10.0


@pytest.fixture(scope="module")
def nodes(
    own_redis: RedisServer, postgres_server: PostgresServer, migrated_postgres_template: str
) -> Iterator[list[ControlPlane]]:
    database_url = postgres_server.create_database(template=migrated_postgres_template)
    env = {
        **PLANE_ENV,
        "PORTCULLIS_REDIS_URL": own_redis.url,
        "PORTCULLIS_STREAM_POLL_INTERVAL": str(POLL_INTERVAL),
        "PORTCULLIS_STREAM_HEARTBEAT_SECONDS": "1",
    }
    with control_planes(database_url, 2, env=env) as planes:
        yield planes


@pytest.fixture
async def bus(nodes: list[ControlPlane], own_redis: RedisServer) -> AsyncIterator[RedisBus]:
    """A producer node's event bus: stores events, then tells every node over Redis."""
    producer = RedisBus(create_engine(nodes[0].database_url), own_redis.url)
    await producer.start()
    try:
        yield producer
    finally:
        await producer.close()
        await producer.engine.dispose()


async def token_for(node: ControlPlane, email: str) -> str:
    return await signed_in(node.url, node.database_url, email)


async def test_an_event_on_one_nodes_bus_reaches_the_other_nodes_clients_at_once(
    nodes: list[ControlPlane], bus: RedisBus
) -> None:
    node = nodes[1]
    headers = {"authorization": f"Bearer {await token_for(node, 'latency@example.com')}"}
    latencies = []
    async with (
        httpx.AsyncClient(base_url=node.url, headers=headers, timeout=30) as client,
        aconnect_sse(client, "GET", "/admin/v1/stream?types=key.created") as source,
    ):
        events = source.aiter_sse()
        await anext(events)  # the opening `retry:` block: the stream is attached
        for i in range(20):
            sent = time.perf_counter()
            async with write_transaction(bus.engine) as conn:
                recorded = await record_events(conn, [key_created(i)])
            await bus.deliver(recorded)
            async with asyncio.timeout(POLL_INTERVAL / 2):
                async for sse in events:
                    if sse.data:
                        break
            latencies.append(time.perf_counter() - sent)
            assert int(sse.id) == recorded[0].id
    print(
        f"\nbus -> other node's SSE client: p50 {statistics.median(latencies) * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.1f} ms (poll interval {POLL_INTERVAL:.0f} s)"
    )
    # Polling alone would take up to the poll interval (5 s on average) per event.
    assert max(latencies) < 1.0


async def test_ten_thousand_events_resume_across_cuts_and_a_killed_node(
    nodes: list[ControlPlane], bus: RedisBus
) -> None:
    first, second = nodes
    token = await token_for(first, "resume@example.com")
    headers = {"authorization": f"Bearer {token}"}
    async with write_transaction(bus.engine) as conn:
        (mark,) = await record_events(conn, [key_created(-1)])
    await bus.deliver([mark])

    async def produce() -> None:
        # A steady pace: a batch of BATCH events every 25 ms (~800 events/s).
        for start in range(0, EVENTS, BATCH):
            async with write_transaction(bus.engine) as conn:
                events = await record_events(
                    conn, [key_created(i) for i in range(start, start + BATCH)]
                )
            await bus.deliver(events)
            await asyncio.sleep(0.025)

    received: list[tuple[int, int]] = []  # (position, number) in arrival order
    # Where the client is cut off: by itself, then by its node dying (SIGKILL), after
    # which it goes to the other node; the rest on that node.
    cuts = {1_500: "close", 3_000: "close", 5_000: "kill", 7_000: "close", 8_500: "close"}
    node, position = first, str(mark.id)
    reconnects: list[str] = []
    started = time.monotonic()
    producer = asyncio.create_task(produce())
    try:
        # Until the last event arrives (a client that missed some stops there too).
        while not received or received[-1][1] != EVENTS - 1:
            url = f"{node.url}/admin/v1/stream?types=key.created"
            try:
                async with (
                    httpx.AsyncClient(headers=headers, timeout=30) as client,
                    aconnect_sse(client, "GET", url, headers={"last-event-id": position}) as source,
                ):
                    assert source.response.status_code == 200, await source.response.aread()
                    async with asyncio.timeout(60):
                        async for sse in source.aiter_sse():
                            if not sse.data:
                                continue
                            received.append((int(sse.id), int(sse.json()["subject"][5:])))
                            position = sse.id
                            cut = cuts.pop(len(received), None)
                            if cut == "kill":
                                node.kill()  # the client reads on until the connection dies
                            elif cut == "close":
                                reconnects.append(f"{len(received)}: closed")
                                break
                            if received[-1][1] == EVENTS - 1:
                                break
            except httpx.TransportError as exc:
                if node is not first:
                    raise AssertionError(f"the surviving node's stream failed: {exc!r}") from exc
                reconnects.append(f"{len(received)}: {type(exc).__name__} after SIGKILL")
                node = second
        await producer
    finally:
        producer.cancel()
    elapsed = time.monotonic() - started
    numbers = [n for _, n in received]
    positions = [p for p, _ in received]
    missed = set(range(EVENTS)) - set(numbers)
    duplicates = len(numbers) - len(set(numbers))
    print(f"\n{EVENTS} events in {elapsed:.1f} s; reconnects: {reconnects}")
    assert (len(missed), duplicates) == (0, 0), (sorted(missed)[:10], duplicates)
    assert numbers == list(range(EVENTS))
    assert positions == sorted(positions)
    assert not cuts
    assert len(reconnects) == 5
    assert any("after SIGKILL" in r for r in reconnects)
