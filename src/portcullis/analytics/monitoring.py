"""The control-plane jobs of alerting: one event bus shared by the alert evaluator and the
anomaly detector, and the jobs that run them.

The bus is started by its own job and closed when that job is cancelled (the admin
lifespan cancels every job at shutdown), so the Redis listener, when there is one,
lives exactly as long as the jobs that publish on it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from portcullis.events.bus import EventBus, create_event_bus

if TYPE_CHECKING:
    from portcullis.admin.background import Job
    from portcullis.admin.state import AdminState


def monitoring_jobs(state: AdminState) -> list[tuple[str, Job]]:
    """`(name, job)` pairs for `admin.background.control_jobs`: the bus, alerts, anomalies."""
    from portcullis.analytics.alerts import alert_job
    from portcullis.analytics.anomalies import anomaly_job

    bus = create_event_bus(state.engine, state.settings)

    async def run_bus(_: AdminState) -> None:
        await bus_job(bus)

    async def run_alerts(s: AdminState) -> None:
        await alert_job(s, bus)

    async def run_anomalies(s: AdminState) -> None:
        await anomaly_job(s, bus)

    return [("event-bus", run_bus), ("alerts", run_alerts), ("anomalies", run_anomalies)]


async def bus_job(bus: EventBus) -> None:
    """Start the bus, then hold it open until cancelled."""
    await bus.start()
    try:
        await asyncio.Event().wait()
    finally:
        await bus.close()
