"""WebSocket frames relay both ways through the gateway to a real upstream."""

from __future__ import annotations

import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from portcullis.problems import TYPE_BASE
from support.servers import Gateway


async def test_websocket_echo_through_gateway(gw: Gateway) -> None:
    url = f"ws://127.0.0.1:{gw.proxy_port}/ws/echo"
    async with connect(url, subprotocols=["chat.v1"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "chat.v1"
        await ws.send("hello")
        assert await ws.recv() == "hello"
        await ws.send(b"\x00\x01binary")
        assert await ws.recv() == b"\x00\x01binary"
        big = "x" * 200_000
        await ws.send(big)
        assert await ws.recv() == big


async def test_websocket_without_route_is_a_404_problem(gw: Gateway) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with connect(f"ws://127.0.0.1:{gw.proxy_port}/no-such-route"):
            pass
    response = info.value.response
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert json.loads(response.body)["type"] == f"{TYPE_BASE}route-not-found"


async def test_websocket_to_dead_upstream_is_a_502_problem(gw: Gateway) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with connect(f"ws://127.0.0.1:{gw.proxy_port}/dead-url/ws"):
            pass
    response = info.value.response
    assert response.status_code == 502
    assert json.loads(response.body)["type"] == f"{TYPE_BASE}upstream-connect-failed"


async def test_an_upstream_refusing_the_upgrade_is_a_502_problem_naming_its_status(
    gw: Gateway,
) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with connect(f"ws://127.0.0.1:{gw.proxy_port}/ws/no-such-socket"):
            pass
    response = info.value.response
    assert response.status_code == 502
    problem = json.loads(response.body)
    assert problem["type"] == f"{TYPE_BASE}upstream-upgrade-refused"
    assert "403" in problem["detail"]  # the demo app refuses unknown sockets with 403
