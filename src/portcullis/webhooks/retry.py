"""What follows one delivery attempt: done, try again later (and when), give up, or stop
sending to the endpoint altogether.

The rules are the Standard Webhooks guidance: only a 2xx is a success; a 3xx is a failure
(redirects are never followed: the endpoint's URL should be fixed instead); 410 Gone means
the receiver wants no more and the endpoint is disabled; `Retry-After` on a 429 or 503 is
honoured; failures retry on a multi-hour schedule with jitter so that receivers which fell
over together do not get hit together again.
"""

from __future__ import annotations

import email.utils
import enum
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from portcullis.settings import WEBHOOK_RETRY_SCHEDULE

# Delay before each attempt (the default of `webhook_retry_schedule`).
SCHEDULE: Final[tuple[float, ...]] = WEBHOOK_RETRY_SCHEDULE

# A receiver's Retry-After may stretch a delay but never past the longest scheduled one,
# or one bad header would park a delivery for good.
MAX_RETRY_AFTER: Final = max(SCHEDULE)

# Each delay is spread by up to this share either way.
JITTER: Final = 0.1

# At most this much of a receiver's answer is kept with the attempt.
RESPONSE_EXCERPT_BYTES: Final = 4096


class ErrorKind(enum.StrEnum):
    """Why an attempt got no HTTP answer (or an answer that is not an answer)."""

    TIMEOUT = "timeout"
    CONNECT = "connect"
    TLS = "tls"
    PROTOCOL = "protocol"
    DESTINATION_REFUSED = "destination_refused"


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """One attempt as the sender saw it: an HTTP status, or an error kind."""

    status: int | None
    error: ErrorKind | None = None
    retry_after: float | None = None
    latency: float = 0.0
    excerpt: bytes = b""
    detail: str = ""

    @property
    def succeeded(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Next(enum.StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    # The last scheduled attempt failed: the delivery is dead-lettered (replayable).
    EXHAUSTED = "exhausted"
    # The receiver answered 410 Gone: disable the endpoint.
    GONE = "gone"


@dataclass(frozen=True, slots=True)
class Decision:
    next: Next
    # Seconds until the next attempt (RETRY only).
    delay: float = 0.0


def decide(
    attempts_made: int,
    result: AttemptResult,
    uniform: Callable[[float, float], float] = random.uniform,
    schedule: Sequence[float] = SCHEDULE,
) -> Decision:
    """The step after the `attempts_made`-th attempt (1-based) ended with `result`, on
    `schedule` (the delays before each attempt; an operator may set their own with
    `webhook_retry_schedule`). A `Retry-After` stretches a delay up to the schedule's
    longest one."""
    if result.succeeded:
        return Decision(Next.DELIVERED)
    if result.status == 410:
        return Decision(Next.GONE)
    if attempts_made >= len(schedule):
        return Decision(Next.EXHAUSTED)
    delay = schedule[attempts_made] * uniform(1 - JITTER, 1 + JITTER)
    if result.retry_after is not None and result.status in (429, 503):
        delay = max(delay, min(result.retry_after, max(schedule)))
    return Decision(Next.RETRY, delay)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait per a `Retry-After` value (delay-seconds or an HTTP-date, RFC 9110
    §10.2.3); None when absent or unreadable. A date in the past means no wait."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        # RFC 9110 dates are GMT; a zone-less parse of one is still GMT.
        return None
    return max(0.0, when.timestamp() - now)
