"""The worker side of live traffic: per-second sums, bounds, drops, the wire format.

`WorkerTraffic` is driven with a clock the test moves and a sink that records what it
is given (the Redis and store sinks have their own tests with real servers).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from portcullis.analytics.live import (
    OTHER,
    Counts,
    Organizations,
    ReportError,
    SecondAggregator,
    SecondReport,
    WorkerTraffic,
)
from portcullis.analytics.record import RequestRecord
from portcullis.analytics.sketch import LatencySketch
from portcullis.model.config import GatewayConfig
from support.clock import ManualClock

T0 = 1_700_000_000


def record(
    *,
    at: float = T0 + 0.5,
    route: str | None = "orders",
    consumer: str | None = "alice",
    status: int = 200,
    latency_ms: float = 10.0,
) -> RequestRecord:
    """A request that ended at `at` (epoch seconds) after `latency_ms`."""
    return RequestRecord(
        request_id="r",
        started_at=at - latency_ms / 1000,
        method="GET",
        path="/x",
        path_template=None,
        route=route,
        service="svc",
        upstream_target=None,
        consumer=consumer,
        credential_id=None,
        status=status,
        bytes_in=0,
        bytes_out=0,
        client_ip="127.0.0.1",
        user_agent=None,
        latency_ms=latency_ms,
        upstream_ms=None,
        gateway_ms=latency_ms,
        upstream_offset_ms=None,
        flags=0,
        error_kind=None,
        trace_id=None,
        priority=None,
    )


CONFIG = GatewayConfig.model_validate(
    {
        "services": [{"name": "svc", "url": "http://127.0.0.1:9"}],
        "routes": [
            {"name": "orders", "service": "svc", "paths": ["/orders"], "organization": "acme"},
            {"name": "public", "service": "svc", "paths": ["/public"]},
        ],
        "consumers": [
            {"username": "alice", "organization": "acme"},
            {"username": "bob", "organization": "globex"},
        ],
    }
)


class Sink:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[SecondReport] = []
        self.fail = fail

    async def send(self, reports: Sequence[SecondReport]) -> None:
        if self.fail:
            raise ConnectionError("sink down")
        self.sent.extend(reports)

    async def aclose(self) -> None:
        return None


def worker(
    clock: ManualClock,
    sink: Sink | None = None,
    *,
    capacity: int = 1000,
    max_routes: int = 100,
    max_consumers: int = 100,
) -> tuple[WorkerTraffic, Sink]:
    sink = sink or Sink()
    aggregator = SecondAggregator(
        "node:host:1",
        Organizations(lambda: CONFIG),
        max_routes=max_routes,
        max_consumers=max_consumers,
    )
    return WorkerTraffic(sink, aggregator, capacity=capacity, clock=clock), sink


async def test_a_second_sums_requests_4xx_5xx_and_latency_per_route_consumer_and_total() -> None:
    clock = ManualClock(T0 + 0.9)
    traffic, sink = worker(clock)
    latencies = [float(n) for n in range(1, 101)]  # 1..100 ms
    for n, latency in enumerate(latencies):
        status = 500 if n < 3 else 404 if n < 10 else 200
        traffic.observe(record(latency_ms=latency, status=status))
    traffic.observe(record(route="public", consumer=None, status=503))
    traffic.observe(record(route=None, consumer=None, status=404))  # no route matched
    clock.advance(0.15)  # the second T0 ended
    await traffic.flush()

    (report,) = sink.sent
    assert report.second == T0
    orders = report.routes["orders"]
    assert (orders.requests, orders.errors_4xx, orders.errors_5xx) == (100, 7, 3)
    assert orders.organization == "acme"
    exact_p95 = sorted(latencies)[int(0.95 * 99)]
    assert orders.p95() == pytest.approx(exact_p95, rel=0.01)
    assert report.routes["public"].requests == 1
    assert report.routes["public"].organization is None
    assert set(report.routes) == {"orders", "public"}  # the unrouted request has no route
    assert report.consumers["alice"].requests == 100
    assert (report.totals.requests, report.totals.errors_4xx, report.totals.errors_5xx) == (
        102,
        8,
        4,
    )
    assert report.totals.sketch.count == 102
    # Organization totals: requests on its routes or by its consumers, each once.
    assert report.organizations["acme"].requests == 100
    assert "globex" not in report.organizations


async def test_the_workers_own_binning_is_exactly_the_sketchs() -> None:
    values = [0.0, -1.0, float("nan"), 1e-4, 0.5, 1.0, 3.3, 250.0, 9e15, float("inf")]
    values += [1.0 + n * 0.37 for n in range(500)]
    clock = ManualClock(T0 + 0.5)
    traffic, sink = worker(clock)
    for value in values:
        r = record(latency_ms=value)
        r.started_at = T0 + 0.25  # (its end may not be a time: counted in the open second)
        traffic.observe(r)
    clock.advance(1)
    await traffic.aclose()  # reports every second up to the open one
    expected = LatencySketch()
    expected.add_many(values)
    assert LatencySketch.merged(r.totals.sketch for r in sink.sent) == expected
    assert LatencySketch.merged(r.routes["orders"].sketch for r in sink.sent) == expected
    assert sum(r.totals.requests for r in sink.sent) == len(values)


async def test_an_organizations_total_counts_a_request_once_whether_route_or_consumer() -> None:
    clock = ManualClock(T0 + 0.5)
    traffic, sink = worker(clock)
    traffic.observe(record(route="orders", consumer="alice"))  # acme route, acme consumer
    traffic.observe(record(route="public", consumer="alice"))  # acme consumer only
    traffic.observe(record(route="orders", consumer="bob"))  # acme route, globex consumer
    clock.advance(1)
    await traffic.flush()
    (report,) = sink.sent
    assert report.organizations["acme"].requests == 3
    assert report.organizations["globex"].requests == 1


async def test_records_go_to_the_second_they_ended_in_and_the_open_second_waits() -> None:
    clock = ManualClock(T0 + 2.01)
    traffic, sink = worker(clock)
    traffic._reported_through = T0 - 1
    traffic.observe(record(at=T0 + 0.2))
    traffic.observe(record(at=T0 + 1.7))
    traffic.observe(record(at=T0 + 1.99, latency_ms=1500))  # started in T0, ended in T0+1
    traffic.observe(record(at=T0 + 2.005))  # the open second: not reported yet
    await traffic.flush()
    assert [(r.second, r.totals.requests) for r in sink.sent] == [(T0, 1), (T0 + 1, 2)]
    clock.advance(1)
    await traffic.flush()
    assert [(r.second, r.totals.requests) for r in sink.sent[2:]] == [(T0 + 2, 1)]


async def test_an_idle_second_is_reported_empty() -> None:
    clock = ManualClock(T0 + 0.5)
    traffic, sink = worker(clock)
    clock.advance(1)
    await traffic.flush()
    clock.advance(1)
    await traffic.flush()
    assert [(r.second, r.totals.requests, r.routes) for r in sink.sent] == [
        (T0, 0, {}),
        (T0 + 1, 0, {}),
    ]


async def test_after_a_stall_only_the_seconds_with_traffic_and_the_last_one_are_sent() -> None:
    clock = ManualClock(T0 + 0.5)
    traffic, sink = worker(clock)
    traffic.observe(record(at=T0 + 1.5))
    clock.advance(4)  # the worker's loop was held up: T0 .. T0+3 ended meanwhile
    await traffic.flush()
    assert [(r.second, r.totals.requests) for r in sink.sent] == [(T0 + 1, 1), (T0 + 3, 0)]


async def test_a_record_of_a_second_already_reported_counts_in_the_next_as_late() -> None:
    clock = ManualClock(T0 + 0.5)
    traffic, sink = worker(clock)
    clock.advance(1)
    await traffic.flush()  # reports T0
    traffic.observe(record(at=T0 + 0.9))  # e.g. the wall clock stepped back
    clock.advance(1)
    await traffic.flush()
    assert [(r.second, r.totals.requests) for r in sink.sent] == [(T0, 0), (T0 + 1, 1)]
    assert traffic.late == 1


async def test_routes_and_consumers_over_the_caps_are_summed_under_other() -> None:
    clock = ManualClock(T0 + 0.5)
    traffic, sink = worker(clock, max_routes=3, max_consumers=2)
    for n in range(10):
        traffic.observe(record(route=f"r{n}", consumer=f"c{n}", status=500 if n == 9 else 200))
    clock.advance(1)
    await traffic.flush()
    (report,) = sink.sent
    assert set(report.routes) == {"r0", "r1", "r2", OTHER}
    assert report.routes[OTHER].requests == 7
    assert report.routes[OTHER].errors_5xx == 1
    assert report.routes[OTHER].organization is None
    assert set(report.consumers) == {"c0", "c1", OTHER}
    assert report.consumers[OTHER].requests == 8
    assert (report.folded_routes, report.folded_consumers) == (7, 8)
    assert report.totals.requests == 10  # nothing lost by folding


async def test_a_full_queue_drops_and_counts_and_the_next_report_says_so() -> None:
    clock = ManualClock(T0 + 0.5)
    traffic, sink = worker(clock, capacity=5)
    for _ in range(8):
        traffic.observe(record())
    assert traffic.dropped == 3
    clock.advance(1)
    await traffic.flush()
    assert sink.sent[0].totals.requests == 5
    assert sink.sent[0].dropped == 3
    clock.advance(1)
    await traffic.flush()
    assert sink.sent[1].dropped == 0  # counted once


async def test_a_failing_sink_loses_reports_counted_and_never_raises() -> None:
    clock = ManualClock(T0 + 0.5)
    traffic, _sink = worker(clock, Sink(fail=True))
    traffic.observe(record())
    clock.advance(1)
    await traffic.flush()
    assert (traffic.lost, traffic.sent) == (1, 0)
    traffic.observe(record())  # still accepted: the next second is sent when it can be
    assert traffic.dropped == 0


async def test_closing_sends_the_open_second_marked_final_and_refuses_later_records() -> None:
    clock = ManualClock(T0 + 0.5)
    traffic, sink = worker(clock)
    traffic.observe(record())
    await traffic.aclose()
    assert [(r.second, r.totals.requests, r.final) for r in sink.sent] == [(T0, 1, True)]
    traffic.observe(record())
    assert traffic.dropped == 1
    await traffic.aclose()  # twice is fine
    assert len(sink.sent) == 1


def test_reports_round_trip_through_their_json_form() -> None:
    sketch = LatencySketch()
    sketch.add_many([1.0, 2.0, 300.0])
    report = SecondReport(
        "n:h:1",
        T0,
        totals=Counts(3, 1, 1, sketch),
        routes={"orders": Counts(3, 1, 1, sketch, "acme")},
        consumers={"alice": Counts(2, 0, 1, sketch, "acme")},
        organizations={"acme": Counts(3, 1, 1, sketch, "acme")},
        dropped=4,
        folded_routes=1,
        folded_consumers=2,
        final=True,
    )
    again = SecondReport.from_json(report.to_json())
    assert again == report


def changed(**fields: object) -> str:
    """A valid report's JSON with `fields` replaced."""
    value = json.loads(SecondReport("w", 1).to_json())
    value.update(fields)
    return json.dumps(value)


def test_the_base_of_the_broken_reports_is_valid() -> None:
    assert SecondReport.from_json(changed()) == SecondReport("w", 1)


@pytest.mark.parametrize(
    "payload",
    [
        "not json",
        "[]",
        changed(v=99),
        '{"v": 1, "worker": "w", "second": 1}',
        changed(totals=[1, 0, 0, "!!notbase64", None]),
        changed(totals=[-1, 0, 0, "AQAA", None]),
        changed(totals=[1, 0, 0]),
        changed(second="1"),
        changed(routes=[]),
        changed(folded=[0]),
    ],
)
def test_anything_else_is_refused_as_not_a_report(payload: str) -> None:
    with pytest.raises(ReportError):
        SecondReport.from_json(payload)
