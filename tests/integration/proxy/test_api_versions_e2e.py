"""API versions through a real gateway (`portcullis serve`, granian) in front of an upstream
that reflects each request (so the path shows which service answered) and a WebSocket
upstream that records the paths it was asked for.

Proves: path-versioned routes serve their version; a shared route selects by header,
query parameter and media type, else the consumer's pin, else the default, and sends the
request to the chosen version's service; an unknown version is a 400 listing the
versions; a deprecated version's responses (upstream ones and the gateway's own 401)
carry Deprecation (an sf-date), Sunset (an HTTP-date, not before it) and Link; a version
past its sunset is a 410 naming its successor; a staging key goes to the version's
sandbox service and a production key does not; WebSocket handshakes take the same steps.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from http_sfv.item import Item
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from portcullis.identity.keys import Environment
from portcullis.problems import TYPE_BASE
from support.h2_client import H2Result, h2_request
from support.keys import create_keys
from support.servers import Gateway, gateway, granian_app
from support.ws_upstream import WsUpstream, ws_upstream

TESTS_DIR = str(Path(__file__).resolve().parents[2])
DEPRECATED_AT = "2026-11-01T00:00:00Z"
SUNSET_AT = "2027-12-31T00:00:00Z"
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def echo() -> Iterator[int]:
    with granian_app("support.body_echo:create_app", env={"PYTHONPATH": TESTS_DIR}) as port:
        yield port


@pytest.fixture(scope="module")
def ws() -> Iterator[tuple[WsUpstream, int]]:
    with ws_upstream() as served:
        yield served


def config(echo: int, ws: int) -> dict[str, Any]:
    def service(name: str, port: int = echo) -> dict[str, Any]:
        # Each service of the echo upstream has its own base path: the echoed path says
        # which one the gateway chose.
        return {"name": name, "url": f"http://127.0.0.1:{port}/{name}"}

    def route(name: str, path: str, svc: str = "a") -> dict[str, Any]:
        return {"name": name, "service": svc, "paths": [path]}

    return {
        "services": [
            *(service(n) for n in ("a", "b", "c", "sandbox")),
            service("ws-one", ws),
            service("ws-two", ws),
        ],
        "routes": [
            route("demo-v1", "/v1"),
            route("demo-v2", "/v2"),
            route("demo-shared", "/items"),
            route("legacy-v1", "/legacy/v1"),
            route("legacy-v2", "/legacy/v2"),
            route("live-shared", "/live", "ws-one"),
        ],
        "consumers": [
            {"username": "pinned", "api_versions": {"demo": "v1"}},
            {"username": "plain"},
            {"username": "tester"},
        ],
        "plugins": [
            {"name": "key-auth", "route": "demo-shared", "config": {}},
            {"name": "key-auth", "route": "demo-v2", "config": {}},
        ],
        "apis": [
            {
                "name": "demo",
                "routes": ["demo-shared"],
                "default_version": "v2",
                "selection": {"header": "Api-Version", "query": "version", "media_type": True},
                "versions": [
                    {
                        "name": "v1",
                        "status": "deprecated",
                        "routes": ["demo-v1"],
                        "service": "b",
                        "deprecated_at": DEPRECATED_AT,
                        "sunset_at": SUNSET_AT,
                        "deprecation_link": "https://docs.example.com/demo/v1",
                        "successor": "v2",
                    },
                    {
                        "name": "v2",
                        "routes": ["demo-v2"],
                        "service": "c",
                        "sandbox": {"service": "sandbox"},
                    },
                ],
            },
            {
                "name": "legacy",
                "versions": [
                    {
                        "name": "v1",
                        "status": "deprecated",
                        "routes": ["legacy-v1"],
                        "deprecated_at": "2025-01-01T00:00:00Z",
                        "sunset_at": "2026-06-30T00:00:00Z",
                        "successor": "v2",
                    },
                    {"name": "v2", "routes": ["legacy-v2"]},
                ],
            },
            {
                "name": "live",
                "routes": ["live-shared"],
                "default_version": "v1",
                "versions": [
                    {"name": "v1", "service": "ws-one"},
                    {
                        "name": "v2",
                        "service": "ws-two",
                        "deprecated_at": DEPRECATED_AT,
                        "sunset_at": "2026-12-01T00:00:00Z",
                    },
                ],
            },
        ],
    }


@pytest.fixture(scope="module")
def gw(
    tmp_path_factory: pytest.TempPathFactory, echo: int, ws: tuple[WsUpstream, int]
) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("versions")
    cfg = tmp / "gateway.yaml"
    cfg.write_text(yaml.safe_dump(config(echo, ws[1])))
    with gateway(tmp, cfg) as g:
        yield g


@pytest.fixture(scope="module")
def keys(gw: Gateway) -> dict[str, str]:
    async def create() -> dict[str, str]:
        production = await create_keys(gw.database_url, {"pinned": None, "plain": None})
        staging = await create_keys(gw.database_url, {"tester": None}, Environment.staging)
        # A key of the unpinned consumer pinned to v1 in its metadata.
        pinned_key = await create_keys(
            gw.database_url,
            {"plain": None},
            metadata={"api_version:demo": "v1", "team": "legacy-client"},
        )
        return {**production, **staging, "plain-pinned": pinned_key["plain"]}

    return asyncio.run(create())


@pytest.fixture
async def client(gw: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gw.url, timeout=10) as c:
        yield c


def served_by(response: httpx.Response) -> str:
    """The service whose base path the upstream saw (`/b/things` -> `b`)."""
    assert response.status_code == 200, response.text
    path: str = response.json()["path"]
    return path.split("/")[1]


def assert_deprecated(response: httpx.Response) -> None:
    """Deprecation is an RFC 9651 Date item, Sunset an HTTP-date not before it."""
    item = Item()
    item.parse(response.headers["deprecation"].encode())
    deprecation = item.value
    assert isinstance(deprecation, datetime)  # an sf-date, not an Integer or Token
    assert deprecation.replace(tzinfo=UTC) == datetime(2026, 11, 1, tzinfo=UTC)
    sunset = parsedate_to_datetime(response.headers["sunset"])
    assert sunset == datetime(2027, 12, 31, tzinfo=UTC)
    assert sunset >= deprecation.replace(tzinfo=UTC)
    assert response.headers.get_list("link") == [
        '<https://docs.example.com/demo/v1>; rel="deprecation"'
    ]


async def test_path_versions_serve_their_version_and_v1_is_marked_deprecated(
    client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    v1 = await client.get("/v1/things")
    assert served_by(v1) == "a"  # the route's own service: the path decides
    assert_deprecated(v1)
    v2 = await client.get("/v2/things", headers={"x-api-key": keys["plain"]})
    assert served_by(v2) == "a"
    assert "deprecation" not in v2.headers
    assert "sunset" not in v2.headers


@pytest.mark.parametrize(
    ("headers", "params", "service"),
    [
        ({"api-version": "v1"}, {}, "b"),
        ({}, {"version": "v1"}, "b"),
        ({"accept": "application/vnd.demo.v1+json"}, {}, "b"),
        ({"api-version": "v2"}, {"version": "v1"}, "c"),
        ({}, {}, "c"),  # the default
    ],
)
async def test_a_shared_route_selects_the_version_and_its_service(
    client: httpx.AsyncClient,
    keys: dict[str, str],
    headers: dict[str, str],
    params: dict[str, str],
    service: str,
) -> None:
    r = await client.get("/items/1", headers={"x-api-key": keys["plain"], **headers}, params=params)
    assert served_by(r) == service
    assert r.json()["path"] == f"/{service}/1"
    assert ("deprecation" in r.headers) == (service == "b")


async def test_a_pinned_consumer_gets_its_version_unless_it_names_one(
    client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    pinned = await client.get("/items", headers={"x-api-key": keys["pinned"]})
    assert served_by(pinned) == "b"
    assert_deprecated(pinned)
    named = await client.get("/items", headers={"x-api-key": keys["pinned"], "api-version": "v2"})
    assert served_by(named) == "c"
    # A key's own pin (metadata `api_version:demo`), for a consumer with none.
    by_key = await client.get("/items", headers={"x-api-key": keys["plain-pinned"]})
    assert served_by(by_key) == "b"
    assert served_by(await client.get("/items", headers={"x-api-key": keys["plain"]})) == "c"


async def test_an_unknown_version_is_a_400_listing_the_versions(
    client: httpx.AsyncClient,
) -> None:
    r = await client.get("/items", headers={"api-version": "v7"})
    assert r.status_code == 400
    assert r.headers["content-type"] == PROBLEM
    problem = r.json()
    assert problem["type"] == f"{TYPE_BASE}unknown-api-version"
    assert problem["versions"] == ["v1", "v2"]
    assert problem["instance"] == "/items"


async def test_the_gateways_own_answers_carry_the_deprecation_too(
    client: httpx.AsyncClient,
) -> None:
    # No key: key-auth's 401, for a request that named the deprecated version.
    r = await client.get("/items", headers={"api-version": "v1"})
    assert r.status_code == 401
    assert_deprecated(r)


async def test_after_its_sunset_a_version_is_gone_naming_its_successor(
    client: httpx.AsyncClient,
) -> None:
    r = await client.get("/legacy/v1/anything")
    assert r.status_code == 410
    assert r.headers["content-type"] == PROBLEM
    problem = r.json()
    assert problem["type"] == f"{TYPE_BASE}version-sunset"
    assert problem["successor"] == "v2"
    assert problem["detail"] == (
        "Version 'v1' of API 'legacy' was sunset on 2026-06-30T00:00:00Z. Use version 'v2'."
    )
    assert r.headers["sunset"] == "Tue, 30 Jun 2026 00:00:00 GMT"
    assert '</legacy/v2>; rel="successor-version"' in r.headers.get_list("link")
    assert served_by(await client.get("/legacy/v2/anything")) == "a"


async def test_a_staging_key_goes_to_the_sandbox_and_a_production_key_does_not(
    client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    for path in ("/v2/x", "/items/x"):
        staging = await client.get(path, headers={"x-api-key": keys["tester"]})
        assert served_by(staging) == "sandbox"
    assert served_by(await client.get("/items/x", headers={"x-api-key": keys["plain"]})) == "c"
    assert served_by(await client.get("/v2/x", headers={"x-api-key": keys["plain"]})) == "a"
    # v1 has no sandbox: a staging key is served like any other.
    named = await client.get("/items/x", headers={"x-api-key": keys["tester"], "api-version": "v1"})
    assert served_by(named) == "b"


async def test_websocket_handshakes_take_the_same_version_steps(
    gw: Gateway, ws: tuple[WsUpstream, int]
) -> None:
    upstream, _ = ws
    url = f"ws://127.0.0.1:{gw.proxy_port}/live/chat"
    async with connect(url) as socket:
        await socket.send("hi")
        assert await socket.recv() == "hi"
    assert upstream.paths[-1] == "/ws-one/chat"
    # v2 is past its sunset: the handshake is refused with the 410 problem.
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, additional_headers={"api-version": "v2"}):
            pass
    response = info.value.response
    assert response.status_code == 410
    assert json.loads(response.body)["type"] == f"{TYPE_BASE}version-sunset"
    assert response.headers["sunset"] == "Tue, 01 Dec 2026 00:00:00 GMT"
    assert response.headers["deprecation"] == "@1793491200"
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, additional_headers={"api-version": "v3"}):
            pass
    assert info.value.response.status_code == 400
    assert upstream.paths[-1] == "/ws-one/chat"  # the refused handshakes never reached it


def h2(gw: Gateway, path: str, *extra: tuple[bytes, bytes]) -> H2Result:
    head = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"gw.test")]
    return h2_request(gw.proxy_port, [*head, (b":path", path.encode()), *extra])


def test_http2_streams_take_the_same_version_steps(gw: Gateway, keys: dict[str, str]) -> None:
    key = (b"x-api-key", keys["plain"].encode())
    selected = h2(gw, "/items/9", key, (b"api-version", b"v1"))
    assert selected.status == 200
    assert json.loads(selected.body)["path"] == "/b/9"
    assert selected.header(b"deprecation") == b"@1793491200"
    gone = h2(gw, "/legacy/v1/x")
    assert gone.status == 410
    assert json.loads(gone.body)["successor"] == "v2"
    assert gone.header(b"sunset") == b"Tue, 30 Jun 2026 00:00:00 GMT"
