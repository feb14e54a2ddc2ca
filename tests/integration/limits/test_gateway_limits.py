"""The proof at the gateway: 3 gateway processes (2 workers each) share one Redis, a
concurrent burst well over a limit is spread over all of them, and exactly the
limit is admitted — for each algorithm. Then: requests refused by auth are not
counted, and a gateway whose Redis dies keeps serving per policy and recovers by
itself when Redis returns.

Needs the data plane to build its limit backend from `PORTCULLIS_REDIS_URL`
(`portcullis.limits.factory.create_limit_backend`, wired in proxy/server.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from portcullis.limits import Algorithm
from support.clock import clear_of_window_edges
from support.redis import RedisServer, running_redis
from support.servers import Gateway, gateway, granian_app
from support.structured_fields import parse_list

DEMO = "portcullis.demo.upstream:create_demo_app"
LIMIT = 40
BURST = 150
QUOTA_TYPE = "https://iana.org/assignments/http-problem-types#quota-exceeded"
REDUCED_TYPE = "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity"


def rate_limit(
    route: str, policy: str, *, limit: int, algorithm: str = "gcra", **extra: Any
) -> dict[str, Any]:
    limits = [{"limit": limit, "period": "1h", "algorithm": algorithm, "key": "global"}]
    return {
        "name": "rate-limit",
        "route": route,
        "config": {"policy_name": policy, "limits": limits, **extra},
    }


def cluster_config(upstream: int, run: str) -> dict[str, Any]:
    routes = [
        {"name": a.value, "service": "echo", "paths": [f"/{a.value}"], "strip_path": False}
        for a in Algorithm
    ]
    plugins = [
        rate_limit(
            a.value, f"{a.value}-{run}", limit=LIMIT, algorithm=a.value, on_backend_failure="closed"
        )
        for a in Algorithm
    ]
    # key-auth refuses wrong keys (401) before rate-limit sees them; no key = the guest.
    routes.append({"name": "keyed", "service": "echo", "paths": ["/keyed"], "strip_path": False})
    plugins += [
        {"name": "key-auth", "route": "keyed", "config": {"anonymous": "guest"}},
        {
            "name": "rate-limit",
            "route": "keyed",
            "config": {
                "policy_name": f"keyed-{run}",
                "limits": [{"limit": 5, "period": "1h", "key": "consumer"}],
            },
        },
    ]
    return {
        "services": [{"name": "echo", "url": f"http://127.0.0.1:{upstream}/echo"}],
        "routes": routes,
        "plugins": plugins,
        "consumers": [{"username": "guest"}],
    }


@pytest.fixture(scope="module")
def upstream() -> Iterator[int]:
    with granian_app(DEMO, workers=1) as port:
        yield port


@dataclass
class Cluster:
    nodes: list[Gateway]
    run: str  # suffix of this cluster's policy names (the session's Redis outlives it)

    @property
    def urls(self) -> list[str]:
        return [g.url for g in self.nodes]


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, upstream: int, redis_server: RedisServer
) -> Iterator[Cluster]:
    """Three gateway nodes, two workers each, one Redis: one cluster."""
    run = uuid.uuid4().hex[:8]
    env = {"PORTCULLIS_REDIS_URL": redis_server.url, "PORTCULLIS_LIMITS_REDIS_TIMEOUT": "5"}
    with contextlib.ExitStack() as stack:
        nodes = []
        for i in range(3):
            tmp = tmp_path_factory.mktemp(f"node{i}")
            cfg = tmp / "gateway.yaml"
            cfg.write_text(yaml.safe_dump(cluster_config(upstream, run)))
            nodes.append(
                stack.enter_context(
                    gateway(tmp, cfg, workers=2, extra_env={**env, "PORTCULLIS_NODE_NAME": f"n{i}"})
                )
            )
        yield Cluster(nodes, run)


async def fire(
    urls: list[str], path: str, n: int, headers: dict[str, str] | None = None
) -> list[httpx.Response]:
    """`n` concurrent requests, spread round-robin over the nodes."""
    limits = httpx.Limits(max_connections=25, max_keepalive_connections=25)
    clients = [httpx.AsyncClient(base_url=u, limits=limits, timeout=30) for u in urls]
    try:
        return await asyncio.gather(
            *(clients[i % len(clients)].get(path, headers=headers) for i in range(n))
        )
    finally:
        for c in clients:
            await c.aclose()


@pytest.mark.parametrize("algorithm", list(Algorithm))
async def test_a_burst_over_three_nodes_admits_exactly_the_limit(
    cluster: Cluster, algorithm: Algorithm
) -> None:
    clear_of_window_edges(3600)
    responses = await fire(cluster.urls, f"/{algorithm.value}", BURST)
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: LIMIT, 429: BURST - LIMIT}, statuses
    # Each node refused some: they all saw the same shared count.
    by_node = Counter(str(r.url.port) for r in responses if r.status_code == 429)
    assert len(by_node) == 3

    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["content-type"] == "application/problem+json"
    body = refused.json()
    assert body["type"] == QUOTA_TYPE
    assert body["status"] == 429
    assert body["violated-policies"] == [f"{algorithm.value}-{cluster.run}"]
    retry = int(refused.headers["retry-after"])
    [(name, params)] = parse_list(refused.headers["ratelimit"])
    assert name == body["violated-policies"][0]
    assert params["r"] == 0
    assert 1 <= int(params["t"]) <= retry
    admitted = next(r for r in responses if r.status_code == 200)
    [(_, policy)] = parse_list(admitted.headers["ratelimit-policy"])
    assert policy == {"q": LIMIT, "w": 3600}
    [(_, current)] = parse_list(admitted.headers["ratelimit"])
    assert 0 <= int(current["r"]) < LIMIT


async def test_requests_refused_by_auth_are_not_counted(cluster: Cluster) -> None:
    urls = cluster.urls
    wrong = await fire(urls, "/keyed", 30, headers={"x-api-key": "not-a-key"})
    assert Counter(r.status_code for r in wrong) == {401: 30}
    guest = await fire(urls, "/keyed", 12)
    assert Counter(r.status_code for r in guest) == {200: 5, 429: 7}


def outage_config(upstream: int) -> dict[str, Any]:
    return {
        "services": [{"name": "echo", "url": f"http://127.0.0.1:{upstream}/echo"}],
        "routes": [
            {"name": n, "service": "echo", "paths": [f"/{n}"], "strip_path": False}
            for n in ("closed", "open", "local")
        ],
        "plugins": [
            rate_limit("closed", "closed", limit=1000, on_backend_failure="closed"),
            rate_limit("open", "open", limit=1, on_backend_failure="open"),
            rate_limit("local", "local", limit=3, on_backend_failure="local"),
        ],
    }


async def test_redis_outage_follows_the_policy_and_recovers(tmp_path: Path, upstream: int) -> None:
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(yaml.safe_dump(outage_config(upstream)))
    with running_redis() as redis:
        env = {
            "PORTCULLIS_REDIS_URL": redis.url,
            "PORTCULLIS_LIMITS_REDIS_TIMEOUT": "1",
            "PORTCULLIS_LIMITS_REDIS_RETRY_INTERVAL": "0.5",
        }
        with gateway(tmp_path, cfg, workers=2, extra_env=env) as gw:
            async with httpx.AsyncClient(base_url=gw.url, timeout=10) as client:
                # Redis up: the open route's limit of 1 is shared by both workers.
                statuses = [(await client.get("/open")).status_code for _ in range(6)]
                assert statuses.count(200) == 1
                assert (await client.get("/closed")).status_code == 200

                redis.kill()
                closed = [await client.get("/closed") for _ in range(6)]
                assert {r.status_code for r in closed} == {503}
                assert closed[0].json()["type"] == REDUCED_TYPE
                assert closed[0].json()["violated-policies"] == ["closed"]
                assert int(closed[0].headers["retry-after"]) >= 1
                opened = [await client.get("/open") for _ in range(6)]
                assert {r.status_code for r in opened} == {200}
                assert all("ratelimit" not in r.headers for r in opened)
                # Local counters: each worker enforces the limit of 3 on its own.
                local = Counter([(await client.get("/local")).status_code for _ in range(20)])
                assert set(local) == {200, 429}
                assert 3 <= local[200] <= 6

                redis.start()  # same port, empty
                # Both workers probe and go back to Redis: the fail-closed route answers 200
                # on every worker (twenty in a row over fresh connections, which land on
                # either worker; a worker still cut off from Redis answers 503).
                deadline = time.monotonic() + 15
                streak = 0
                while streak < 20:
                    assert time.monotonic() < deadline, "the gateway never went back to Redis"
                    async with httpx.AsyncClient(base_url=gw.url, timeout=10) as fresh:
                        back = (await fresh.get("/closed")).status_code == 200
                    streak = streak + 1 if back else 0
                statuses = [(await client.get("/open")).status_code for _ in range(6)]
                assert statuses.count(200) == 1  # one shared count again
                assert json.loads((await client.get("/open")).content)["type"] == QUOTA_TYPE
