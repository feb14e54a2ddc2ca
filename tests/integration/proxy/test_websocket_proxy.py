"""WebSocket frames relay both ways through the gateway to a real upstream."""

from __future__ import annotations

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

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


async def test_websocket_without_route_is_refused(gw: Gateway) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with connect(f"ws://127.0.0.1:{gw.proxy_port}/no-such-route"):
            pass
    assert info.value.response.status_code == 403


async def test_websocket_to_dead_upstream_is_refused(gw: Gateway) -> None:
    with pytest.raises(InvalidStatus):
        async with connect(f"ws://127.0.0.1:{gw.proxy_port}/dead-url/ws"):
            pass
