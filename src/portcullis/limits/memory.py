"""In-memory rate-limit backend: exact within one process, no I/O on the decision path.

States live in a dict keyed by counter key + algorithm. Every stored state carries
the time after which it no longer matters (its TTL, from the algorithm); an idle
key is dropped by a sweep that runs at most once per second of the clock and only
looks at the keys that were due in the seconds that passed (a timer wheel with one
slot per second; a key sits in one slot at a time and moves on when its deadline
has moved). Memory is bounded by `max_keys`: beyond it the keys closest to expiry
are dropped first, and each drop is counted in `evictions` (a dropped key forgets
its usage, so evictions are the one way this backend stops being exact).

Calendar-window counters (quotas, `LimitSpec.calendar`) are also remembered in a
set when they are created, so `calendar_counters()` can list them without walking
every key: a worker publishes them for the usage API (`limits/quota_usage.py`).

One process-wide instance (`default_memory_backend()`) serves plugins that run
without a shared backend, so counters survive config reloads (each reload builds
new plugin instances).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Sequence

from portcullis.limits.algorithms import EVALUATORS, State
from portcullis.limits.backend import FailurePolicy, LimitRequest
from portcullis.limits.spec import CALENDAR_CODE, CALENDAR_GRACE_US, MICROS, Decision

# The suffix `LimitSpec.key_suffix` gives the counter key of a calendar window.
_CALENDAR_SUFFIX = f":{CALENDAR_CODE}"


def wall_clock_us() -> int:
    """Wall-clock time in integer microseconds (windows align to the epoch, like Redis)."""
    return time.time_ns() // 1_000


class _Entry:
    __slots__ = ("expires", "slot", "state")

    def __init__(self, state: State, expires: int, slot: int) -> None:
        self.state = state
        self.expires = expires
        self.slot = slot


class MemoryBackend:
    """Counters in this process's memory (see the module doc)."""

    name = "memory"

    def __init__(
        self, *, max_keys: int = 1_000_000, clock: Callable[[], int] = wall_clock_us
    ) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.max_keys = max_keys
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._wheel: dict[int, list[str]] = {}
        self._slots: list[int] = []  # heap of the wheel's occupied seconds
        self._swept = 0  # the last second swept
        # Keys of calendar windows, added at creation; dropped lazily (calendar_counters).
        self._calendar: set[str] = set()
        self.allowed = 0
        self.denied = 0
        self.evictions = 0
        self.expired = 0

    @property
    def healthy(self) -> bool:
        return True

    def __len__(self) -> int:
        return len(self._entries)

    async def decide(
        self, requests: Sequence[LimitRequest], on_failure: FailurePolicy | None = None
    ) -> list[Decision]:
        return self.decide_now(requests)

    def decide_now(
        self, requests: Sequence[LimitRequest], now: int | None = None
    ) -> list[Decision]:
        """The decision, synchronously (the async `decide` is this and nothing more)."""
        if now is None:
            now = self._clock()
        second = now // MICROS
        if second > self._swept:
            self._sweep(now, second)
        entries = self._entries
        if len(requests) == 1:
            # The common case, without the all-or-nothing bookkeeping.
            req = requests[0]
            spec = req.spec
            key = req.key + spec.key_suffix
            entry = entries.get(key)
            outcome = EVALUATORS[spec.algorithm](
                entry.state if entry is not None else None, now, req.cost, spec
            )
            if outcome.decision.allowed:
                self.allowed += 1
                if outcome.state is not None:
                    self._store(key, entry, outcome.state, now + outcome.ttl_us)
                    if len(entries) > self.max_keys:
                        self._evict()
            else:
                self.denied += 1
            return [outcome.decision]
        keys = [req.key + req.spec.key_suffix for req in requests]
        found = [entries.get(key) for key in keys]
        outcomes = [
            EVALUATORS[req.spec.algorithm](
                entry.state if entry is not None else None, now, req.cost, req.spec
            )
            for req, entry in zip(requests, found, strict=True)
        ]
        if all(o.decision.allowed for o in outcomes):
            self.allowed += 1
            for key, entry, outcome in zip(keys, found, outcomes, strict=True):
                if outcome.state is not None:
                    self._store(key, entry, outcome.state, now + outcome.ttl_us)
            # Only after every store: evicting earlier could orphan an entry in `found`.
            if len(entries) > self.max_keys:
                self._evict()
            return [o.decision for o in outcomes]
        self.denied += 1
        decisions = []
        for req, entry, outcome in zip(requests, found, outcomes, strict=True):
            if outcome.decision.allowed:
                # Report this limit as if the refused request had not been made.
                state = entry.state if entry is not None else None
                outcome = EVALUATORS[req.spec.algorithm](state, now, 0, req.spec)
            decisions.append(outcome.decision)
        return decisions

    async def peek(self, requests: Sequence[LimitRequest]) -> list[Decision]:
        return self.peek_now(requests)

    def peek_now(self, requests: Sequence[LimitRequest], now: int | None = None) -> list[Decision]:
        """Each limit's state at cost 0; nothing is stored or counted."""
        if now is None:
            now = self._clock()
        entries = self._entries
        decisions = []
        for req in requests:
            spec = req.spec
            entry = entries.get(req.key + spec.key_suffix)
            # An entry past its deadline is one the sweep has not reached yet: it is gone.
            state = entry.state if entry is not None and entry.expires > now else None
            decisions.append(EVALUATORS[spec.algorithm](state, now, 0, spec).decision)
        return decisions

    def _store(self, key: str, entry: _Entry | None, state: State, expires: int) -> None:
        if entry is not None:
            entry.state = state
            entry.expires = expires
            return
        slot = expires // MICROS + 1
        self._entries[key] = _Entry(state, expires, slot)
        self._register(key, slot)
        if key.endswith(_CALENDAR_SUFFIX):
            self._calendar.add(key)

    def _register(self, key: str, slot: int) -> None:
        keys = self._wheel.get(slot)
        if keys is None:
            self._wheel[slot] = [key]
            heapq.heappush(self._slots, slot)
        else:
            keys.append(key)

    def _sweep(self, now: int, second: int) -> None:
        """Drop the keys whose deadline has passed; move the others to their new slot."""
        self._swept = second
        slots, wheel, entries = self._slots, self._wheel, self._entries
        while slots and slots[0] <= second:
            slot = heapq.heappop(slots)
            for key in wheel.pop(slot):
                entry = entries.get(key)
                if entry is None or entry.slot != slot:
                    continue  # gone, or a newer entry under the same key lives elsewhere
                if entry.expires <= now:
                    del entries[key]
                    self.expired += 1
                else:
                    entry.slot = entry.expires // MICROS + 1
                    self._register(key, entry.slot)

    def _evict(self) -> None:
        """Over capacity: drop keys from the slot that expires first until back under it."""
        slots, wheel, entries = self._slots, self._wheel, self._entries
        while len(entries) > self.max_keys and slots:
            slot = slots[0]
            keys = wheel[slot]
            while keys and len(entries) > self.max_keys:
                key = keys.pop()
                entry = entries.get(key)
                if entry is not None and entry.slot == slot:
                    del entries[key]
                    self.evictions += 1
            if not keys:
                del wheel[slot]
                heapq.heappop(slots)

    def calendar_counters(
        self, prefix: str = "", now: int | None = None
    ) -> list[tuple[str, int, int]]:
        """`(key, count, window end µs)` of each live calendar-window counter under `prefix`.

        `key` is the `LimitRequest.key` (without the algorithm suffix). Costs one step
        per calendar counter, not per key of the backend; forgets swept and evicted ones.
        """
        if now is None:
            now = self._clock()
        entries = self._entries
        out = []
        gone = []
        for key in self._calendar:
            entry = entries.get(key)
            if entry is None:
                gone.append(key)
            elif entry.expires > now and key.startswith(prefix):
                # A calendar state is `(count,)`, stored until the window end + grace.
                out.append(
                    (
                        key[: -len(_CALENDAR_SUFFIX)],
                        entry.state[0],
                        entry.expires - CALENDAR_GRACE_US,
                    )
                )
        self._calendar.difference_update(gone)
        return out

    def clear(self) -> None:
        """Forget every counter (tests, admin resets)."""
        self._entries.clear()
        self._calendar.clear()
        self._wheel.clear()
        self._slots.clear()

    async def aclose(self) -> None:
        self.clear()

    def snapshot(self) -> dict[str, float]:
        return {
            "decisions_allowed": self.allowed,
            "decisions_denied": self.denied,
            "keys": len(self._entries),
            "evictions": self.evictions,
            "expired": self.expired,
        }


_default: MemoryBackend | None = None


def default_memory_backend() -> MemoryBackend:
    """The process-wide backend used when a worker provides none (created on first use)."""
    global _default
    if _default is None:
        _default = MemoryBackend()
    return _default
