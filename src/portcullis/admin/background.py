"""Background jobs of the control plane (rollups, retention, alerts, anomaly detection).

Each job is a long-running coroutine started by the admin app's lifespan once the
store is migrated and cancelled when it shuts down. A job owns its loop and its
errors: it logs a failed round and tries again on its next tick, it never lets an
exception end the task. Several control-plane processes may run the same job
against one store, so a job must be safe to run concurrently (cursor rows updated
with an expected value, idempotent upserts).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from portcullis.admin.state import AdminState

log = structlog.get_logger(__name__)

Job = Callable[[AdminState], Coroutine[Any, Any, None]]


def control_jobs(state: AdminState) -> list[tuple[str, Job]]:
    """The jobs to run, by name (imported here so the admin app starts without them)."""
    jobs: list[tuple[str, Job]] = []
    from portcullis.analytics.rollups import rollup_job

    jobs.append(("rollups", rollup_job))
    from portcullis.analytics.retention import request_log_retention_job

    jobs.append(("request-log-retention", request_log_retention_job))
    from portcullis.analytics.monitoring import monitoring_jobs

    jobs += monitoring_jobs(state)
    return jobs


class BackgroundJobs:
    """Starts every job as a task and cancels them together."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, state: AdminState) -> None:
        for name, job in control_jobs(state):
            task = asyncio.create_task(job(state), name=f"portcullis-job-{name}")
            task.add_done_callback(_report)
            self._tasks.append(task)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()


def _report(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("job.crashed", job=task.get_name(), error=repr(task.exception()))
