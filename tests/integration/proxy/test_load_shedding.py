"""Priority load shedding at the gateway: an overloaded upstream, critical traffic flows,
low traffic is shed with 503 problem + Retry-After, and shedding stops when load drops.

The upstream serves at most `CAPACITY` requests at a time, `SERVICE_TIME` each, and
queues the rest, so its latency grows with the concurrency it is sent. One gateway
worker (one limiter) sits in front with adaptive concurrency on; two routes reach
the same upstream, one `critical` and one `low`.

Why the assertions hold on a loaded machine, not by luck:
- Critical requests are admitted up to the whole limit and, when it is full, wait in
  the critical queue for `QUEUE_TIMEOUT` (2 s). With at most `MAX_LIMIT` (16)
  requests in flight a slot frees within one `16 / CAPACITY * SERVICE_TIME` round
  (0.4 s), so every critical request must succeed (200): none may be shed.
- Low requests may only fill half the limit (the default share): at most 8 of the
  twelve low clients are ever waiting on an admitted request, each for at least
  `SERVICE_TIME`; the others cycle through shed answers and a `SHED_PAUSE` of the
  same length. So roughly a third of the low requests at least are shed, whatever
  the limit learned; the test asks for a quarter, each a 503 `overloaded` problem
  with Retry-After. The offered load is kept small (about 100-150 requests/s) so
  that the upstream, not the gateway's CPU, is the bottleneck on a busy machine:
  requests waiting for the gateway's CPU are not in flight to the upstream yet.
- After the load, one sequential low client (one request in flight, plus at most its
  previous one still being released) must always get 200: the limit never falls
  below `min_limit` (4), whose low share admits 2 in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from support.servers import gateway

CAPACITY = 4
SERVICE_TIME = 0.1
CRITICAL_CLIENTS = 3
LOW_CLIENTS = 12
OVERLOAD_SECONDS = 3.0
MAX_REQUESTS_PER_CLIENT = 300
QUEUE_TIMEOUT = 2.0
SHED_PAUSE = 0.1
MAX_LIMIT = 16
OVERLOADED_TYPE = "https://portcullis.dev/problems/overloaded"


class SlowUpstream:
    """HTTP/1.1 keep-alive server: `capacity` requests served at a time, the rest wait."""

    def __init__(self, capacity: int, service_time: float) -> None:
        self.slots = asyncio.Semaphore(capacity)
        self.service_time = service_time
        self.present = 0
        self.peak = 0
        self.served = 0
        self.connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections[task] = writer
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")  # GET requests: no body
                self.present += 1
                self.peak = max(self.peak, self.present)
                try:
                    async with self.slots:
                        await asyncio.sleep(self.service_time)
                finally:
                    self.present -= 1
                self.served += 1
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            del self.connections[task]

    async def close(self) -> None:
        """Close every connection and let the handlers finish."""
        tasks = list(self.connections)
        for writer in self.connections.values():
            writer.close()
        if tasks:
            await asyncio.wait(tasks, timeout=5)


@pytest.fixture
async def slow_upstream() -> AsyncIterator[tuple[SlowUpstream, int]]:
    upstream = SlowUpstream(CAPACITY, SERVICE_TIME)
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield upstream, port
    finally:
        server.close()
        await upstream.close()
        await server.wait_closed()


def shedding_config(port: int, algorithm: str) -> dict[str, object]:
    return {
        "services": [
            {
                "name": "slow",
                "url": f"http://127.0.0.1:{port}",
                "retries": {"attempts": 0},
                "adaptive_concurrency": {
                    "enabled": True,
                    "algorithm": algorithm,
                    "initial_limit": MAX_LIMIT,
                    "min_limit": CAPACITY,
                    "max_limit": MAX_LIMIT,
                    # aimd: no-load latency is SERVICE_TIME; any queueing crosses 1.5x.
                    "latency_target": SERVICE_TIME * 1.5,
                    "window": 0.25,
                    "queue_size": 32,
                    "queue_timeout": QUEUE_TIMEOUT,
                    "retry_after": 2,
                },
            }
        ],
        "routes": [
            {"name": c, "service": "slow", "paths": [f"/{c}"], "priority_class": c}
            for c in ("critical", "low")
        ],
    }


@dataclass
class Outcome:
    path: str
    status: int
    seconds: float
    response: httpx.Response


async def client_loop(
    client: httpx.AsyncClient,
    path: str,
    deadline: float,
    out: list[Outcome],
    *,
    pause_on_shed: float = 0.0,
    count: int = MAX_REQUESTS_PER_CLIENT,
) -> None:
    """Up to `count` requests back to back until `deadline`; after a 503 wait `pause_on_shed`
    (a deliberately impatient client: it ignores Retry-After to keep the pressure on)."""
    for _ in range(count):
        if time.monotonic() >= deadline:
            return
        started = time.monotonic()
        response = await client.get(path)
        out.append(Outcome(path, response.status_code, time.monotonic() - started, response))
        if response.status_code == 503:
            await asyncio.sleep(pause_on_shed)


async def wait_until_serving(client: httpx.AsyncClient) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            if (await client.get("/critical")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("the gateway never proxied /critical")
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("algorithm", ["aimd", "gradient"])
async def test_critical_flows_and_low_is_shed_under_overload(
    tmp_path: Path, slow_upstream: tuple[SlowUpstream, int], algorithm: str
) -> None:
    upstream, port = slow_upstream
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(yaml.safe_dump(shedding_config(port, algorithm)))
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    with gateway(tmp_path, cfg) as gw:
        async with httpx.AsyncClient(base_url=gw.url, limits=limits, timeout=15) as client:
            await wait_until_serving(client)

            # Overload: critical clients back to back, low clients hammering.
            overload: list[Outcome] = []
            deadline = time.monotonic() + OVERLOAD_SECONDS
            await asyncio.gather(
                *(
                    client_loop(client, "/critical", deadline, overload)
                    for _ in range(CRITICAL_CLIENTS)
                ),
                *(
                    client_loop(client, "/low", deadline, overload, pause_on_shed=SHED_PAUSE)
                    for _ in range(LOW_CLIENTS)
                ),
            )
            peak = upstream.peak

            # Load drops: one sequential low client.
            after: list[Outcome] = []
            await client_loop(client, "/low", time.monotonic() + 30, after, count=30)

    critical = [o for o in overload if o.path == "/critical"]
    low = [o for o in overload if o.path == "/low"]
    critical_statuses = Counter(o.status for o in critical)
    low_statuses = Counter(o.status for o in low)
    slowest = max(o.seconds for o in critical)
    print(
        f"\n[{algorithm}] critical {dict(critical_statuses)} (slowest {slowest:.3f}s), "
        f"low {dict(low_statuses)}, after the load {dict(Counter(o.status for o in after))}, "
        f"upstream peak concurrency {peak}"
    )

    # Every critical request succeeded, and enough of them ran to mean something.
    assert critical_statuses == {200: len(critical)}, critical_statuses
    assert len(critical) >= 15
    # Low traffic: only 200 or shed, and at least a quarter of it shed.
    assert set(low_statuses) <= {200, 503}, low_statuses
    assert low_statuses[503] >= 10, low_statuses
    assert low_statuses[503] * 4 >= len(low), low_statuses
    shed = next(o.response for o in low if o.status == 503)
    assert shed.headers["content-type"] == "application/problem+json"
    assert shed.headers["retry-after"] == "2"
    problem = shed.json()
    assert problem["type"] == OVERLOADED_TYPE
    assert problem["status"] == 503
    assert "low" in problem["detail"]
    # The limit kept the upstream's queue bounded: never more than max_limit in flight.
    assert peak <= MAX_LIMIT
    # Shedding stopped once the load dropped.
    assert Counter(o.status for o in after) == {200: 30}
