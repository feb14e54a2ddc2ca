"""An endpoint's rate limit as a token bucket on a clock the test drives."""

from __future__ import annotations

import pytest

from portcullis.webhooks.pacing import TokenBucket
from support.clock import ManualClock


def _takes(bucket: TokenBucket, clock: ManualClock) -> int:
    """How many attempts the bucket lets start right now."""
    n = 0
    while bucket.take(clock()):
        n += 1
    return n


def test_a_full_bucket_holds_one_seconds_worth_then_refills_at_the_rate() -> None:
    clock = ManualClock()
    bucket = TokenBucket(4, clock())
    assert _takes(bucket, clock) == 4
    assert bucket.wait(clock()) == pytest.approx(0.25)
    clock.advance(0.2)
    assert _takes(bucket, clock) == 0
    clock.advance(0.05)
    assert _takes(bucket, clock) == 1
    clock.advance(0.5)
    assert _takes(bucket, clock) == 2


def test_an_idle_endpoint_earns_no_more_than_a_seconds_worth() -> None:
    clock = ManualClock()
    bucket = TokenBucket(3, clock())
    _takes(bucket, clock)
    clock.advance(3600)
    assert _takes(bucket, clock) == 3


def test_over_a_long_run_the_rate_holds_whatever_the_polling() -> None:
    clock = ManualClock()
    bucket = TokenBucket(5, clock())
    taken = 0
    for step in range(1000):  # 10 s in uneven steps
        clock.advance(0.007 if step % 3 else 0.016)
        taken += _takes(bucket, clock)
    # 10 s at 5 a second, plus the bucket's one-second burst at most.
    assert 50 <= taken <= 55


def test_a_rate_below_one_a_second_spaces_single_attempts() -> None:
    clock = ManualClock()
    bucket = TokenBucket(0.5, clock())
    assert _takes(bucket, clock) == 1
    assert bucket.wait(clock()) == pytest.approx(2.0)
    clock.advance(1.9)
    assert _takes(bucket, clock) == 0
    clock.advance(0.1)
    assert _takes(bucket, clock) == 1


def test_a_clock_stepping_back_earns_nothing() -> None:
    clock = ManualClock()
    bucket = TokenBucket(2, clock())
    _takes(bucket, clock)
    clock.advance(-10)
    assert _takes(bucket, clock) == 0
    clock.advance(10.5)
    assert _takes(bucket, clock) == 1


def test_a_changed_limit_applies_at_once_keeping_what_was_earned_up_to_the_new_size() -> None:
    clock = ManualClock()
    bucket = TokenBucket(10, clock())
    bucket.retune(2, clock())
    assert _takes(bucket, clock) == 2
    bucket.retune(8, clock())
    clock.advance(0.5)
    assert _takes(bucket, clock) == 4


@pytest.mark.parametrize("rate", [0, -1])
def test_a_rate_must_be_positive(rate: float) -> None:
    with pytest.raises(ValueError, match="positive number of deliveries per second"):
        TokenBucket(rate, 0.0)
