"""Target health: passive (inferred from proxied traffic) and active (periodic probes).

Each target has one `TargetHealth`, shared by both kinds of check:

- Passive: consecutive failures or consecutive timeouts of real requests mark
  a target unhealthy. Without active checks nothing would ever see it recover,
  so it is tried again after `recovery_after` seconds, on probation: the first
  failure then marks it down again at once, the first success clears it.
- Active: an `ActiveHealthChecker` task per upstream sends `GET path` to every
  target each `interval`; `unhealthy_threshold` consecutive bad probes mark a
  target down and `healthy_threshold` consecutive good ones bring it back. With
  active checks on, only they revive a target that passive checks took down.

Every change of health is logged with structlog.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import quote

import structlog

from portcullis.model import config as model
from portcullis.periodic import Periodic
from portcullis.upstream.transport import (
    Transport,
    TransportTimeouts,
    UpstreamError,
    UpstreamRequest,
)

if TYPE_CHECKING:
    from portcullis.upstream.balancer import TargetState, UpstreamPool
    from portcullis.upstream.tls import OriginTls

log = structlog.get_logger()

Clock = Callable[[], float]

# A probe reads at most this much of a response body; a larger body is dropped
# with its connection rather than streamed in full every interval.
PROBE_BODY_LIMIT = 64 * 1024
PROBE_USER_AGENT = b"portcullis-healthcheck/1"


class TargetHealth:
    """The health of one upstream target, fed by passive and active checks.

    `up` is the health as last marked, a plain attribute the balancer reads
    first for every candidate; `healthy` adds the recovery timer, which may
    bring a down target back.
    """

    __slots__ = (
        "_active_bad",
        "_active_enabled",
        "_active_good",
        "_clock",
        "_failures",
        "_healthy_threshold",
        "_passive",
        "_probation",
        "_retry_at",
        "_timeouts",
        "_unhealthy_threshold",
        "target",
        "up",
        "upstream",
    )

    def __init__(
        self,
        upstream: str,
        target: str,
        checks: model.HealthChecks,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        self.upstream = upstream
        self.target = target
        self._clock = clock
        self.up = True
        self._probation = False
        self._retry_at: float | None = None
        self._failures = 0
        self._timeouts = 0
        self._active_good = 0
        self._active_bad = 0
        self._passive = checks.passive
        self._active_enabled = checks.active.enabled
        self._healthy_threshold = checks.active.healthy_threshold
        self._unhealthy_threshold = checks.active.unhealthy_threshold

    def reconfigure(self, checks: model.HealthChecks) -> None:
        """Adopt new check settings, keeping the current health and counters.

        Turning active checks off starts the recovery timer for a target that
        is down; turning them on leaves its recovery to the probes.
        """
        self._passive = checks.passive
        self._healthy_threshold = checks.active.healthy_threshold
        self._unhealthy_threshold = checks.active.unhealthy_threshold
        was_active = self._active_enabled
        self._active_enabled = checks.active.enabled
        if not self.up:
            if self._active_enabled:
                self._retry_at = None
            elif was_active:
                self._retry_at = self._clock() + self._passive.recovery_after

    @property
    def healthy(self) -> bool:
        """Whether the balancer may send traffic here (recovery timer included)."""
        if self.up:
            return True
        retry_at = self._retry_at
        if retry_at is not None and self._clock() >= retry_at:
            self._probation = True
            self._mark_healthy("recovery-timer")
        return self.up

    @property
    def on_probation(self) -> bool:
        """True after a timer recovery until the next passive outcome."""
        return self._probation

    def record_success(self) -> None:
        """A proxied request got a non-failure response."""
        self._failures = 0
        self._timeouts = 0
        self._probation = False

    def record_failure(self) -> None:
        """A proxied request failed: a failure status or a connection error."""
        passive = self._passive
        if not passive.enabled or not self.up:
            return
        self._failures += 1
        if self._probation or self._failures >= passive.unhealthy_failures:
            self._mark_unhealthy("passive-failures", count=self._failures)

    def record_timeout(self) -> None:
        """A proxied request timed out."""
        passive = self._passive
        if not passive.enabled or not self.up:
            return
        self._timeouts += 1
        if self._probation or self._timeouts >= passive.unhealthy_timeouts:
            self._mark_unhealthy("passive-timeouts", count=self._timeouts)

    def record_probe(self, ok: bool, detail: str = "") -> None:
        """Count one active probe result against the healthy/unhealthy thresholds."""
        if ok:
            self._active_bad = 0
            self._active_good += 1
            if not self.up and self._active_good >= self._healthy_threshold:
                self._mark_healthy("active-check", detail=detail)
        else:
            self._active_good = 0
            self._active_bad += 1
            if self.up and self._active_bad >= self._unhealthy_threshold:
                self._mark_unhealthy("active-check", count=self._active_bad, detail=detail)

    def _mark_unhealthy(self, reason: str, **fields: object) -> None:
        self.up = False
        self._probation = False
        self._failures = 0
        self._timeouts = 0
        self._active_good = 0
        self._active_bad = 0
        self._retry_at = (
            None if self._active_enabled else self._clock() + self._passive.recovery_after
        )
        log.warning(
            "upstream_target_unhealthy",
            upstream=self.upstream,
            target=self.target,
            reason=reason,
            **fields,
        )

    def _mark_healthy(self, reason: str, **fields: object) -> None:
        self.up = True
        self._retry_at = None
        self._failures = 0
        self._timeouts = 0
        self._active_good = 0
        self._active_bad = 0
        log.info(
            "upstream_target_healthy",
            upstream=self.upstream,
            target=self.target,
            reason=reason,
            **fields,
        )


class ActiveHealthChecker:
    """One asyncio task per upstream that probes all its targets every `interval`.

    Each round launches one probe per target, bounded by `timeout`, and does
    not wait for them: a hanging target delays neither the other targets nor
    the next round. A target whose previous probe is still running is skipped
    for that round, so probes to one target never overlap. Results go into
    each target's `TargetHealth`, which survives config swaps, so a checker
    started for a rebuilt pool continues from the old counts.
    """

    def __init__(
        self,
        pool: UpstreamPool,
        transport: Transport,
        config: model.ActiveHealthCheck,
        scheme: str,
        tls: OriginTls | None = None,
    ) -> None:
        self._pool = pool
        self._tls = tls
        self._transport = transport
        self._config = config
        self._scheme = scheme
        self._healthy_statuses = frozenset(config.healthy_statuses)
        self._path = quote(config.path, safe="/:@!$&'()*+,;=?%-._~").encode("ascii")
        self._timeouts = TransportTimeouts(
            connect=config.timeout, read=config.timeout, write=config.timeout
        )
        self._probes: dict[TargetState, asyncio.Task[None]] = {}
        # A round only launches the probes (each target's own task), so it takes no time
        # and the rounds keep the configured cadence.
        self._rounds = Periodic(
            f"health:{pool.name}", self._launch_round, interval=config.interval, immediate=True
        )

    @property
    def running(self) -> bool:
        return self._rounds.running

    def start(self) -> None:
        """Start probing (first round at once); a second call does nothing."""
        self._rounds.start()

    async def stop(self) -> None:
        """Stop the rounds, cancel any probe in flight, and wait for them to end."""
        await self._rounds.stop()
        tasks = list(self._probes.values())
        self._probes.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def _launch_round(self) -> None:
        loop = asyncio.get_running_loop()
        probes = self._probes
        for target in self._pool.targets:
            previous = probes.get(target)
            if previous is None or previous.done():
                probes[target] = loop.create_task(self._probe(target))

    async def check_once(self) -> None:
        """Probe every target once, wait for all results and record them."""
        targets = self._pool.targets
        if targets:
            await asyncio.gather(*(self._probe(t) for t in targets))

    async def _probe(self, target: TargetState) -> None:
        ok, detail = await self._send_probe(target)
        target.health.record_probe(ok, detail)

    async def _send_probe(self, target: TargetState) -> tuple[bool, str]:
        origin = target.origin(self._scheme, self._tls)
        try:
            request = UpstreamRequest(
                method="GET",
                target=self._path,
                headers=[
                    (b"host", origin.authority.encode("idna")),
                    (b"user-agent", PROBE_USER_AGENT),
                    (b"accept", b"*/*"),
                ],
            )
            async with asyncio.timeout(self._config.timeout):
                response = await self._transport.send(origin, request, self._timeouts)
                try:
                    seen = 0
                    async for chunk in response.body:
                        seen += len(chunk)
                        if seen > PROBE_BODY_LIMIT:
                            break
                finally:
                    await response.aclose()
        except TimeoutError:
            return False, "timeout"
        except UpstreamError as exc:
            return False, exc.kind
        except OSError as exc:
            return False, f"os-error: {exc}"
        except Exception as exc:
            # A transport bug must not kill the checker task: count it as a
            # failed probe and leave a trace of what happened.
            log.exception(
                "health_probe_error", upstream=self._pool.name, target=target.health.target
            )
            return False, f"error: {type(exc).__name__}"
        status = response.status
        if status in self._healthy_statuses:
            return True, f"status {status}"
        return False, f"status {status}"
