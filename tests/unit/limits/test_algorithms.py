"""The four algorithms against brute-force references (hypothesis).

Each reference knows only the definition of its algorithm over the full history of
admitted requests (a window's sum of costs; a bucket's level as an exact rational
number; GCRA's theoretical arrival time as a rational), never the implementation's
integer tricks. Everything else — remaining, when the limit is full again, when a
refused request could pass — is found from that definition by search (binary
search over time: with no new requests, admission only gets easier as time
passes). Random request sequences then must get identical answers, to the
microsecond, including costs above 1, cost 0, costs above the limit, and requests
landing exactly on window edges and exactly at (and one microsecond before) the
announced retry time.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portcullis.limits.algorithms import (
    Outcome,
    State,
    evaluate,
    evaluate_all,
    fixed_window,
    gcra,
    sliding_window,
    token_bucket,
)
from portcullis.limits.spec import Algorithm, Decision, LimitSpec, parse_period, period_label

EPOCH = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in microseconds


@dataclass
class Reference(ABC):
    """History-based definition of one algorithm; subclasses define the measures."""

    spec: LimitSpec
    events: list[tuple[int, int]] = field(default_factory=list)  # admitted (time, cost)

    @abstractmethod
    def admits(self, t: int, cost: int) -> bool:
        """Would a request of `cost` at `t` be admitted, given the history?"""

    @abstractmethod
    def remaining(self, t: int) -> int:
        """How much cost could still be admitted at `t`."""

    @abstractmethod
    def full(self, t: int) -> bool:
        """True when the whole budget is available again at `t`."""

    def horizon(self) -> int:
        """An upper bound on any wait (binary search range)."""
        spec = self.spec
        return 2 * spec.period_us + spec.period_us * spec.capacity // spec.limit + 2

    def first(self, t: int, ok: object) -> int:
        """Smallest d >= 0 with ok(t + d) (monotone in d)."""
        assert callable(ok)
        lo, hi = 0, self.horizon()
        assert ok(t + hi)
        while lo < hi:
            mid = (lo + hi) // 2
            if ok(t + mid):
                hi = mid
            else:
                lo = mid + 1
        return lo

    def more(self, t: int) -> int:
        """Until additional quota is made available (RateLimit `t`): the first moment the
        remaining quota grows; 0 when the whole budget is available."""
        if self.full(t):
            return 0
        now = self.remaining(t)
        return self.first(t, lambda u: self.full(u) or self.remaining(u) > now)

    def decide(self, t: int, cost: int) -> Decision:
        cap = self.spec.capacity if self.spec.algorithm in BUCKETS else self.spec.limit
        if cost > cap:
            return Decision(False, self.remaining(t), self.more(t), self.spec.period_us)
        if self.admits(t, cost):
            if cost:
                self.events.append((t, cost))
            return Decision(True, self.remaining(t), self.more(t), 0)
        retry = self.first(t, lambda u: self.admits(u, cost))
        return Decision(False, self.remaining(t), self.more(t), retry)


BUCKETS = (Algorithm.token_bucket, Algorithm.gcra)


class FixedRef(Reference):
    def used(self, t: int) -> int:
        w = t // self.spec.period_us
        return sum(c for s, c in self.events if s // self.spec.period_us == w and s <= t)

    def admits(self, t: int, cost: int) -> bool:
        return self.used(t) + cost <= self.spec.limit

    def remaining(self, t: int) -> int:
        return max(0, self.spec.limit - self.used(t))

    def full(self, t: int) -> bool:
        return self.used(t) == 0


class SlidingRef(Reference):
    def used(self, t: int) -> int:
        """(previous window x overlap + current window) x steps, from the history."""
        period, q = self.spec.period_us, self.spec.quantum_us
        steps = period // q
        w = t // period
        cur = sum(c for s, c in self.events if s // period == w and s <= t)
        prev = sum(c for s, c in self.events if s // period == w - 1)
        weight = steps - (t - w * period) // q
        return prev * weight + cur * steps

    def admits(self, t: int, cost: int) -> bool:
        steps = self.spec.period_us // self.spec.quantum_us
        return self.used(t) + cost * steps <= self.spec.limit * steps

    def remaining(self, t: int) -> int:
        steps = self.spec.period_us // self.spec.quantum_us
        return max(0, (self.spec.limit * steps - self.used(t)) // steps)

    def full(self, t: int) -> bool:
        return self.used(t) == 0


class BucketRef(Reference):
    def level(self, t: int) -> Fraction:
        """Tokens at t: start full, refill at limit/period continuously, capped."""
        rate = Fraction(self.spec.limit, self.spec.period_us)
        cap = Fraction(self.spec.capacity)
        tokens, last = cap, None
        for s, c in self.events:
            if last is not None:
                tokens = min(cap, tokens + (s - last) * rate)
            tokens -= c
            last = s
        if last is not None:
            tokens = min(cap, tokens + (t - last) * rate)
        return tokens

    def admits(self, t: int, cost: int) -> bool:
        return self.level(t) >= cost

    def remaining(self, t: int) -> int:
        return math.floor(self.level(t))

    def full(self, t: int) -> bool:
        return self.level(t) == self.spec.capacity


class GcraRef(Reference):
    def tat(self) -> Fraction:
        """Virtual scheduling: each admitted request pushes the TAT by cost x T."""
        emission = Fraction(self.spec.period_us, self.spec.limit)
        tat = Fraction(0)
        for s, c in self.events:
            tat = max(tat, Fraction(s)) + c * emission
        return tat

    def admits(self, t: int, cost: int) -> bool:
        emission = Fraction(self.spec.period_us, self.spec.limit)
        tolerance = self.spec.capacity * emission
        return max(self.tat(), Fraction(t)) + cost * emission - tolerance <= t

    def remaining(self, t: int) -> int:
        emission = Fraction(self.spec.period_us, self.spec.limit)
        tolerance = self.spec.capacity * emission
        return math.floor((t + tolerance - max(self.tat(), Fraction(t))) / emission)

    def full(self, t: int) -> bool:
        return self.tat() <= t


REFERENCES: dict[Algorithm, type[Reference]] = {
    Algorithm.fixed_window: FixedRef,
    Algorithm.sliding_window: SlidingRef,
    Algorithm.token_bucket: BucketRef,
    Algorithm.gcra: GcraRef,
}

PERIODS = [1_000, 1_001, 2_500, 7_000, 1_000_000, 3_600_000_000, 86_400_000_000]


@st.composite
def specs(draw: st.DrawFn, algorithm: Algorithm | None = None) -> LimitSpec:
    alg = algorithm or draw(st.sampled_from(list(Algorithm)))
    limit = draw(st.integers(1, 12))
    period = draw(st.sampled_from(PERIODS))
    burst = draw(st.one_of(st.none(), st.integers(1, 15))) if alg in BUCKETS else None
    return LimitSpec(alg, limit, period, burst)


# One step: how time moves before the request, and its cost.
Step = tuple[str, int, int]
steps_strategy = st.lists(
    st.tuples(
        st.sampled_from(["dt", "dt", "retry", "retry-1", "edge", "reset"]),
        st.integers(0, 3_000),
        st.one_of(st.integers(1, 3), st.integers(0, 14)),
    ),
    min_size=1,
    max_size=40,
)


def run(spec: LimitSpec, start: int, steps: list[Step]) -> None:
    """Drive implementation and reference through the same requests; compare everything."""
    ref = REFERENCES[spec.algorithm](spec)
    state: State | None = None
    now = start
    last: Decision | None = None
    last_cost = 0
    for kind, value, cost in steps:
        if kind == "retry" and last is not None and not last.allowed:
            now += last.retry_after
            cost = last_cost  # the same request again, exactly when it was told to
        elif kind == "retry-1" and last is not None and not last.allowed and last.retry_after:
            now += last.retry_after - 1
            cost = last_cost  # ... and one microsecond too early
        elif kind == "reset" and last is not None:
            now += last.reset_after
        elif kind == "edge":
            now = (now // spec.period_us + 1) * spec.period_us + (value % 3) - 1
        else:
            now += value * (spec.period_us // 1000 if value % 7 == 0 else 1)
        outcome = evaluate(spec, state, now, cost)
        expected = ref.decide(now, cost)
        assert outcome.decision == expected, (kind, now - start, cost, state)
        if outcome.state is not None:
            assert outcome.decision.allowed
            assert cost > 0
            # After its TTL a state means nothing: it decides like no state at all.
            later = now + outcome.ttl_us
            for probe in (0, 1, cost):
                assert evaluate(spec, outcome.state, later, probe) == evaluate(
                    spec, None, later, probe
                )
            state = outcome.state
        else:
            assert cost == 0 or not outcome.decision.allowed
        last, last_cost = outcome.decision, cost


@pytest.mark.parametrize("algorithm", list(Algorithm))
@settings(max_examples=300, deadline=None)
@given(data=st.data(), offset=st.integers(0, 10**9), steps=steps_strategy)
def test_matches_brute_force_reference(
    algorithm: Algorithm, data: st.DataObject, offset: int, steps: list[Step]
) -> None:
    spec = data.draw(specs(algorithm))
    run(spec, EPOCH + offset, steps)


@settings(max_examples=150, deadline=None)
@given(
    limit=st.integers(1, 20),
    period=st.sampled_from(PERIODS),
    burst=st.integers(1, 25),
    times=st.lists(st.tuples(st.integers(0, 5_000), st.integers(0, 8)), max_size=60),
)
def test_gcra_and_token_bucket_admit_the_same_requests(
    limit: int, period: int, burst: int, times: list[tuple[int, int]]
) -> None:
    """Two representations of one meter: same burst, same decisions, always."""
    bucket, cell = (
        LimitSpec(Algorithm.token_bucket, limit, period, burst),
        LimitSpec(Algorithm.gcra, limit, period, burst),
    )
    s1: State | None = None
    s2: State | None = None
    now = EPOCH
    for dt, cost in times:
        now += dt * 97
        o1, o2 = token_bucket(s1, now, cost, bucket), gcra(s2, now, cost, cell)
        assert o1.decision == o2.decision
        assert o1.ttl_us == o2.ttl_us
        s1 = o1.state if o1.state is not None else s1
        s2 = o2.state if o2.state is not None else s2


def test_fixed_window_counts_per_aligned_window() -> None:
    spec = LimitSpec.of("fixed_window", 3, "1s")
    start = EPOCH + 400_000  # 0.4 s into a second
    state = None
    allowed = []
    for i in range(5):
        outcome = fixed_window(state, start + i, 1, spec)
        allowed.append(outcome.decision.allowed)
        state = outcome.state if outcome.state is not None else state
    assert allowed == [True, True, True, False, False]
    refused = fixed_window(state, start + 10, 1, spec).decision
    assert refused.retry_after == 600_000 - 10  # the next second
    assert fixed_window(state, EPOCH + 1_000_000, 3, spec).decision.allowed


def test_gcra_with_a_fractional_emission_interval_waits_to_the_microsecond() -> None:
    spec = LimitSpec.of("gcra", 3, "1ms")  # one unit per 333.33 us
    state: State | None = None
    for _ in range(3):
        outcome = gcra(state, EPOCH, 1, spec)
        assert outcome.decision.allowed
        state = outcome.state
    refused = gcra(state, EPOCH, 1, spec).decision
    assert refused.retry_after == 334  # ceil(333.33)
    assert not gcra(state, EPOCH + 333, 1, spec).decision.allowed
    assert gcra(state, EPOCH + 334, 1, spec).decision.allowed


def test_costs_consume_several_units_and_oversized_costs_never_pass() -> None:
    spec = LimitSpec.of("gcra", 10, "1s")
    first = gcra(None, EPOCH, 7, spec)
    # One more unit in 0.1 s (the RateLimit `t`), not the full refill in 0.7 s.
    assert first.decision == Decision(True, 3, 100_000, 0)
    assert first.state is not None
    second = gcra(first.state, EPOCH, 4, spec).decision
    assert not second.allowed
    assert second.retry_after == 100_000  # one unit refills in 0.1 s
    assert second.remaining == 3
    too_big = gcra(None, EPOCH, 11, spec).decision
    assert not too_big.allowed
    assert too_big.retry_after == 1_000_000  # one period: no wait would let it through


def test_sliding_window_weights_the_previous_window() -> None:
    spec = LimitSpec.of("sliding_window", 10, "1s")
    state: State | None = None
    now = EPOCH
    for _ in range(10):
        outcome = sliding_window(state, now, 1, spec)
        assert outcome.decision.allowed
        state = outcome.state
    assert not sliding_window(state, now, 1, spec).decision.allowed
    # 25% into the next window, 75% of the previous 10 still count: 2 fit.
    later = EPOCH + 1_250_000
    d = sliding_window(state, later, 2, spec).decision
    assert d.allowed
    assert d.remaining == 0
    assert not sliding_window(state, later, 3, spec).decision.allowed


def test_token_bucket_refills_continuously_with_a_burst() -> None:
    spec = LimitSpec.of("token_bucket", 2, "1s", burst=5)
    state: State | None = None
    for expected in (4, 3, 2, 1, 0):
        outcome = token_bucket(state, EPOCH, 1, spec)
        assert outcome.decision.remaining == expected
        state = outcome.state
    refused = token_bucket(state, EPOCH, 1, spec).decision
    assert refused.retry_after == 500_000
    # Additional quota (the next token) in 0.5 s, not the full refill in 2.5 s.
    assert refused.reset_after == 500_000
    assert token_bucket(state, EPOCH + 500_000, 1, spec).decision.allowed


def test_evaluate_all_is_all_or_nothing() -> None:
    second = LimitSpec.of("fixed_window", 5, "1s")
    hour = LimitSpec.of("fixed_window", 2, "1h")
    decisions, commit = evaluate_all(
        [(second, 1, None), (hour, 1, (EPOCH // 3_600_000_000, 2))], EPOCH
    )
    assert commit is None
    assert [d.allowed for d in decisions] == [True, False]
    # The limit that would have admitted reports its state without the refused request.
    assert decisions[0].remaining == 5
    decisions, commit = evaluate_all([(second, 1, None), (hour, 1, None)], EPOCH)
    assert commit is not None
    assert [o.state for o in commit] == [
        (EPOCH // 1_000_000, 1),
        (EPOCH // 3_600_000_000, 1),
    ]
    assert all(isinstance(o, Outcome) for o in commit)


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("1s", 1_000_000),
        ("1m", 60_000_000),
        ("1h", 3_600_000_000),
        ("1d", 86_400_000_000),
        ("250ms", 250_000),
        (" 2.5s ", 2_500_000),
        (60, 60_000_000),
        (0.5, 500_000),
        ("30", 30_000_000),
    ],
)
def test_parse_period(text: str | float, micros: int) -> None:
    assert parse_period(text) == micros


@pytest.mark.parametrize(
    "text", ["", "1w", "-1s", "0s", "0.0001", "1e3s", "401d", True, 1.7976931348623155e308]
)
def test_parse_period_rejects(text: str | float) -> None:
    with pytest.raises(ValueError, match="period"):
        parse_period(text)


def test_period_label_is_the_shortest_exact_unit() -> None:
    assert [period_label(p) for p in (1_000_000, 90_000_000, 3_600_000_000, 250_000, 1_001)] == [
        "1s",
        "90s",
        "1h",
        "250ms",
        "1001us",
    ]


def test_specs_refuse_what_cannot_be_counted_exactly() -> None:
    with pytest.raises(ValueError, match="burst applies"):
        LimitSpec.of("fixed_window", 10, "1s", burst=5)
    with pytest.raises(ValueError, match="too large"):
        LimitSpec.of("gcra", 7, "400d", burst=10**9)
    with pytest.raises(ValueError, match="limit must be"):
        LimitSpec.of("gcra", 0, "1s")
    # A big sliding window counts at a coarser time step instead of failing.
    big = LimitSpec.of("sliding_window", 10**9, "1d")
    assert big.quantum_us > 1
    assert 4 * big.limit * (big.period_us // big.quantum_us) <= 2**53
    assert LimitSpec.of("sliding_window", 100, "1s").quantum_us == 1
