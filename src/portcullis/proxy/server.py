"""Builds one data-plane worker: the ASGI app with a lifespan that loads and watches config.

granian imports `create_app` (factory mode) in every worker process; each worker
holds its own snapshot and polls the store for changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import aiohttp
import structlog

from portcullis.analytics.record import RequestObserver
from portcullis.asgi import Receive, Scope, Send
from portcullis.logging import configure_logging
from portcullis.plugins.env import IssuerKeys, PluginEnv
from portcullis.proxy.app import ProxyApp
from portcullis.proxy.websocket import WebSocketProxy
from portcullis.runtime.holder import SnapshotHolder
from portcullis.runtime.watcher import ConfigSource, ConfigWatcher
from portcullis.settings import Settings
from portcullis.silent_connections import SilentConnectionReaper
from portcullis.upstream.transport import Transport

if TYPE_CHECKING:
    from portcullis.analytics.live import WorkerTraffic
    from portcullis.analytics.log_queue import RequestLogQueue
    from portcullis.analytics.metrics import MetricsPublisher
    from portcullis.analytics.tracing import TracingObserver
    from portcullis.cache.backend import CacheBackend
    from portcullis.hybrid.edge_identity import EdgeIdentity
    from portcullis.identity.credential_cache import CredentialCache
    from portcullis.identity.issuer_keys import IssuerKeyring
    from portcullis.identity.jwks import JwksRegistry
    from portcullis.limits.backend import LimitBackend
    from portcullis.limits.quota_usage import QuotaUsagePublisher
    from portcullis.logship.shipper import ShipperRegistry
    from portcullis.proxy.inspector import CaptureSync, CaptureWriter
    from portcullis.redis_client import SharedRedis
    from portcullis.runtime.heartbeat import NodeHeartbeat
    from portcullis.store.invalidations import InvalidationPoller

log = structlog.get_logger(__name__)


def make_transport(settings: Settings) -> Transport:
    if settings.transport == "aiohttp":
        from portcullis.upstream.aiohttp_transport import AiohttpTransport

        return AiohttpTransport()
    from portcullis.upstream.http1 import Http1Transport

    return Http1Transport()


def settle_heap() -> None:
    """Move everything start-up built (modules, the first snapshot, pools) out of the
    cyclic GC's reach: a full collection then scans only what traffic allocated.

    Without it a gen-2 collection walks the worker's whole heap (~110k objects before
    any traffic: 160-190 ms on the shared 2-core machine) every so often, in the middle
    of requests; that is the p99 (see docs/decisions/014). Objects frozen here are still
    freed by reference counting; only a cycle among them would stay, and start-up state
    lives as long as the worker.
    """
    gc.collect()
    gc.freeze()


class DataPlane:
    """The worker's ASGI callable: lifespan events here, traffic to `ProxyApp`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.holder = SnapshotHolder()
        self.transport = make_transport(settings)
        # Built by `startup` once its services exist, complete (observers, WebSocket relay).
        self.proxy: ProxyApp | None = None
        self._watcher: ConfigWatcher | None = None
        self._session: aiohttp.ClientSession | None = None
        self._engine: object | None = None
        self._events: InvalidationPoller | None = None
        self._edge_identity: EdgeIdentity | None = None
        self._heartbeat: NodeHeartbeat | None = None
        self._limits: LimitBackend | None = None
        self._quota_usage: QuotaUsagePublisher | None = None
        self._cache: CacheBackend | None = None
        self._redis: SharedRedis | None = None
        self._services: tuple[CredentialCache, IssuerKeyring | None, JwksRegistry] | None = None
        self._metrics: MetricsPublisher | None = None
        self._tracing: TracingObserver | None = None
        self.request_log: RequestLogQueue | None = None
        self.live_traffic: WorkerTraffic | None = None
        self._silent: SilentConnectionReaper | None = None
        self.shippers: ShipperRegistry | None = None
        # The request inspector: captured exchanges' writer, and the sessions' loader.
        self.captures: CaptureWriter | None = None
        self._capture_sync: CaptureSync | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif self.proxy is not None:
            await self.proxy(scope, receive, send)
        else:
            raise RuntimeError("the data plane serves requests only after its startup")

    async def startup(self) -> None:
        from portcullis.analytics.health import worker_health_json
        from portcullis.cache.factory import create_cache_backend
        from portcullis.hybrid.edge_identity import EdgeIdentity, identity_store
        from portcullis.identity.credential_cache import CredentialCache, KeyLookup
        from portcullis.identity.credential_lookup import (
            ConsumerCredentialCache,
            CredentialFinder,
        )
        from portcullis.identity.credential_store import CredentialRepository
        from portcullis.identity.issuer_keys import IssuerKeyring
        from portcullis.identity.jwks import JwksRegistry
        from portcullis.identity.key_repository import KeyRepository
        from portcullis.identity.secrets import load_server_secret
        from portcullis.limits.factory import create_limit_backend
        from portcullis.redis_client import SharedRedis
        from portcullis.runtime.heartbeat import NodeHeartbeat, node_id
        from portcullis.store.config_repository import ConfigRepository
        from portcullis.store.engine import create_engine
        from portcullis.store.invalidations import (
            InvalidationFeed,
            InvalidationKind,
            InvalidationPoller,
        )

        settings = self.settings
        # A hybrid data plane (docs/hybrid.md) has no database: its config comes from the
        # node's last-known-good directory; services that need the store stay off.
        edge = settings.role == "data-plane"
        engine = None if edge else create_engine(settings.database_url)
        self._engine = engine
        secret = load_server_secret(settings.secret_key, settings.secret_key_file)
        self._session = aiohttp.ClientSession(
            auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()
        )
        # Identity services outlive snapshots; the invalidation feed keeps their caches honest.
        # Without a store (hybrid data plane) keys and credentials come from the node's
        # identity set (hybrid/edge_identity.py), which evicts what changes from the caches.
        edge_identity = None
        if engine is None:
            edge_identity = EdgeIdentity(identity_store(settings.lkg_dir), secret)
            keys: KeyLookup = edge_identity
            finder: CredentialFinder = edge_identity
        else:
            keys = KeyRepository(engine, secret)
            finder = CredentialRepository(engine, secret)
        self._edge_identity = edge_identity
        events = (
            InvalidationPoller(InvalidationFeed(engine), interval=settings.config_poll_interval)
            if engine is not None
            else None
        )
        if events is not None:
            await events.prime()
        credentials = CredentialCache(
            keys,
            secret,
            usage_flush_interval=settings.key_usage_flush_interval,
        )
        issuer = IssuerKeyring(engine, issuer=settings.issuer) if engine is not None else None
        if issuer is not None:
            await issuer.refresh()
        issuer_keys: IssuerKeys | None = issuer
        if edge_identity is not None:
            issuer_keys = edge_identity.issuer_keys(settings.issuer)
        consumer_credentials = ConsumerCredentialCache(
            finder,
            secret,
        )
        jwks = JwksRegistry(self._session)
        self._services = (credentials, issuer, jwks)
        if edge_identity is not None:
            edge_identity.on_keys = credentials.invalidate
            edge_identity.on_credentials = consumer_credentials.invalidate
            await edge_identity.refresh()
            edge_identity.start()
        self._events = events
        if events is not None:
            assert issuer is not None
            events.subscribe(credentials.on_events, [InvalidationKind.KEY])
            events.subscribe(consumer_credentials.on_events, [InvalidationKind.CREDENTIAL])
            events.subscribe(
                issuer.on_events, [InvalidationKind.TOKEN, InvalidationKind.SIGNING_KEY]
            )
        # One Redis (pool + outage circuit) for this worker, shared by the limits and the
        # cache. Nothing connects here: the first decision or lookup connects.
        self._redis = redis = SharedRedis.from_settings(settings)
        self._limits = limits = create_limit_backend(settings, redis)
        # The response cache; purges reach a memory cache through the event feed.
        self._cache = cache = create_cache_backend(settings, redis)
        if events is not None:
            events.subscribe(cache.on_events, [InvalidationKind.CACHE_PURGE])
        from portcullis.logship.shipper import ShipperRegistry
        from portcullis.webhooks.runner import destination_policy

        self.shippers = ShipperRegistry()
        env = PluginEnv(
            shippers=self.shippers,
            destinations=destination_policy(settings),
            credentials=credentials,
            consumer_credentials=consumer_credentials,
            redis=redis,
            jwks=jwks,
            issuer_keys=issuer_keys,
            limits=limits,
            cache=cache,
            workers=settings.workers,
        )
        source: ConfigSource
        interval = settings.config_poll_interval
        if engine is not None:
            source = ConfigRepository(engine)
        else:
            from portcullis.hybrid.lkg import LkgStore
            from portcullis.hybrid.source import POLL_INTERVAL, LkgSource

            source = LkgSource(LkgStore(settings.lkg_dir))
            interval = POLL_INTERVAL
        self._watcher = ConfigWatcher(
            source,
            self.holder,
            self.transport,
            interval=interval,
            env=env,
        )
        await self._watcher.refresh()
        self._watcher.start()
        if engine is not None and events is not None:
            # The request inspector's sessions and exchanges live in the store; a data
            # plane without one (hybrid mode) captures nothing yet (docs/hybrid.md).
            from portcullis.proxy.inspector import CaptureSync, CaptureWriter

            self.captures = CaptureWriter.from_settings(engine, settings)
            self.captures.start()
            self._capture_sync = CaptureSync(
                engine, self.holder.current.captures, self.captures.observe
            )
            await self._capture_sync.refresh()
            events.subscribe(self._capture_sync.on_events, [InvalidationKind.CAPTURE])
        if events is not None:
            events.start()
        credentials.start()
        if engine is not None:
            self._heartbeat = NodeHeartbeat(
                engine,
                node_name=settings.node_name,
                version=lambda: self.holder.current.version,
                interval=settings.heartbeat_interval,
                health=lambda: worker_health_json(self.holder.current),
            )
            await self._heartbeat.start()
        instance = (
            self._heartbeat.id
            if self._heartbeat is not None
            else node_id(settings.node_name, socket.gethostname(), os.getpid())
        )
        from portcullis.limits.memory import MemoryBackend
        from portcullis.limits.redis_backend import RedisBackend

        if isinstance(limits, RedisBackend):
            # Connections and the script before traffic: a cold first burst would
            # otherwise miss Redis's deadline and be decided by the failure policy.
            ready = await limits.warm(min(settings.limits_redis_max_connections, 16))
            log.info("limits.redis_warm", connections=ready)

        if isinstance(limits, MemoryBackend) and engine is not None:
            # Quota counters in memory: published so the usage API can sum them.
            from portcullis.limits.quota_usage import QuotaUsagePublisher

            self._quota_usage = QuotaUsagePublisher(engine, limits, instance)
            self._quota_usage.start()
        observers: list[RequestObserver] = []
        # A hybrid data plane ships no request log yet (the spool to the control plane is a
        # later step of docs/hybrid.md); live traffic goes over Redis when it has one.
        if settings.request_log_enabled and engine is not None:
            from portcullis.analytics.log_queue import RequestLogQueue

            self.request_log = RequestLogQueue.from_settings(engine, settings)
            self.request_log.start()
            observers.append(self.request_log)
        if settings.live_traffic_enabled and (engine is not None or redis is not None):
            from portcullis.analytics.live import WorkerTraffic, report_sink

            self.live_traffic = WorkerTraffic.from_settings(
                settings,
                report_sink(engine, settings, redis),  # type: ignore[arg-type]
                instance,
                lambda: self.holder.current.config,
            )
            self.live_traffic.start()
            observers.append(self.live_traffic)
        from portcullis.analytics.metrics import start_worker_metrics

        self._metrics = start_worker_metrics(
            self.holder,
            limits,
            settings,
            log_queues=[self.request_log] if self.request_log is not None else [],
            inspector_queues=[self.captures] if self.captures is not None else [],
            shippers=self.shippers,
        )
        if self._metrics is not None:
            observers.append(self._metrics.observer)
        if settings.otlp_endpoint:
            from portcullis.analytics.tracing import create_tracing

            self._tracing = create_tracing(settings, instance_id=instance)
            if self._tracing is not None:
                observers.append(self._tracing)
        self.proxy = ProxyApp(
            settings,
            self.holder,
            self.transport,
            websocket=WebSocketProxy(self._session),
            observers=observers,
        )
        if settings.client_first_byte_timeout > 0:
            self._silent = SilentConnectionReaper(
                settings.proxy_port, settings.client_first_byte_timeout
            )
            self._silent.start()
        settle_heap()
        log.info("data_plane.started", config_version=self.holder.current.version)

    async def shutdown(self) -> None:
        """Stop every service; one failing step never keeps the others from running.

        The request log is flushed before the store closes, whatever failed before it.
        """
        from sqlalchemy.ext.asyncio import AsyncEngine

        async def pools() -> None:
            for pool in self.holder.current.pools.values():
                await pool.stop()

        async def tracing() -> None:
            if self._tracing is not None:
                await asyncio.to_thread(self._tracing.shutdown)

        async def request_log() -> None:
            if self.request_log is not None:
                await self.request_log.aclose(timeout=max(1.0, self.settings.shutdown_grace / 2))

        async def log_shipping() -> None:
            if self.shippers is not None:
                # Each shipper drains for its own drain_timeout (all at once), within half
                # the grace the supervisor gives a stopping worker (as the request log).
                await self.shippers.aclose(limit=max(1.0, self.settings.shutdown_grace / 2))

        async def captures() -> None:
            if self._capture_sync is not None:
                await self._capture_sync.aclose()
            if self.captures is not None:
                await self.captures.aclose(timeout=max(1.0, self.settings.shutdown_grace / 2))

        async def live_traffic() -> None:
            if self.live_traffic is not None:
                await self.live_traffic.aclose()

        async def identity() -> None:
            if self._services is not None:
                credentials, issuer, jwks = self._services
                # Flushes pending last-used stamps, so a graceful stop loses none.
                await credentials.aclose()
                if issuer is not None:
                    await issuer.aclose()
                await jwks.aclose()

        if self._silent is not None:
            self._silent.stop()
        steps: list[tuple[str, Callable[[], Awaitable[object]] | None]] = [
            # Ships what the log plugins queued (before metrics publish the final counts).
            ("log-shipping", log_shipping),
            # Publishes the last counts and retires this worker's live gauges.
            ("metrics", self._metrics.stop if self._metrics is not None else None),
            # Exports the spans still queued (blocking, so off the event loop).
            ("tracing", tracing),
            # Publishes the final quota counts (before the limit counters are cleared).
            ("quota-usage", self._quota_usage.stop if self._quota_usage is not None else None),
            # Sends the current second, marked final (before Redis and the store close).
            ("live-traffic", live_traffic),
            ("heartbeat", self._heartbeat.stop if self._heartbeat is not None else None),
            ("config-watcher", self._watcher.stop if self._watcher is not None else None),
            ("identity-events", self._events.stop if self._events is not None else None),
            (
                "edge-identity",
                self._edge_identity.stop if self._edge_identity is not None else None,
            ),
            ("limits", self._limits.aclose if self._limits is not None else None),
            ("cache", self._cache.aclose if self._cache is not None else None),
            ("redis", self._redis.aclose if self._redis is not None else None),
            ("identity", identity),
            ("pools", pools),
            ("transport", self.transport.aclose),
            ("http-session", self._session.close if self._session is not None else None),
            # Writes every queued request-log row while the store is still open.
            ("request-log", request_log),
            ("inspector", captures),
            (
                "store",
                self._engine.dispose if isinstance(self._engine, AsyncEngine) else None,
            ),
        ]
        for name, step in steps:
            if step is None:
                continue
            try:
                await step()
            except Exception:
                log.exception("data_plane.shutdown_step_failed", step=name)
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
