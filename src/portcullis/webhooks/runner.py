"""Webhook delivery in a control-plane process: the worker, woken by the event bus.

Events recorded inside other transactions (a key revoked through the store) reach the
worker by its poll (`webhook_poll_interval`); events published on the bus wake it at
once, on every node when the bus runs over Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.events.bus import EventBus, Subscription
from portcullis.identity.secrets import ServerSecret
from portcullis.settings import Settings
from portcullis.webhooks.destinations import DestinationPolicy
from portcullis.webhooks.metrics import WebhookMetrics
from portcullis.webhooks.sender import Sender
from portcullis.webhooks.worker import Dispatcher


def destination_policy(settings: Settings) -> DestinationPolicy:
    return DestinationPolicy(
        [ipaddress.ip_network(n, strict=False) for n in settings.webhook_allowed_networks]
    )


class WebhookDelivery:
    def __init__(
        self,
        engine: AsyncEngine,
        settings: Settings,
        server: ServerSecret,
        bus: EventBus | None = None,
        metrics: WebhookMetrics | None = None,
    ) -> None:
        self.sender = Sender(destination_policy(settings), timeout=settings.webhook_timeout)
        self.dispatcher = Dispatcher(
            engine,
            server,
            self.sender,
            poll_interval=settings.webhook_poll_interval,
            disable_after=timedelta(days=settings.webhook_disable_after_days),
            metrics=metrics,
            schedule=settings.webhook_retry_schedule,
            lease=None
            if settings.webhook_lease is None
            else timedelta(seconds=settings.webhook_lease),
            breaker_rest=settings.webhook_breaker_rest,
        )
        self._bus = bus
        self._subscription: Subscription | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self.dispatcher.run(), name="webhooks"))
        if self._bus is not None:
            self._subscription = self._bus.subscribe()
            self._tasks.append(asyncio.create_task(self._follow(self._subscription)))

    async def _follow(self, subscription: Subscription) -> None:
        async for _ in subscription:
            self.dispatcher.wake()

    async def stop(self) -> None:
        if self._subscription is not None:
            self._subscription.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.sender.close()
