"""A mergeable latency sketch with a relative-error guarantee (DDSketch, Masson et al. 2019).

A value `v` (milliseconds) falls into bin `k = ceil(log_gamma(v))` with
`gamma = (1 + a) / (1 - a)`, `a = RELATIVE_ACCURACY`; bin `k` covers
`(gamma^(k-1), gamma^k]` and reports `2 gamma^k / (gamma + 1)`, which is within a
relative error `a` of every value in the bin. A quantile is found by walking the
bins in order to the bin holding the value of that rank, so for every quantile
`q` the sketch answers within `a` (1 %) of the exact value `sorted[floor(q (n-1))]`,
for values of at least `MIN_VALUE` (quantiles 0 and 1 are the exact min and
max). Smaller values (and anything negative or not a
number) are counted in a zero bin reported as the smallest value seen.

Sketches of the same mapping merge by adding bin counts, so the sketch of an hour
is exactly the merge of its minutes' sketches (percentiles of coarse buckets are
computed from data, never averaged). The number of bins is bounded: at most
`MAX_BINS` keys are kept, and counts below `max key - MAX_BINS + 1` are folded
into that key (losing accuracy only for the lowest quantiles, far below the
range latencies use: 2048 bins at 1 % span 1 µs to beyond 10^12 ms). The rule
depends only on the largest key, so merging stays exact and order-independent.

The binary form (`to_bytes`) is compact and versioned: a version byte, the zero
count, the number of bins, min and max (two float64), then the bins as
delta-encoded varint keys and varint counts; typically a few hundred bytes.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence

RELATIVE_ACCURACY = 0.01
MIN_VALUE = 1e-3  # ms: values below 1 µs count as zero
MAX_VALUE = 1e15  # ms: larger values (and +inf) are clamped here
MAX_BINS = 2048
FORMAT_VERSION = 1

_GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_MULTIPLIER = 1 / math.log(_GAMMA)
# key_of(v) == ceil(log(v) * KEY_MULTIPLIER): for callers that bin values in a hot loop.
KEY_MULTIPLIER = _MULTIPLIER
_MIN_MAX = struct.Struct("<dd")


def key_of(value: float) -> int:
    """The bin of a value of at least MIN_VALUE."""
    return math.ceil(math.log(value) * _MULTIPLIER)


def value_of(key: int) -> float:
    """The value a bin reports: within RELATIVE_ACCURACY of everything in it."""
    return 2 * _GAMMA**key / (_GAMMA + 1)


class SketchError(ValueError):
    """Bytes that are not a sketch this module wrote."""


class LatencySketch:
    """Counts of latencies in logarithmic bins; see the module docstring."""

    __slots__ = ("_bins", "_max", "_max_key", "_min", "_zero")

    def __init__(self) -> None:
        self._bins: dict[int, int] = {}
        self._zero = 0
        self._min = math.inf
        self._max = -math.inf
        self._max_key: int | None = None

    # ------------------------------------------------------------------ adding

    def add(self, value: float) -> None:
        """Count one value (ms)."""
        if not value >= MIN_VALUE:  # also NaN
            value = value if value > 0 else 0.0
            self._zero += 1
        else:
            value = min(value, MAX_VALUE)
            self._add_key(key_of(value), 1)
        if value < self._min:
            self._min = value
        if value > self._max:
            self._max = value

    def add_many(self, values: Iterable[float]) -> None:
        for value in values:
            self.add(value)

    def _add_key(self, key: int, count: int) -> None:
        top = self._max_key
        if top is None or key > top:
            self._raise_top(key)
        elif key <= top - MAX_BINS:
            key = top - MAX_BINS + 1
        bins = self._bins
        bins[key] = bins.get(key, 0) + count

    def _raise_top(self, key: int) -> None:
        """A new largest key: fold the bins that fall out of the window into its floor."""
        self._max_key = key
        floor = key - MAX_BINS + 1
        low = [k for k in self._bins if k < floor]
        if low:
            folded = sum(self._bins.pop(k) for k in low)
            self._bins[floor] = self._bins.get(floor, 0) + folded

    def merge(self, other: LatencySketch) -> None:
        """Add everything `other` counted (the result equals a sketch of both inputs)."""
        self._zero += other._zero
        if other._max_key is not None:
            if self._max_key is None or other._max_key > self._max_key:
                self._raise_top(other._max_key)
            for key, count in other._bins.items():
                self._add_key(key, count)
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)

    @classmethod
    def from_bins(
        cls, bins: Mapping[int, int], zero: int, minimum: float, maximum: float
    ) -> LatencySketch:
        """The sketch of values a caller binned itself: `bins` counts per `key_of` key,
        `zero` those below MIN_VALUE, with their exact min and max (a caller summing
        the same values into several sketches computes each key once)."""
        sketch = cls()
        sketch._zero = zero
        for key, count in bins.items():
            sketch._add_key(key, count)
        if zero or bins:
            sketch._min, sketch._max = minimum, maximum
        return sketch

    @classmethod
    def merged(cls, sketches: Iterable[LatencySketch]) -> LatencySketch:
        out = cls()
        for sketch in sketches:
            out.merge(sketch)
        return out

    # ------------------------------------------------------------------ reading

    @property
    def count(self) -> int:
        return self._zero + sum(self._bins.values())

    @property
    def bin_count(self) -> int:
        """Non-empty bins (at most MAX_BINS): the size of the sketch."""
        return len(self._bins)

    @property
    def min(self) -> float | None:
        return None if self._min == math.inf else self._min

    @property
    def max(self) -> float | None:
        return None if self._max == -math.inf else self._max

    def quantile(self, q: float) -> float | None:
        """The value at quantile `q` (0..1), None when empty."""
        return self.quantiles([q])[0]

    def quantiles(self, qs: Sequence[float]) -> list[float | None]:
        """Several quantiles in one pass over the bins."""
        if any(not 0 <= q <= 1 for q in qs):
            raise ValueError("quantiles must be between 0 and 1")
        count = self.count
        if count == 0:
            return [None] * len(qs)
        order = sorted(range(len(qs)), key=lambda i: qs[i])
        out: list[float | None] = [None] * len(qs)
        keys = iter(sorted(self._bins))
        seen = self._zero
        estimate = self._min
        for i in order:
            if qs[i] in (0, 1):
                out[i] = self._min if qs[i] == 0 else self._max
                continue
            rank = qs[i] * (count - 1)
            while seen <= rank:
                key = next(keys)
                seen += self._bins[key]
                estimate = value_of(key)
            # The exact answer lies in [min, max]: clamping only brings the estimate closer.
            out[i] = min(max(estimate, self._min), self._max)
        return out

    # ------------------------------------------------------------------ bytes

    def to_bytes(self) -> bytes:
        out = bytearray([FORMAT_VERSION])
        _put_varint(out, self._zero)
        _put_varint(out, len(self._bins))
        if self._zero or self._bins:
            out += _MIN_MAX.pack(self._min, self._max)
        previous = 0
        for n, key in enumerate(sorted(self._bins)):
            _put_varint(out, _zigzag(key) if n == 0 else key - previous)
            _put_varint(out, self._bins[key])
            previous = key
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> LatencySketch:
        """Read `to_bytes` output; `SketchError` for anything else."""
        if not data or data[0] != FORMAT_VERSION:
            raise SketchError("not a latency sketch (unknown format version)")
        sketch = cls()
        try:
            sketch._zero, pos = _get_varint(data, 1)
            n, pos = _get_varint(data, pos)
            if sketch._zero or n:
                sketch._min, sketch._max = _MIN_MAX.unpack_from(data, pos)
                pos += _MIN_MAX.size
            key = 0
            for i in range(n):
                raw, pos = _get_varint(data, pos)
                if i == 0:
                    key = _unzigzag(raw)
                elif raw == 0:
                    raise SketchError("bin keys are not increasing")
                else:
                    key += raw
                count, pos = _get_varint(data, pos)
                if count == 0:
                    raise SketchError("empty bin")
                sketch._bins[key] = count
        except (IndexError, struct.error) as exc:
            raise SketchError("truncated latency sketch") from exc
        if pos != len(data):
            raise SketchError("trailing bytes after the latency sketch")
        if sketch._bins:
            sketch._max_key = max(sketch._bins)
            if sketch._max_key - min(sketch._bins) >= MAX_BINS:
                raise SketchError("too many bins")
        if sketch.count and not sketch._min <= sketch._max:
            raise SketchError("min is above max")
        return sketch

    # ------------------------------------------------------------------ comparing

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LatencySketch):
            return NotImplemented
        return (
            self._zero == other._zero
            and self._bins == other._bins
            and self.min == other.min
            and self.max == other.max
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"LatencySketch(count={self.count}, bins={len(self._bins)})"


def _zigzag(n: int) -> int:
    return n * 2 if n >= 0 else -n * 2 - 1


def _unzigzag(n: int) -> int:
    return n // 2 if n % 2 == 0 else -(n + 1) // 2


def _put_varint(out: bytearray, n: int) -> None:
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _get_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise SketchError("varint too long")
