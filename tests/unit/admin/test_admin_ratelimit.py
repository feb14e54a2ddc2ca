"""Admin API token buckets: per credential and per IP, refill, refusal, headers, eviction."""

from __future__ import annotations

import re

from portcullis.admin.ratelimit import AdminRateLimiter, Policy, TokenBuckets
from support.clock import ManualClock

ITEM = re.compile(r'^"(?P<id>[a-z]+)";r=(?P<r>\d+);t=(?P<t>\d+)$')


def state(headers: list[tuple[bytes, bytes]]) -> dict[str, tuple[int, int]]:
    values = dict(headers)
    out = {}
    for item in values[b"ratelimit"].decode().split(", "):
        m = ITEM.match(item)
        assert m is not None, item
        out[m["id"]] = (int(m["r"]), int(m["t"]))
    return out


def test_burst_then_refill_per_credential() -> None:
    clock = ManualClock()
    # 60 a minute = 1 a second, burst 3; the IP policy is off.
    limiter = AdminRateLimiter(Policy("caller", 60, 3), Policy("ip", 0, 1), clock=clock)
    verdicts = [limiter.check(b"Bearer a", "10.0.0.1") for _ in range(4)]
    assert [v.allowed for v in verdicts] == [True, True, True, False]
    assert state(verdicts[0].headers) == {"caller": (2, 1)}
    assert state(verdicts[2].headers) == {"caller": (0, 3)}
    refused = verdicts[3]
    assert (refused.retry_after, refused.violated) == (1, ("caller",))
    assert state(refused.headers) == {"caller": (0, 1)}
    assert dict(refused.headers)[b"ratelimit-policy"] == b'"caller";q=3;w=3'
    # Another credential has its own bucket; time refills this one.
    assert limiter.check(b"Bearer b", "10.0.0.1").allowed
    clock.now += 1.0
    assert limiter.check(b"Bearer a", "10.0.0.1").allowed
    assert not limiter.check(b"Bearer a", "10.0.0.1").allowed
    # No credential: only the (disabled) IP policy applies, so nothing limits or reports.
    anonymous = limiter.check(None, "10.0.0.1")
    assert anonymous.allowed
    assert anonymous.headers == []


def test_the_ip_limit_spans_credentials_and_a_refusal_takes_nothing() -> None:
    clock = ManualClock()
    limiter = AdminRateLimiter(Policy("caller", 600, 5), Policy("ip", 60, 2), clock=clock)
    assert limiter.check(b"Bearer guess-1", "203.0.113.9").allowed
    assert limiter.check(b"Bearer guess-2", "203.0.113.9").allowed
    refused = limiter.check(b"Bearer guess-1", "203.0.113.9")
    assert not refused.allowed
    assert refused.violated == ("ip",)
    # The caller bucket kept its token (4 of 5 left, reported as r=4).
    assert state(refused.headers) == {"caller": (4, 1), "ip": (0, 1)}
    assert dict(refused.headers)[b"ratelimit-policy"] == b'"caller";q=5;w=1, "ip";q=2;w=2'
    assert limiter.check(b"Bearer guess-1", "203.0.113.10").allowed
    clock.now += 30
    assert limiter.check(b"Bearer guess-3", "203.0.113.9").allowed


def test_retry_after_covers_the_slowest_violated_policy() -> None:
    clock = ManualClock()
    limiter = AdminRateLimiter(Policy("caller", 6, 1), Policy("ip", 30, 1), clock=clock)
    assert limiter.check(b"t", "ip").allowed
    refused = limiter.check(b"t", "ip")
    assert refused.violated == ("caller", "ip")
    assert refused.retry_after == 10  # 6 a minute: one token every 10 s
    clock.now += 9.5
    assert not limiter.check(b"t", "ip").allowed
    clock.now += 0.5
    assert limiter.check(b"t", "ip").allowed


def test_least_recently_used_buckets_are_evicted() -> None:
    buckets = TokenBuckets(Policy("ip", 60, 2), max_keys=2)
    for key in ("a", "b", "a", "c"):
        buckets.take(key, buckets.level(key, 0.0), 0.0)
    assert len(buckets) == 2
    assert buckets.level("a", 0.0) == 0.0  # kept: used more recently than b
    assert buckets.level("b", 0.0) == 2.0  # evicted: starts full again
    assert not AdminRateLimiter(Policy("caller", 0, 1), Policy("ip", 0, 1)).enabled
