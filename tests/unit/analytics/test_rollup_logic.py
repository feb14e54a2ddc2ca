"""Pure rollup logic: status classes, counters, and which rollups answer a range."""

from __future__ import annotations

import random

import pytest

from portcullis.analytics.queries import Coverage, Span, bucket_count, ceil_to, plan, top
from portcullis.analytics.record import Flag
from portcullis.analytics.rollups import Counters, floor_to, is_error, status_class
from portcullis.analytics.sketch import LatencySketch

DAY0 = 1_767_225_600  # 2026-01-01T00:00:00Z
H, D = 3600, 86400


@pytest.mark.parametrize(
    ("status", "cls"), [(100, 1), (204, 2), (302, 3), (404, 4), (599, 5), (0, 5), (700, 5)]
)
def test_status_class(status: int, cls: int) -> None:
    assert status_class(status) == cls


def test_errors_are_5xx_and_gateway_refusals() -> None:
    assert is_error(503, None)
    assert is_error(429, "quota-exceeded")
    assert not is_error(404, None)


def test_counters_of_requests_and_their_merge() -> None:
    rng = random.Random(3)
    parts = [Counters() for _ in range(4)]
    everything = Counters()
    for i in range(400):
        status = rng.choice([200, 404, 500])
        flags = int(Flag.RATE_LIMITED) if i % 7 == 0 else 0
        kind = "quota-exceeded" if flags else None
        args = (status, 10, 100, rng.uniform(1, 200), flags, kind)
        parts[i % 4].add_request(*args)
        everything.add_request(*args)
    merged = Counters()
    for part in parts:
        merged.add_counts(
            part.requests,
            part.errors,
            part.rate_limited,
            part.bytes_in,
            part.bytes_out,
            part.latency_sum_ms,
            part.sketch.to_bytes(),
        )
    assert merged.requests == everything.requests == 400
    assert merged.errors == everything.errors
    assert merged.rate_limited == everything.rate_limited == 58
    assert merged.bytes_out == 40_000
    assert merged.latency_sum_ms == pytest.approx(everything.latency_sum_ms)
    assert merged.sketch == everything.sketch


def test_rollup_row_carries_a_readable_sketch() -> None:
    counters = Counters()
    counters.add_request(200, 1, 2, 12.5, 0, None)
    row = counters.row("minute", DAY0, ("r", "s", "", 2, "demo", "v1", True))
    assert row["status_class"] == 2
    assert row["consumer"] == ""
    assert (row["api"], row["api_version"], row["sandbox"]) == ("demo", "v1", True)
    assert LatencySketch.from_bytes(row["sketch"]).count == 1


def test_alignment_helpers() -> None:
    assert floor_to(DAY0 + 59, 60) == DAY0
    assert ceil_to(DAY0 + 1, 60) == DAY0 + 60
    assert ceil_to(DAY0, 60) == DAY0
    assert bucket_count(DAY0 + 30, DAY0 + 3 * H + 1, "hour") == 4
    assert bucket_count(DAY0, DAY0 + D, "minute") == 1440


def test_plan_uses_the_coarsest_rollups_that_fit() -> None:
    cover = Coverage(minute=DAY0 + 2 * D + 5 * H + 120, hour=DAY0 + 2 * D + 5 * H, day=DAY0 + 2 * D)
    spans = plan(DAY0 - 2 * H - 60, DAY0 + 2 * D + 5 * H + 600, cover)
    assert spans == [
        Span("minute", DAY0 - 2 * H - 60, DAY0 - 2 * H),
        Span("hour", DAY0 - 2 * H, DAY0),
        Span("day", DAY0, DAY0 + 2 * D),
        Span("hour", DAY0 + 2 * D, DAY0 + 2 * D + 5 * H),
        # Only the rolled-up minutes: the rest of the range is not in yet.
        Span("minute", DAY0 + 2 * D + 5 * H, DAY0 + 2 * D + 5 * H + 120),
    ]


def test_plan_never_uses_rollups_coarser_than_asked() -> None:
    cover = Coverage(minute=DAY0 + 3 * D, hour=DAY0 + 3 * D, day=DAY0 + 3 * D)
    assert plan(DAY0, DAY0 + 2 * D, cover, coarsest="hour") == [Span("hour", DAY0, DAY0 + 2 * D)]
    assert plan(DAY0, DAY0 + 120, cover, coarsest="minute") == [Span("minute", DAY0, DAY0 + 120)]


def test_plan_falls_back_to_minutes_when_coarser_rollups_lag() -> None:
    cover = Coverage(minute=DAY0 + 3 * H, hour=0, day=0)
    assert plan(DAY0, DAY0 + D, cover) == [Span("minute", DAY0, DAY0 + 3 * H)]
    assert plan(DAY0, DAY0 + D, Coverage()) == []


def test_top_orders_by_the_measure_then_requests() -> None:
    def counters(requests: int, errors: int) -> Counters:
        c = Counters()
        c.add_counts(requests, errors, 0, 0, 0, 0.0, None)
        return c

    groups = {"a": counters(10, 5), "b": counters(100, 5), "c": counters(50, 0)}
    assert [k for k, _ in top(groups, "requests", 2)] == ["b", "c"]
    assert [k for k, _ in top(groups, "errors", 3)] == ["b", "a", "c"]
    assert [k for k, _ in top(groups, "error_rate", 1)] == ["a"]
