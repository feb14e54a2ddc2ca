"""Prometheus series of webhook delivery.

Attempts are counted where they happen (this process's counters, merged across
processes by the multiprocess collector); the queue's state is read from the store at
scrape time, since every delivering process shares one queue.
"""

from __future__ import annotations

import functools
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.store.webhook_tables import WebhookEndpointRow, WebhookMessageRow
from portcullis.webhooks.outbox import PENDING
from portcullis.webhooks.retry import Next

FAILED = "failed"


class WebhookMetrics:
    """Per-process counters, fed by the dispatcher after every attempt."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        kwargs = {} if registry is None else {"registry": registry}
        self.attempts = Counter(
            "portcullis_webhook_attempts",
            "Webhook delivery attempts by outcome (delivered, retry, exhausted, gone)",
            ["outcome"],
            **kwargs,  # type: ignore[arg-type]
        )
        self.latency = Histogram(
            "portcullis_webhook_attempt_seconds",
            "Time from sending a webhook to its answer (or failure)",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30),
            **kwargs,  # type: ignore[arg-type]
        )

    def observe(self, outcome: Next, latency: float) -> None:
        self.attempts.labels(outcome.value).inc()
        self.latency.observe(latency)


@functools.cache
def process_metrics() -> WebhookMetrics:
    """This process's webhook counters (in the default registry, registered once)."""
    return WebhookMetrics()


async def queue_families(engine: AsyncEngine, now: datetime) -> list[GaugeMetricFamily]:
    """Queue depth, oldest pending age, dead letters and endpoints by state."""
    async with engine.connect() as conn:
        pending, oldest = (
            await conn.execute(
                select(func.count(), func.min(WebhookMessageRow.created_at)).where(
                    WebhookMessageRow.status == PENDING
                )
            )
        ).one()
        dead = (
            await conn.execute(select(func.count()).where(WebhookMessageRow.status == FAILED))
        ).scalar_one()
        endpoints = (
            await conn.execute(
                select(WebhookEndpointRow.enabled, func.count()).group_by(
                    WebhookEndpointRow.enabled
                )
            )
        ).all()
    by_state = {"enabled": 0, "disabled": 0}
    for enabled, count in endpoints:
        by_state["enabled" if enabled else "disabled"] = int(count)
    depth = GaugeMetricFamily(
        "portcullis_webhook_queue_depth", "Webhook messages waiting for delivery", value=pending
    )
    age = GaugeMetricFamily(
        "portcullis_webhook_oldest_pending_seconds",
        "Age of the oldest webhook message still waiting (0 when none)",
        value=0.0 if oldest is None else max(0.0, (now - oldest).total_seconds()),
    )
    dead_letters = GaugeMetricFamily(
        "portcullis_webhook_dead_letters",
        "Webhook messages whose every attempt failed (replayable)",
        value=dead,
    )
    states = GaugeMetricFamily(
        "portcullis_webhook_endpoints", "Webhook endpoints by state", labels=["state"]
    )
    for state, count in by_state.items():
        states.add_metric([state], count)
    return [depth, age, dead_letters, states]
