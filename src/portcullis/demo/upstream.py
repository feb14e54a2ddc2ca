"""A small JSON API with its own OpenAPI description, used by the demo and the tests.

It has a CRUD resource (`/items`), an `/echo` endpoint that reflects what the
gateway forwarded, and helpers to exercise the proxy: status codes, delays,
streamed bodies and a WebSocket echo.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field


class ItemIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    price: float = Field(ge=0)


class Item(ItemIn):
    id: int


def create_demo_app() -> FastAPI:
    app = FastAPI(
        title="Portcullis demo upstream",
        version="1.0.0",
        description="A tiny inventory API the demo gateway proxies to.",
        docs_url=None,
        redoc_url=None,
    )
    items: dict[int, Item] = {
        1: Item(id=1, name="portcullis", price=1200.0),
        2: Item(id=2, name="drawbridge", price=800.0),
    }
    ids = itertools.count(3)
    instance = os.environ.get("PORTCULLIS_DEMO_INSTANCE", "demo")

    @app.middleware("http")
    async def tag_instance(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        response.headers["x-upstream-instance"] = instance
        return response

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.api_route("/items", methods=["GET", "HEAD"])
    async def list_items() -> list[Item]:
        return list(items.values())

    @app.get("/items/{item_id}", responses={404: {"description": "No such item"}})
    async def get_item(item_id: int) -> Item:
        if item_id not in items:
            raise HTTPException(404, f"item {item_id} not found")
        return items[item_id]

    @app.post("/items", status_code=201)
    async def create_item(body: ItemIn) -> Item:
        item = Item(id=next(ids), **body.model_dump())
        items[item.id] = item
        return item

    @app.delete("/items/{item_id}", status_code=204)
    async def delete_item(item_id: int) -> Response:
        if items.pop(item_id, None) is None:
            raise HTTPException(404, f"item {item_id} not found")
        return Response(status_code=204)

    @app.api_route("/echo/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    @app.api_route("/echo", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def echo(request: Request) -> dict[str, Any]:
        body = await request.body()
        return {
            "method": request.method,
            "path": request.url.path,
            "raw_path": request.scope.get("raw_path", b"").decode("latin-1"),
            "query": request.url.query,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body_bytes": len(body),
        }

    @app.get("/status/{code}")
    async def status(code: int) -> Response:
        if not 200 <= code <= 599:
            raise HTTPException(400, "code must be 200-599")
        return Response(status_code=code, content=b"" if code in (204, 304) else f"{code}\n")

    @app.get("/delay/{seconds}")
    async def delay(seconds: float) -> dict[str, float]:
        await asyncio.sleep(min(seconds, 30.0))
        return {"delayed": seconds}

    @app.get("/stream/{chunks}")
    async def stream(chunks: int, size: int = 1024) -> StreamingResponse:
        async def gen() -> AsyncIterator[bytes]:
            block = b"x" * size
            for _ in range(chunks):
                yield block

        return StreamingResponse(gen(), media_type="application/octet-stream")

    @app.post("/sink")
    async def sink(request: Request) -> dict[str, int]:
        """Counts a (possibly huge, streamed) request body without keeping it."""
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
        return {"received": total}

    # The demo's webhook receiver: what the gateway's control plane delivered, newest
    # first, as it arrived (the signature is shown, not checked: see docs/webhooks.md).
    inbox: deque[dict[str, Any]] = deque(maxlen=50)

    @app.post("/webhooks/inbox", status_code=204)
    async def receive_webhook(request: Request) -> Response:
        body = await request.body()
        try:
            payload: Any = json.loads(body)
        except ValueError:
            payload = body.decode("utf-8", "replace")
        inbox.appendleft(
            {
                "webhook_id": request.headers.get("webhook-id"),
                "webhook_timestamp": request.headers.get("webhook-timestamp"),
                "webhook_signature": request.headers.get("webhook-signature"),
                "payload": payload,
            }
        )
        return Response(status_code=204)

    @app.get("/webhooks/inbox")
    async def webhook_inbox() -> list[dict[str, Any]]:
        return list(inbox)

    @app.websocket("/ws/echo")
    async def ws_echo(ws: WebSocket) -> None:
        await ws.accept(
            subprotocol=ws.scope.get("subprotocols", [None])[0]
            if ws.scope.get("subprotocols")
            else None
        )
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("text") is not None:
                    await ws.send_text(message["text"])
                elif message.get("bytes") is not None:
                    await ws.send_bytes(message["bytes"])
        except WebSocketDisconnect:
            return

    return app
