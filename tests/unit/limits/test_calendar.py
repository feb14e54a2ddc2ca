"""Calendar periods in a time zone, and calendar windows in the memory backend."""

from __future__ import annotations

from datetime import datetime

import pytest

from portcullis.limits import LimitRequest, LimitSpec
from portcullis.limits.algorithms import evaluate
from portcullis.limits.calendar import period_of, to_us
from portcullis.limits.memory import MemoryBackend
from portcullis.limits.spec import CALENDAR_GRACE_US, MICROS

HOUR = 3600 * MICROS


def at(text: str) -> int:
    return to_us(datetime.fromisoformat(text))


@pytest.mark.parametrize(
    ("zone", "instant", "kind", "pid", "start", "end", "hours"),
    [
        # London spring forward: the day has 23 hours, the month 743.
        (
            "Europe/London",
            "2026-03-29T12:00Z",
            "day",
            "2026-03-29",
            "2026-03-29T00:00Z",
            "2026-03-29T23:00Z",
            23,
        ),
        (
            "Europe/London",
            "2026-03-15T12:00Z",
            "month",
            "2026-03",
            "2026-03-01T00:00Z",
            "2026-03-31T23:00Z",
            743,
        ),
        # Autumn: 25 hours.
        (
            "Europe/London",
            "2026-10-25T12:00Z",
            "day",
            "2026-10-25",
            "2026-10-24T23:00Z",
            "2026-10-26T00:00Z",
            25,
        ),
        # Santiago skips midnight: the day starts at the jump (01:00 local).
        (
            "America/Santiago",
            "2026-09-06T12:00Z",
            "day",
            "2026-09-06",
            "2026-09-06T04:00Z",
            "2026-09-07T03:00Z",
            23,
        ),
        # Month ends: February in a leap year, December rolling into the next year.
        (
            "UTC",
            "2028-02-29T23:59:59.999999Z",
            "month",
            "2028-02",
            "2028-02-01T00:00Z",
            "2028-03-01T00:00Z",
            29 * 24,
        ),
        (
            "Asia/Kolkata",
            "2026-12-31T18:30Z",
            "month",
            "2027-01",
            "2026-12-31T18:30Z",
            "2027-01-31T18:30Z",
            31 * 24,
        ),
        (
            "Asia/Kolkata",
            "2026-12-31T18:29:59.999999Z",
            "day",
            "2026-12-31",
            "2026-12-30T18:30Z",
            "2026-12-31T18:30Z",
            24,
        ),
    ],
)
def test_periods(
    zone: str, instant: str, kind: str, pid: str, start: str, end: str, hours: int
) -> None:
    period = period_of(kind, zone, at(instant))  # type: ignore[arg-type]
    assert period.id == pid
    assert (period.starts_us, period.ends_us) == (at(start), at(end))
    assert period.ends_us - period.starts_us == hours * HOUR
    assert period.contains(at(instant))
    assert (
        period.ends_at().utcoffset()
        == datetime.fromisoformat(end).astimezone(period.ends_at().tzinfo).utcoffset()
    )


def test_the_instant_a_period_ends_belongs_to_the_next() -> None:
    end = at("2026-12-01T00:00Z")
    assert period_of("month", "UTC", end - 1).id == "2026-11"
    assert period_of("month", "UTC", end).id == "2026-12"


def test_unknown_time_zone() -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        period_of("day", "Mars/Olympus", 0)


def test_calendar_window_counts_to_the_limit_and_resets_at_its_end() -> None:
    start, end = at("2026-11-01T00:00Z"), at("2026-12-01T00:00Z")
    spec = LimitSpec.calendar(3, start, end)
    now = at("2026-11-30T23:00Z")
    state = None
    for left in (2, 1, 0):
        outcome = evaluate(spec, state, now, 1)
        assert outcome.decision.allowed
        assert outcome.decision.remaining == left
        assert outcome.decision.reset_after == HOUR
        assert outcome.ttl_us == HOUR + CALENDAR_GRACE_US
        state = outcome.state
    refused = evaluate(spec, state, now, 1).decision
    assert not refused.allowed
    assert refused.retry_after == HOUR
    # A clock past the end (another node's) says "now", never a negative wait.
    late = evaluate(spec, state, end + 5, 1).decision
    assert (late.allowed, late.retry_after, late.reset_after) == (False, 1, 0)
    assert spec.lua_args[0] == "5"
    assert spec.lua_args[-1] == str(end)


def test_calendar_spec_validation() -> None:
    with pytest.raises(ValueError, match="end after it starts"):
        LimitSpec.calendar(1, 10, 10)
    with pytest.raises(ValueError, match="fixed windows only"):
        LimitSpec(LimitSpec.of("gcra", 1, "1s").algorithm, 1, MICROS, ends_us=5)


async def test_memory_backend_calendar_keys_and_peek() -> None:
    now = at("2026-11-15T12:00Z")
    backend = MemoryBackend(clock=lambda: now)
    november = period_of("month", "UTC", now)
    spec = LimitSpec.calendar(2, november.starts_us, november.ends_us)
    key = f"pq:monthly:{november.id}:c=alice"
    assert [d.allowed for d in [(await backend.decide([LimitRequest(key, spec)]))[0]]] == [True]
    peek = (await backend.peek([LimitRequest(key, spec, cost=5)]))[0]
    assert (peek.allowed, peek.remaining) == (True, 1)
    assert (await backend.peek([LimitRequest(key, spec)]))[0].remaining == 1  # peek changes nothing
    assert (await backend.decide([LimitRequest(key, spec)]))[0].allowed
    assert not (await backend.decide([LimitRequest(key, spec)]))[0].allowed
    assert backend.snapshot()["decisions_allowed"] == 2  # peeks are not decisions
    # December is another key: it starts from zero.
    december = period_of("month", "UTC", november.ends_us)
    next_spec = LimitSpec.calendar(2, december.starts_us, december.ends_us)
    fresh = await backend.peek([LimitRequest(f"pq:monthly:{december.id}:c=alice", next_spec)])
    assert fresh[0].remaining == 2
