"""The delivery worker of one control-plane process.

It keeps up to `capacity` attempts in flight, each its own task, and claims more as
they finish, so one slow receiver holds only its own slots. It never claims for an
endpoint that already has `max_concurrency` attempts in flight, nor for one whose
breaker is open (after `BREAKER_FAILURES` failures in a row, the endpoint rests for
`breaker_rest` seconds in this process; its messages stay queued, nothing is lost), nor
for one whose rate limit has no token left (`pacing.TokenBucket`). A claim can still
return more of one endpoint's messages than its free slots or tokens: those leases are
given back at once, untouched, and the messages wait their turn in the queue.

Limits are kept per process: with several delivering processes on PostgreSQL, each
paces an endpoint to its `rate_limit` (and `max_concurrency`) on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.identity.secrets import ServerSecret
from portcullis.webhooks import queue
from portcullis.webhooks.endpoints import signing_keys, unseal_headers
from portcullis.webhooks.metrics import WebhookMetrics
from portcullis.webhooks.pacing import TokenBucket
from portcullis.webhooks.retry import SCHEDULE, AttemptResult, Next, decide
from portcullis.webhooks.sender import Sender

log = logging.getLogger(__name__)

BREAKER_FAILURES = 5
BREAKER_REST = 30.0
# Headers an endpoint's custom headers may not replace.
_RESERVED = frozenset({"webhook-id", "webhook-timestamp", "webhook-signature", "content-type"})


def default_lease(timeout: float) -> float:
    """Seconds a claim is held when `webhook_lease` is not set: two attempts' worth of
    the send timeout and a margin for a slow store."""
    return 2 * timeout + 30


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{random.getrandbits(32):08x}"


@dataclass
class _Endpoint:
    in_flight: int = 0
    failures: int = 0
    rest_until: float = 0.0
    max_concurrency: int = 1
    bucket: TokenBucket | None = None

    def follow(self, message: queue.Claimed, now: float) -> None:
        """Take the endpoint's current limits from a message just claimed."""
        self.max_concurrency = message.max_concurrency
        if message.rate_limit is None or message.rate_limit <= 0:
            # The admin API takes positive limits only; a row written otherwise must not
            # stop this worker from claiming (it would fail every claim): no limit.
            self.bucket = None
        elif self.bucket is None:
            self.bucket = TokenBucket(message.rate_limit, now)
        elif self.bucket.rate != message.rate_limit:
            self.bucket.retune(message.rate_limit, now)

    def admits(self, now: float) -> bool:
        """Whether an attempt may start now (and if so, its token is spent)."""
        if self.in_flight >= self.max_concurrency:
            return False
        return self.bucket is None or self.bucket.take(now)


@dataclass
class DeliveryStats:
    """Counts since start, for metrics and tests."""

    attempts: int = 0
    delivered: int = 0
    failed: int = 0
    dead_lettered: int = 0
    lost_leases: int = 0
    # Claimed messages given back untried: their endpoint was at a limit.
    deferred: int = 0
    disabled: list[str] = field(default_factory=list)


class GroupCommit:
    """Attempts that end while a commit is running are recorded together by the next
    one: one transaction (one fsync on SQLite) per group instead of one per attempt."""

    def __init__(
        self, write: Callable[[list[queue.Outcome]], Awaitable[list[queue.Finished]]]
    ) -> None:
        self._write = write
        self._pending: list[tuple[queue.Outcome, asyncio.Future[queue.Finished]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, outcome: queue.Outcome) -> queue.Finished:
        future: asyncio.Future[queue.Finished] = asyncio.get_running_loop().create_future()
        self._pending.append((outcome, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                group, self._pending = self._pending, []
                try:
                    finished = await self._write([outcome for outcome, _ in group])
                except Exception as exc:
                    for _, future in group:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(group, finished, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._writer = None


class Dispatcher:
    def __init__(
        self,
        engine: AsyncEngine,
        server: ServerSecret,
        sender: Sender,
        *,
        owner: str | None = None,
        clock: Callable[[], float] = time.time,
        signature_clock: Callable[[], float] = time.time,
        capacity: int = 64,
        poll_interval: float = 1.0,
        disable_after: timedelta = timedelta(days=5),
        uniform: Callable[[float, float], float] = random.uniform,
        metrics: WebhookMetrics | None = None,
        schedule: Sequence[float] = SCHEDULE,
        lease: timedelta | None = None,
        breaker_rest: float = BREAKER_REST,
    ) -> None:
        self.engine = engine
        self.server = server
        self.sender = sender
        self.owner = owner or worker_name()
        self.clock = clock
        # `webhook-timestamp` is the attempt's real time: receivers compare it with theirs.
        self.signature_clock = signature_clock
        self.capacity = capacity
        self.poll_interval = poll_interval
        self.disable_after = disable_after
        self.uniform = uniform
        self.schedule = tuple(schedule)
        self.breaker_rest = breaker_rest
        # Long enough that a live worker's attempt (bounded by the sender's timeout)
        # always finishes inside its lease.
        self.lease = lease or timedelta(seconds=default_lease(sender.timeout))
        self.stats = DeliveryStats()
        self.metrics = metrics
        self._endpoints: dict[str, _Endpoint] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._kick = asyncio.Event()
        self._commits = GroupCommit(self._record)
        self._stopping = False

    def wake(self) -> None:
        """Look for due messages now (an event was just recorded)."""
        self._kick.set()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def _unavailable(self) -> list[str]:
        now = self.clock()
        return [
            ident
            for ident, state in self._endpoints.items()
            if state.rest_until > now
            or state.in_flight >= state.max_concurrency
            or (state.bucket is not None and state.bucket.wait(now) > 0)
        ]

    def next_token_in(self) -> float | None:
        """Seconds until the soonest rate-limited endpoint may be sent to again (None:
        no endpoint is waiting for a token)."""
        now = self.clock()
        waits = [
            wait
            for state in self._endpoints.values()
            if state.bucket is not None and (wait := state.bucket.wait(now)) > 0
        ]
        return min(waits, default=None)

    async def claim_and_start(self) -> int:
        """Claim what fits in the free slots and start attempting it; returns how many
        started (claimed messages whose endpoint is at a limit are given back)."""
        free = self.capacity - len(self._tasks)
        if free <= 0:
            return 0
        claimed = await queue.claim(
            self.engine,
            self.owner,
            self._now(),
            limit=free,
            lease=self.lease,
            exclude=self._unavailable(),
        )
        now = self.clock()
        deferred: list[str] = []
        for message in claimed:
            state = self._endpoints.setdefault(message.endpoint_id, _Endpoint())
            state.follow(message, now)
            if not state.admits(now):
                deferred.append(message.id)
                continue
            state.in_flight += 1
            task = asyncio.create_task(self._attempt(message))
            self._tasks.add(task)
            task.add_done_callback(self._done)
        if deferred:
            self.stats.deferred += len(deferred)
            await queue.release(self.engine, self.owner, deferred)
        return len(claimed) - len(deferred)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook attempt crashed", exc_info=task.exception())
        self._kick.set()

    async def _attempt(self, message: queue.Claimed) -> None:
        state = self._endpoints[message.endpoint_id]
        try:
            result = await self._send(message)
            decision = decide(message.attempts + 1, result, self.uniform, self.schedule)
            finished = await self._commits.submit(
                queue.Outcome(message, result, decision, self._now())
            )
        finally:
            state.in_flight -= 1
        self._count(state, finished)
        if self.metrics is not None:
            self.metrics.observe(decision.next, result.latency)

    async def _record(self, outcomes: list[queue.Outcome]) -> list[queue.Finished]:
        return await queue.finish(
            self.engine, self.owner, outcomes, disable_after=self.disable_after
        )

    async def _send(self, message: queue.Claimed) -> AttemptResult:
        now = self._now()
        body = message.payload.encode()
        headers = {
            name: value
            for name, value in unseal_headers(
                self.server, message.endpoint_id, message.headers_sealed
            ).items()
            if name.lower() not in _RESERVED
        }
        keys = signing_keys(self.server, message.endpoint_id, message.secrets_sealed, now)
        headers.update(keys.headers(message.id, int(self.signature_clock()), body))
        return await self.sender.send(message.url, headers, body)

    def _count(self, state: _Endpoint, finished: queue.Finished) -> None:
        self.stats.attempts += 1
        if not finished.held:
            self.stats.lost_leases += 1
        if finished.disabled is not None:
            self.stats.disabled.append(finished.disabled)
        outcome = finished.decision.next
        if outcome is Next.DELIVERED:
            self.stats.delivered += 1
            state.failures = 0
            return
        self.stats.failed += 1
        if outcome is Next.EXHAUSTED:
            self.stats.dead_lettered += 1
        state.failures += 1
        if state.failures >= BREAKER_FAILURES:
            state.failures = 0
            state.rest_until = self.clock() + self.breaker_rest

    async def drain(self) -> None:
        """Wait for the attempts in flight to finish."""
        while self._tasks:
            await asyncio.gather(*tuple(self._tasks), return_exceptions=True)

    async def run(self) -> None:
        """Deliver until cancelled; in-flight attempts are awaited on the way out."""
        try:
            while True:
                self._kick.clear()
                try:
                    started = await self.claim_and_start()
                except Exception:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        # A cancel the store's driver turned into another error: stopping
                        # wins over retrying (else `stop()` waits on this loop for ever).
                        raise asyncio.CancelledError from None
                    log.exception("claiming webhook messages failed; retrying")
                    started = 0
                if started and len(self._tasks) < self.capacity:
                    continue
                # A rate-limited endpoint is looked at again when its next token is due.
                token = self.next_token_in()
                wait = self.poll_interval if token is None else min(token, self.poll_interval)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._kick.wait(), wait)
        finally:
            await self.drain()
