"""Builds one data-plane worker: the ASGI app with a lifespan that loads and watches config.

granian imports `create_app` (factory mode) in every worker process; each worker
holds its own snapshot and polls the store for changes.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import aiohttp
import structlog

from portcullis.asgi import Receive, Scope, Send
from portcullis.logging import configure_logging
from portcullis.plugins.env import PluginEnv
from portcullis.proxy.app import ProxyApp
from portcullis.proxy.upstream.transport import Transport
from portcullis.proxy.websocket import WebSocketProxy
from portcullis.runtime.holder import SnapshotHolder
from portcullis.runtime.watcher import ConfigWatcher
from portcullis.settings import Settings

if TYPE_CHECKING:
    from portcullis.identity.credential_cache import CredentialCache
    from portcullis.identity.events import IdentityEventPoller
    from portcullis.identity.issuer_keys import IssuerKeyring
    from portcullis.identity.jwks import JwksRegistry
    from portcullis.limits.backend import LimitBackend
    from portcullis.runtime.heartbeat import NodeHeartbeat

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
        self._events: IdentityEventPoller | None = None
        self._heartbeat: NodeHeartbeat | None = None
        self._limits: LimitBackend | None = None
        self._services: tuple[CredentialCache, IssuerKeyring, JwksRegistry] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self.proxy(scope, receive, send)

    async def startup(self) -> None:
        from portcullis.identity.credential_cache import CredentialCache
        from portcullis.identity.events import IdentityEventFeed, IdentityEventPoller
        from portcullis.identity.issuer_keys import IssuerKeyring
        from portcullis.identity.jwks import JwksRegistry
        from portcullis.identity.key_repository import KeyRepository
        from portcullis.identity.secrets import load_server_secret
        from portcullis.limits.factory import create_limit_backend
        from portcullis.runtime.heartbeat import NodeHeartbeat
        from portcullis.store.config_repository import ConfigRepository
        from portcullis.store.engine import create_engine

        settings = self.settings
        engine = create_engine(settings.database_url)
        self._engine = engine
        secret = load_server_secret(settings.secret_key, settings.secret_key_file)
        self._session = aiohttp.ClientSession(
            auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
        )
        # Identity services outlive snapshots; the event poller keeps their caches honest.
        events = IdentityEventPoller(
            IdentityEventFeed(engine), interval=settings.config_poll_interval
        )
        await events.prime()
        credentials = CredentialCache(
            KeyRepository(engine, secret),
            secret,
            usage_flush_interval=settings.key_usage_flush_interval,
        )
        issuer = IssuerKeyring(engine, issuer=settings.issuer)
        await issuer.refresh()
        events.subscribe(credentials.on_events)
        events.subscribe(issuer.on_events)
        jwks = JwksRegistry(self._session)
        self._services = (credentials, issuer, jwks)
        self._events = events
        # Nothing connects here: the Redis backend connects on its first decision.
        self._limits = limits = create_limit_backend(settings)
        env = PluginEnv(credentials=credentials, jwks=jwks, issuer_keys=issuer, limits=limits)
        self._watcher = ConfigWatcher(
            ConfigRepository(engine),
            self.holder,
            self.transport,
            interval=settings.config_poll_interval,
            env=env,
        )
        await self._watcher.refresh()
        self._watcher.start()
        events.start()
        credentials.start()
        self._heartbeat = NodeHeartbeat(
            engine,
            node_name=settings.node_name,
            version=lambda: self.holder.current.version,
            interval=settings.heartbeat_interval,
        )
        await self._heartbeat.start()
        self.proxy.websocket_proxy = WebSocketProxy(self.holder, self.proxy.via, self._session)
        log.info("data_plane.started", config_version=self.holder.current.version)

    async def shutdown(self) -> None:
        if self._heartbeat is not None:
            await self._heartbeat.stop()
        if self._watcher is not None:
            await self._watcher.stop()
        if self._events is not None:
            await self._events.stop()
        if self._limits is not None:
            await self._limits.aclose()
        if self._services is not None:
            credentials, issuer, jwks = self._services
            # Flushes pending last-used stamps, so a graceful stop loses none.
            await credentials.aclose()
            await issuer.aclose()
            await jwks.aclose()
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
