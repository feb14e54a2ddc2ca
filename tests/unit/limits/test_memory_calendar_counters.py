"""MemoryBackend.calendar_counters: the quota counters a worker publishes for the usage API."""

from __future__ import annotations

from portcullis.limits.backend import LimitRequest
from portcullis.limits.memory import MemoryBackend
from portcullis.limits.spec import CALENDAR_GRACE_US, MICROS, LimitSpec

START = 1_800_000_000 * MICROS
END = START + 86_400 * MICROS


def calendar(key: str, cost: int = 1, limit: int = 100) -> LimitRequest:
    return LimitRequest(key, LimitSpec.calendar(limit, START, END), cost)


def test_lists_calendar_counters_under_the_prefix_with_count_and_window_end() -> None:
    clock = [START + MICROS]
    backend = MemoryBackend(clock=lambda: clock[0])
    backend.decide_now([calendar("pq:daily:d1:c=alice", 3)])
    backend.decide_now([calendar("pq:daily:d1:c=alice", 2), calendar("pq:daily:d1:c=bob")])
    backend.decide_now([LimitRequest("pl:burst:c=alice", LimitSpec.of("fixed_window", 5, 1))])
    backend.decide_now([calendar("other:d1:c=alice", 4)])
    assert sorted(backend.calendar_counters("pq")) == [
        ("pq:daily:d1:c=alice", 5, END),
        ("pq:daily:d1:c=bob", 1, END),
    ]
    # Every calendar counter without a prefix; never the rate limit's.
    assert {k for k, _, _ in backend.calendar_counters()} == {
        "pq:daily:d1:c=alice",
        "pq:daily:d1:c=bob",
        "other:d1:c=alice",
    }


def test_refused_requests_and_expired_windows_are_not_listed() -> None:
    clock = [START + MICROS]
    backend = MemoryBackend(clock=lambda: clock[0])
    assert backend.decide_now([calendar("pq:q:d1:c=a", 2, limit=2)])[0].allowed
    assert not backend.decide_now([calendar("pq:q:d1:c=a", 1, limit=2)])[0].allowed
    assert backend.calendar_counters("pq") == [("pq:q:d1:c=a", 2, END)]
    # Past the window and its grace: gone, and forgotten once the sweep drops it.
    clock[0] = END + CALENDAR_GRACE_US + MICROS
    assert backend.calendar_counters("pq") == []
    backend.decide_now([LimitRequest("x", LimitSpec.of("fixed_window", 5, 1))])
    assert len(backend) == 1
    assert backend.calendar_counters("pq") == []
    assert backend._calendar == set()


def test_evicted_and_cleared_counters_are_forgotten() -> None:
    backend = MemoryBackend(max_keys=2, clock=lambda: START + MICROS)
    for who in ("a", "b", "c"):
        backend.decide_now([calendar(f"pq:q:d1:c={who}")])
    assert len(backend.calendar_counters("pq")) == 2
    assert len(backend._calendar) == 2
    backend.clear()
    assert backend.calendar_counters() == []
