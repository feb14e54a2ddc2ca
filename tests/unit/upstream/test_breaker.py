"""Circuit breaker state machine and its sliding window, driven by a fake clock."""

from __future__ import annotations

import pytest

from portcullis.model import config as model
from portcullis.upstream.breaker import BreakerState, CircuitBreaker, SlidingWindowCounter


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(clock: FakeClock, **overrides: object) -> CircuitBreaker:
    settings: dict[str, object] = {
        "window": 10.0,
        "min_requests": 10,
        "failure_rate": 0.5,
        "open_for": 5.0,
        "half_open_probes": 1,
    }
    settings.update(overrides)
    return CircuitBreaker(model.CircuitBreaker.model_validate(settings), clock=clock)


def state(breaker: CircuitBreaker) -> BreakerState:
    """Read the state through a call, so mypy does not narrow it across transitions."""
    return breaker.state


def trip(breaker: CircuitBreaker, failures: int = 10) -> None:
    for _ in range(failures):
        assert breaker.allow()
        breaker.record(False)
    assert state(breaker) is BreakerState.OPEN


# -- sliding window ----------------------------------------------------------------


def test_window_sums_events_inside_the_window() -> None:
    counter = SlidingWindowCounter(10.0, buckets=10)
    counter.add(0.0, 1, 1)
    counter.add(4.5, 2, 0)
    counter.add(9.9, 3, 1)
    assert (counter.first, counter.second) == (6, 2)


def test_window_expires_old_buckets_one_at_a_time() -> None:
    counter = SlidingWindowCounter(10.0, buckets=10)
    counter.add(0.5, 1, 1)  # bucket 0
    counter.add(3.5, 1, 0)  # bucket 3
    counter.advance(10.2)  # bucket 10 reuses slot 0: the first event is gone
    assert (counter.first, counter.second) == (1, 0)
    counter.advance(13.0)  # slot 3 expires too
    assert (counter.first, counter.second) == (0, 0)


def test_window_forgets_everything_after_a_long_gap() -> None:
    counter = SlidingWindowCounter(1.0, buckets=4)
    for t in (0.0, 0.3, 0.6, 0.9):
        counter.add(t, 1, 1)
    counter.add(100.0, 1, 0)
    assert (counter.first, counter.second) == (1, 0)


def test_window_clock_going_backwards_counts_into_newest_slot() -> None:
    counter = SlidingWindowCounter(10.0, buckets=10)
    counter.add(5.0, 1, 0)
    counter.add(2.0, 1, 0)  # earlier than the newest slot: counted in slot 5, not slot 2
    counter.advance(14.5)  # slots 6..14 expire, slot 2 among them
    assert counter.first == 2
    counter.advance(15.0)  # now slot 5 expires, with both events
    assert counter.first == 0


def test_window_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        SlidingWindowCounter(0.0)
    with pytest.raises(ValueError):
        SlidingWindowCounter(1.0, buckets=0)


# -- closed -> open ----------------------------------------------------------------


def test_opens_at_failure_rate_once_min_requests_reached() -> None:
    clock = FakeClock()
    breaker = make(clock)
    for _ in range(5):
        breaker.record(True)
    for _ in range(4):
        breaker.record(False)
    assert state(breaker) is BreakerState.CLOSED  # 9 requests < min_requests
    breaker.record(False)  # 10 requests, 5 failures: rate 0.5 >= 0.5
    assert state(breaker) is BreakerState.OPEN
    assert not breaker.allow()
    assert not breaker.permits()


def test_stays_closed_below_min_requests_even_if_everything_fails() -> None:
    breaker = make(FakeClock(), min_requests=20)
    for _ in range(19):
        breaker.record(False)
    assert state(breaker) is BreakerState.CLOSED
    assert breaker.allow()


def test_stays_closed_below_failure_rate() -> None:
    breaker = make(FakeClock(), failure_rate=0.5)
    for _ in range(60):
        breaker.record(True)
    for _ in range(59):
        breaker.record(False)
    assert state(breaker) is BreakerState.CLOSED


def test_a_success_reaching_min_requests_can_trip_it() -> None:
    breaker = make(FakeClock(), min_requests=4, failure_rate=0.75)
    for _ in range(3):
        breaker.record(False)
    breaker.record(True)  # 4 requests, rate 0.75
    assert state(breaker) is BreakerState.OPEN


def test_failures_age_out_of_the_window() -> None:
    clock = FakeClock()
    breaker = make(clock)
    for _ in range(9):
        breaker.record(False)
    clock.advance(11.0)
    breaker.record(False)  # the 9 old failures no longer count
    assert state(breaker) is BreakerState.CLOSED


# -- open -> half-open -> closed / open ----------------------------------------------


def test_half_open_after_open_for_admits_limited_probes() -> None:
    clock = FakeClock()
    breaker = make(clock, half_open_probes=2)
    trip(breaker)
    clock.advance(4.9)
    assert not breaker.allow()
    clock.advance(0.2)
    assert state(breaker) is BreakerState.HALF_OPEN
    assert breaker.allow()
    assert breaker.allow()
    assert not breaker.allow()  # two probes already in flight
    assert breaker.probes_in_flight == 2


def test_probe_success_closes() -> None:
    clock = FakeClock()
    breaker = make(clock)
    trip(breaker)
    clock.advance(5.0)
    assert breaker.allow()
    breaker.record(True)
    assert state(breaker) is BreakerState.CLOSED
    # The history that tripped it is gone: it takes a full new run of failures.
    for _ in range(9):
        breaker.record(False)
    assert state(breaker) is BreakerState.CLOSED


def test_probe_failure_reopens_for_another_period() -> None:
    clock = FakeClock()
    breaker = make(clock)
    trip(breaker)
    clock.advance(5.0)
    assert breaker.allow()
    breaker.record(False)
    assert state(breaker) is BreakerState.OPEN
    clock.advance(4.0)
    assert not breaker.allow()
    clock.advance(1.0)
    assert breaker.allow()


def test_release_probe_frees_the_slot_without_deciding() -> None:
    clock = FakeClock()
    breaker = make(clock)
    trip(breaker)
    clock.advance(5.0)
    assert breaker.allow()
    assert not breaker.allow()
    breaker.release_probe()
    assert state(breaker) is BreakerState.HALF_OPEN
    assert breaker.allow()


def test_permits_does_not_reserve_but_acquire_does() -> None:
    clock = FakeClock()
    breaker = make(clock)
    trip(breaker)
    clock.advance(5.0)
    assert breaker.permits()
    assert breaker.permits()
    assert breaker.probes_in_flight == 0
    breaker.acquire()
    assert breaker.probes_in_flight == 1
    assert not breaker.permits()


def test_outcomes_while_open_are_ignored() -> None:
    clock = FakeClock()
    breaker = make(clock)
    trip(breaker)
    breaker.record(True)  # a late answer to a request admitted before the trip
    assert state(breaker) is BreakerState.OPEN
    clock.advance(5.0)
    breaker.record(True)  # half-open, but no probe is outstanding: still ignored
    assert state(breaker) is BreakerState.HALF_OPEN


def test_disabled_breaker_never_opens() -> None:
    breaker = make(FakeClock(), enabled=False)
    for _ in range(100):
        assert breaker.allow()
        breaker.record(False)
    assert state(breaker) is BreakerState.CLOSED


def test_reconfigure_keeps_state_and_disabling_closes() -> None:
    clock = FakeClock()
    breaker = make(clock)
    trip(breaker)
    breaker.reconfigure(model.CircuitBreaker(window=10.0, min_requests=10, open_for=30.0))
    assert state(breaker) is BreakerState.OPEN
    breaker.reconfigure(model.CircuitBreaker(enabled=False))
    assert state(breaker) is BreakerState.CLOSED
    assert breaker.allow()


def test_reconfigure_with_new_window_forgets_history() -> None:
    breaker = make(FakeClock())
    for _ in range(9):
        breaker.record(False)
    breaker.reconfigure(model.CircuitBreaker(window=20.0, min_requests=10, failure_rate=0.5))
    breaker.record(False)
    assert state(breaker) is BreakerState.CLOSED
