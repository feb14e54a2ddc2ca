"""Per-target circuit breaker and the sliding-window counters it is built on.

A breaker stops the gateway from sending traffic to a target that keeps failing
and gives it time to recover. It is *closed* while the failure rate over a
sliding window stays below the threshold, *open* (refusing everything) for a
cool-down after it trips, then *half-open*: a few probe requests go through,
and their outcome decides whether it closes again or re-opens.

Everything here is called on the request path, so the closed state costs one
attribute check in `allow()` and a few integer operations in `record()`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum

from portcullis.model import config as model

Clock = Callable[[], float]

WINDOW_BUCKETS = 10


class SlidingWindowCounter:
    """Two running counts (`first`, `second`) summed over the last `window` seconds.

    The window is split into `buckets` slots of equal width; a slot is cleared
    when time moves past it, so old events drop out in steps of one slot
    instead of being stored one by one. Both the breaker (requests, failures)
    and the retry budget (requests, retries) use it.
    """

    __slots__ = ("_buckets", "_first", "_last", "_second", "_width", "first", "second")

    def __init__(self, window: float, buckets: int = WINDOW_BUCKETS) -> None:
        if window <= 0 or buckets < 1:
            raise ValueError("window must be positive and buckets at least 1")
        self._buckets = buckets
        self._width = window / buckets
        self._first = [0] * buckets
        self._second = [0] * buckets
        self._last: int | None = None
        self.first = 0
        self.second = 0

    def advance(self, now: float) -> int:
        """Expire the slots that fell out of the window at `now`; return the current slot."""
        idx = int(now // self._width)
        last = self._last
        n = self._buckets
        if last is None or idx - last >= n:
            self.reset()
            self._last = idx
            return idx % n
        if idx > last:
            first, second = self._first, self._second
            for i in range(last + 1, idx + 1):
                slot = i % n
                self.first -= first[slot]
                self.second -= second[slot]
                first[slot] = 0
                second[slot] = 0
            self._last = idx
            return idx % n
        # A clock that went backwards (only possible with a fake clock) keeps
        # counting into the newest slot rather than corrupting older ones.
        return last % n

    def add(self, now: float, first: int = 0, second: int = 0) -> None:
        """Count `first` and `second` events at time `now`."""
        idx = int(now // self._width)
        slot = idx % self._buckets if idx == self._last else self.advance(now)
        self._first[slot] += first
        self._second[slot] += second
        self.first += first
        self.second += second

    def reset(self) -> None:
        """Forget every event."""
        for i in range(self._buckets):
            self._first[i] = 0
            self._second[i] = 0
        self.first = 0
        self.second = 0


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


_CLOSED = BreakerState.CLOSED
_OPEN = BreakerState.OPEN
_HALF_OPEN = BreakerState.HALF_OPEN


class CircuitBreaker:
    """Closed / open / half-open breaker over a sliding failure-rate window.

    Usage per request: `allow()` before sending (it reserves a probe slot when
    half-open), then exactly one of `record(success)` or `release_probe()`
    (for a request that ended without an outcome, e.g. the client went away).
    `permits()` answers the same question as `allow()` without reserving,
    so a balancer can compare several targets and reserve only on the winner
    with `acquire()`.

    `closed` is a plain attribute mirroring `state is CLOSED`, for the
    balancer's per-candidate fast path.

    A breaker cannot tell a probe's outcome from a late outcome of a request it
    admitted before it opened: outcomes arriving while open are ignored, and
    while half-open one arriving with no probe outstanding is ignored too.
    """

    __slots__ = (
        "_clock",
        "_counts",
        "_enabled",
        "_failure_rate",
        "_half_open_probes",
        "_min_requests",
        "_open_for",
        "_open_until",
        "_probes",
        "_state",
        "closed",
        "config",
    )

    def __init__(self, config: model.CircuitBreaker, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._state = _CLOSED
        self.closed = True
        self._open_until = 0.0
        self._probes = 0
        self._counts = SlidingWindowCounter(config.window)
        self.config = config
        self._apply(config)

    def _apply(self, config: model.CircuitBreaker) -> None:
        self.config = config
        self._enabled = config.enabled
        self._min_requests = config.min_requests
        self._failure_rate = config.failure_rate
        self._open_for = config.open_for
        self._half_open_probes = config.half_open_probes

    def reconfigure(self, config: model.CircuitBreaker) -> None:
        """Adopt new settings, keeping the state (an open breaker stays open).

        A different window length forgets the counted history, since its
        buckets no longer line up; disabling the breaker closes it.
        """
        if config.window != self.config.window:
            self._counts = SlidingWindowCounter(config.window)
        self._apply(config)
        if not config.enabled:
            self._close()

    @property
    def state(self) -> BreakerState:
        """The current state; an open breaker whose cool-down has passed reports half-open."""
        if self._state is _OPEN and self._clock() >= self._open_until:
            self._half_open()
        return self._state

    @property
    def probes_in_flight(self) -> int:
        """Probe requests admitted while half-open whose outcome is still pending."""
        return self._probes

    def permits(self) -> bool:
        """Whether `allow()` would admit a request now, without reserving anything."""
        state = self._state
        if state is _CLOSED:
            return True
        if state is _OPEN:
            if self._clock() < self._open_until:
                return False
            self._half_open()
        return self._probes < self._half_open_probes

    def acquire(self) -> None:
        """Take a probe slot if half-open; call only right after `permits()` returned True."""
        if self._state is _HALF_OPEN:
            self._probes += 1

    def allow(self) -> bool:
        """Admit a request (reserving a probe slot when half-open) or refuse it."""
        if self._state is _CLOSED:
            return True
        if not self.permits():
            return False
        self._probes += 1
        return True

    def release_probe(self) -> None:
        """Give back a probe slot for a request that ended without a success or failure."""
        if self._state is _HALF_OPEN and self._probes > 0:
            self._probes -= 1

    def record(self, success: bool) -> None:
        """Count the outcome of a request admitted by `allow()`."""
        if not self._enabled:
            return
        state = self._state
        if state is _CLOSED:
            now = self._clock()
            counts = self._counts
            counts.add(now, 1, 0 if success else 1)
            total = counts.first
            if total >= self._min_requests and counts.second >= self._failure_rate * total:
                self._open(now)
            return
        if state is _OPEN:
            if self._clock() < self._open_until:
                return
            self._half_open()
        if self._probes == 0:
            return
        self._probes -= 1
        if success:
            self._close()
        else:
            self._open(self._clock())

    def _open(self, now: float) -> None:
        self._state = _OPEN
        self.closed = False
        self._open_until = now + self._open_for
        self._probes = 0
        self._counts.reset()

    def _half_open(self) -> None:
        self._state = _HALF_OPEN
        self.closed = False
        self._probes = 0

    def _close(self) -> None:
        self._state = _CLOSED
        self.closed = True
        self._probes = 0
        self._counts.reset()
