"""What a limit is (data) and what deciding one yields.

A `LimitSpec` is pure data — algorithm, limit, period, burst — so a plugin, a plan,
a boost or an override can all supply one. Everything the algorithms need besides
the request's `now` and `cost` is precomputed here, once per spec.

Time is integer microseconds everywhere (Redis `TIME` gives microseconds). The
Redis backend runs the same algorithms in Lua, whose numbers are IEEE doubles:
integers are exact only up to 2**53. Each spec therefore reduces its arithmetic
(rates as reduced fractions, sliding windows at a coarser time quantum when
needed) and refuses limits whose arithmetic would not stay exact, so the Python
and Lua implementations agree to the microsecond.

Calendar quotas (a day or a month in a time zone) are fixed windows whose bounds
are not aligned to the epoch: `LimitSpec.calendar` builds a fixed-window spec for
one explicit period [start, end). Its counter key must name the period (e.g.
`...:2026-11:...`), so each period starts at zero; the window's end gives the
reset time and the key's expiry.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from enum import StrEnum

MICROS = 1_000_000
MAX_EXACT = 2**53
MAX_LIMIT = 10**9
MIN_PERIOD_US = 1_000  # 1 ms
MAX_PERIOD_US = 400 * 86_400 * MICROS  # a little over a year
# A calendar window's counter is kept this long after the window ends, so a node whose
# clock lags the shared one still finds (and respects) the count it should.
CALENDAR_GRACE_US = 60 * MICROS
# The Lua dispatch code of a calendar window (a fixed window with explicit bounds).
CALENDAR_CODE = 5

_PERIOD = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_US = {"ms": 1_000, "s": MICROS, "m": 60 * MICROS, "h": 3_600 * MICROS, "d": 86_400 * MICROS}


class Algorithm(StrEnum):
    """The rate-limiting algorithms; `code` is what the Lua script dispatches on."""

    fixed_window = "fixed_window"
    sliding_window = "sliding_window"
    token_bucket = "token_bucket"  # noqa: S105 (not a secret: an algorithm name)
    gcra = "gcra"

    @property
    def code(self) -> int:
        return _CODES[self]


_CODES = {
    Algorithm.fixed_window: 1,
    Algorithm.sliding_window: 2,
    Algorithm.token_bucket: 3,
    Algorithm.gcra: 4,
}


def parse_period(value: float | int | str) -> int:
    """A period in microseconds from seconds (`60`, `0.5`) or text (`"1s"`, `"15m"`, `"1d"`).

    Bare numbers and unit-less text are seconds; units are ms, s, m, h and d.
    """
    if isinstance(value, bool):
        raise ValueError("period must be a number of seconds or text like '1s', '1m', '1h'")
    if isinstance(value, int | float):
        scaled = value * MICROS
    else:
        match = _PERIOD.match(value)
        if match is None:
            raise ValueError(f"invalid period {value!r}: use seconds or e.g. '500ms', '1s', '1h'")
        number, unit = match.groups()
        scaled = float(number) * _UNIT_US[unit or "s"]
    # A finite number can still overflow to infinity once scaled (1.8e308 seconds).
    if not math.isfinite(scaled):
        raise ValueError("period must be finite")
    micros = round(scaled)
    if micros < MIN_PERIOD_US:
        raise ValueError("period must be at least 1ms")
    if micros > MAX_PERIOD_US:
        raise ValueError("period must be at most 400 days")
    return micros


def period_label(period_us: int) -> str:
    """The shortest exact text for a period: 1s, 90s, 1m, 1h, 1d, 250ms."""
    for unit in ("d", "h", "m", "s", "ms"):
        size = _UNIT_US[unit]
        if period_us % size == 0:
            return f"{period_us // size}{unit}"
    return f"{period_us}us"


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """One limit: at most `limit` units per `period_us`, shaped by `algorithm`.

    `burst` (token bucket and GCRA only) is the bucket's capacity: how many units
    may be spent at once after an idle period; it defaults to `limit`. The windowed
    algorithms have no burst (their window is their burst).
    """

    algorithm: Algorithm
    limit: int
    period_us: int
    burst: int | None = None
    # Calendar windows only (see `calendar`): the end instant of the one window counted.
    ends_us: int = 0
    # Precomputed by __post_init__ (see the module doc).
    capacity: int = field(init=False)
    rate_num: int = field(init=False)  # period / gcd: microseconds per `rate_den` units
    rate_den: int = field(init=False)  # limit / gcd
    quantum_us: int = field(init=False)  # sliding window time resolution
    lua_args: tuple[str, ...] = field(init=False, repr=False, compare=False)
    key_suffix: str = field(init=False, repr=False, compare=False)  # ":<algorithm code>"

    def __post_init__(self) -> None:
        limit, period = self.limit, self.period_us
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be an integer from 1 to {MAX_LIMIT}")
        if not MIN_PERIOD_US <= period <= MAX_PERIOD_US:
            raise ValueError("period must be from 1ms to 400 days")
        if self.ends_us and self.algorithm is not Algorithm.fixed_window:
            raise ValueError("an explicit window end applies to fixed windows only")
        bucket = self.algorithm in (Algorithm.token_bucket, Algorithm.gcra)
        if self.burst is not None and not bucket:
            raise ValueError("burst applies to token_bucket and gcra only")
        capacity = self.burst if self.burst is not None else limit
        if not 1 <= capacity <= MAX_LIMIT:
            raise ValueError(f"burst must be from 1 to {MAX_LIMIT}")
        g = math.gcd(limit, period)
        rate_num, rate_den = period // g, limit // g
        quantum = 1
        if bucket:
            if (2 * capacity + 2) * rate_num + 2 * rate_den > MAX_EXACT:
                raise ValueError(
                    "burst x period is too large to count exactly; lower the burst or "
                    "use a shorter period"
                )
        elif self.algorithm is Algorithm.sliding_window:
            quantum = _sliding_quantum(limit, period)
        object.__setattr__(self, "capacity", capacity)
        object.__setattr__(self, "rate_num", rate_num)
        object.__setattr__(self, "rate_den", rate_den)
        object.__setattr__(self, "quantum_us", quantum)
        # The 7th Lua argument is the one algorithm-specific value: the sliding window's
        # time quantum, or a calendar window's end instant.
        code, extra = self.algorithm.code, quantum
        if self.ends_us:
            code, extra = CALENDAR_CODE, self.ends_us
        object.__setattr__(self, "key_suffix", f":{code}")
        object.__setattr__(
            self,
            "lua_args",
            tuple(str(v) for v in (code, limit, period, capacity, rate_num, rate_den, extra)),
        )

    @classmethod
    def of(
        cls,
        algorithm: Algorithm | str,
        limit: int,
        period: float | int | str,
        burst: int | None = None,
    ) -> LimitSpec:
        """Build from config values; `period` as for `parse_period`."""
        return cls(Algorithm(algorithm), limit, parse_period(period), burst)

    @classmethod
    def calendar(cls, limit: int, starts_us: int, ends_us: int) -> LimitSpec:
        """A fixed window over exactly [starts_us, ends_us) (a calendar day or month).

        At most `limit` units are admitted in the window; the reset time is its end.
        The caller names the window in the counter key (see the module doc).
        """
        if not 0 < starts_us < ends_us:
            raise ValueError("a calendar window must start after the epoch and end after it starts")
        return cls(Algorithm.fixed_window, limit, ends_us - starts_us, ends_us=ends_us)

    @property
    def period_s(self) -> float:
        return self.period_us / MICROS


def _sliding_quantum(limit: int, period: int) -> int:
    """The finest power-of-ten time step (dividing the period) that keeps the math exact."""
    quantum = 1
    while quantum <= MICROS:
        if period % quantum == 0 and 4 * limit * (period // quantum) <= MAX_EXACT:
            return quantum
        quantum *= 10
    raise ValueError("limit x period is too large for an exact sliding window; use fixed_window")


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer for one limit.

    `remaining` is the units left after this request (before it, when the request
    was refused). `reset_after` is microseconds until additional quota is made
    available — `remaining` grows by at least one unit — if nothing else were spent
    (the RateLimit field's `t`, draft-ietf-httpapi-ratelimit-headers §4.2.2; 0 when
    nothing is spent): a window's end, or the next token; `retry_after` is microseconds until
    a request of the same cost could pass (0 when allowed; one period when the cost
    is larger than the limit or burst, which no wait can fix). `counted` is False when no
    counter was consulted (the shared backend was down and the failure policy
    answered open or closed).
    """

    allowed: bool
    remaining: int
    reset_after: int
    retry_after: int
    counted: bool = True

    @property
    def reset_after_s(self) -> int:
        """`reset_after` in whole seconds, rounded up (for headers)."""
        return -(-self.reset_after // MICROS)

    @property
    def retry_after_s(self) -> int:
        """`retry_after` in whole seconds, rounded up (for headers)."""
        return -(-self.retry_after // MICROS)
