"""An ASGI upstream that streams an event, then holds the next one until it is released.

`GET /stream` sends its response head and `event: 1`, then waits; `POST /release`
lets it send `event: 2` and end, and answers whether a stream was waiting. A test
reads the first event through a gateway and only then releases the second, so a
gateway that holds chunks back cannot pass by luck. Serve it with one granian
worker (the gate is per process): `granian_app("support.stream_gate:create_app",
env={"PYTHONPATH": <tests dir>})`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from portcullis.asgi import Receive, Scope, Send


def create_app() -> Any:
    waiting: list[asyncio.Event] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/stream":
            gate = asyncio.Event()
            waiting.append(gate)
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            await send({"type": "http.response.body", "body": b"event: 1\n\n", "more_body": True})
            await gate.wait()
            await send({"type": "http.response.body", "body": b"event: 2\n\n"})
            return
        released = bool(waiting)
        while waiting:
            waiting.pop().set()
        body = b"released" if released else b"nothing waiting"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return app
