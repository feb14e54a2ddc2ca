"""Adaptive concurrency: the AIMD and gradient algorithms, class shares, the critical
queue, priority rules, limiter state across snapshot swaps."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from portcullis.model.config import AdaptiveConcurrency, GatewayConfig, Route
from portcullis.runtime.snapshot import build_snapshot, implicit_upstream_name
from portcullis.upstream.shedding import (
    CRITICAL,
    HIGH,
    LOW,
    NORMAL,
    AimdLimit,
    ConcurrencyLimiter,
    GradientLimit,
    Permit,
    PriorityRules,
    build_limiters,
)
from support.clock import ManualClock


def _config(**overrides: Any) -> AdaptiveConcurrency:
    base: dict[str, Any] = {"enabled": True, "algorithm": "aimd", "initial_limit": 10}
    base.update(overrides)
    base.setdefault("min_limit", 1)
    return AdaptiveConcurrency.model_validate(base)


# -- AIMD ---------------------------------------------------------------------------


def test_aimd_adds_about_one_per_window_of_successes_while_in_use() -> None:
    aimd = AimdLimit(10, 2, 100, target=0.5, backoff=0.9)
    for i in range(10):
        aimd.on_sample(float(i), float(i) - 0.1, 0.1, 10, dropped=False, pressured=False)
    # Ten successes at a limit of ten: 1/10 + 1/10.1 + ... ≈ 0.95.
    assert 10.9 < aimd.limit < 11.0


def test_aimd_does_not_grow_an_idle_limit_unless_requests_were_held_back() -> None:
    aimd = AimdLimit(10, 2, 100, target=0.5, backoff=0.9)
    for i in range(50):
        aimd.on_sample(float(i), float(i), 0.1, 2, dropped=False, pressured=False)
    assert aimd.limit == 10
    aimd.on_sample(60.0, 59.9, 0.1, 2, dropped=False, pressured=True)
    assert aimd.limit == pytest.approx(10.1)


def test_aimd_backs_off_once_per_window_on_latency_and_drops() -> None:
    aimd = AimdLimit(20, 2, 100, target=0.5, backoff=0.9)
    aimd.on_sample(10.0, 9.0, 1.0, 20, dropped=False, pressured=False)  # over target
    assert aimd.limit == pytest.approx(18.0)
    # Admitted before that decrease: part of the same window, no second decrease.
    aimd.on_sample(10.5, 9.5, 0.8, 20, dropped=True, pressured=False)
    assert aimd.limit == pytest.approx(18.0)
    # Admitted after it: a new window's bad news counts.
    aimd.on_sample(11.0, 10.2, 0.1, 20, dropped=True, pressured=False)
    assert aimd.limit == pytest.approx(16.2)


def test_aimd_stays_within_min_and_max() -> None:
    aimd = AimdLimit(3, 2, 4, target=0.5, backoff=0.5)
    for i in range(5):
        aimd.on_sample(float(i), float(i) - 0.5, 1.0, 3, dropped=False, pressured=False)
    assert aimd.limit == 2
    for i in range(100):
        aimd.on_sample(10.0 + i, 10.0 + i, 0.1, 4, dropped=False, pressured=True)
    assert aimd.limit == 4


# -- gradient -----------------------------------------------------------------------


def _feed_window(
    g: GradientLimit,
    clock: ManualClock,
    rtt: float,
    inflight: int,
    *,
    pressured: bool,
    dropped_at: int = -1,
) -> None:
    """Ten samples 0.125 s apart: exactly one window (1.125 s from first to last)."""
    for i in range(10):
        clock.now += 0.125
        g.on_sample(clock.now, clock.now - rtt, rtt, inflight, i == dropped_at, pressured)


def _gradient(initial: int, min_limit: int = 1, probe_interval: float = 600.0) -> GradientLimit:
    return GradientLimit(
        initial,
        min_limit,
        1000,
        tolerance=1.5,
        smoothing=0.2,
        backoff=0.9,
        window=1.0,
        probe_interval=probe_interval,
    )


def _probing(g: GradientLimit) -> bool:
    """`g.probing`, read through a call: mypy would otherwise keep it narrowed across calls."""
    return g.probing


def _probed(initial: int, clock: ManualClock, base: float = 0.1) -> GradientLimit:
    """A gradient limit past its start-up probe, with `base` as no-load latency."""
    g = _gradient(initial)
    _feed_window(g, clock, base, 1, pressured=True)
    assert not _probing(g)
    return g


def test_gradient_measures_the_no_load_latency_at_start() -> None:
    clock = ManualClock()
    g = _gradient(50, min_limit=4)
    assert _probing(g)
    assert g.limit == 4  # held at min_limit until the baseline is known
    _feed_window(g, clock, 0.2, 4, pressured=True)
    assert not _probing(g)
    assert g.rtt_noload == pytest.approx(0.2)
    assert g.limit == 50


def test_gradient_probes_again_and_ignores_requests_admitted_before_the_probe() -> None:
    clock = ManualClock()
    g = _gradient(50, min_limit=4, probe_interval=30.0)
    _feed_window(g, clock, 0.1, 4, pressured=True)
    # The upstream got slower for good: 0.3 s even unloaded. Until the next probe the
    # limit is judged against 0.1 s and falls.
    windows = 0
    while not _probing(g):
        _feed_window(g, clock, 0.3, int(g.limit), pressured=True)
        windows += 1
    assert windows == 24  # 24 windows of 1.25 s: the first to end 30 s after the probe
    assert g.limit == 4
    shrunk = g._resume
    assert shrunk < 50
    # Stragglers admitted before the probe report long latencies: not part of it.
    for _ in range(20):
        clock.now += 0.01
        g.on_sample(clock.now, clock.now - 5.0, 5.0, 30, dropped=False, pressured=True)
    assert _probing(g)
    _feed_window(g, clock, 0.3, 4, pressured=True)
    assert not _probing(g)
    assert g.rtt_noload == pytest.approx(0.3)
    assert g.limit == shrunk
    # Judged against the new baseline the limit can grow again.
    _feed_window(g, clock, 0.3, int(g.limit), pressured=True)
    assert g.limit == pytest.approx(shrunk + math.sqrt(shrunk))


@pytest.mark.parametrize("initial", [100, 5])
def test_gradient_converges_where_queueing_reaches_the_tolerance(initial: int) -> None:
    """Simulated upstream: 10 requests at a time in 100 ms, the rest queue.

    With tolerance 1.5 the equilibrium is `limit = 15 + sqrt(limit)` ≈ 19.6 in
    flight: latency about twice the no-load 100 ms. The limit gets there from a
    too-high start (shrinking) and from a too-low one (growing).
    """
    capacity, base = 10, 0.1
    clock = ManualClock()
    g = _probed(initial, clock, base)
    # Light load: the limit is left alone.
    for _ in range(5):
        _feed_window(g, clock, base, 1, pressured=False)
    assert g.limit == initial
    for _ in range(200):
        inflight = max(1, int(g.limit))
        _feed_window(g, clock, base * max(1.0, inflight / capacity), inflight, pressured=True)
    assert 17.0 <= g.limit <= 22.0
    assert g.rtt_noload == pytest.approx(base)


def test_gradient_leaves_the_limit_alone_when_it_holds_nothing_back() -> None:
    clock = ManualClock()
    g = _probed(50, clock)
    for _ in range(20):
        _feed_window(g, clock, 0.5, 3, pressured=False)  # slow, but barely used
    assert g.limit == 50


def test_gradient_backs_off_on_a_window_with_drops() -> None:
    clock = ManualClock()
    g = _probed(50, clock)
    _feed_window(g, clock, 0.1, 50, pressured=False, dropped_at=3)
    assert g.limit == pytest.approx(45.0)


def test_gradient_window_needs_time_and_samples() -> None:
    clock = ManualClock()
    g = _probed(10, clock)
    for _ in range(9):  # nine samples over 5 s: not a window yet
        clock.now += 0.6
        g.on_sample(clock.now, clock.now - 0.1, 0.1, 10, dropped=False, pressured=True)
    assert g.limit == 10
    clock.now += 0.6
    g.on_sample(clock.now, clock.now - 0.1, 0.1, 10, dropped=False, pressured=True)
    assert g.limit == pytest.approx(10 + math.sqrt(10))


# -- limiter: shares, counters, queue -----------------------------------------------


def test_class_shares_of_the_limit() -> None:
    limiter = ConcurrencyLimiter("u", _config(), clock=ManualClock())
    permits: list[Permit] = []

    def fill(cls: int) -> int:
        n = 0
        while (p := limiter.try_acquire(cls)) is not None:
            permits.append(p)
            n += 1
        return n

    # Default shares 50/70/90/100% of 10, filled from the lowest class up.
    assert [fill(LOW), fill(NORMAL), fill(HIGH), fill(CRITICAL)] == [5, 2, 2, 1]
    assert limiter.inflight == 10
    assert limiter.inflight_by_class == [1, 2, 2, 5]
    assert limiter.admitted == [1, 2, 2, 5]
    limiter.refuse(LOW)
    assert limiter.shed == [0, 0, 0, 1]
    for p in permits:
        p.release()
        p.release()  # a second release is a no-op
    assert limiter.inflight == 0
    assert limiter.inflight_by_class == [0, 0, 0, 0]
    stats = limiter.stats()
    assert stats["admitted"] == {"critical": 1, "high": 2, "normal": 2, "low": 5}
    assert stats["shed"] == {"critical": 0, "high": 0, "normal": 0, "low": 1}


def test_an_idle_upstream_admits_every_class() -> None:
    limiter = ConcurrencyLimiter("u", _config(initial_limit=1, min_limit=1), clock=ManualClock())
    permit = limiter.try_acquire(LOW)
    assert permit is not None
    assert limiter.try_acquire(CRITICAL) is None
    permit.release()
    assert limiter.try_acquire(LOW) is not None


def test_release_feeds_the_algorithm_with_the_permits_latency() -> None:
    clock = ManualClock()
    limiter = ConcurrencyLimiter("u", _config(latency_target=0.5), clock=clock)
    slow = limiter.try_acquire(NORMAL)
    assert slow is not None
    clock.now += 2.0
    slow.responded()
    clock.now += 30.0  # a long body download does not count as latency
    fast = limiter.try_acquire(NORMAL)
    assert fast is not None
    fast.responded()
    slow.release()
    assert limiter.limit == pytest.approx(9.0)  # 2 s > 0.5 s target: backoff
    failed = limiter.try_acquire(NORMAL)
    assert failed is not None
    failed.failed()
    failed.release()
    assert limiter.limit == pytest.approx(8.1)  # a drop
    unmeasured = limiter.try_acquire(NORMAL)
    assert unmeasured is not None
    unmeasured.release()  # e.g. the client left: only the slot is freed
    assert limiter.limit == pytest.approx(8.1)
    fast.release()
    assert limiter.inflight == 0


def test_shedding_marks_pressure_so_a_capped_class_can_grow_the_limit() -> None:
    """Only 5 low requests fit a limit of 10, never "half in use" by AIMD's test on its
    own; a shed request during their lifetime tells the algorithm the limit binds."""
    clock = ManualClock()
    limiter = ConcurrencyLimiter("u", _config(), clock=clock)
    permits = [limiter.try_acquire(LOW) for _ in range(4)]
    assert all(p is not None for p in permits)
    for p in permits:
        assert p is not None
        clock.now += 0.01
        p.responded()
        p.release()
    assert limiter.limit == 10  # 4 in flight of 10, nothing held back
    held = [limiter.try_acquire(LOW) for _ in range(5)]
    assert limiter.try_acquire(LOW) is None
    for p in held:
        assert p is not None
        clock.now += 0.01
        p.responded()
        p.release()
    assert limiter.limit > 10.4


async def test_critical_requests_queue_for_a_freed_slot() -> None:
    limiter = ConcurrencyLimiter(
        "u", _config(initial_limit=2, min_limit=1, queue_size=1, queue_timeout=5.0)
    )
    first, second = limiter.try_acquire(CRITICAL), limiter.try_acquire(CRITICAL)
    assert first is not None
    assert second is not None
    assert limiter.try_acquire(CRITICAL) is None
    assert not limiter.can_queue(LOW)
    assert limiter.can_queue(CRITICAL)
    waiter = asyncio.create_task(limiter.wait(CRITICAL))
    await asyncio.sleep(0)
    assert limiter.queued == 1
    assert not limiter.can_queue(CRITICAL)  # the queue holds one
    first.release()
    permit = await waiter
    assert permit is not None
    assert limiter.inflight == 2
    assert limiter.queued == 0
    assert limiter.admitted[CRITICAL] == 3
    permit.release()
    second.release()
    assert limiter.inflight == 0


async def test_a_queued_request_gives_up_after_the_timeout() -> None:
    limiter = ConcurrencyLimiter(
        "u", _config(initial_limit=1, min_limit=1, queue_size=4, queue_timeout=0.01)
    )
    held = limiter.try_acquire(CRITICAL)
    assert held is not None
    assert await limiter.wait(CRITICAL) is None
    assert limiter.queued == 0
    held.release()
    assert limiter.inflight == 0
    assert limiter.try_acquire(CRITICAL) is not None  # no stale waiter took the slot


async def test_a_cancelled_waiter_never_keeps_a_slot() -> None:
    limiter = ConcurrencyLimiter(
        "u", _config(initial_limit=1, min_limit=1, queue_size=4, queue_timeout=5.0)
    )
    held = limiter.try_acquire(CRITICAL)
    assert held is not None
    # Cancelled while waiting.
    waiter = asyncio.create_task(limiter.wait(CRITICAL))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limiter.queued == 0
    # Cancelled just after a slot was handed over, before it could run: the slot returns.
    waiter = asyncio.create_task(limiter.wait(CRITICAL))
    await asyncio.sleep(0)
    held.release()
    assert limiter.inflight == 1  # handed to the waiter
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limiter.inflight == 0
    assert limiter.queued == 0


# -- priority rules -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("route_class", "consumer_class", "requested", "expected"),
    [
        (None, None, None, NORMAL),
        ("low", None, None, LOW),
        (None, "critical", None, CRITICAL),
        ("high", "low", None, LOW),  # a consumer may lower the route's class
        ("low", "critical", None, LOW),  # but never raise it
        ("critical", "high", None, HIGH),
        (None, "low", "high", HIGH),  # a plugin's choice replaces the consumer's
        ("normal", None, "critical", NORMAL),  # and is capped by the route too
        (None, None, "bogus", NORMAL),
    ],
)
def test_priority_rules(
    route_class: str | None, consumer_class: str | None, requested: str | None, expected: int
) -> None:
    doc: dict[str, Any] = {
        "services": [{"name": "s", "url": "http://127.0.0.1:9"}],
        "routes": [{"name": "r", "service": "s", "priority_class": route_class}],
        "consumers": [{"username": "c", "priority_class": consumer_class}],
    }
    config = GatewayConfig.model_validate(doc)
    rules = PriorityRules(config.routes, config.consumers)
    assert rules.classify("r", "c", requested) == expected


def test_anonymous_requests_take_the_routes_class() -> None:
    rules = PriorityRules([Route(name="r", service="s", priority_class="high")], [])
    assert rules.classify("r", None, None) == HIGH
    assert rules.classify("other", None, None) == NORMAL


# -- compile and carry over ---------------------------------------------------------


def _gateway(
    concurrency: dict[str, Any] | None = None, targets: list[str] | None = None, **upstream: Any
) -> GatewayConfig:
    block = {"enabled": True, **(concurrency or {})}
    doc: dict[str, Any] = {
        "upstreams": [
            {
                "name": "u",
                "targets": [{"target": t} for t in (targets or ["10.0.0.1:80"])],
                "adaptive_concurrency": block,
                **upstream,
            },
            {"name": "plain", "targets": [{"target": "10.0.0.2:80"}]},
        ],
        "services": [
            {"name": "a", "upstream": "u"},
            {"name": "b", "upstream": "plain"},
            {"name": "c", "url": "http://10.0.0.3:80", "adaptive_concurrency": block},
        ],
        "routes": [
            {"name": "ra", "service": "a", "paths": ["/a"]},
            {"name": "rb", "service": "b", "paths": ["/b"]},
            {"name": "rc", "service": "c", "paths": ["/c"]},
        ],
    }
    return GatewayConfig.model_validate(doc)


def _service(snapshot: Any, path: str) -> Any:
    match = snapshot.router.match("GET", "", path, [])
    assert match is not None
    return match.payload.service


def test_snapshot_compiles_a_limiter_per_enabled_upstream() -> None:
    config = _gateway()
    snap = build_snapshot(config, 1)
    implicit = implicit_upstream_name(config.services[2])
    assert set(snap.limiters) == {"u", implicit}
    a, b, c = (_service(snap, p) for p in ("/a", "/b", "/c"))
    assert a.shedding.limiter is snap.limiters["u"]
    assert b.shedding is None
    assert c.shedding.limiter is snap.limiters[implicit]
    assert a.shedding.retry_after == b"1"


def test_no_limiters_when_adaptive_concurrency_is_off() -> None:
    config = GatewayConfig.model_validate(
        {
            "services": [{"name": "s", "url": "http://10.0.0.3:80"}],
            "routes": [{"name": "r", "service": "s"}],
        }
    )
    snap = build_snapshot(config, 1)
    assert snap.limiters == {}
    assert _service(snap, "/").shedding is None


def test_learned_state_survives_a_swap_that_leaves_the_upstream_alone() -> None:
    first = build_snapshot(_gateway(), 1)
    limiter = first.limiters["u"]
    permit = limiter.try_acquire(NORMAL)
    assert permit is not None
    limiter.algorithm.limit = 42.0
    # Other upstream settings (tags, health checks) may change without losing what was learned.
    second = build_snapshot(
        _gateway(tags=["x"], healthchecks={"passive": {"unhealthy_failures": 9}}), 2, first
    )
    assert second.limiters["u"] is limiter
    assert _service(second, "/a").shedding.limiter is limiter
    assert limiter.limit == 42.0
    permit.release()  # a request of the old snapshot ends on the same limiter
    assert limiter.inflight == 0


@pytest.mark.parametrize(
    "changed",
    [
        {"concurrency": {"initial_limit": 50}},
        {"concurrency": {"shares": {"low": 0.2}}},
        {"targets": ["10.0.0.1:80", "10.0.0.9:80"]},
    ],
)
def test_a_changed_limit_config_or_target_set_starts_learning_again(
    changed: dict[str, Any],
) -> None:
    first = build_snapshot(_gateway(), 1)
    second = build_snapshot(_gateway(**changed), 2, first)
    assert second.limiters["u"] is not first.limiters["u"]


def test_disabling_drops_the_limiter() -> None:
    first = build_snapshot(_gateway(), 1)
    second = build_snapshot(_gateway({"enabled": False}), 2, first)
    assert "u" not in second.limiters
    assert _service(second, "/a").shedding is None


def test_build_limiters_uses_the_injected_clock() -> None:
    clock = ManualClock()
    (limiter,) = build_limiters(_gateway().upstreams, clock=clock).values()
    permit = limiter.try_acquire(CRITICAL)
    assert permit is not None
    assert permit.started == clock.now
