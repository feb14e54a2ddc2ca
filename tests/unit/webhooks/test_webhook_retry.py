from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from portcullis.webhooks.retry import (
    MAX_RETRY_AFTER,
    SCHEDULE,
    AttemptResult,
    Decision,
    ErrorKind,
    Next,
    decide,
    parse_retry_after,
)


def _exact(low: float, high: float) -> float:
    return 1.0


def test_the_schedule_is_the_standard_one() -> None:
    assert SCHEDULE == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_any_2xx_is_delivered(status: int) -> None:
    assert decide(1, AttemptResult(status)) == Decision(Next.DELIVERED)


@pytest.mark.parametrize("status", [301, 302, 307, 308, 400, 404, 500, 502])
def test_3xx_and_other_statuses_are_retried_on_the_schedule(status: int) -> None:
    assert decide(1, AttemptResult(status), _exact) == Decision(Next.RETRY, 5)
    assert decide(2, AttemptResult(status), _exact) == Decision(Next.RETRY, 300)
    assert decide(7, AttemptResult(status), _exact) == Decision(Next.RETRY, 36000)


def test_errors_without_a_status_are_retried() -> None:
    result = AttemptResult(None, ErrorKind.TIMEOUT)
    assert decide(3, result, _exact) == Decision(Next.RETRY, 1800)


def test_410_disables_the_endpoint_at_any_attempt() -> None:
    assert decide(1, AttemptResult(410)) == Decision(Next.GONE)
    assert decide(len(SCHEDULE), AttemptResult(410)) == Decision(Next.GONE)


def test_the_last_failed_attempt_is_dead_lettered() -> None:
    assert decide(len(SCHEDULE), AttemptResult(500)) == Decision(Next.EXHAUSTED)
    assert decide(len(SCHEDULE), AttemptResult(200)) == Decision(Next.DELIVERED)


def test_jitter_spreads_the_delay_by_at_most_a_tenth() -> None:
    low = decide(2, AttemptResult(500), lambda a, b: a)
    high = decide(2, AttemptResult(500), lambda a, b: b)
    assert low.delay == pytest.approx(270)
    assert high.delay == pytest.approx(330)


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_stretches_the_delay_on_429_and_503(status: int) -> None:
    result = AttemptResult(status, retry_after=120)
    assert decide(1, result, _exact) == Decision(Next.RETRY, 120)
    # A shorter Retry-After never shortens the schedule.
    assert decide(2, AttemptResult(status, retry_after=1), _exact) == Decision(Next.RETRY, 300)


def test_retry_after_is_capped_and_ignored_on_other_statuses() -> None:
    huge = AttemptResult(429, retry_after=10**9)
    assert decide(1, huge, _exact).delay == MAX_RETRY_AFTER
    assert decide(1, AttemptResult(500, retry_after=120), _exact).delay == 5


def test_retry_after_parses_seconds_and_http_dates() -> None:
    now = datetime(2026, 12, 7, 5, 0, 0, tzinfo=UTC).timestamp()
    later = format_datetime(datetime(2026, 12, 7, 5, 1, 30, tzinfo=UTC), usegmt=True)
    earlier = format_datetime(datetime(2026, 12, 7, 4, 0, 0, tzinfo=UTC), usegmt=True)
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after(later, now) == 90
    assert parse_retry_after(earlier, now) == 0
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("-5", now) is None


def test_an_operators_schedule_replaces_the_standard_one_and_caps_retry_after() -> None:
    fast = (0, 0.2, 0.5)
    assert decide(1, AttemptResult(500), _exact, fast) == Decision(Next.RETRY, 0.2)
    assert decide(2, AttemptResult(500), _exact, fast) == Decision(Next.RETRY, 0.5)
    assert decide(3, AttemptResult(500), _exact, fast) == Decision(Next.EXHAUSTED)
    # Retry-After stretches a delay up to the schedule's longest entry, not past it.
    assert decide(1, AttemptResult(429, retry_after=60), _exact, fast).delay == 0.5
