"""Load balancing over an upstream's targets, health- and breaker-aware, plus a retry budget.

`build_pools` turns the configured upstreams into `UpstreamPool`s. Each pool
precomputes what its algorithm needs (candidate tuple, weights, hash ring) so
`pick()` only walks small tuples. Per-target runtime state (`TargetState`:
in-flight count, latency EWMA, health, breaker) is carried over from the
previous pools when a config change leaves a target in place, so a swap never
resets health or trips.

Request lifecycle, driven by the proxy::

    target = pool.pick(client_ip=ip, hash_key=key, exclude=tried)
    if target is None: reason = pool.unavailable_reason()   # -> 503 problem
    pool.begin(target)
    ... send to target.origin(scheme) ...
    pool.end(target, outcome, latency)       # or pool.abandon(target) without an outcome

A target is *available* when its health says healthy and its breaker admits
a request. Algorithms compare candidates with the breaker's non-reserving
`permits()`, and `pick()` reserves a half-open probe slot only on the target it
returns. Targets with weight 0 are never picked.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from bisect import bisect_left
from collections.abc import Callable, Collection, Mapping, Sequence
from enum import Enum
from typing import Literal

from portcullis.model import config as model
from portcullis.upstream.breaker import CircuitBreaker, SlidingWindowCounter
from portcullis.upstream.health import ActiveHealthChecker, TargetHealth
from portcullis.upstream.tls import OriginTls
from portcullis.upstream.transport import Origin, Transport

Clock = Callable[[], float]
UnavailableReason = Literal["no-targets", "no-healthy-target", "circuit-open"]

# Consistent hashing: a target of the default weight (100) gets this many
# points on the ring, others proportionally more or fewer (at least one).
VNODES_PER_DEFAULT_WEIGHT = 160
DEFAULT_WEIGHT = 100
# Ring size cap; beyond it every target's share is scaled down alike.
RING_POINT_LIMIT = 160 * 1024
# Latency EWMA: seconds for an observation's weight to decay by 1/e
# (Finagle's peak-EWMA default); an idle target's cost decays towards 0 too,
# so a target that was slow is tried again eventually.
EWMA_DECAY = 10.0
# Below this many candidates latency-ewma compares all of them instead of two.
P2C_MIN_TARGETS = 4
# Cost of a target that has requests in flight but no latency measured yet:
# larger than any real cost, so a cold target receives one request at a time.
_COLD_PENALTY = 1.0e9
# Origins cached per target (one per scheme or service TLS setting using it).
_ORIGINS_CACHED = 16


class Outcome(Enum):
    """How a proxied request to a target ended, as passive checks and breakers see it."""

    SUCCESS = "success"
    HTTP_FAILURE = "http-failure"
    CONNECT_FAILURE = "connect-failure"
    TIMEOUT = "timeout"


def target_key(target: model.Target) -> str:
    """Identity of a target within its upstream: its `host:port`, case-folded."""
    return target.target.lower()


class TargetState:
    """Runtime state of one target of one upstream; survives config swaps while unchanged.

    `active` counts requests in flight across every pool sharing this state
    (an old snapshot's pool keeps ending its requests here after a swap).
    `ewma` is the peak-sensitive latency average in seconds as of `ewma_stamp`.
    """

    __slots__ = (
        "_origins",
        "active",
        "breaker",
        "ewma",
        "ewma_stamp",
        "health",
        "host",
        "key",
        "port",
        "upstream",
        "weight",
    )

    def __init__(
        self,
        upstream: str,
        target: model.Target,
        checks: model.HealthChecks,
        breaker: model.CircuitBreaker,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        self.upstream = upstream
        self.key = target_key(target)
        self.host = target.host
        self.port = target.port
        self.weight = target.weight
        self.active = 0
        self.ewma = 0.0
        self.ewma_stamp = 0.0
        self.health = TargetHealth(upstream, target.target, checks, clock=clock)
        self.breaker = CircuitBreaker(breaker, clock=clock)
        self._origins: dict[object, Origin] = {}

    def __repr__(self) -> str:
        return f"TargetState({self.upstream!r}, {self.key!r}, weight={self.weight})"

    def origin(self, scheme: str, tls: OriginTls | None = None) -> Origin:
        """The transport origin for this target under `scheme` and a service's TLS (cached).

        `tls` is shared while a service's TLS settings are unchanged (`upstream.tls`), so
        the cache holds one entry per setting in use; one that changed is dropped with
        the rest when the cache grows past a handful.
        """
        key: object = scheme if tls is None else tls
        origin = self._origins.get(key)
        if origin is None:
            if len(self._origins) >= _ORIGINS_CACHED:
                self._origins.clear()
            origin = self._origins[key] = Origin(scheme, self.host, self.port, tls)
        return origin

    def available(self) -> bool:
        """Healthy and admitted by the breaker, without reserving a probe slot."""
        # The plain-attribute checks answer for the common case (healthy and
        # closed) without a property or method call.
        health = self.health
        if not (health.up or health.healthy):
            return False
        breaker = self.breaker
        return breaker.closed or breaker.permits()

    def update(
        self, weight: int, checks: model.HealthChecks, breaker: model.CircuitBreaker
    ) -> None:
        """Apply a new config to a carried-over target, keeping its runtime state."""
        self.weight = weight
        self.health.reconfigure(checks)
        if breaker != self.breaker.config:
            self.breaker.reconfigure(breaker)

    def cost(self, now: float) -> float:
        """Latency cost at `now`: the EWMA decayed for the time since it was last fed."""
        ewma = self.ewma
        if ewma and now > self.ewma_stamp:
            return ewma * math.exp((self.ewma_stamp - now) / EWMA_DECAY)
        return ewma

    def score(self, now: float) -> float:
        """Expected wait if one more request is sent here (lower is better)."""
        cost = self.cost(now)
        if cost:
            return cost * (self.active + 1)
        return _COLD_PENALTY + self.active if self.active else 0.0

    def observe_latency(self, latency: float, now: float) -> None:
        """Feed one latency sample into the peak EWMA: peaks count at once, dips decay in."""
        latency = max(latency, 0.0)
        w = math.exp((self.ewma_stamp - now) / EWMA_DECAY) if now > self.ewma_stamp else 1.0
        decayed = self.ewma * w
        self.ewma = latency if latency > decayed else decayed + latency * (1.0 - w)
        self.ewma_stamp = now


Selector = Callable[[str, Collection[TargetState]], "TargetState | None"]


class UpstreamPool:
    """The balancer of one upstream: picks targets and collects request outcomes.

    Built by `build_pools`; immutable except for the algorithm's cursor state
    and the shared `TargetState`s. Call `start()` to run active health checks
    (if enabled) and `stop()` when the pool is replaced.
    """

    __slots__ = (
        "_candidates",
        "_checker",
        "_clock",
        "_current",
        "_cursor",
        "_failure_statuses",
        "_n",
        "_ring_owners",
        "_ring_points",
        "_rng",
        "_select",
        "_weights",
        "config",
        "hash_on",
        "hash_on_header",
        "name",
        "targets",
    )

    def __init__(
        self,
        config: model.Upstream,
        targets: Sequence[TargetState],
        *,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.hash_on = config.hash_on
        self.hash_on_header = config.hash_on_header.lower() if config.hash_on_header else None
        self.targets = tuple(targets)
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._candidates = tuple(t for t in self.targets if t.weight > 0)
        self._weights = tuple(t.weight for t in self._candidates)
        self._n = len(self._candidates)
        self._cursor = 0
        self._current = [0] * self._n
        self._failure_statuses = frozenset(config.healthchecks.passive.failure_statuses)
        self._checker: ActiveHealthChecker | None = None
        self._ring_points: list[int] = []
        self._ring_owners: list[int] = []
        algorithm = config.algorithm
        if algorithm is model.Algorithm.ROUND_ROBIN:
            self._select: Selector = self._pick_round_robin
        elif algorithm is model.Algorithm.WEIGHTED_ROUND_ROBIN:
            self._select = self._pick_weighted
        elif algorithm is model.Algorithm.LEAST_CONNECTIONS:
            self._select = self._pick_least_connections
        elif algorithm is model.Algorithm.CONSISTENT_HASHING:
            self._ring_points, self._ring_owners = _build_ring(self._candidates, self._weights)
            self._select = self._pick_hashed
        else:
            self._select = self._pick_latency

    def __repr__(self) -> str:
        return f"UpstreamPool({self.name!r}, {self.config.algorithm.value}, {len(self.targets)})"

    # -- picking -----------------------------------------------------------------

    def pick(
        self,
        *,
        client_ip: str,
        hash_key: str | None = None,
        exclude: Collection[TargetState] = (),
    ) -> TargetState | None:
        """Choose an available target not in `exclude`, or None (see `unavailable_reason`).

        Consistent hashing hashes `hash_key`, or `client_ip` when it is None;
        the other algorithms ignore both.
        """
        target = self._select(client_ip if hash_key is None else hash_key, exclude)
        if target is not None:
            target.breaker.acquire()
        return target

    def unavailable_reason(self) -> UnavailableReason:
        """Why `pick()` returned None: to choose the problem the client gets.

        "circuit-open" when every healthy target's breaker refuses traffic;
        "no-healthy-target" when none is healthy, or when the available ones
        were all excluded (already tried).
        """
        if not self._candidates:
            return "no-targets"
        any_healthy = False
        for t in self._candidates:
            if t.health.healthy:
                if t.breaker.permits():
                    return "no-healthy-target"
                any_healthy = True
        return "circuit-open" if any_healthy else "no-healthy-target"

    def _pick_round_robin(self, key: str, exclude: Collection[TargetState]) -> TargetState | None:
        candidates, n = self._candidates, self._n
        i = self._cursor
        for _ in range(n):
            if i >= n:
                i = 0
            t = candidates[i]
            if not (exclude and t in exclude) and t.available():
                self._cursor = i + 1
                return t
            i += 1
        return None

    def _pick_weighted(self, key: str, exclude: Collection[TargetState]) -> TargetState | None:
        # nginx's smooth weighted round-robin: every available target's current
        # weight grows by its weight, the largest wins and pays back the total.
        candidates, weights, current = self._candidates, self._weights, self._current
        total = 0
        best = -1
        best_current = 0
        for i in range(self._n):
            t = candidates[i]
            if (exclude and t in exclude) or not t.available():
                continue
            w = weights[i]
            c = current[i] + w
            current[i] = c
            total += w
            if best < 0 or c > best_current:
                best, best_current = i, c
        if best < 0:
            return None
        current[best] -= total
        return candidates[best]

    def _pick_least_connections(
        self, key: str, exclude: Collection[TargetState]
    ) -> TargetState | None:
        candidates, weights, n = self._candidates, self._weights, self._n
        best: TargetState | None = None
        best_i = 0
        best_active = 0
        best_weight = 0
        i = self._cursor
        for _ in range(n):
            if i >= n:
                i = 0
            t = candidates[i]
            if not (exclude and t in exclude) and t.available():
                active = t.active
                if (
                    best is None
                    or active < best_active
                    or (active == best_active and weights[i] > best_weight)
                ):
                    best, best_i, best_active, best_weight = t, i, active, weights[i]
            i += 1
        if best is not None:
            self._cursor = best_i + 1
        return best

    def _pick_hashed(self, key: str, exclude: Collection[TargetState]) -> TargetState | None:
        points = self._ring_points
        size = len(points)
        if not size:
            return None
        start = bisect_left(points, _hash64(key))
        if start == size:
            start = 0
        owners, candidates = self._ring_owners, self._candidates
        owner = owners[start]
        t = candidates[owner]
        if not (exclude and t in exclude) and t.available():
            return t
        # Slow path: walk clockwise to the next distinct target that is available.
        rejected = {owner}
        i = start
        for _ in range(size - 1):
            i += 1
            if i == size:
                i = 0
            owner = owners[i]
            if owner in rejected:
                continue
            t = candidates[owner]
            if not (exclude and t in exclude) and t.available():
                return t
            rejected.add(owner)
            if len(rejected) == self._n:
                break
        return None

    def _pick_latency(self, key: str, exclude: Collection[TargetState]) -> TargetState | None:
        n = self._n
        if n >= P2C_MIN_TARGETS:
            # Power of two choices: compare two distinct random candidates.
            rng = self._rng
            a = rng.randrange(n)
            b = rng.randrange(n - 1)
            if b >= a:
                b += 1
            ta, tb = self._candidates[a], self._candidates[b]
            ok_a = not (exclude and ta in exclude) and ta.available()
            ok_b = not (exclude and tb in exclude) and tb.available()
            if ok_a and ok_b:
                now = self._clock()
                return ta if ta.score(now) <= tb.score(now) else tb
            if ok_a:
                return ta
            if ok_b:
                return tb
        return self._pick_lowest_score(exclude)

    def _pick_lowest_score(self, exclude: Collection[TargetState]) -> TargetState | None:
        candidates, n = self._candidates, self._n
        now = self._clock()
        best: TargetState | None = None
        best_i = 0
        best_score = 0.0
        i = self._cursor
        for _ in range(n):
            if i >= n:
                i = 0
            t = candidates[i]
            if not (exclude and t in exclude) and t.available():
                score = t.score(now)
                if best is None or score < best_score:
                    best, best_i, best_score = t, i, score
            i += 1
        if best is not None:
            self._cursor = best_i + 1
        return best

    # -- outcomes ----------------------------------------------------------------

    def is_failure_status(self, status: int) -> bool:
        """Whether a response status counts as a failure (passive `failure_statuses`)."""
        return status in self._failure_statuses

    def outcome_for_status(self, status: int) -> Outcome:
        """Classify a response status with this upstream's passive `failure_statuses`."""
        return Outcome.HTTP_FAILURE if status in self._failure_statuses else Outcome.SUCCESS

    def begin(self, target: TargetState) -> None:
        """A request to `target` starts (counts towards least-connections and EWMA load)."""
        target.active += 1

    def end(self, target: TargetState, outcome: Outcome, latency: float) -> None:
        """A request to `target` ended: update in-flight count, health, breaker and EWMA.

        Connect failures do not feed the latency EWMA: a refused connection is
        fast and would make a dead target look like the quickest one.
        """
        if target.active > 0:
            target.active -= 1
        if outcome is Outcome.SUCCESS:
            target.health.record_success()
            target.breaker.record(True)
        else:
            if outcome is Outcome.TIMEOUT:
                target.health.record_timeout()
            else:
                target.health.record_failure()
            target.breaker.record(False)
        if outcome is not Outcome.CONNECT_FAILURE:
            target.observe_latency(latency, self._clock())

    def release(self, target: TargetState) -> None:
        """Give back a target `pick()` returned that is not used after all."""
        target.breaker.release_probe()

    def abandon(self, target: TargetState) -> None:
        """A request to `target` ended without an outcome (e.g. the client went away)."""
        if target.active > 0:
            target.active -= 1
        target.breaker.release_probe()

    # -- active checks -----------------------------------------------------------

    @property
    def checking(self) -> bool:
        """Whether this pool's active health checker is running."""
        return self._checker is not None and self._checker.running

    async def start(self, transport: Transport, scheme: str, tls: OriginTls | None = None) -> None:
        """Start active health checks with `transport` over `scheme` (and `tls`, the TLS
        settings of the service using the pool), if enabled."""
        active = self.config.healthchecks.active
        if self._checker is None and active.enabled and self.targets:
            self._checker = ActiveHealthChecker(self, transport, active, scheme, tls)
            self._checker.start()

    async def stop(self) -> None:
        """Stop active health checks; the pool still balances afterwards."""
        checker, self._checker = self._checker, None
        if checker is not None:
            await checker.stop()


def build_pools(
    upstreams: Sequence[model.Upstream],
    previous: Mapping[str, UpstreamPool] | None = None,
    *,
    clock: Clock = time.monotonic,
    rng: random.Random | None = None,
) -> dict[str, UpstreamPool]:
    """Build one pool per upstream, reusing `TargetState`s from `previous`.

    A target keeps its state when its upstream name and `host:port` are
    unchanged; a new weight or new check/breaker settings are applied in
    place. The new pools are not started: the caller starts them and stops
    the previous ones once the new snapshot is live.
    """
    pools: dict[str, UpstreamPool] = {}
    for upstream in upstreams:
        old_pool = previous.get(upstream.name) if previous is not None else None
        carried = {t.key: t for t in old_pool.targets} if old_pool is not None else {}
        states: list[TargetState] = []
        for target in upstream.targets:
            # pop: two spellings of one address ("A:80", "a:80") get a state each.
            state = carried.pop(target_key(target), None)
            if state is None:
                state = TargetState(
                    upstream.name,
                    target,
                    upstream.healthchecks,
                    upstream.circuit_breaker,
                    clock=clock,
                )
            else:
                state.update(target.weight, upstream.healthchecks, upstream.circuit_breaker)
            states.append(state)
        pools[upstream.name] = UpstreamPool(upstream, states, clock=clock, rng=rng)
    return pools


def _hash64(key: str) -> int:
    """A stable 64-bit hash (the same in every worker, unlike `hash()`)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


def _build_ring(
    candidates: Sequence[TargetState], weights: Sequence[int]
) -> tuple[list[int], list[int]]:
    """Ketama-style ring: sorted 64-bit points and, per point, its candidate index.

    A target's points depend only on its own key and weight, so adding or
    removing one target leaves every other target's points where they were
    and moves only the keys on the changed target's arcs.
    """
    counts = [max(1, round(VNODES_PER_DEFAULT_WEIGHT * w / DEFAULT_WEIGHT)) for w in weights]
    total = sum(counts)
    if total > RING_POINT_LIMIT:
        scale = RING_POINT_LIMIT / total
        counts = [max(1, round(c * scale)) for c in counts]
    entries: list[tuple[int, str, int]] = []
    for index, (target, count) in enumerate(zip(candidates, counts, strict=True)):
        produced = 0
        block = 0
        while produced < count:
            digest = hashlib.blake2b(f"{target.key}-{block}".encode(), digest_size=32).digest()
            for offset in range(0, 32, 8):
                if produced == count:
                    break
                point = int.from_bytes(digest[offset : offset + 8], "big")
                entries.append((point, target.key, index))
                produced += 1
            block += 1
    entries.sort()
    return [e[0] for e in entries], [e[2] for e in entries]


class RetryBudget:
    """Caps retries to a share of recent traffic plus a small steady reserve.

    Retries may number `ratio` times the original requests of the last
    `window` seconds (Finagle's / Linkerd's budget), and beyond that
    `min_per_second` more per second, so a quiet service can still retry a
    few requests. The reserve is a token bucket that holds at most one
    second's worth (at least one retry): it cannot be saved up into a burst,
    so over any T seconds retries stay within
    `ratio * requests + min_per_second * T + max(1, min_per_second)`.
    Call `record_request()` for each original request and `try_retry()` before
    each retry, whoever makes it (the proxy, or a transport's own keep-alive
    retry); a retry itself is not counted as a request.
    """

    __slots__ = (
        "_cap",
        "_clock",
        "_counts",
        "_stamp",
        "_tokens",
        "min_per_second",
        "ratio",
        "window",
    )

    def __init__(
        self,
        ratio: float,
        min_per_second: float,
        window: float = 10.0,
        clock: Clock = time.monotonic,
    ) -> None:
        if ratio < 0 or min_per_second < 0:
            raise ValueError("ratio and min_per_second must not be negative")
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.window = window
        self._cap = max(1.0, min_per_second) if min_per_second > 0 else 0.0
        self._tokens = self._cap
        self._clock = clock
        self._stamp = clock()
        # first = requests, second = retries paid for by the ratio
        self._counts = SlidingWindowCounter(window)

    @classmethod
    def from_config(
        cls, retries: model.Retries, *, window: float = 10.0, clock: Clock = time.monotonic
    ) -> RetryBudget:
        return cls(retries.budget_ratio, retries.min_per_second, window, clock)

    def record_request(self) -> None:
        """Count an original (non-retry) request, which earns `ratio` retries."""
        self._counts.add(self._clock(), 1, 0)

    def try_retry(self) -> bool:
        """Spend one retry if the budget has one; False means do not retry."""
        now = self._clock()
        counts = self._counts
        counts.advance(now)
        if self.ratio * counts.first - counts.second >= 1.0 - 1e-9:
            counts.add(now, 0, 1)
            return True
        tokens = self._refill(now)
        if tokens < 1.0 - 1e-9:
            return False
        self._tokens = tokens - 1.0
        return True

    def _refill(self, now: float) -> float:
        tokens = self._tokens
        if tokens < self._cap:
            tokens = min(self._cap, tokens + max(0.0, now - self._stamp) * self.min_per_second)
            self._tokens = tokens
        self._stamp = now
        return tokens

    @property
    def available(self) -> float:
        """Retries the budget would allow right now (may be fractional)."""
        now = self._clock()
        counts = self._counts
        counts.advance(now)
        return max(0.0, self.ratio * counts.first - counts.second) + self._refill(now)
