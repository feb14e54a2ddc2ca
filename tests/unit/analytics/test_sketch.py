"""LatencySketch: the relative-error guarantee, exact merging, the binary format."""

from __future__ import annotations

import math
import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portcullis.analytics.sketch import (
    MAX_BINS,
    MAX_VALUE,
    MIN_VALUE,
    RELATIVE_ACCURACY,
    LatencySketch,
    SketchError,
    key_of,
    value_of,
)

# Float rounding at bin edges may add a hair to the stated error.
TOLERANCE = RELATIVE_ACCURACY * (1 + 1e-9)
latencies = st.floats(min_value=MIN_VALUE, max_value=1e9, allow_nan=False)
quantiles = st.floats(min_value=0, max_value=1)


def sketch_of(values: list[float]) -> LatencySketch:
    sketch = LatencySketch()
    sketch.add_many(values)
    return sketch


def exact(values: list[float], q: float) -> float:
    """The value the sketch estimates: the lower empirical quantile."""
    ordered = sorted(values)
    return ordered[math.floor(q * (len(ordered) - 1))]


def assert_close(estimate: float | None, expected: float) -> None:
    assert estimate is not None
    assert abs(estimate - expected) <= TOLERANCE * expected, (estimate, expected)


@given(st.lists(latencies, min_size=1, max_size=300), st.lists(quantiles, max_size=8))
def test_every_quantile_is_within_the_relative_accuracy(
    values: list[float], qs: list[float]
) -> None:
    sketch = sketch_of(values)
    for q in [0.0, 0.5, 0.95, 0.99, 1.0, *qs]:
        assert_close(sketch.quantile(q), exact(values, q))


@given(st.lists(latencies, max_size=200), st.lists(latencies, max_size=200))
def test_merge_equals_the_sketch_of_all_values(a: list[float], b: list[float]) -> None:
    merged = sketch_of(a)
    merged.merge(sketch_of(b))
    assert merged == sketch_of(a + b)
    assert merged.count == len(a) + len(b)
    assert LatencySketch.merged([sketch_of(b), sketch_of(a)]) == merged


@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=100))
def test_bytes_round_trip_any_input(values: list[float]) -> None:
    sketch = sketch_of(values)
    assert LatencySketch.from_bytes(sketch.to_bytes()) == sketch
    assert sketch.count == len(values)


@given(st.binary(max_size=64))
def test_foreign_bytes_are_rejected_or_read(data: bytes) -> None:
    try:
        sketch = LatencySketch.from_bytes(data)
    except SketchError:
        return
    # Whatever parses must write back to the same bytes (one encoding per sketch).
    assert sketch.to_bytes() == data


def test_lognormal_latencies_meet_the_stated_error() -> None:
    """200k samples of a lognormal latency distribution (median 20 ms, long tail)."""
    rng = random.Random(20261123)
    values = [rng.lognormvariate(math.log(20), 0.9) for _ in range(200_000)]
    sketch = sketch_of(values)
    for q in (0.5, 0.75, 0.9, 0.95, 0.99, 0.999):
        assert_close(sketch.quantile(q), exact(values, q))
    # Against the distribution itself the sampling error adds up to ~1 % (p50 and p95).
    for q in (0.5, 0.95):
        theoretical = 20 * math.exp(0.9 * statistics.NormalDist().inv_cdf(q))
        estimate = sketch.quantile(q)
        assert estimate is not None
        assert abs(estimate - theoretical) / theoretical < 0.03
    assert sketch.min == min(values)
    assert sketch.max == max(values)
    assert len(sketch.to_bytes()) < 2000


def test_minute_sketches_merged_give_the_hour_percentiles() -> None:
    rng = random.Random(7)
    minutes = [[rng.expovariate(1 / 50) + 1 for _ in range(500)] for _ in range(60)]
    hour = LatencySketch.merged(sketch_of(m) for m in minutes)
    everything = [v for m in minutes for v in m]
    assert hour == sketch_of(everything)
    for q in (0.5, 0.95, 0.99):
        assert_close(hour.quantile(q), exact(everything, q))


def test_tiny_negative_and_non_finite_values() -> None:
    sketch = sketch_of([0.0, -5.0, MIN_VALUE / 2, float("nan"), 10.0, float("inf")])
    assert sketch.count == 6
    assert sketch.min == 0.0
    assert sketch.quantile(0.3) == 0.0
    assert sketch.max == 1e15


def test_empty_sketch() -> None:
    sketch = LatencySketch()
    assert sketch.count == 0
    assert sketch.quantile(0.5) is None
    assert sketch.min is None
    assert sketch.max is None
    assert LatencySketch.from_bytes(sketch.to_bytes()) == sketch
    with pytest.raises(ValueError, match="between 0 and 1"):
        sketch.quantiles([1.5])


def test_bins_are_bounded_and_high_quantiles_stay_accurate() -> None:
    # One value per bin from 1 µs up to MAX_VALUE: more keys than MAX_BINS, the lowest fold.
    step = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
    values = [MIN_VALUE * step**i for i in range(int(math.log(MAX_VALUE / MIN_VALUE, step)))]
    assert key_of(values[-1]) - key_of(values[0]) >= MAX_BINS
    sketch = sketch_of(values)
    assert sketch.bin_count == MAX_BINS
    for q in (0.75, 0.95, 0.99):
        assert_close(sketch.quantile(q), exact(values, q))
    halves = sketch_of(values[::2])
    halves.merge(sketch_of(values[1::2]))
    assert halves == sketch


@settings(max_examples=200)
@given(latencies)
def test_a_value_is_within_the_accuracy_of_its_bin(value: float) -> None:
    assert abs(value_of(key_of(value)) - value) <= TOLERANCE * value


@pytest.mark.parametrize(
    "data",
    [b"", b"\x02", b"\x01\x00\x01", b"\x01\x00\x00\x00", b"\x01" + b"\xff" * 12],
)
def test_malformed_bytes(data: bytes) -> None:
    with pytest.raises(SketchError):
        LatencySketch.from_bytes(data)
