"""A bounded queue per log destination and worker, drained in batches into a sink.

`Shipper.offer` is all the request path does: append the finished request's record
to a deque, O(1), no I/O and no encoding (the sink encodes a whole batch in the
shipper's own task). A full queue drops the record and counts it; a request never
waits for a log line (docs/decisions/030-log-shipping-queues.md).

The drain task takes up to `batch_size` records as soon as that many wait, else
every `flush_interval` seconds, and hands them to the sink. A sink raises
`ShipError`: retryable ones (connection errors, 5xx, 429, a full disk) are retried
`retries` times with exponential backoff and jitter, stretched to a receiver's
`Retry-After`; then, or at once for a non-retryable one, the batch is dropped and
counted under its reason. Records wait in the queue meanwhile (and past its
capacity are dropped as `queue_full`), so a receiver that is down costs log lines,
never latency.

`ShipperRegistry` keeps one shipper per plugin config and worker: instances with
the same config share it, a new snapshot with the same config reuses the running one
(`acquire`), and one no snapshot uses any more is drained and stopped (`retire`,
called when the snapshot that used it is replaced). Counters live in `ShipStats`,
one per plugin name and destination label, kept for the worker's life so metrics
never go backwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from portcullis.analytics.record import RequestRecord

log = structlog.get_logger(__name__)

Sleep = Callable[[float], Awaitable[None]]

# Why records were dropped (the `reason` label of the dropped counter).
QUEUE_FULL = "queue_full"
RETRIES_EXHAUSTED = "retries_exhausted"
REJECTED = "rejected"
SHUTDOWN = "shutdown"
REASONS = (QUEUE_FULL, RETRIES_EXHAUSTED, REJECTED, SHUTDOWN)

# Past this many (plugin, destination) label pairs per worker, new ones share one.
MAX_LABELS = 64
OTHER = "(other)"


class ShipError(Exception):
    """A batch could not be delivered; `retryable` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class Sink(Protocol):
    """Where a shipper's batches go. `send` raises `ShipError` (anything else counts as
    a retryable one); `aclose` releases connections and files."""

    async def send(self, batch: list[RequestRecord]) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Delivery:
    """How a shipper batches and retries (each log plugin's config carries these)."""

    queue_size: int = 10_000
    batch_size: int = 100
    flush_interval: float = 1.0
    retries: int = 3
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    drain_timeout: float = 5.0


@dataclass(slots=True)
class ShipStats:
    """Counters of one plugin and destination label in this worker."""

    plugin: str
    destination: str
    shipped: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    failures: int = 0
    queued: int = 0  # refreshed by the registry from the live shippers


def backoff(
    attempt: int, initial: float, maximum: float, uniform: Callable[[float, float], float]
) -> float:
    """The wait before retry number `attempt` (1-based): doubling from `initial`, capped at
    `maximum`, with "equal jitter" (between half and all of it)."""
    delay = min(maximum, initial * 2.0 ** (attempt - 1))
    return delay / 2 + uniform(0.0, delay / 2)


class Shipper:
    """One destination's bounded queue and drain task (see the module doc)."""

    def __init__(
        self,
        sink: Sink,
        delivery: Delivery,
        stats: ShipStats,
        *,
        sleep: Sleep = asyncio.sleep,
        uniform: Callable[[float, float], float] = random.uniform,
        clock: Callable[[], float] = time.monotonic,
        warn_interval: float = 10.0,
    ) -> None:
        self.sink = sink
        self.delivery = delivery
        self.stats = stats
        self._sleep = sleep
        self._uniform = uniform
        self._clock = clock
        self._warn_interval = warn_interval
        self._warned_at = -warn_interval
        self._pending: deque[RequestRecord] = deque()
        self._capacity = delivery.queue_size
        self._batch_size = delivery.batch_size
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.closed = False
        self._retire: Callable[[Shipper], None] | None = None

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def offer(self, record: RequestRecord) -> None:
        """Queue `record`, or drop and count it when the queue is full. O(1), never raises."""
        pending = self._pending
        if len(pending) >= self._capacity or self.closed:
            # A closed shipper still gets the records of requests that began on the
            # snapshot that retired it: lost to the shutdown, not to a full queue.
            self._drop(SHUTDOWN if self.closed else QUEUE_FULL, 1)
            return
        pending.append(record)
        if self._task is None:
            self.start()
        elif len(pending) == self._batch_size and self._wake is not None:
            self._wake.set()

    def start(self) -> None:
        """Start the drain task on the running loop (on the first record, or explicitly)."""
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"portcullis-{self.stats.plugin}-{self.stats.destination}"
            )

    def _drop(self, reason: str, count: int, error: str | None = None) -> None:
        stats = self.stats
        stats.dropped[reason] += count
        now = self._clock()
        per_record = count == 1 and reason in (QUEUE_FULL, SHUTDOWN)
        if not per_record or now - self._warned_at >= self._warn_interval:
            if per_record:
                self._warned_at = now
            log.warning(
                "log_shipping.dropped",
                plugin=stats.plugin,
                destination=stats.destination,
                reason=reason,
                records=count,
                dropped_total=stats.dropped[reason],
                error=error,
            )

    async def _run(self) -> None:
        assert self._wake is not None
        wake = self._wake
        pending = self._pending
        interval = self.delivery.flush_interval
        while True:
            if len(pending) < self._batch_size and not self._closing:
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), interval)
            if pending:
                await self._ship_batch()
            elif self._closing:
                return

    def _take(self) -> list[RequestRecord]:
        pending = self._pending
        popleft = pending.popleft
        return [popleft() for _ in range(min(self._batch_size, len(pending)))]

    async def _ship_batch(self) -> None:
        """Deliver one batch under the retry policy; never raises (except cancellation)."""
        batch = self._take()
        d = self.delivery
        attempt = 0
        while True:
            try:
                await self.sink.send(batch)
            except asyncio.CancelledError:
                self._drop(SHUTDOWN, len(batch), "cancelled")
                raise
            except Exception as exc:
                self.stats.failures += 1
                error = exc if isinstance(exc, ShipError) else None
                retryable = error.retryable if error is not None else True
                if not retryable:
                    self._drop(REJECTED, len(batch), str(exc))
                    return
                attempt += 1
                if attempt > d.retries:
                    self._drop(RETRIES_EXHAUSTED, len(batch), str(exc))
                    return
                delay = backoff(attempt, d.backoff_initial, d.backoff_max, self._uniform)
                if error is not None and error.retry_after is not None:
                    delay = max(delay, min(error.retry_after, d.backoff_max))
                log.info(
                    "log_shipping.retry",
                    plugin=self.stats.plugin,
                    destination=self.stats.destination,
                    attempt=attempt,
                    retry_in=round(delay, 3),
                    error=str(exc),
                )
                await self._sleep(delay)
            else:
                self.stats.shipped += len(batch)
                return

    async def aclose(self, timeout: float | None = None) -> None:
        """Stop taking records and ship what is queued, for at most `timeout` seconds
        (default: the config's `drain_timeout`); what is left then is dropped as
        `shutdown`. Safe to call more than once."""
        if self.closed and self._task is None:
            return
        self.closed = True
        self._closing = True
        limit = self.delivery.drain_timeout if timeout is None else timeout
        task = self._task
        if task is None and self._pending:
            self.start()
            task = self._task
        if task is not None:
            assert self._wake is not None
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(task), limit)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = None
        if self._pending:
            self._drop(SHUTDOWN, len(self._pending), "not shipped before the drain timeout")
            self._pending.clear()
        try:
            await self.sink.aclose()
        except Exception as exc:
            log.warning(
                "log_shipping.close_failed", destination=self.stats.destination, error=str(exc)
            )

    def retire(self) -> None:
        """No snapshot uses this shipper any more: leave the registry, drain in the background."""
        if self._retire is not None:
            self._retire(self)


class ShipperRegistry:
    """This worker's shippers by config key, and their counters by label (module doc)."""

    def __init__(self, *, max_labels: int = MAX_LABELS) -> None:
        self._shippers: dict[Hashable, Shipper] = {}
        self._keys: dict[int, Hashable] = {}
        self._stats: dict[tuple[str, str], ShipStats] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._draining: set[Shipper] = set()
        self.max_labels = max_labels

    def stats_for(self, plugin: str, destination: str) -> ShipStats:
        label = (plugin, destination)
        stats = self._stats.get(label)
        if stats is None:
            if len(self._stats) >= self.max_labels:
                label = (plugin, OTHER)
                stats = self._stats.get(label)
            if stats is None:
                stats = self._stats[label] = ShipStats(*label)
        return stats

    def acquire(
        self, key: Hashable, plugin: str, destination: str, make: Callable[[ShipStats], Shipper]
    ) -> Shipper:
        """The running shipper for `key`, or a new one from `make` (started on first use)."""
        shipper = self._shippers.get(key)
        if shipper is None or shipper.closed:
            shipper = make(self.stats_for(plugin, destination))
            shipper._retire = self._retire_one
            self._shippers[key] = shipper
            self._keys[id(shipper)] = key
        return shipper

    def _retire_one(self, shipper: Shipper) -> None:
        key = self._keys.pop(id(shipper), None)
        if key is not None and self._shippers.get(key) is shipper:
            del self._shippers[key]
        if shipper.closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # never started: nothing to drain
        self._draining.add(shipper)
        task = loop.create_task(shipper.aclose(), name="portcullis-log-shipper-retire")
        self._closing.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._closing.discard(t)
            self._draining.discard(shipper)

        task.add_done_callback(done)

    @property
    def shippers(self) -> list[Shipper]:
        return list(self._shippers.values())

    def stats(self) -> list[ShipStats]:
        """Every label's counters, with `queued` refreshed from the live shippers."""
        for stats in self._stats.values():
            stats.queued = 0
        for shipper in (*self._shippers.values(), *self._draining):
            shipper.stats.queued += shipper.queue_depth
        return list(self._stats.values())

    async def aclose(self, limit: float | None = None) -> None:
        """Drain every shipper (worker shutdown), all at once, each for at most its drain
        timeout and at most `limit` seconds."""
        shippers = list(self._shippers.values())
        self._shippers.clear()
        self._keys.clear()

        def timeout(s: Shipper) -> float:
            own = s.delivery.drain_timeout
            return own if limit is None else min(own, limit)

        await asyncio.gather(
            *(s.aclose(timeout(s)) for s in shippers), *self._closing, return_exceptions=True
        )
        totals = [
            {
                "plugin": s.plugin,
                "destination": s.destination,
                "shipped": s.shipped,
                "dropped": {k: v for k, v in s.dropped.items() if v},
            }
            for s in self._stats.values()
        ]
        if totals:
            log.info("log_shipping.closed", destinations=totals)


_DEFAULT: ShipperRegistry | None = None


def default_registry() -> ShipperRegistry:
    """The process-wide registry for snapshots built without a worker's (tools, tests)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = ShipperRegistry()
    return _DEFAULT
