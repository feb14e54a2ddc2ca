"""Calendar periods (a day or a month) in an IANA time zone, as epoch microseconds.

A quota of "10,000 per month in Europe/Berlin" counts from local midnight on the
1st to local midnight on the 1st of the next month, whatever the month's length
and whatever daylight-saving change falls inside it; a daily quota's day has 23
or 25 hours on the days clocks change. A period's start is the first instant whose
local date is the period's first day: where midnight does not exist (clocks jump
forward at 00:00, as in some American zones) the day starts at the first local
time after the gap; where it exists twice, at the earlier one.

`CalendarPeriod.id` names the period (`2026-11-23`, `2026-11`): counter keys
include it, so a new period starts from zero without anything being reset.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

PeriodKind = Literal["day", "month"]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class CalendarPeriod:
    """One period [starts_us, ends_us) and its name."""

    kind: PeriodKind
    id: str
    starts_us: int
    ends_us: int
    timezone: str

    def contains(self, now_us: int) -> bool:
        return self.starts_us <= now_us < self.ends_us

    def starts_at(self) -> datetime:
        """The start as an aware datetime in the period's time zone (ISO 8601 with offset)."""
        return to_datetime(self.starts_us, self.timezone)

    def ends_at(self) -> datetime:
        """The end (the next period's start) in the period's time zone."""
        return to_datetime(self.ends_us, self.timezone)


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    """The time zone named `name`; ValueError naming it when it is unknown or malformed."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"unknown time zone {name!r} (use an IANA name, e.g. Europe/London)"
        ) from None


def to_us(moment: datetime) -> int:
    """An aware datetime as integer epoch microseconds (exact, no float on the way)."""
    return (moment - EPOCH) // _MICROSECOND


def to_datetime(us: int, timezone: str) -> datetime:
    """Epoch microseconds as an aware datetime in `timezone`."""
    return (EPOCH + timedelta(microseconds=us)).astimezone(zone(timezone))


def _wall(us: int, tz: ZoneInfo) -> datetime:
    """The local wall time (naive) shown in `tz` at instant `us`."""
    return (EPOCH + timedelta(microseconds=us)).astimezone(tz).replace(tzinfo=None)


def local_instant(day: date, at: time, tz: ZoneInfo) -> int:
    """The first instant at which `tz` shows wall time `day` `at`, in epoch microseconds.

    The wall time read with both offsets (fold 0 and 1) gives two instants, equal
    unless a clock change is near. When the wall time exists (maybe twice) the
    earlier reading is it. When it falls in a gap (clocks jumped over it), the
    earlier reading is before the change and the later one after: the wall time is
    reached at the change itself, found by bisection to the microsecond (this runs
    once per period or window, never per request). So a day whose midnight does not
    exist starts when the clocks jump.
    """
    wall = datetime.combine(day, at, tzinfo=tz)
    naive = wall.replace(tzinfo=None)
    lo, hi = sorted((to_us(wall), to_us(wall.replace(fold=1))))
    if _wall(lo, tz) == naive:
        return lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _wall(mid, tz) >= naive:
            hi = mid
        else:
            lo = mid
    return hi


def local_start(day: date, tz: ZoneInfo) -> int:
    """The first instant of local date `day` in `tz` (see `local_instant`)."""
    return local_instant(day, time(0), tz)


def period_of(kind: PeriodKind, timezone: str, now_us: int) -> CalendarPeriod:
    """The day or month (in `timezone`) that contains the instant `now_us`."""
    tz = zone(timezone)
    local = (EPOCH + timedelta(microseconds=now_us)).astimezone(tz)
    today = local.date()
    if kind == "day":
        first, following = today, today + timedelta(days=1)
        name = today.isoformat()
    else:
        first = today.replace(day=1)
        following = (
            date(first.year + 1, 1, 1)
            if first.month == 12
            else date(first.year, first.month + 1, 1)
        )
        name = f"{first.year:04d}-{first.month:02d}"
    starts, ends = local_start(first, tz), local_start(following, tz)
    # Where a clock change moves local time back across midnight, an instant can show
    # the previous date after the next day has begun: it counts in the day that began.
    if now_us >= ends:
        return period_of(kind, timezone, ends)
    return CalendarPeriod(kind, name, starts, ends, timezone)
