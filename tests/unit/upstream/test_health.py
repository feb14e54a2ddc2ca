"""Passive and active target health, and the active checker against a fake transport."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from structlog.testing import capture_logs

from portcullis.model import config as model
from portcullis.upstream.balancer import UpstreamPool, build_pools
from portcullis.upstream.health import PROBE_BODY_LIMIT, ActiveHealthChecker, TargetHealth
from portcullis.upstream.transport import (
    ConnectError,
    Origin,
    TransportTimeouts,
    UpstreamRequest,
    UpstreamResponse,
)
from support.clock import ManualClock


def is_up(health: TargetHealth) -> bool:
    """Read health through a call, so mypy does not narrow it across transitions."""
    return health.healthy


def checks(**sections: dict[str, object]) -> model.HealthChecks:
    return model.HealthChecks.model_validate(sections)


def passive_health(clock: ManualClock, **passive: object) -> TargetHealth:
    settings: dict[str, object] = {
        "unhealthy_failures": 3,
        "unhealthy_timeouts": 2,
        "recovery_after": 10.0,
    }
    settings.update(passive)
    return TargetHealth("api", "10.0.0.1:80", checks(passive=settings), clock=clock)


def active_health(clock: ManualClock, **active: object) -> TargetHealth:
    settings: dict[str, object] = {
        "enabled": True,
        "healthy_threshold": 2,
        "unhealthy_threshold": 3,
    }
    settings.update(active)
    config = checks(active=settings, passive={"unhealthy_failures": 2})
    return TargetHealth("api", "10.0.0.1:80", config, clock=clock)


# -- passive -------------------------------------------------------------------------


def test_consecutive_failures_mark_unhealthy() -> None:
    health = passive_health(ManualClock())
    health.record_failure()
    health.record_failure()
    assert is_up(health)
    health.record_failure()
    assert not is_up(health)


def test_a_success_resets_the_failure_count() -> None:
    health = passive_health(ManualClock())
    health.record_failure()
    health.record_failure()
    health.record_success()
    health.record_failure()
    health.record_failure()
    assert is_up(health)


def test_consecutive_timeouts_have_their_own_threshold() -> None:
    health = passive_health(ManualClock())
    health.record_timeout()
    health.record_failure()
    assert is_up(health)
    health.record_timeout()
    assert not is_up(health)


def test_passive_disabled_ignores_failures() -> None:
    health = passive_health(ManualClock(), enabled=False)
    for _ in range(10):
        health.record_failure()
        health.record_timeout()
    assert is_up(health)


def test_without_active_checks_a_failed_target_is_retried_after_recovery_after() -> None:
    clock = ManualClock()
    health = passive_health(clock)
    for _ in range(3):
        health.record_failure()
    clock.advance(9.9)
    assert not is_up(health)
    clock.advance(0.1)
    assert is_up(health)
    assert health.on_probation


def test_probation_failure_marks_down_again_at_once() -> None:
    clock = ManualClock()
    health = passive_health(clock)
    for _ in range(3):
        health.record_failure()
    clock.advance(10.0)
    assert is_up(health)
    health.record_failure()
    assert not is_up(health)
    clock.advance(10.0)  # the timer starts again from the new failure
    assert is_up(health)


def test_probation_success_restores_normal_thresholds() -> None:
    clock = ManualClock()
    health = passive_health(clock)
    for _ in range(2):
        health.record_timeout()
    clock.advance(10.0)
    assert is_up(health)
    health.record_success()
    assert not health.on_probation
    health.record_timeout()
    assert is_up(health)


def test_with_active_checks_only_probes_revive_a_passively_failed_target() -> None:
    clock = ManualClock()
    health = active_health(clock)
    health.record_failure()
    health.record_failure()
    assert not is_up(health)
    clock.advance(3600.0)
    assert not is_up(health)  # no recovery timer when active checks run
    health.record_probe(True)
    assert not is_up(health)
    health.record_probe(True)
    assert is_up(health)


# -- active --------------------------------------------------------------------------


def test_active_thresholds_count_consecutive_results() -> None:
    health = active_health(ManualClock())
    health.record_probe(False)
    health.record_probe(False)
    health.record_probe(True)  # resets the failure streak
    health.record_probe(False)
    health.record_probe(False)
    assert is_up(health)
    health.record_probe(False)
    assert not is_up(health)
    health.record_probe(True)
    health.record_probe(False)  # resets the success streak
    health.record_probe(True)
    assert not is_up(health)
    health.record_probe(True)
    assert is_up(health)


def test_turning_active_checks_off_starts_the_recovery_timer() -> None:
    clock = ManualClock()
    health = active_health(clock)
    for _ in range(3):
        health.record_probe(False)
    assert not is_up(health)
    health.reconfigure(checks(passive={"recovery_after": 5.0}))
    clock.advance(5.0)
    assert is_up(health)


def test_turning_active_checks_on_stops_the_recovery_timer() -> None:
    clock = ManualClock()
    health = passive_health(clock)
    for _ in range(3):
        health.record_failure()
    health.reconfigure(checks(active={"enabled": True, "healthy_threshold": 1}))
    clock.advance(60.0)
    assert not is_up(health)
    health.record_probe(True)
    assert is_up(health)


def test_health_changes_are_logged() -> None:
    clock = ManualClock()
    health = passive_health(clock)
    with capture_logs() as logs:
        for _ in range(3):
            health.record_failure()
        clock.advance(10.0)
        assert is_up(health)
    events = [(e["event"], e["log_level"], e["reason"]) for e in logs]
    assert events == [
        ("upstream_target_unhealthy", "warning", "passive-failures"),
        ("upstream_target_healthy", "info", "recovery-timer"),
    ]
    assert logs[0]["upstream"] == "api"
    assert logs[0]["target"] == "10.0.0.1:80"


# -- the checker, with a scripted transport ---------------------------------------------


async def _chunks(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


class ScriptedTransport:
    """Answers each origin from a script: a status, a list of body chunks, or an exception."""

    def __init__(self) -> None:
        self.script: dict[int, int | BaseException | tuple[int, list[bytes]]] = {}
        self.sent: list[tuple[Origin, UpstreamRequest, TransportTimeouts]] = []
        self.closed = 0
        self.hang = asyncio.Event()

    async def send(
        self, origin: Origin, request: UpstreamRequest, timeouts: TransportTimeouts
    ) -> UpstreamResponse:
        self.sent.append((origin, request, timeouts))
        answer = self.script[origin.port]
        if isinstance(answer, BaseException):
            raise answer
        if answer == 0:
            await self.hang.wait()
        status, parts = answer if isinstance(answer, tuple) else (answer, [b"ok"])
        transport = self

        class Closer:
            async def aclose(self) -> None:
                transport.closed += 1

        return UpstreamResponse(status=status, headers=[], body=_chunks(parts), _closer=Closer())

    async def aclose(self) -> None:
        return None


def checked_pool(ports: list[int], **active: object) -> UpstreamPool:
    settings: dict[str, object] = {
        "enabled": True,
        "path": "/healthz?deep=1",
        "interval": 1.0,
        "timeout": 0.5,
        "healthy_threshold": 1,
        "unhealthy_threshold": 1,
    }
    settings.update(active)
    upstream = model.Upstream.model_validate(
        {
            "name": "api",
            "targets": [{"target": f"127.0.0.1:{p}"} for p in ports],
            "healthchecks": {"active": settings},
        }
    )
    return build_pools([upstream])["api"]


async def test_checker_sends_a_get_to_every_target() -> None:
    pool = checked_pool([8001, 8002])
    transport = ScriptedTransport()
    transport.script = {8001: 200, 8002: 200}
    checker = ActiveHealthChecker(pool, transport, pool.config.healthchecks.active, "https")
    await checker.check_once()
    assert sorted(o.port for o, _, _ in transport.sent) == [8001, 8002]
    origin, request, timeouts = transport.sent[0]
    assert origin.scheme == "https"
    assert request.method == "GET"
    assert request.target == b"/healthz?deep=1"
    assert (b"host", origin.authority.encode()) in request.headers
    assert timeouts == TransportTimeouts(connect=0.5, read=0.5, write=0.5)
    assert transport.closed == 2  # every response is closed


@pytest.mark.parametrize(
    ("answer", "healthy"),
    [
        (200, True),
        (302, True),
        (500, False),
        (404, False),
        (ConnectError("refused"), False),
        (OSError("unreachable"), False),
        (RuntimeError("transport bug"), False),
    ],
)
async def test_checker_classifies_answers(answer: int | BaseException, healthy: bool) -> None:
    pool = checked_pool([8001])
    transport = ScriptedTransport()
    transport.script = {8001: answer}
    checker = ActiveHealthChecker(pool, transport, pool.config.healthchecks.active, "http")
    await checker.check_once()
    assert pool.targets[0].health.healthy is healthy


async def test_checker_times_out_a_hanging_target_without_delaying_others() -> None:
    pool = checked_pool([8001, 8002], timeout=0.05)
    transport = ScriptedTransport()
    transport.script = {8001: 0, 8002: 500}
    checker = ActiveHealthChecker(pool, transport, pool.config.healthchecks.active, "http")
    await asyncio.wait_for(checker.check_once(), timeout=5.0)
    assert [t.health.healthy for t in pool.targets] == [False, False]


async def test_checker_stops_reading_a_huge_body() -> None:
    pool = checked_pool([8001])
    transport = ScriptedTransport()
    transport.script = {8001: (200, [b"x" * PROBE_BODY_LIMIT, b"y", b"z" * 10])}
    checker = ActiveHealthChecker(pool, transport, pool.config.healthchecks.active, "http")
    await checker.check_once()
    assert pool.targets[0].health.healthy
    assert transport.closed == 1


async def test_checker_start_is_idempotent_and_stop_ends_the_task() -> None:
    pool = checked_pool([8001], interval=3600.0)
    transport = ScriptedTransport()
    transport.script = {8001: 500}
    checker = ActiveHealthChecker(pool, transport, pool.config.healthchecks.active, "http")
    checker.start()
    checker.start()
    started = checker.running
    assert started
    for _ in range(10):  # the first round runs at once
        if transport.sent:
            break
        await asyncio.sleep(0)
    assert len(transport.sent) == 1
    await checker.stop()
    assert not checker.running
    await checker.stop()
