"""The control-plane side of live traffic: reports merged into one frame per second,
emitted when every live worker reported or at the grace deadline, late reports counted,
organization views, bounded listeners and history.

`LiveTraffic.receive` and `tick` are driven directly with a clock the test moves (the
transports have their own tests with real servers in tests/integration/analytics).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import cast

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.analytics.live import OTHER, Counts, SecondReport
from portcullis.analytics.sketch import LatencySketch
from portcullis.services.scoping import OrgScope
from portcullis.services.streams.traffic import (
    LiveTraffic,
    TrafficEntry,
    TrafficFrame,
    TrafficListener,
    live_view,
)
from portcullis.settings import Settings
from support.clock import ManualClock

T0 = 1_700_000_000
NO_ENGINE = cast(AsyncEngine, None)  # receive/tick never touch the store


def counts(latencies: list[float], e4: int = 0, e5: int = 0, org: str | None = None) -> Counts:
    sketch = LatencySketch()
    sketch.add_many(latencies)
    return Counts(len(latencies), e4, e5, sketch, org)


def report(
    worker: str,
    second: int,
    latencies: list[float] | None = None,
    *,
    route: str = "orders",
    consumer: str | None = "alice",
    org: str | None = None,
    e4: int = 0,
    e5: int = 0,
    final: bool = False,
) -> SecondReport:
    values = latencies or []
    out = SecondReport(worker, second, totals=counts(values, e4, e5), final=final)
    if values:
        out.routes[route] = counts(values, e4, e5, org)
        if consumer is not None:
            out.consumers[consumer] = counts(values, e4, e5, org)
        if org is not None:
            out.organizations[org] = counts(values, e4, e5, org)
    return out


def live(clock: ManualClock, **settings: object) -> LiveTraffic:
    return LiveTraffic(NO_ENGINE, Settings(**settings), None, clock=clock)  # type: ignore[arg-type]


def primed(clock: ManualClock, *workers: str, **settings: object) -> LiveTraffic:
    """A control plane listening since T0-2.5 that heard `workers` report T0-2 and T0-1
    (so it waits for them from then on), with every frame before T0 emitted; the clock
    at T0+0.5."""
    clock.now = T0 - 2.5
    traffic = live(clock, **settings)
    for second in (T0 - 2, T0 - 1):
        for w in workers:
            traffic.receive(report(w, second))
    clock.now = T0 + 0.5
    assert [f.second for f in traffic.tick()] == [T0 - 3, T0 - 2, T0 - 1]
    return traffic


def test_two_workers_of_one_second_merge_into_one_frame_with_a_merged_p95() -> None:
    clock = ManualClock()
    traffic = primed(clock, "w1", "w2")
    a = [float(n) for n in range(1, 51)]
    b = [float(n) for n in range(100, 150)]
    traffic.receive(report("w1", T0, a, e4=2))
    traffic.receive(report("w2", T0, b, e5=3, consumer="bob"))
    clock.advance(1.0)  # T0 ended
    (frame,) = traffic.tick()  # both workers it knows of reported: no waiting
    assert frame.second == T0
    assert frame.workers == 2
    assert (frame.totals.requests, frame.totals.errors_4xx, frame.totals.errors_5xx) == (100, 2, 3)
    exact = sorted(a + b)[int(0.95 * 99)]
    assert frame.totals.p95_ms == pytest.approx(exact, rel=0.01)
    assert frame.routes["orders"].requests == 100
    assert frame.routes["orders"].p95_ms == pytest.approx(exact, rel=0.01)
    assert frame.consumers["alice"].requests == 50
    assert frame.consumers["bob"].errors_5xx == 3


def test_a_frame_waits_for_a_live_worker_until_the_grace_deadline_and_late_reports_count() -> None:
    clock = ManualClock()
    traffic = primed(clock, "w1", "w2", live_traffic_grace=1.0)
    traffic.receive(report("w1", T0, [5.0]))
    clock.advance(0.6)  # T0 + 1.1: T0 ended
    assert traffic.tick() == []  # w2 is still expected for T0
    clock.advance(0.8)  # T0 + 1.9: within the grace
    assert traffic.tick() == []
    clock.advance(0.11)  # T0 + 2.01: the grace is over
    (frame,) = traffic.tick()
    assert (frame.second, frame.workers, frame.totals.requests) == (T0, 1, 1)
    traffic.receive(report("w2", T0, [7.0]))  # too late for its frame
    assert traffic.late_reports == 1
    assert traffic.since(T0 - 1)[-1] == frame  # the emitted frame is not changed


def test_a_worker_that_stopped_or_went_silent_is_not_waited_for() -> None:
    clock = ManualClock()
    traffic = primed(clock, "w1", "w2")
    traffic.receive(report("w1", T0))
    traffic.receive(report("w2", T0, [1.0], final=True))  # w2 is stopping
    clock.advance(1.0)
    (frame,) = traffic.tick()
    assert frame.workers == 2
    traffic.receive(report("w1", T0 + 1))
    clock.advance(1.0)
    assert [f.second for f in traffic.tick()] == [T0 + 1]  # no wait for w2
    # w1 goes silent: waited for (grace) for a few seconds, then not any more.
    assert traffic.expected(T0 + 2) == {"w1"}
    assert traffic.expected(T0 + 5) == set()


def test_a_new_worker_is_merged_but_waited_for_only_after_its_first_second() -> None:
    clock = ManualClock()
    traffic = primed(clock, "w1")
    traffic.receive(report("w2", T0, [1.0]))  # w2 started during T0
    traffic.receive(report("w1", T0, [1.0]))
    clock.advance(0.6)
    (frame,) = traffic.tick()
    assert (frame.second, frame.workers, frame.totals.requests) == (T0, 2, 2)
    traffic.receive(report("w1", T0 + 1))
    clock.advance(1.0)
    assert traffic.tick() == []  # w2 is waited for now
    traffic.receive(report("w2", T0 + 1))
    assert [f.second for f in traffic.tick()] == [T0 + 1]


def test_the_first_seconds_after_starting_wait_for_the_grace_as_workers_are_not_known() -> None:
    clock = ManualClock(T0 + 0.5)
    traffic = live(clock, live_traffic_grace=1.0)
    traffic.receive(report("w1", T0, [1.0]))  # w2's report of T0 is still on its way
    clock.advance(0.6)
    assert traffic.tick() == []
    traffic.receive(report("w2", T0, [1.0]))
    clock.advance(0.95)
    (frame,) = traffic.tick()
    assert frame.workers == 2


def test_a_worker_is_not_waited_for_in_seconds_before_its_first_report() -> None:
    clock = ManualClock()
    traffic = primed(clock, "w1", live_traffic_grace=1.5)
    clock.now = T0 + 2.05
    traffic.receive(report("w2", T0 + 1))  # w2 started during T0+1
    traffic.receive(report("w1", T0))  # w1's report of T0, slow but within the grace
    assert [f.second for f in traffic.tick()] == [T0]  # not waiting for w2's T0


def test_a_second_that_began_before_listening_waits_for_workers_not_heard_of_yet() -> None:
    # Subscribed at T0+1.01: w2's report of T0 went out just before and was missed; w1's
    # came after (late for T0, but w1 is known from it).
    clock = ManualClock(T0 + 1.01)
    traffic = live(clock, live_traffic_grace=1.0)
    traffic.receive(report("w1", T0))
    clock.now = T0 + 2.02
    traffic.receive(report("w1", T0 + 1, [1.0]))
    assert traffic.tick() == []  # w2 may exist: T0+1 began before this process listened
    traffic.receive(report("w2", T0 + 1, [1.0]))
    clock.now = T0 + 2.99
    assert traffic.tick() == []  # still within the grace: waited for as for any other
    clock.now = T0 + 3.0
    traffic.tick()
    assert [(f.second, f.workers) for f in traffic.since(T0)] == [(T0 + 1, 2)]


def test_every_second_gets_a_frame_also_idle_ones_and_in_order() -> None:
    clock = ManualClock(T0 + 0.5)
    traffic = live(clock, live_traffic_grace=0.5)
    clock.advance(3.6)  # T0+4.1: T0..T0+2 are past their grace, T0+3 is not
    frames = traffic.tick()
    assert [(f.second, f.workers, f.totals.requests) for f in frames] == [
        (T0, 0, 0),
        (T0 + 1, 0, 0),
        (T0 + 2, 0, 0),
    ]
    # A complete later second waits for the earlier one still in its grace.
    traffic.receive(report("w1", T0 + 4))
    clock.advance(0.5)  # T0+4.6: T0+3 is past its grace now
    assert [f.second for f in traffic.tick()] == [T0 + 3]


def test_reports_far_ahead_of_the_clock_are_refused() -> None:
    clock = ManualClock(T0 + 0.5)
    traffic = live(clock)
    traffic.receive(report("w1", T0 + 3600, [1.0]))
    assert traffic.bad_reports == 1
    assert traffic.expected(T0 + 3600) == set()


async def test_unreadable_reports_are_counted_not_raised() -> None:
    traffic = live(ManualClock(T0 + 0.5))
    await traffic.receive_text(b"\xff not a report")
    await traffic.receive_text('{"v": 1}')
    assert traffic.bad_reports == 2
    assert traffic.reports == 0


def test_more_routes_than_the_cap_across_workers_are_summed_under_other() -> None:
    clock = ManualClock()
    traffic = primed(clock, "w1", "w2", "w3", live_traffic_max_routes=2)
    traffic.receive(report("w1", T0, [1.0], route="a"))
    traffic.receive(report("w2", T0, [1.0], route="b"))
    traffic.receive(report("w3", T0, [1.0, 2.0], route="c"))
    clock.advance(1.0)
    (frame,) = traffic.tick()
    assert {name: e.requests for name, e in frame.routes.items()} == {"a": 1, "b": 1, OTHER: 2}
    assert frame.totals.requests == 4


def test_an_organizations_view_has_its_routes_consumers_and_totals_only() -> None:
    clock = ManualClock()
    traffic = primed(clock, "w1", "w2", "w3")
    traffic.use_organizations({"acme": "org-acme", "globex": "org-globex"})
    traffic.receive(report("w1", T0, [1.0, 2.0], route="orders", consumer="alice", org="acme"))
    traffic.receive(report("w2", T0, [3.0], route="billing", consumer="bob", org="globex"))
    traffic.receive(report("w3", T0, [4.0, 5.0, 6.0], route="public", consumer=None))
    clock.advance(1.0)
    (frame,) = traffic.tick()
    assert frame.routes["orders"].organization_id == "org-acme"
    assert frame.routes["public"].organization_id is None

    acme = frame.visible_to("org-acme")
    assert set(acme.routes) == {"orders"}
    assert set(acme.consumers) == {"alice"}
    assert acme.totals == TrafficEntry(2, 0, 0, acme.totals.p95_ms, "org-acme")
    assert acme.totals.p95_ms == pytest.approx(1.0, rel=0.01)  # sorted[floor(0.95 * (2 - 1))]
    nobody = frame.visible_to("org-unknown")
    assert (nobody.routes, nobody.consumers, nobody.totals.requests) == ({}, {}, 0)
    assert frame.visible_to(None) is frame
    assert frame.totals.requests == 6

    view = live_view(traffic, OrgScope("globex", "org-globex"), 1)
    (only,) = view["frames"]
    assert only["second"] == T0
    assert set(only["routes"]) == {"billing"}
    assert only["totals"]["requests"] == 1
    assert live_view(None, OrgScope(), 60) == {"enabled": False, "history_seconds": 0, "frames": []}


def test_an_organization_name_with_no_organization_behind_it_is_gateway_wide() -> None:
    clock = ManualClock()
    traffic = primed(clock, "w1")
    traffic.receive(report("w1", T0, [1.0], org="acme"))  # no id known for "acme"
    clock.advance(1.0)
    (frame,) = traffic.tick()
    assert frame.routes["orders"].organization_id is None
    assert frame.visible_to("org-acme").routes == {}


def test_history_keeps_the_last_frames_for_resuming() -> None:
    clock = ManualClock(T0 + 0.5)
    traffic = live(clock, live_traffic_history_seconds=5, live_traffic_grace=0.1)
    clock.advance(10.0)
    traffic.tick()
    assert traffic.frames == 10  # T0 .. T0+9
    kept = [f.second for f in traffic.since(0)]
    assert kept == list(range(T0 + 5, T0 + 10))
    assert [f.second for f in traffic.since(T0 + 7)] == [T0 + 8, T0 + 9]
    assert [f.second for f in traffic.latest(2)] == [T0 + 8, T0 + 9]


async def test_listeners_get_frames_in_order_drop_their_oldest_when_full_and_close() -> None:
    clock = ManualClock(T0 + 0.5)
    traffic = live(clock, live_traffic_grace=0.1)
    slow = traffic.listen(maxsize=2)
    fast = traffic.listen()
    assert traffic.listeners == 2
    clock.advance(3.0)
    traffic.tick()  # T0..T0+2
    assert slow.dropped == 1
    assert [f.second async for f in _take(slow, 2)] == [T0 + 1, T0 + 2]
    assert [f.second async for f in _take(fast, 3)] == [T0, T0 + 1, T0 + 2]
    slow.close()
    assert traffic.listeners == 1

    waiting = asyncio.create_task(anext(fast))
    await asyncio.sleep(0)
    await traffic.stop()  # closes every listener: the waiting iteration ends
    with pytest.raises(StopAsyncIteration):
        await waiting
    assert traffic.listeners == 0


async def _take(listener: TrafficListener, n: int) -> AsyncIterator[TrafficFrame]:
    for _ in range(n):
        yield await anext(listener)


def test_a_frame_as_json_has_the_documented_fields() -> None:
    entry = TrafficEntry(3, 1, 1, 12.5, None)
    frame = TrafficFrame(T0, entry, {"orders": entry}, {}, 2)
    assert frame.as_json() == {
        "second": T0,
        "totals": {
            "requests": 3,
            "errors_4xx": 1,
            "errors_5xx": 1,
            "p95_ms": 12.5,
            "organization_id": None,
        },
        "routes": {"orders": entry.as_json()},
        "consumers": {},
        "workers": 2,
        "dropped": 0,
        "folded": {"routes": 0, "consumers": 0},
    }
