"""Adaptive per-upstream concurrency limits and load shedding by priority class.

Each upstream with `adaptive_concurrency.enabled` gets a `ConcurrencyLimiter` per
worker: a concurrency limit learned from the latency the proxy observes (AIMD or
gradient, below) and the count of requests in flight to it. A request of class
`c` is admitted while the upstream's requests in flight (all classes) are below
`share[c] * limit`; otherwise it is shed with a 503 problem. Lower classes have
lower shares, so as the upstream saturates they are refused first and the
headroom above their share stays free for critical traffic. Critical requests
may wait briefly in a bounded queue instead of being refused at once.

Request lifecycle, driven by the proxy::

    cls = shedding.classify(ctx)                  # also sets ctx.priority
    permit = limiter.try_acquire(cls)             # None: over the class's share
    if permit is None and limiter.can_queue(cls):
        permit = await limiter.wait(cls)          # critical only; None after the timeout
    if permit is None: limiter.refuse(cls) -> 503 problem + Retry-After
    try:
        ... upstream attempts ...
        permit.responded()                        # response headers arrived
        permit.dropped = True                     # when the outcome was a 5xx or a timeout
        permit.failed()                           # or: no response at all
    finally:
        permit.release()                          # feeds the sample, frees the slot

The latency sample is the time from admission to the upstream's response headers
(all attempts included): it measures queueing at the upstream, not the client's
download speed. The slot is held until the body has been streamed, since the
upstream connection is busy until then. A permit released without a sample (the
client left, the body was too large, no target was available) only frees its slot.

Admission and release are O(1) and lock-free (one event loop per worker; a queued
request that times out leaves the queue in O(queue length)), and the clock is a
parameter so tests drive time. Each worker has its own limiters: a gateway with N
workers admits up to N times a worker's limit, each learning its share.

A limiter's learned state survives config swaps while its upstream's
`adaptive_concurrency` block and targets are unchanged (`build_limiters(...,
previous)`), like the balancer's target state; requests in flight on the old
snapshot release into the same object.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Final

from portcullis.model.config import AdaptiveConcurrency, Consumer, Route, Upstream
from portcullis.upstream.balancer import target_key

if TYPE_CHECKING:
    from portcullis.plugins.base import RequestContext

Clock = Callable[[], float]

PRIORITY_CLASSES: Final = ("critical", "high", "normal", "low")
CRITICAL: Final = 0
HIGH: Final = 1
NORMAL: Final = 2
LOW: Final = 3
CLASS_INDEX: Final[Mapping[str, int]] = {name: i for i, name in enumerate(PRIORITY_CLASSES)}

# Gradient: a sample window closes after `window` seconds with at least this many samples,
# so that one slow or fast request at low traffic does not move the limit on its own.
MIN_WINDOW_SAMPLES: Final = 10
# Gradient: a window's latency never counts as less than this (seconds), to avoid dividing by 0.
_MIN_RTT: Final = 1e-6


class AimdLimit:
    """Additive increase, multiplicative decrease, as TCP congestion control does.

    A response under `target` while the limit is in use adds `1/limit`: about one
    per window of `limit` completions, i.e. one per round trip of a full limit.
    A response over `target`, or a drop (5xx, timeout), multiplies the limit by
    `backoff`, at most once per window: responses to requests admitted before the
    last decrease were sent under the old limit and don't count again, so one
    burst of slow responses is one decrease, not one per response.

    "In use" means at least half the limit was in flight, or a request was shed
    or queued during this one (the limit held traffic back). Without that check
    an idle upstream's limit would climb forever on fast answers to little load.
    """

    __slots__ = ("backoff", "decreased_at", "limit", "max_limit", "min_limit", "target")

    def __init__(
        self, initial: float, min_limit: float, max_limit: float, target: float, backoff: float
    ) -> None:
        self.limit = float(initial)
        self.min_limit = float(min_limit)
        self.max_limit = float(max_limit)
        self.target = target
        self.backoff = backoff
        self.decreased_at = -math.inf

    def on_sample(
        self,
        now: float,
        started: float,
        rtt: float,
        inflight: int,
        dropped: bool,
        pressured: bool,
    ) -> None:
        """One finished request: admitted at `started`, `rtt` seconds to its response."""
        if dropped or rtt > self.target:
            if started >= self.decreased_at:
                self.limit = max(self.min_limit, self.limit * self.backoff)
                self.decreased_at = now
        elif pressured or inflight * 2 >= self.limit:
            self.limit = min(self.max_limit, self.limit + 1.0 / self.limit)


class GradientLimit:
    """The gradient algorithm of Netflix's concurrency-limits, on windowed averages.

    Samples are averaged over windows of `window` seconds (and at least
    `MIN_WINDOW_SAMPLES` samples). At each window's end::

        gradient  = clamp(tolerance * rtt_noload / rtt_window, 0.5, 1.0)
        new_limit = limit * gradient + sqrt(limit)

    With no queueing the gradient is 1 and the limit grows by `sqrt(limit)` per
    window; once queueing pushes latency past `tolerance` times the no-load
    latency the limit shrinks, smoothed by `smoothing`, never by more than half.
    A window with a drop (5xx, timeout) multiplies the limit by `backoff`. A
    window in which the limit held nothing back (less than `limit - sqrt(limit)`
    in flight, nothing shed or queued) leaves the limit alone: latency at low load
    says nothing about where the limit should be.

    `rtt_noload` is measured, not guessed: at start and then every
    `probe_interval` seconds the limit is held at `min_limit` for one window and
    the average latency of requests admitted during it becomes the baseline
    (lower window averages lower it until the next probe); the limit then returns
    to where it was. A baseline taken from the traffic itself would be wrong when
    the upstream is already overloaded at start, and would drift upwards under
    sustained load, letting the limit climb with the queue.
    """

    __slots__ = (
        "_count",
        "_dropped",
        "_max_inflight",
        "_next_probe",
        "_opened",
        "_pressured",
        "_probe_started",
        "_resume",
        "_sum",
        "backoff",
        "limit",
        "max_limit",
        "min_limit",
        "probe_interval",
        "probing",
        "rtt",
        "rtt_noload",
        "smoothing",
        "tolerance",
        "window",
    )

    def __init__(
        self,
        initial: float,
        min_limit: float,
        max_limit: float,
        *,
        tolerance: float,
        smoothing: float,
        backoff: float,
        window: float,
        probe_interval: float,
    ) -> None:
        self.min_limit = float(min_limit)
        self.max_limit = float(max_limit)
        self.tolerance = tolerance
        self.smoothing = smoothing
        self.backoff = backoff
        self.window = window
        self.probe_interval = probe_interval
        # The last window's average latency and the no-load latency it was judged against.
        self.rtt = 0.0
        self.rtt_noload = 0.0
        # Born probing: every request of a new limiter is admitted under the pinned limit.
        self.probing = True
        self.limit = self.min_limit
        self._resume = float(initial)
        self._probe_started = -math.inf
        self._next_probe = math.inf
        self._opened = 0.0
        self._sum = 0.0
        self._count = 0
        self._max_inflight = 0
        self._dropped = False
        self._pressured = False

    def on_sample(
        self,
        now: float,
        started: float,
        rtt: float,
        inflight: int,
        dropped: bool,
        pressured: bool,
    ) -> None:
        """One finished request; the limit moves when the current window closes."""
        if self.probing and started < self._probe_started:
            return  # admitted before the probe: it queued under the old limit
        if self._count == 0:
            self._opened = now
        self._sum += rtt
        self._count += 1
        if inflight > self._max_inflight:
            self._max_inflight = inflight
        if dropped:
            self._dropped = True
        if pressured:
            self._pressured = True
        if self._count >= MIN_WINDOW_SAMPLES and now - self._opened >= self.window:
            average = max(_MIN_RTT, self._sum / self._count)
            if self.probing:
                self._end_probe(now, average)
            else:
                self._update(average)
                if now >= self._next_probe:
                    self._start_probe(now)
            self._sum = 0.0
            self._count = 0
            self._max_inflight = 0
            self._dropped = False
            self._pressured = False

    def _start_probe(self, now: float) -> None:
        self.probing = True
        self._probe_started = now
        self._resume = self.limit
        self.limit = self.min_limit

    def _end_probe(self, now: float, rtt: float) -> None:
        self.probing = False
        self.rtt = self.rtt_noload = rtt
        self.limit = self._resume
        self._next_probe = now + self.probe_interval

    def _update(self, rtt: float) -> None:
        self.rtt = rtt
        if rtt < self.rtt_noload:
            self.rtt_noload = rtt
        limit = self.limit
        queue = math.sqrt(limit)
        if self._dropped:
            new = limit * self.backoff
        elif not self._pressured and self._max_inflight + queue < limit:
            return
        else:
            gradient = max(0.5, min(1.0, self.tolerance * self.rtt_noload / rtt))
            new = limit * gradient + queue
            if new < limit:
                new = limit * (1.0 - self.smoothing) + new * self.smoothing
        self.limit = min(self.max_limit, max(self.min_limit, new))


class Permit:
    """One admitted request's slot in a limiter; `release()` it exactly once, always."""

    __slots__ = ("cls", "dropped", "limiter", "released", "rtt", "started")

    def __init__(self, limiter: ConcurrencyLimiter, cls: int, started: float) -> None:
        self.limiter = limiter
        self.cls = cls
        self.started = started
        # Seconds from admission to the response headers; negative until known.
        self.rtt = -1.0
        self.dropped = False
        self.released = False

    def responded(self) -> None:
        """The upstream's response headers arrived: the latency sample ends now."""
        self.rtt = self.limiter.clock() - self.started

    def failed(self) -> None:
        """The upstream answered nothing usable (timeout, connection or protocol error)."""
        self.rtt = self.limiter.clock() - self.started
        self.dropped = True

    def release(self) -> None:
        """Free the slot; feed the latency sample to the algorithm when there is one."""
        if not self.released:
            self.released = True
            self.limiter.release(self)


class ConcurrencyLimiter:
    """The adaptive concurrency limit of one upstream in one worker.

    Plain attributes for metrics: `limit` (current, float), `inflight` and
    `inflight_by_class`, `queued` (critical requests waiting), and per-class
    counters since start: `admitted`, `shed` (indexed like `PRIORITY_CLASSES`).
    """

    __slots__ = (
        "_shares",
        "_waiters",
        "admitted",
        "algorithm",
        "clock",
        "config",
        "inflight",
        "inflight_by_class",
        "key",
        "name",
        "queue_size",
        "queue_timeout",
        "queued",
        "shed",
        "shed_at",
    )

    def __init__(
        self,
        name: str,
        config: AdaptiveConcurrency,
        *,
        key: object = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.name = name
        self.config = config
        # What must stay equal for a rebuilt snapshot to keep this limiter (see build_limiters).
        self.key = key
        self.clock = clock
        self.algorithm: AimdLimit | GradientLimit
        if config.algorithm == "aimd":
            self.algorithm = AimdLimit(
                config.initial_limit,
                config.min_limit,
                config.max_limit,
                config.latency_target,
                config.backoff,
            )
        else:
            self.algorithm = GradientLimit(
                config.initial_limit,
                config.min_limit,
                config.max_limit,
                tolerance=config.tolerance,
                smoothing=config.smoothing,
                backoff=config.backoff,
                window=config.window,
                probe_interval=config.probe_interval,
            )
        s = config.shares
        self._shares = (s.critical, s.high, s.normal, s.low)
        self.queue_size = config.queue_size
        self.queue_timeout = config.queue_timeout
        self.inflight = 0
        self.inflight_by_class = [0, 0, 0, 0]
        self.admitted = [0, 0, 0, 0]
        self.shed = [0, 0, 0, 0]
        self.queued = 0
        # When a request last found its class's share full (the limit was holding traffic back).
        self.shed_at = -math.inf
        self._waiters: deque[asyncio.Future[None]] = deque()

    def __repr__(self) -> str:
        limit, inflight = self.limit, self.inflight
        return f"ConcurrencyLimiter({self.name!r}, limit={limit:.1f}, inflight={inflight})"

    @property
    def limit(self) -> float:
        return self.algorithm.limit

    def try_acquire(self, cls: int) -> Permit | None:
        """A permit when the requests in flight are under `cls`'s share of the limit."""
        if self.inflight < self._shares[cls] * self.algorithm.limit:
            self.inflight += 1
            self.inflight_by_class[cls] += 1
            self.admitted[cls] += 1
            return Permit(self, cls, self.clock())
        self.shed_at = self.clock()
        return None

    def can_queue(self, cls: int) -> bool:
        """Whether a refused request of `cls` may wait for a slot (critical, queue not full)."""
        return cls == CRITICAL and self.queued < self.queue_size

    async def wait(self, cls: int) -> Permit | None:
        """Wait up to `queue_timeout` for a slot handed over by `release`; None on timeout.

        Waiters are served first-come first-served as slots free up. If the
        waiting task is cancelled just as a slot was handed to it, the slot is
        given back before the cancellation propagates.
        """
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self.queued += 1
        try:
            async with asyncio.timeout(self.queue_timeout):
                await fut
        except BaseException as exc:
            granted = fut.done() and not fut.cancelled()
            if not granted:
                fut.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)
            if not isinstance(exc, TimeoutError):
                if granted:
                    self._free(cls)
                raise
            if not granted:
                return None
        finally:
            self.queued -= 1
        return Permit(self, cls, self.clock())

    def refuse(self, cls: int) -> None:
        """Count a request of `cls` shed (refused after any queueing)."""
        self.shed[cls] += 1

    def release(self, permit: Permit) -> None:
        """End `permit`'s request (use `Permit.release`, which guards against doing it twice)."""
        inflight = self.inflight
        self._free(permit.cls)
        if permit.rtt >= 0.0:
            self.algorithm.on_sample(
                self.clock(),
                permit.started,
                permit.rtt,
                inflight,
                permit.dropped,
                self.shed_at >= permit.started,
            )
            if self._waiters:
                self._wake()

    def _free(self, cls: int) -> None:
        self.inflight -= 1
        self.inflight_by_class[cls] -= 1
        if self._waiters:
            self._wake()

    def _wake(self) -> None:
        """Hand free slots to queued critical requests, oldest first."""
        waiters = self._waiters
        ceiling = self._shares[CRITICAL] * self.algorithm.limit
        while waiters and self.inflight < ceiling:
            fut = waiters.popleft()
            if fut.done():
                continue
            self.inflight += 1
            self.inflight_by_class[CRITICAL] += 1
            self.admitted[CRITICAL] += 1
            fut.set_result(None)

    def stats(self) -> dict[str, object]:
        """A point-in-time view for metrics and health reports."""
        algorithm = self.algorithm
        out: dict[str, object] = {
            "upstream": self.name,
            "algorithm": self.config.algorithm,
            "limit": algorithm.limit,
            "inflight": self.inflight,
            "queued": self.queued,
            "inflight_by_class": dict(zip(PRIORITY_CLASSES, self.inflight_by_class, strict=True)),
            "admitted": dict(zip(PRIORITY_CLASSES, self.admitted, strict=True)),
            "shed": dict(zip(PRIORITY_CLASSES, self.shed, strict=True)),
        }
        if isinstance(algorithm, GradientLimit):
            out["rtt"] = algorithm.rtt
            out["rtt_noload"] = algorithm.rtt_noload
            out["probing"] = algorithm.probing
        return out


class PriorityRules:
    """The priority classes one config gives routes and consumers (only those that set one).

    The class of a request: the consumer's when only it is set, the route's when
    only that is set, `normal` when neither is, and the less urgent of the two when
    both are (a consumer may lower a route's class, never raise it; see
    `model.config.Consumer`). A plugin may choose the consumer side of the rule
    by setting `ctx.priority` to a class name before the proxy runs.
    """

    __slots__ = ("consumers", "routes")

    def __init__(self, routes: Iterable[Route], consumers: Iterable[Consumer]) -> None:
        self.routes = {r.name: CLASS_INDEX[r.priority_class] for r in routes if r.priority_class}
        self.consumers = {
            c.username: CLASS_INDEX[c.priority_class] for c in consumers if c.priority_class
        }

    def classify(self, route: str, consumer: str | None, requested: str | None) -> int:
        """The class index for a request on `route` by `consumer` (see the class docstring)."""
        route_class = self.routes.get(route)
        if requested is not None:
            own = CLASS_INDEX.get(requested)
        else:
            own = self.consumers.get(consumer) if consumer is not None else None
        if own is None:
            return NORMAL if route_class is None else route_class
        return own if route_class is None else max(own, route_class)


class Shedding:
    """Load shedding for one upstream as one snapshot sees it: its limiter and class rules."""

    __slots__ = ("limiter", "retry_after", "rules")

    def __init__(self, limiter: ConcurrencyLimiter, rules: PriorityRules) -> None:
        self.limiter = limiter
        self.rules = rules
        self.retry_after = str(limiter.config.retry_after).encode()

    def classify(self, ctx: RequestContext) -> int:
        """The request's class index; also records its name on `ctx.priority`."""
        consumer = ctx.consumer
        cls = self.rules.classify(
            ctx.route.name, consumer.username if consumer is not None else None, ctx.priority
        )
        ctx.priority = PRIORITY_CLASSES[cls]
        return cls


def limiter_key(upstream: Upstream) -> tuple[AdaptiveConcurrency, frozenset[str]]:
    """What a limiter's learned state depends on: its settings and the upstream's targets."""
    return upstream.adaptive_concurrency, frozenset(target_key(t) for t in upstream.targets)


def build_limiters(
    upstreams: Iterable[Upstream],
    previous: Mapping[str, ConcurrencyLimiter] | None = None,
    *,
    clock: Clock = time.monotonic,
) -> dict[str, ConcurrencyLimiter]:
    """One limiter per upstream that enables adaptive concurrency, by upstream name.

    A limiter of `previous` is kept (learned limit, requests in flight, counters)
    when its upstream's `adaptive_concurrency` block and target set are unchanged;
    other upstream edits (health checks, weights, tags) don't reset what it learned.
    A new set of targets is a new capacity, so learning starts again.
    """
    limiters: dict[str, ConcurrencyLimiter] = {}
    for upstream in upstreams:
        if not upstream.adaptive_concurrency.enabled:
            continue
        key = limiter_key(upstream)
        old = previous.get(upstream.name) if previous else None
        if old is not None and old.key == key:
            limiters[upstream.name] = old
        else:
            limiters[upstream.name] = ConcurrencyLimiter(
                upstream.name, upstream.adaptive_concurrency, key=key, clock=clock
            )
    return limiters
