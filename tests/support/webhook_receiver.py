"""A real webhook receiver for tests: an aiohttp server on loopback that verifies every
delivery with the Standard Webhooks reference library (PyPI `standardwebhooks`) and
records it, answering as the test scripts it.

Scripted answers are consumed in order; when none is left the receiver answers 204. A
`Hold` answer keeps the request open until the receiver stops (a receiver that never
answers, for timeout tests).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass(frozen=True)
class Answer:
    status: int = 204
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True)
class Hold:
    """Never answer (until the receiver stops)."""


@dataclass(frozen=True)
class Delivery:
    path: str
    headers: Mapping[str, str]
    body: bytes
    # None when the receiver holds no secret, else whether the signature verified.
    verified: bool | None
    # time.monotonic() when the request arrived.
    received_at: float = 0.0


class WebhookReceiver:
    def __init__(self, secret: str | None = None) -> None:
        self.secret = secret
        self.deliveries: list[Delivery] = []
        self.script: deque[Answer | Hold] = deque()
        self.arrived = asyncio.Event()
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def verifies(self, delivery: Delivery) -> bool:
        """Whether this receiver's secret verifies `delivery` (e.g. after a rotation)."""
        assert self.secret is not None
        try:
            Webhook(self.secret).verify(delivery.body, dict(delivery.headers), json_parse=False)
        except WebhookVerificationError:
            return False
        return True

    async def wait_for(self, count: int, timeout: float = 30.0) -> list[Delivery]:
        """Wait (on arrivals, not by polling) until `count` deliveries have come in."""
        async with asyncio.timeout(timeout):
            while len(self.deliveries) < count:
                self.arrived.clear()
                if len(self.deliveries) >= count:
                    break
                await self.arrived.wait()
        return self.deliveries

    def answer(self, *answers: Answer | Hold) -> None:
        self.script.extend(answers)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        verified: bool | None = None
        if self.secret is not None:
            try:
                Webhook(self.secret).verify(body, headers, json_parse=False)
                verified = True
            except WebhookVerificationError:
                verified = False
        self.deliveries.append(Delivery(request.path, headers, body, verified, time.monotonic()))
        self.arrived.set()
        scripted = self.script.popleft() if self.script else Answer()
        if isinstance(scripted, Hold):
            await self._stopping.wait()
            return web.Response(status=503)
        return web.Response(
            status=scripted.status, headers=dict(scripted.headers), body=scripted.body
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()


@asynccontextmanager
async def webhook_receiver(secret: str | None = None) -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver(secret)
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()
