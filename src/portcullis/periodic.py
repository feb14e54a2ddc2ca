"""One helper for every background loop: run a round every `interval` seconds until stopped.

Each loop in the gateway (config watcher, heartbeat, usage flushes, analytics jobs…)
used to write its own `while True: sleep; try: …` with the error handling in a
different place each time. `Periodic` owns that shape once:

- `start()` creates the task (on the running loop); `immediate=True` runs the first
  round at once instead of after the first wait.
- The wait is `interval` plus a uniform `jitter` in `[0, jitter]` seconds, so several
  workers or control planes started together do not hit the store in lockstep.
- Error policy: a round that raises is logged (`failure_event`), counted in
  `failures`, and the loop goes on. Consecutive failures back off: the wait doubles
  per failure up to `max_backoff` (equal to `interval` by default, i.e. no growth,
  for loops that must recover promptly). One success resets it.
- `stop()` cancels the task (a round in progress is cancelled too) and awaits it,
  then runs `final` once, when given (e.g. the last flush of a buffer).

`sleep` and `uniform` are injectable so tests drive the loop with no real waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger(__name__)

Round = Callable[[], Awaitable[object]]
Sleep = Callable[[float], Awaitable[None]]


class Periodic:
    """A named background loop that runs `round` every `interval` seconds until stopped."""

    def __init__(
        self,
        name: str,
        round: Round,
        *,
        interval: float,
        jitter: float = 0.0,
        max_backoff: float | None = None,
        immediate: bool = False,
        final: Round | None = None,
        failure_event: str | None = None,
        sleep: Sleep = asyncio.sleep,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"{name}: interval must be positive, got {interval!r}")
        if jitter < 0:
            raise ValueError(f"{name}: jitter must not be negative, got {jitter!r}")
        if max_backoff is not None and max_backoff < interval:
            raise ValueError(f"{name}: max_backoff must be at least the interval")
        self.name = name
        self.interval = interval
        self.jitter = jitter
        self.max_backoff = interval if max_backoff is None else max_backoff
        self.immediate = immediate
        self.failure_event = failure_event or f"{name}.failed"
        self._round = round
        self._final = final
        self._sleep = sleep
        self._uniform = uniform
        self._task: asyncio.Task[None] | None = None
        # Rounds completed / rounds that raised, and the current run of failures.
        self.runs = 0
        self.failures = 0
        self.consecutive_failures = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def next_delay(self) -> float:
        """The wait before the next round: the interval backed off by failures, plus jitter."""
        base = self.interval
        if self.consecutive_failures:
            base = min(self.interval * 2.0**self.consecutive_failures, self.max_backoff)
        return base + (self._uniform(0.0, self.jitter) if self.jitter else 0.0)

    async def run_once(self) -> bool:
        """Run one round under the error policy; True if it succeeded."""
        try:
            await self._round()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.consecutive_failures += 1
            self._failed(exc, consecutive=self.consecutive_failures)
            return False
        self.runs += 1
        self.consecutive_failures = 0
        return True

    async def _loop(self) -> None:
        if self.immediate:
            await self.run_once()
        while True:
            await self._sleep(self.next_delay())
            await self.run_once()

    def start(self) -> None:
        """Start the loop on the running event loop (a no-op while it already runs)."""
        if self.running:
            return
        self._task = asyncio.get_running_loop().create_task(
            self._loop(), name=f"portcullis-{self.name}"
        )
        self._task.add_done_callback(self._report)

    async def stop(self) -> None:
        """Cancel the loop (and a round in progress), wait for it, then run `final` once."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._final is not None:
            try:
                await self._final()
            except Exception as exc:
                self._failed(exc, final=True)

    def _failed(self, exc: Exception, **context: object) -> None:
        self.failures += 1
        log.warning(
            self.failure_event, task=self.name, error=str(exc), kind=type(exc).__name__, **context
        )

    def _report(self, task: asyncio.Task[None]) -> None:
        # Only a BaseException the policy does not catch can end the loop; say so loudly.
        if not task.cancelled() and task.exception() is not None:
            log.error("periodic.crashed", task=self.name, error=repr(task.exception()))
