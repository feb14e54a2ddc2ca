"""Builds one data-plane worker: the ASGI app with a lifespan that loads and watches config.

granian imports `create_app` (factory mode) in every worker process; each worker
holds its own snapshot and polls the store for changes.
"""

from __future__ import annotations

import contextlib

import aiohttp
import structlog

from portcullis.asgi import Receive, Scope, Send
from portcullis.logging import configure_logging
from portcullis.proxy.app import ProxyApp
from portcullis.proxy.upstream.transport import Transport
from portcullis.proxy.websocket import WebSocketProxy
from portcullis.runtime.holder import SnapshotHolder
from portcullis.runtime.watcher import ConfigWatcher
from portcullis.settings import Settings

log = structlog.get_logger(__name__)


def make_transport(settings: Settings) -> Transport:
    if settings.transport == "aiohttp":
        from portcullis.proxy.upstream.aiohttp_transport import AiohttpTransport

        return AiohttpTransport()
    from portcullis.proxy.upstream.http1 import Http1Transport

    return Http1Transport()


class DataPlane:
    """The worker's ASGI callable: lifespan events here, traffic to `ProxyApp`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.holder = SnapshotHolder()
        self.transport = make_transport(settings)
        self.proxy = ProxyApp(settings, self.holder, self.transport)
        self._watcher: ConfigWatcher | None = None
        self._session: aiohttp.ClientSession | None = None
        self._engine: object | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self.proxy(scope, receive, send)

    async def startup(self) -> None:
        from portcullis.store.config_repository import ConfigRepository
        from portcullis.store.engine import create_engine

        engine = create_engine(self.settings.database_url)
        self._engine = engine
        self._watcher = ConfigWatcher(
            ConfigRepository(engine),
            self.holder,
            self.transport,
            interval=self.settings.config_poll_interval,
        )
        await self._watcher.refresh()
        self._watcher.start()
        self._session = aiohttp.ClientSession(
            auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
        )
        self.proxy.websocket_proxy = WebSocketProxy(self.holder, self.proxy.via, self._session)
        log.info("data_plane.started", config_version=self.holder.current.version)

    async def shutdown(self) -> None:
        if self._watcher is not None:
            await self._watcher.stop()
        for pool in self.holder.current.pools.values():
            await pool.stop()
        await self.transport.aclose()
        if self._session is not None:
            await self._session.close()
        from sqlalchemy.ext.asyncio import AsyncEngine

        if isinstance(self._engine, AsyncEngine):
            await self._engine.dispose()
        log.info("data_plane.stopped")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.error("data_plane.startup_failed", error=str(exc))
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                with contextlib.suppress(Exception):
                    await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app() -> DataPlane:
    settings = Settings()
    configure_logging(settings.log_level, json=settings.log_json)
    return DataPlane(settings)
