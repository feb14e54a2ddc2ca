"""Shipper and ShipperRegistry: the request path only appends (full: drop and count),
batches by size or time, retries with backoff and Retry-After, gives up and counts, drains
on close within its timeout. The sink is a stand-in here (the real ones have their own
tests against real receivers), so each behaviour is driven exactly."""

from __future__ import annotations

import asyncio

import pytest

from portcullis.analytics.record import RequestRecord
from portcullis.logship.shipper import (
    OTHER,
    Delivery,
    ShipError,
    Shipper,
    ShipperRegistry,
    ShipStats,
    backoff,
)
from support.records import make_record
from support.threaded_upstream import eventually


class FakeSink:
    """Records batches; fails with `errors` first (one per attempt); can be held."""

    def __init__(self, errors: list[Exception] | None = None) -> None:
        self.batches: list[list[str]] = []
        self.errors = list(errors or [])
        self.attempts = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.closed = False

    async def send(self, batch: list[RequestRecord]) -> None:
        self.attempts += 1
        await self.gate.wait()
        if self.errors:
            raise self.errors.pop(0)
        self.batches.append([r.request_id for r in batch])

    async def aclose(self) -> None:
        self.closed = True


class Sleeps:
    """An instant `sleep` that records the delays asked for."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def shipper(sink: FakeSink, sleeps: Sleeps | None = None, **delivery: float) -> Shipper:
    d = Delivery(**{"queue_size": 100, "batch_size": 10, "flush_interval": 0.01, **delivery})  # type: ignore[arg-type]
    return Shipper(
        sink,
        d,
        ShipStats("http-log", "http://collector/"),
        sleep=sleeps or Sleeps(),
        uniform=lambda a, b: b,  # the whole jitter range: deterministic delays
    )


def test_backoff_doubles_to_the_cap_with_equal_jitter() -> None:
    top = [backoff(n, 0.5, 3.0, lambda a, b: b) for n in range(1, 6)]
    assert top == [0.5, 1.0, 2.0, 3.0, 3.0]
    bottom = [backoff(n, 0.5, 3.0, lambda a, b: a) for n in range(1, 4)]
    assert bottom == [0.25, 0.5, 1.0]


async def test_batches_by_size_then_by_time() -> None:
    sink = FakeSink()
    s = shipper(sink, batch_size=3)
    for n in range(7):
        s.offer(make_record(n))
    await eventually(lambda: sum(map(len, sink.batches)) == 7)
    assert sink.batches == [["req-0", "req-1", "req-2"], ["req-3", "req-4", "req-5"], ["req-6"]]
    assert s.stats.shipped == 7
    assert s.stats.dropped["queue_full"] == 0
    await s.aclose()
    assert sink.closed


async def test_a_full_queue_drops_and_counts_while_the_sink_is_stuck() -> None:
    sink = FakeSink()
    sink.gate.clear()  # the receiver hangs
    s = shipper(sink, queue_size=5, batch_size=2)
    s.offer(make_record(0))
    s.offer(make_record(1))
    await eventually(lambda: sink.attempts == 1)  # the first batch is in flight
    for n in range(2, 12):
        s.offer(make_record(n))  # returns at once: no waiting on the request path
    assert s.queue_depth == 5
    assert s.stats.dropped["queue_full"] == 5
    sink.gate.set()
    await eventually(lambda: s.stats.shipped == 7)
    assert s.queue_depth == 0
    await s.aclose()


async def test_retries_with_backoff_honour_retry_after_then_succeed() -> None:
    sink = FakeSink(
        [
            ShipError("503", retryable=True),
            ShipError("429", retryable=True, retry_after=7.0),
            ShipError("reset", retryable=True, retry_after=999.0),
        ]
    )
    sleeps = Sleeps()
    s = shipper(sink, sleeps, retries=5, backoff_initial=1.0, backoff_max=20.0)
    s.offer(make_record(0))
    await eventually(lambda: s.stats.shipped == 1)
    # 1 s, then 2 s stretched to the receiver's 7 s, then 4 s stretched up to the 20 s cap.
    assert sleeps.delays == [1.0, 7.0, 20.0]
    assert s.stats.failures == 3
    assert sink.batches == [["req-0"]]
    await s.aclose()


async def test_exhausted_retries_and_rejections_drop_the_batch_and_go_on() -> None:
    sink = FakeSink(
        [ShipError("down", retryable=True)] * 3
        + [ShipError("400", retryable=False)]
        + [RuntimeError("a bug in a sink counts as retryable")]
    )
    s = shipper(sink, retries=2, batch_size=2)
    s.offer(make_record(0))
    s.offer(make_record(1))
    await eventually(lambda: s.stats.dropped["retries_exhausted"] == 2)
    s.offer(make_record(2))
    await eventually(lambda: s.stats.dropped["rejected"] == 1)
    s.offer(make_record(3))
    await eventually(lambda: s.stats.shipped == 1)
    assert sink.batches == [["req-3"]]
    await s.aclose()


async def test_close_drains_what_is_queued() -> None:
    sink = FakeSink()
    s = shipper(sink, batch_size=1000, flush_interval=60.0)
    for n in range(25):
        s.offer(make_record(n))
    await s.aclose(timeout=5.0)
    assert sum(map(len, sink.batches)) == 25
    assert s.stats.dropped["shutdown"] == 0
    s.offer(make_record(99))  # closed: counted, not queued
    assert s.stats.dropped["shutdown"] == 1


async def test_close_gives_up_after_its_timeout_and_counts_what_is_lost() -> None:
    sink = FakeSink()
    sink.gate.clear()  # never answers
    s = shipper(sink, batch_size=4, flush_interval=60.0)
    for n in range(10):
        s.offer(make_record(n))
    await s.aclose(timeout=0.05)
    # The batch in flight and the records behind it: every one counted.
    assert s.stats.dropped["shutdown"] == 10
    assert s.stats.shipped == 0
    assert sink.closed


async def test_registry_shares_reuses_and_retires_shippers() -> None:
    registry = ShipperRegistry()
    sinks: list[FakeSink] = []

    def make(stats: ShipStats) -> Shipper:
        sinks.append(FakeSink())
        return Shipper(sinks[-1], Delivery(flush_interval=0.01), stats)

    a = registry.acquire(("http-log", "cfg-1"), "http-log", "http://a/", make)
    assert registry.acquire(("http-log", "cfg-1"), "http-log", "http://a/", make) is a
    b = registry.acquire(("http-log", "cfg-2"), "http-log", "http://a/", make)
    assert b is not a
    assert b.stats is a.stats
    a.offer(make_record(0))
    a.retire()
    await eventually(lambda: sinks[0].closed)
    assert sinks[0].batches == [["req-0"]]
    fresh = registry.acquire(("http-log", "cfg-1"), "http-log", "http://a/", make)
    assert fresh is not a
    b.offer(make_record(1))
    assert [s.queued for s in registry.stats()] == [1]
    await registry.aclose()
    assert all(s.closed for s in sinks[1:])
    assert registry.stats()[0].shipped == 2


def test_label_cardinality_is_bounded() -> None:
    registry = ShipperRegistry(max_labels=2)
    registry.stats_for("file-log", "/a")
    registry.stats_for("file-log", "/b")
    assert registry.stats_for("file-log", "/c").destination == OTHER
    assert registry.stats_for("file-log", "/d") is registry.stats_for("file-log", "/c")
    assert registry.stats_for("file-log", "/a").destination == "/a"


@pytest.mark.parametrize("retries", [0])
async def test_no_retries_means_one_attempt(retries: int) -> None:
    sink = FakeSink([ShipError("down", retryable=True)])
    s = shipper(sink, retries=retries)
    s.offer(make_record(0))
    await eventually(lambda: s.stats.dropped["retries_exhausted"] == 1)
    assert sink.attempts == 1
    await s.aclose()
