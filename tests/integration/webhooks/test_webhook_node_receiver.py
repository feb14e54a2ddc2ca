"""Deliveries verified by a second, independent implementation: a receiver written on the
npm `standardwebhooks` package (installed by `./dev setup` into tests/node), run by node."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from portcullis.webhooks.destinations import DestinationPolicy, parse_allowed_networks
from portcullis.webhooks.sender import Sender
from portcullis.webhooks.signing import SigningKeys, generate_secret, message_id

NODE_TOOLS = Path(__file__).resolve().parents[2] / "node"
LOOPBACK = DestinationPolicy(parse_allowed_networks('["127.0.0.0/8"]'))
BODY = b'{"data":{"key_id":"k1"},"timestamp":"2026-12-07T06:00:00Z","type":"key.revoked"}'


class NodeReceiver:
    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}/hook"

    async def next_line(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), 10)
        value: dict[str, Any] = json.loads(line)
        return value


@asynccontextmanager
async def node_receiver(secrets: Sequence[str]) -> AsyncIterator[NodeReceiver]:
    process = await asyncio.create_subprocess_exec(
        "node",
        str(NODE_TOOLS / "webhook_receiver.mjs"),
        *secrets,
        cwd=NODE_TOOLS,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        ready = json.loads(await asyncio.wait_for(process.stdout.readline(), 30))
        yield NodeReceiver(process, int(ready["port"]))
    finally:
        process.terminate()
        await process.wait()


async def test_the_npm_library_verifies_deliveries_through_a_rotation() -> None:
    old, new, stranger = generate_secret(), generate_secret(), generate_secret()
    sender = Sender(LOOPBACK)
    try:
        async with AsyncExitStack() as stack:
            on_old = await stack.enter_async_context(node_receiver([old]))
            on_new = await stack.enter_async_context(node_receiver([new]))
            on_stranger = await stack.enter_async_context(node_receiver([stranger]))
            results = []
            for receiver, keys in (
                (on_old, [old]),  # before the rotation
                (on_old, [new, old]),  # during the grace period
                (on_new, [new, old]),
                (on_stranger, [new, old]),  # a wrong secret never verifies
                (on_old, [new]),  # after the grace period
            ):
                msg = message_id()
                headers = SigningKeys.parse(keys).headers(msg, int(time.time()), BODY)
                result = await sender.send(receiver.url, headers, BODY)
                line = await receiver.next_line()
                assert line["id"] == msg
                results.append((result.status, line["verified"], line["type"]))
    finally:
        await sender.close()
    assert results == [
        (204, True, "key.revoked"),
        (204, True, "key.revoked"),
        (204, True, "key.revoked"),
        (401, False, None),
        (401, False, None),
    ]
