"""The tenant boundary of the data plane, end to end: `portcullis serve` (granian) in front
of the demo upstream and a WebSocket upstream, keys in the gateway's store.

Two organizations, acme and globex, and the operator. Every route's credentials are
checked against the consumers its organization accepts (compiled into the snapshot),
over HTTP/1.1, HTTP/2 (h2c) and WebSocket handshakes alike; acl groups are the route's
organization's; a rate-limit `policy_name` is each organization's own budget.

Before the boundary: acme's key was accepted on globex's routes (and the operator's),
acme's consumer in a group named `staff` passed globex's `allow: [staff]`, a token for
acme's consumer was accepted on globex's jwt-auth route, acme's key opened a
WebSocket on globex's route, and acme's `api` policy spent globex's `api` budget.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
import yaml
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from support.keys import create_keys
from support.servers import Gateway, gateway, granian_app
from support.ws_upstream import WsUpstream, ws_upstream

DEMO = "portcullis.demo.upstream:create_demo_app"
JWT_SECRET = "tenant-isolation-secret-of-32-bytes!"
PROMPT = 5.0
CONSUMERS = {"alice": "acme", "bob": "globex", "carol": "globex", "ops": None}


def config(demo: int, ws: int) -> dict[str, Any]:
    echo = f"http://127.0.0.1:{demo}/echo"

    def route(name: str, org: str | None) -> dict[str, Any]:
        return {"name": name, "service": name, "paths": [f"/{name}"], "organization": org}

    def service(name: str, org: str | None, url: str = echo) -> dict[str, Any]:
        return {"name": name, "url": url, "organization": org}

    keyed = ("acme", "globex", "globex-staff", "ops", "globex-ws")
    limit = {"limits": [{"limit": 2, "period": "1h", "key": "global"}], "policy_name": "api"}
    routes = [
        route("acme", "acme"),
        route("globex", "globex"),
        {**route("globex-staff", "globex"), "shared_consumers": True},
        route("ops", None),
        route("globex-jwt", "globex"),
        {**route("globex-ws", "globex"), "strip_path": False},
        route("acme-limited", "acme"),
        route("globex-limited", "globex"),
    ]
    return {
        "services": [
            service(r["name"], r["organization"], f"http://127.0.0.1:{ws}")
            if r["name"] == "globex-ws"
            else service(r["name"], r["organization"])
            for r in routes
        ],
        "routes": routes,
        "consumers": [
            {"username": "alice", "organization": "acme", "groups": ["staff"]},
            {"username": "bob", "organization": "globex", "groups": ["staff"]},
            {"username": "carol", "organization": "globex", "groups": ["interns"]},
            {"username": "ops", "groups": ["staff"]},
        ],
        "plugins": [
            # Operator-made instances (no organization): each acts for its route's.
            *({"name": "key-auth", "route": name, "config": {}} for name in keyed),
            {"name": "acl", "route": "globex-staff", "config": {"allow": ["staff"]}},
            {
                "name": "jwt-auth",
                "route": "globex-jwt",
                "config": {
                    "keys": [{"kid": "k1", "algorithm": "HS256", "secret": JWT_SECRET}],
                    "gateway_tokens": False,
                },
            },
            # acme's and globex's own instances, both naming their policy `api`.
            {
                "name": "rate-limit",
                "route": "acme-limited",
                "organization": "acme",
                "config": limit,
            },
            {
                "name": "rate-limit",
                "route": "globex-limited",
                "organization": "globex",
                "config": limit,
            },
        ],
    }


@pytest.fixture(scope="module")
def demo() -> Iterator[int]:
    with granian_app(DEMO) as port:
        yield port


@pytest.fixture(scope="module")
def ws() -> Iterator[tuple[WsUpstream, int]]:
    with ws_upstream() as served:
        yield served


@pytest.fixture(scope="module")
def gw(
    tmp_path_factory: pytest.TempPathFactory, demo: int, ws: tuple[WsUpstream, int]
) -> Iterator[tuple[Gateway, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("tenancy")
    cfg = tmp / "gateway.yaml"
    cfg.write_text(yaml.safe_dump(config(demo, ws[1])))
    with gateway(tmp, cfg) as g:
        yield g, asyncio.run(create_keys(g.database_url, CONSUMERS))


@pytest.fixture(params=["http1", "http2"])
def client(
    request: pytest.FixtureRequest, gw: tuple[Gateway, dict[str, str]]
) -> Iterator[httpx.Client]:
    h2 = request.param == "http2"
    with httpx.Client(base_url=gw[0].url, http1=not h2, http2=h2, timeout=10) as c:
        yield c


def upstream_headers(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 200, response.text
    return dict(response.json()["headers"])


def test_a_route_accepts_only_keys_of_its_organizations_consumers(
    gw: tuple[Gateway, dict[str, str]], client: httpx.Client
) -> None:
    keys = gw[1]
    unknown = client.get("/globex", headers={"x-api-key": "pc_live_nope_nope"})
    assert unknown.status_code == 401
    for route, own, foreign in (
        ("/acme", "alice", ("bob", "carol", "ops")),
        ("/globex", "bob", ("alice", "ops")),
        ("/ops", "ops", ("alice", "bob")),
    ):
        ok = client.get(route, headers={"x-api-key": keys[own]})
        assert upstream_headers(ok)["x-consumer-name"] == own
        for consumer in foreign:
            refused = client.get(route, headers={"x-api-key": keys[consumer]})
            assert refused.status_code == 401, (route, consumer)
            # Exactly the answer to a key that does not exist: nothing about other tenants.
            assert refused.json()["detail"] == unknown.json()["detail"]
            assert refused.headers["www-authenticate"] == unknown.headers["www-authenticate"]


def test_acl_groups_are_the_routes_organizations(
    gw: tuple[Gateway, dict[str, str]], client: httpx.Client
) -> None:
    keys = gw[1]

    def get(consumer: str) -> httpx.Response:
        return client.get("/globex-staff", headers={"x-api-key": keys[consumer]})

    assert upstream_headers(get("bob"))["x-consumer-groups"] == "staff"
    assert get("carol").status_code == 403
    # The operator's `ops` is accepted here (shared_consumers), but its `staff` is the
    # operator's word, not globex's.
    assert get("ops").status_code == 403
    # acme's `alice` is in a group named `staff` too: not even authenticated here.
    assert get("alice").status_code == 401


def test_a_jwt_naming_another_organizations_consumer_is_refused(
    gw: tuple[Gateway, dict[str, str]], client: httpx.Client
) -> None:
    def token(sub: str) -> str:
        return jwt.encode(
            {"sub": sub, "exp": 4_102_444_800}, JWT_SECRET, algorithm="HS256", headers={"kid": "k1"}
        )

    ok = client.get("/globex-jwt", headers={"authorization": f"Bearer {token('bob')}"})
    assert upstream_headers(ok)["x-consumer-name"] == "bob"
    refused = client.get("/globex-jwt", headers={"authorization": f"Bearer {token('alice')}"})
    assert refused.status_code == 401
    assert 'error_description="unknown consumer"' in refused.headers["www-authenticate"]


async def test_a_websocket_handshake_with_another_organizations_key_is_refused(
    gw: tuple[Gateway, dict[str, str]], ws: tuple[WsUpstream, int]
) -> None:
    address = f"ws://127.0.0.1:{gw[0].proxy_port}/globex-ws"
    before = ws[0].count
    with pytest.raises(InvalidStatus) as info:
        await connect(
            address, additional_headers={"x-api-key": gw[1]["alice"]}, open_timeout=PROMPT
        )
    assert info.value.response.status_code == 401
    assert ws[0].count == before
    async with connect(
        address, additional_headers={"x-api-key": gw[1]["bob"]}, open_timeout=PROMPT
    ) as conn:
        await conn.send("ping")
        assert await asyncio.wait_for(conn.recv(), PROMPT) == "ping"
    assert ws[0].count == before + 1
    assert ws[0].handshakes[-1]["x-consumer-name"] == "bob"


def test_a_policy_name_is_each_organizations_own_budget(
    gw: tuple[Gateway, dict[str, str]],
) -> None:
    with httpx.Client(base_url=gw[0].url, timeout=10) as c:
        assert [c.get("/acme-limited").status_code for _ in range(3)] == [200, 200, 429]
        # acme spent its `api`; globex's `api` is another budget.
        assert c.get("/globex-limited").status_code == 200
