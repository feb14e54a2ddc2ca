"""Background jobs of the control plane (rollups, retention, alerts, anomaly detection)
and webhook delivery.

Each job is a `Periodic` built from the store engine, the settings and the
collaborators it needs (never the admin state), started by the admin app's lifespan
once the store is migrated and stopped when it shuts down. The jobs' error policy
is `analytics.jobs.control_job`'s. Alerts and anomaly detection publish on one event
bus, which lives exactly as long as the jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from portcullis.admin.dependencies import RequestFacts
from portcullis.events.bus import EventBus, create_event_bus
from portcullis.events.catalogue import EventType
from portcullis.identity.key_repository import KeyRepository
from portcullis.model.config import GatewayConfig
from portcullis.periodic import Periodic
from portcullis.redis_client import SharedRedis
from portcullis.services.audit import AuditLog
from portcullis.services.state import AdminState
from portcullis.services.streams.filters import EventFilter
from portcullis.services.streams.hub import EventStream, StreamHub
from portcullis.services.streams.log import SqlEventLog
from portcullis.services.streams.presence import (
    EntityTags,
    MemoryPresence,
    PresenceHub,
    PresenceStore,
    RedisPresence,
)
from portcullis.services.streams.traffic import LiveTraffic
from portcullis.webhooks.metrics import process_metrics
from portcullis.webhooks.runner import WebhookDelivery

log = structlog.get_logger(__name__)


class SystemAuditTrail:
    """The audit log as a job writes to it (`analytics.anomalies.SystemAudit`): a change
    made by the system itself, no caller and no request, in the change's transaction."""

    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit

    async def record_system(
        self,
        conn: AsyncConnection,
        *,
        actor: str,
        action: str,
        resource_type: str,
        resource_id: str,
        before: Any,
        after: Any,
    ) -> None:
        await self._audit.record(
            caller=None,
            actor=actor,
            facts=RequestFacts(secrets.token_hex(16), None),  # its own request id
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            before=before,
            after=after,
            conn=conn,
        )


def control_jobs(
    state: AdminState, bus: EventBus, redis: SharedRedis | None = None
) -> list[Periodic]:
    """The jobs to run (imported here so the admin app starts without them); `redis`: the
    process's Redis, when the limit counters live there."""
    from portcullis.analytics.alerts import alert_job
    from portcullis.analytics.anomalies import anomaly_job
    from portcullis.analytics.certificate_expiry import certificate_expiry_job
    from portcullis.analytics.health_events import health_events_job
    from portcullis.analytics.quota_events import quota_events_job
    from portcullis.analytics.retention import events_retention_job, request_log_retention_job
    from portcullis.analytics.rollups import rollup_job
    from portcullis.analytics.sunset_notices import sunset_notice_job
    from portcullis.identity.key_expiry import key_expiry_job
    from portcullis.limits.redis_backend import RedisBackend
    from portcullis.services.inspector import inspector_retention_job

    engine, settings = state.engine, state.settings
    expiry = key_expiry_job(engine, settings, bus)
    shared = (
        None
        if redis is None
        else RedisBackend(
            redis,
            prefix=settings.limits_key_prefix,
            timeout=max(settings.limits_redis_timeout, 1.0),
        )
    )

    async def current_config() -> GatewayConfig | None:
        return (await state.editor.state()).config

    sunsets = sunset_notice_job(engine, settings, bus, current_config)
    return [
        openapi_refresh_job(state),
        web_sessions_purge_job(state),
        *([expiry] if expiry is not None else []),
        *([sunsets] if sunsets is not None else []),
        certificate_expiry_job(engine, settings, bus, current_config),
        rollup_job(engine, settings),
        request_log_retention_job(engine, settings),
        events_retention_job(engine, settings),
        inspector_retention_job(engine, settings),
        alert_job(engine, settings, bus),
        health_events_job(engine, settings, bus),
        quota_events_job(engine, settings, bus, current_config, shared),
        anomaly_job(
            engine,
            settings,
            bus,
            keys=KeyRepository(engine, state.secret),
            audit=SystemAuditTrail(state.audit),
        ),
    ]


def openapi_refresh_job(state: AdminState) -> Periodic:
    """Re-fetches URL-imported OpenAPI descriptions when due (services/catalogue.py)."""
    from portcullis.analytics.jobs import control_job
    from portcullis.catalogue.fetch import DescriptionFetcher
    from portcullis.services.catalogue import CatalogueService
    from portcullis.services.context import utc_now
    from portcullis.webhooks.runner import destination_policy

    settings = state.settings

    async def round() -> int:
        fetcher = DescriptionFetcher(destination_policy(settings), timeout=settings.webhook_timeout)
        try:
            return await CatalogueService(state, fetcher).refresh_due(utc_now())
        finally:
            await fetcher.close()

    return control_job("openapi-refresh", round, settings.openapi_refresh_interval)


def web_sessions_purge_job(state: AdminState) -> Periodic:
    """Deletes the web sessions that ended (services/web_sessions.py) every hour."""
    from portcullis.analytics.jobs import control_job
    from portcullis.services.web_sessions import web_sessions

    sessions = web_sessions(state.engine, state.settings)
    return control_job("web-sessions-purge", sessions.purge, 3600.0)


def stream_hub(state: AdminState) -> StreamHub:
    """The process's live-stream hub on the store's event log (started on first use)."""
    settings = state.settings
    return StreamHub(
        SqlEventLog(state.engine),
        poll_interval=settings.stream_poll_interval,
        queue_size=settings.stream_queue_size,
        max_clients=settings.stream_max_clients,
        buffer=settings.stream_buffer_events,
    )


def presence_hub(state: AdminState, hub: StreamHub, redis: SharedRedis | None) -> PresenceHub:
    """The process's presence: in Redis when the control plane has one (every node sees
    every entry), else in process; told of config changes by the hub's `config.applied`."""
    ttl = state.settings.presence_ttl
    store: PresenceStore = MemoryPresence() if redis is None else RedisPresence(redis, ttl=ttl)

    async def config_events() -> EventStream:
        return await hub.open(EventFilter.of(types=[EventType.CONFIG_APPLIED.value]))

    return PresenceHub(store, EntityTags(state.editor.state), ttl=ttl, config_events=config_events)


async def _wake_on_events(bus: EventBus, hub: StreamHub) -> None:
    """Tail the log as soon as the bus hears of an event (from this node or, over
    Redis, another); polling covers what the bus misses."""
    await hub.start()
    subscription = bus.subscribe()
    try:
        async for _ in subscription:
            hub.wake()
    finally:
        subscription.close()


class BackgroundJobs:
    """Starts the event bus and every job, and stops them together."""

    def __init__(self) -> None:
        self._jobs: list[Periodic] = []
        self._bus: EventBus | None = None
        self._bus_start: asyncio.Task[None] | None = None
        self._redis: SharedRedis | None = None
        self._webhooks: WebhookDelivery | None = None
        self.streams: StreamHub | None = None
        self._wakeups: asyncio.Task[None] | None = None
        self.presence: PresenceHub | None = None
        self._presence_start: asyncio.Task[None] | None = None
        # The workers' per-second traffic merged into frames (None: live_traffic_enabled
        # is off, or the jobs have not started); shared as `AdminState.live_traffic`.
        self.live_traffic: LiveTraffic | None = None
        self._live_start: asyncio.Task[None] | None = None

    def start(self, state: AdminState) -> None:
        # The control plane's one Redis (when configured): the event bus publishes on it.
        self._redis = SharedRedis.from_settings(state.settings)
        bus = self._bus = create_event_bus(state.engine, state.settings, self._redis)
        # A Redis bus waits (briefly) for its subscription: not in the lifespan's way.
        self._bus_start = asyncio.create_task(bus.start(), name="portcullis-job-event-bus")
        self._jobs = control_jobs(state, bus, self._redis)
        for job in self._jobs:
            job.start()
        self.streams = state.streams = stream_hub(state)
        self._wakeups = asyncio.create_task(
            _wake_on_events(bus, self.streams), name="portcullis-stream-wakeups"
        )
        self.presence = state.presence = presence_hub(state, self.streams, self._redis)
        self._presence_start = asyncio.create_task(
            self.presence.start(), name="portcullis-presence-start"
        )
        if state.settings.live_traffic_enabled:
            live = LiveTraffic(state.engine, state.settings, self._redis)
            self.live_traffic = state.live_traffic = live
            self._live_start = asyncio.create_task(live.start(), name="portcullis-live-start")
        if state.settings.webhook_delivery:
            self._webhooks = WebhookDelivery(
                state.engine, state.settings, state.secret, bus, process_metrics()
            )
            self._webhooks.start()

    async def stop(self) -> None:
        if self._presence_start is not None:
            await _settle(self._presence_start, "presence.start_failed")
            self._presence_start = None
        if self.presence is not None:
            await self.presence.stop()
            self.presence = None
        if self._wakeups is not None:
            self._wakeups.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._wakeups
            self._wakeups = None
        if self.streams is not None:
            await self.streams.stop()
            self.streams = None
        if self._webhooks is not None:
            await self._webhooks.stop()
            self._webhooks = None
        for job in self._jobs:
            await job.stop()
        self._jobs.clear()
        if self._live_start is not None:
            await _settle(self._live_start, "live_traffic.start_failed")
            self._live_start = None
        if self.live_traffic is not None:
            await self.live_traffic.stop()
            self.live_traffic = None
        if self._bus_start is not None:
            await _settle(self._bus_start, "event_bus.start_failed")
            self._bus_start = None
        if self._bus is not None:
            await self._bus.close()
            self._bus = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None


async def _settle(task: asyncio.Task[None], failure: str) -> None:
    """Cancel a start-up task and wait for it; its failure must not keep the jobs from
    stopping (logged as `failure`)."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    except Exception as exc:
        log.error(failure, error=repr(exc))
