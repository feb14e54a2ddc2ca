"""Anomaly detection per credential and per client IP, with an optional auto-suspend policy.

Every closed minute of the raw request log is reduced to a few signals:

- per API key (`credential_id`): `request_rate` (requests in the minute),
  `error_rate` (share of 5xx and gateway-refused requests other than auth
  failures, judged only in minutes with at least `min_error_requests`),
  `auth_failures` (requests flagged AUTH_FAILED or answered 401/403) and
  `distinct_ips` (distinct client addresses);
- per client IP: `ip_auth_failures`, the auth failures from that address whatever
  key was presented. Failures with an unknown key carry no credential id, so
  credential stuffing (many keys tried from few addresses) shows up here rather than
  on any key; the anomaly's details also count the distinct known keys and
  consumers that failed from the address.

Each series has a rolling baseline, an exponentially weighted mean and variance
(`alpha = 2 / (history_minutes + 1)`), fed with one observation a minute (0 for a
tracked subject without traffic in that minute). An observation is anomalous when
its z-score against the baseline before it, `(x - mean) / sd`, reaches
`z_threshold` AND `x` reaches the signal's absolute minimum per minute, so a quiet
key going from 1 to 3 requests is never reported. `sd` is floored (for counts at
`sqrt(mean)`, Poisson noise, and at 1; for the error rate at 0.05), so a perfectly
steady series does not turn a small wobble into a huge score. `request_rate` and
`error_rate` are judged only after `warmup_minutes` of history (a new key ramping
up is not an anomaly); auth failures and distinct IPs are judged from the first
minute (a burst of them is suspicious whatever came before). The anomalous value
still feeds the baseline, so a lasting change is reported once and then learnt;
one subject and signal is reported at most once per `cooldown_seconds`.

The baselines live in memory. A control plane (re)starting warms them up from the
last `history_minutes` of the log, then follows the log minute by minute. Several
control planes compute the same baselines from the same rows; the shared cursor
`analytics_cursors["anomalies"]` (the next minute to report, moved with a
conditional UPDATE in the transaction that stores the minute's anomalies) lets
exactly one of them store and publish each minute's anomalies.

Each anomaly is an `anomalies` row plus an `anomaly.detected` event. With the
policy on (`auto_suspend`) and the signal in `auto_suspend_signals`, the key is
suspended through `KeyRepository.suspend_in` (the admin API's operation, which
appends the identity event that makes every worker refuse the key within a poll
interval), audited as `system:anomaly-detector`, the anomaly's `action` set to
`suspended`, and `key.auto_suspended` published — all in the transaction that
stores the anomaly, so its `anomaly.detected` event carries the action taken.
IP anomalies never suspend anything. A key's anomaly is stored with its
`credential_id`, an address's with its `client_ip` (the other column is null);
event subjects are `key:<id>` and `ip:<address>`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from sqlalchemy import and_, case, func, insert, not_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from portcullis.analytics.jobs import control_job
from portcullis.analytics.record import Flag
from portcullis.events.bus import EventBus, collecting, record_event
from portcullis.events.catalogue import EventType
from portcullis.periodic import Periodic
from portcullis.store.analytics_tables import AnalyticsCursorRow, AnomalyRow, RequestLogRow
from portcullis.store.engine import write_transaction
from portcullis.store.identity_tables import ApiKeyRow

if TYPE_CHECKING:
    from portcullis.identity.key_repository import KeyRepository
    from portcullis.settings import Settings

log = structlog.get_logger(__name__)

ACTOR = "system:anomaly-detector"
CURSOR_JOB = "anomalies"
MINUTE = 60
_AUTH_FAILED = int(Flag.AUTH_FAILED)
ERROR_RATE_SD_FLOOR = 0.05
# A tracked subject whose baseline is this quiet and that was not seen for the whole
# history is forgotten (it would start again from warm-up).
_FORGET_BELOW = 0.5


class Signal(StrEnum):
    REQUEST_RATE = "request_rate"
    ERROR_RATE = "error_rate"
    AUTH_FAILURES = "auth_failures"
    DISTINCT_IPS = "distinct_ips"
    IP_AUTH_FAILURES = "ip_auth_failures"


KEY_SIGNALS = (Signal.REQUEST_RATE, Signal.ERROR_RATE, Signal.AUTH_FAILURES, Signal.DISTINCT_IPS)
WARMED_SIGNALS = frozenset({Signal.REQUEST_RATE, Signal.ERROR_RATE})
SUSPENDABLE_SIGNALS = frozenset(KEY_SIGNALS)


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """Thresholds of the detector (see the module docstring); minima are per minute."""

    history_minutes: int = 60
    warmup_minutes: int = 10
    z_threshold: float = 4.0
    min_requests: int = 100
    min_error_rate: float = 0.2
    min_error_requests: int = 20
    min_auth_failures: int = 10
    min_distinct_ips: int = 10
    ip_min_auth_failures: int = 20
    cooldown_seconds: float = 600.0
    auto_suspend: bool = False
    auto_suspend_signals: frozenset[Signal] = SUSPENDABLE_SIGNALS
    # Client IPs with a baseline at once (beyond: judged against an empty baseline).
    max_tracked_ips: int = 100_000

    @property
    def alpha(self) -> float:
        return 2 / (self.history_minutes + 1)

    def minimum(self, signal: Signal) -> float:
        return {
            Signal.REQUEST_RATE: self.min_requests,
            Signal.ERROR_RATE: self.min_error_rate,
            Signal.AUTH_FAILURES: self.min_auth_failures,
            Signal.DISTINCT_IPS: self.min_distinct_ips,
            Signal.IP_AUTH_FAILURES: self.ip_min_auth_failures,
        }[signal]

    def warmup(self, signal: Signal) -> int:
        return self.warmup_minutes if signal in WARMED_SIGNALS else 0

    def suspends(self, signal: Signal) -> bool:
        return self.auto_suspend and signal in self.auto_suspend_signals

    @classmethod
    def from_settings(cls, settings: Settings) -> DetectorConfig:
        signals = frozenset(Signal(s) for s in settings.anomaly_auto_suspend_signals)
        unknown = signals - SUSPENDABLE_SIGNALS
        if unknown:
            raise ValueError(
                f"anomaly_auto_suspend_signals: {sorted(unknown)} can't suspend a key "
                f"(choose from {sorted(SUSPENDABLE_SIGNALS)})"
            )
        return cls(
            history_minutes=settings.anomaly_history_minutes,
            warmup_minutes=settings.anomaly_warmup_minutes,
            z_threshold=settings.anomaly_z_threshold,
            min_requests=settings.anomaly_min_requests,
            min_error_rate=settings.anomaly_min_error_rate,
            min_auth_failures=settings.anomaly_min_auth_failures,
            min_distinct_ips=settings.anomaly_min_distinct_ips,
            ip_min_auth_failures=settings.anomaly_ip_min_auth_failures,
            cooldown_seconds=settings.anomaly_cooldown_seconds,
            auto_suspend=settings.anomaly_auto_suspend,
            auto_suspend_signals=signals,
        )


# ---------------------------------------------------------------------------- baseline math


class Baseline:
    """Exponentially weighted mean and variance of one series (West's incremental form)."""

    __slots__ = ("mean", "n", "variance")

    def __init__(self) -> None:
        self.mean = 0.0
        self.variance = 0.0
        self.n = 0

    def update(self, x: float, alpha: float) -> None:
        if self.n == 0:
            self.mean, self.variance = x, 0.0
        else:
            diff = x - self.mean
            increment = alpha * diff
            self.mean += increment
            self.variance = (1 - alpha) * (self.variance + diff * increment)
        self.n += 1

    def sd(self, signal: Signal) -> float:
        """The standard deviation used for scores, with the signal's noise floor."""
        raw = math.sqrt(max(self.variance, 0.0))
        if signal is Signal.ERROR_RATE:
            return max(raw, ERROR_RATE_SD_FLOOR)
        return max(raw, math.sqrt(max(self.mean, 0.0)), 1.0)

    def score(self, x: float, signal: Signal) -> float:
        return (x - self.mean) / self.sd(signal)


@dataclass(slots=True)
class KeyMinute:
    """One key's traffic in one minute."""

    requests: int
    errors: int
    auth_failures: int
    distinct_ips: int
    consumer: str | None = None


@dataclass(slots=True)
class IpMinute:
    """The auth failures from one client address in one minute."""

    auth_failures: int
    failing_keys: int = 0
    consumers: int = 0


def key_observations(
    minute: KeyMinute | None, config: DetectorConfig
) -> dict[Signal, float | None]:
    """The signals of one key-minute (None: not observed this minute)."""
    if minute is None:
        return {
            Signal.REQUEST_RATE: 0.0,
            Signal.ERROR_RATE: None,
            Signal.AUTH_FAILURES: 0.0,
            Signal.DISTINCT_IPS: 0.0,
        }
    error_rate = (
        minute.errors / minute.requests if minute.requests >= config.min_error_requests else None
    )
    return {
        Signal.REQUEST_RATE: float(minute.requests),
        Signal.ERROR_RATE: error_rate,
        Signal.AUTH_FAILURES: float(minute.auth_failures),
        Signal.DISTINCT_IPS: float(minute.distinct_ips),
    }


@dataclass(frozen=True, slots=True)
class Finding:
    """One anomalous observation. `subject` is a key id or a client address."""

    minute: int
    subject: str
    is_ip: bool
    signal: Signal
    observed: float
    baseline: float
    sd: float
    score: float
    history: int
    consumer: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def credential_id(self) -> str | None:
        return None if self.is_ip else self.subject

    @property
    def client_ip(self) -> str | None:
        return self.subject if self.is_ip else None

    @property
    def event_subject(self) -> str:
        return ("ip:" if self.is_ip else "key:") + self.subject


class Detector:
    """The in-memory baselines and the judgement of each minute (no I/O)."""

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self.keys: dict[str, dict[Signal, Baseline]] = {}
        self.ips: dict[str, Baseline] = {}
        self._last_seen: dict[tuple[bool, str], int] = {}
        self._reported: dict[tuple[bool, str, Signal], int] = {}

    def judge(
        self, baseline: Baseline, x: float, signal: Signal, minute: int, is_ip: bool, subject: str
    ) -> float | None:
        """The score when `x` is anomalous (and not in its cooldown), else None."""
        config = self.config
        if baseline.n < config.warmup(signal) or x < config.minimum(signal):
            return None
        score = baseline.score(x, signal)
        if score < config.z_threshold:
            return None
        last = self._reported.get((is_ip, subject, signal))
        if last is not None and minute - last < config.cooldown_seconds:
            return None
        self._reported[(is_ip, subject, signal)] = minute
        return score

    def step(
        self,
        minute: int,
        keys: Mapping[str, KeyMinute],
        ips: Mapping[str, IpMinute],
    ) -> list[Finding]:
        """Judge one minute against the baselines, then fold it into them."""
        config = self.config
        findings: list[Finding] = []
        for key_id in sorted(set(self.keys) | set(keys)):
            seen = keys.get(key_id)
            series = self.keys.setdefault(key_id, {s: Baseline() for s in KEY_SIGNALS})
            if seen is not None:
                self._last_seen[(False, key_id)] = minute
            for signal, x in key_observations(seen, config).items():
                if x is None:
                    continue
                baseline = series[signal]
                score = self.judge(baseline, x, signal, minute, False, key_id)
                if score is not None:
                    findings.append(
                        Finding(
                            minute,
                            key_id,
                            False,
                            signal,
                            x,
                            baseline.mean,
                            baseline.sd(signal),
                            score,
                            baseline.n,
                            seen.consumer if seen else None,
                            _key_details(seen),
                        )
                    )
                baseline.update(x, config.alpha)
        for address in sorted(set(self.ips) | set(ips)):
            failures = ips.get(address)
            x = float(failures.auth_failures) if failures else 0.0
            tracked = self.ips.get(address)
            if tracked is None and failures is not None and len(self.ips) < config.max_tracked_ips:
                tracked = self.ips[address] = Baseline()
            baseline = tracked if tracked is not None else Baseline()
            if failures is not None:
                self._last_seen[(True, address)] = minute
            score = self.judge(baseline, x, Signal.IP_AUTH_FAILURES, minute, True, address)
            if score is not None and failures is not None:
                findings.append(
                    Finding(
                        minute,
                        address,
                        True,
                        Signal.IP_AUTH_FAILURES,
                        x,
                        baseline.mean,
                        baseline.sd(Signal.IP_AUTH_FAILURES),
                        score,
                        baseline.n,
                        None,
                        {"failing_keys": failures.failing_keys, "consumers": failures.consumers},
                    )
                )
            baseline.update(x, config.alpha)
        self._forget(minute)
        return findings

    def _forget(self, minute: int) -> None:
        horizon = minute - self.config.history_minutes * MINUTE
        for (is_ip, subject), last in list(self._last_seen.items()):
            if last >= horizon:
                continue
            if is_ip:
                baseline = self.ips.get(subject)
                quiet = baseline is None or baseline.mean < _FORGET_BELOW
            else:
                series = self.keys.get(subject, {})
                quiet = all(b.mean < _FORGET_BELOW for b in series.values())
            if quiet:
                del self._last_seen[(is_ip, subject)]
                (self.ips if is_ip else self.keys).pop(subject, None)
        cooldown = self.config.cooldown_seconds
        for reported, at in list(self._reported.items()):
            if minute - at >= cooldown:
                del self._reported[reported]


def _key_details(seen: KeyMinute | None) -> dict[str, Any]:
    if seen is None:
        return {}
    return {
        "requests": seen.requests,
        "errors": seen.errors,
        "auth_failures": seen.auth_failures,
        "distinct_ips": seen.distinct_ips,
    }


# ---------------------------------------------------------------------------- reading the log


def _auth_failed() -> Any:
    return or_(
        RequestLogRow.flags.op("&")(_AUTH_FAILED) != 0,
        RequestLogRow.status.in_((401, 403)),
    )


async def read_minutes(
    conn: AsyncConnection, begin: int, end: int
) -> tuple[dict[int, dict[str, KeyMinute]], dict[int, dict[str, IpMinute]]]:
    """Per-minute key and client-IP aggregates of the raw rows in [begin, end) (epoch s)."""
    t = RequestLogRow
    bucket = (t.ts_ms - t.ts_ms % 60_000).label("bucket")
    window = (t.ts_ms >= begin * 1000, t.ts_ms < end * 1000)
    failed = _auth_failed()
    error = or_(t.status >= 500, and_(t.error_kind.is_not(None), not_(failed)))
    key_query = (
        select(
            t.credential_id,
            bucket,
            func.count(),
            func.sum(case((error, 1), else_=0)),
            func.sum(case((failed, 1), else_=0)),
            func.count(func.distinct(t.client_ip)),
            func.max(t.consumer),
        )
        .where(*window, t.credential_id.is_not(None))
        .group_by(t.credential_id, bucket)
    )
    keys: dict[int, dict[str, KeyMinute]] = {}
    for key_id, ms, requests, errors, failures, addresses, consumer in await conn.execute(
        key_query
    ):
        keys.setdefault(int(ms) // 1000, {})[key_id] = KeyMinute(
            int(requests), int(errors or 0), int(failures or 0), int(addresses), consumer
        )
    ip_query = (
        select(
            t.client_ip,
            bucket,
            func.count(),
            func.count(func.distinct(t.credential_id)),
            func.count(func.distinct(t.consumer)),
        )
        .where(*window, failed)
        .group_by(t.client_ip, bucket)
    )
    ips: dict[int, dict[str, IpMinute]] = {}
    for address, ms, failures, failing_keys, consumers in await conn.execute(ip_query):
        ips.setdefault(int(ms) // 1000, {})[address] = IpMinute(
            int(failures), int(failing_keys), int(consumers)
        )
    return keys, ips


# ---------------------------------------------------------------------------- the job


class LostRace(Exception):
    """Another control plane moved the cursor first."""


async def read_cursor(conn: AsyncConnection) -> int | None:
    value = await conn.scalar(
        select(AnalyticsCursorRow.position).where(AnalyticsCursorRow.job == CURSOR_JOB)
    )
    return None if value is None else int(value)


async def move_cursor(conn: AsyncConnection, expected: int | None, new: int) -> None:
    """Set the cursor to `new` if it still is `expected`; `LostRace` (or `IntegrityError`
    for two first inserts) otherwise."""
    now = datetime.now(UTC)
    if expected is None:
        # Two first inserts: the second fails with IntegrityError (the caller's race too).
        await conn.execute(
            insert(AnalyticsCursorRow).values(job=CURSOR_JOB, position=new, updated_at=now)
        )
        return
    result = await conn.execute(
        update(AnalyticsCursorRow)
        .where(AnalyticsCursorRow.job == CURSOR_JOB, AnalyticsCursorRow.position == expected)
        .values(position=new, updated_at=now)
    )
    if result.rowcount != 1:
        raise LostRace


@dataclass(frozen=True, slots=True)
class StoredAnomaly:
    """A stored anomaly and what the policy did about it."""

    id: int
    finding: Finding
    action: str


def _details(finding: Finding) -> dict[str, Any]:
    return {
        "minute": datetime.fromtimestamp(finding.minute, UTC).isoformat().replace("+00:00", "Z"),
        "sd": round(finding.sd, 6),
        "history_minutes": finding.history,
        **finding.details,
    }


class SystemAudit(Protocol):
    """The audit log as the detector needs it: one entry written by the system (no
    caller, no request) in the transaction of the change it records."""

    async def record_system(
        self,
        conn: AsyncConnection,
        *,
        actor: str,
        action: str,
        resource_type: str,
        resource_id: str,
        before: Any,
        after: Any,
    ) -> None: ...


class AnomalyDetector:
    """Follows the request log minute by minute (see the module docstring)."""

    def __init__(
        self,
        engine: AsyncEngine,
        bus: EventBus,
        config: DetectorConfig,
        *,
        keys: KeyRepository | None = None,
        audit: SystemAudit | None = None,
        lateness: float = 11.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if config.auto_suspend and (keys is None or audit is None):
            raise ValueError("auto-suspend needs the key repository and the audit log")
        self._engine = engine
        self._bus = bus
        self.detector = Detector(config)
        self._keys = keys
        self._audit = audit
        self._lateness = lateness
        self._clock = clock or (lambda: datetime.now(UTC))
        # The first minute not yet fed to the baselines (None: not warmed up).
        self.through: int | None = None

    @property
    def config(self) -> DetectorConfig:
        return self.detector.config

    async def run_once(self, now: datetime | None = None) -> list[StoredAnomaly]:
        """Follow the log up to the last closed minute; returns what this process stored."""
        moment = now if now is not None else self._clock()
        ready_end = int(moment.timestamp() - self._lateness) // MINUTE * MINUTE
        history = self.config.history_minutes * MINUTE
        async with self._engine.connect() as conn:
            position = await read_cursor(conn)
        first_report = ready_end - MINUTE if position is None else position
        first_report = max(first_report, ready_end - history)
        if self.through is None or self.through < ready_end - 2 * history:
            self.detector = Detector(self.config)
            self.through = first_report - history
        if self.through >= ready_end:
            return []
        async with self._engine.connect() as conn:
            keys, ips = await read_minutes(conn, self.through, ready_end)
        stored: list[StoredAnomaly] = []
        for minute in range(self.through, ready_end, MINUTE):
            findings = self.detector.step(minute, keys.get(minute, {}), ips.get(minute, {}))
            self.through = minute + MINUTE
            if minute < first_report or (position is not None and minute < position):
                continue  # baseline only: before the reporting range, or already reported
            try:
                stored += await self._report(minute, position, findings, moment)
            except (LostRace, IntegrityError):
                async with self._engine.connect() as conn:
                    position = await read_cursor(conn)
                continue
            position = minute + MINUTE
        return stored

    async def _report(
        self, minute: int, position: int | None, findings: list[Finding], now: datetime
    ) -> list[StoredAnomaly]:
        """Store one minute's anomalies with the cursor move and what the policy did.

        One transaction: the anomalies, the suspensions the policy makes (with their
        audit entries) and the events. So `anomaly.detected` carries the action
        actually taken, and a lost race on the cursor undoes all of it.
        """
        stored: list[StoredAnomaly] = []
        done: set[str] = set()
        async with write_transaction(self._engine) as conn:
            with collecting(conn) as events:
                await move_cursor(conn, position, minute + MINUTE)
                await self._lock_keys(conn, findings)
                for finding in findings:
                    stored.append(await self._store_finding(conn, finding, done, now))
        if events:
            await self._bus.deliver(events)
            for item in stored:
                log.warning(
                    "anomaly.detected",
                    subject=item.finding.event_subject,
                    signal=str(item.finding.signal),
                    observed=item.finding.observed,
                    baseline=round(item.finding.baseline, 3),
                    score=round(item.finding.score, 2),
                    action=item.action,
                )
                if item.action == "suspended":
                    log.warning(
                        "anomaly.key_suspended",
                        credential_id=item.finding.credential_id,
                        anomaly_id=item.id,
                    )
        return stored

    async def _lock_keys(self, conn: AsyncConnection, findings: list[Finding]) -> None:
        """Lock every key the policy may suspend before the first event is recorded: the
        event-order lock, held from then to commit, must never wait on a row lock
        (decision 017). SQLite's single writer needs none of it."""
        ids = sorted(
            {
                f.credential_id
                for f in findings
                if f.credential_id is not None and self.config.suspends(f.signal)
            }
        )
        if ids and conn.dialect.name == "postgresql":
            await conn.execute(
                select(ApiKeyRow.id)
                .where(ApiKeyRow.id.in_(ids))
                .order_by(ApiKeyRow.id)
                .with_for_update()
            )

    async def _store_finding(
        self, conn: AsyncConnection, finding: Finding, done: set[str], now: datetime
    ) -> StoredAnomaly:
        """One anomaly, what the policy did about it, and its events (`key.suspended` comes
        from the key store, `anomaly.detected` and `key.auto_suspended` from here)."""
        anomaly_id = await self._insert(conn, finding, now)
        key_id = finding.credential_id
        suspended: dict[str, Any] | None = None
        if key_id is not None and key_id not in done and self.config.suspends(finding.signal):
            done.add(key_id)
            suspended = await self._suspend(conn, anomaly_id, finding, key_id, now)
        action = "none" if suspended is None else "suspended"
        await record_event(
            conn,
            EventType.ANOMALY_DETECTED,
            finding.event_subject,
            _event_data(anomaly_id, finding, action),
            now=now,
        )
        if suspended is not None:
            await record_event(
                conn, EventType.KEY_AUTO_SUSPENDED, finding.event_subject, suspended, now=now
            )
        return StoredAnomaly(anomaly_id, finding, action)

    async def _insert(self, conn: AsyncConnection, finding: Finding, now: datetime) -> int:
        result = await conn.execute(
            insert(AnomalyRow).values(
                detected_at=now,
                credential_id=finding.credential_id,
                client_ip=finding.client_ip,
                consumer=finding.consumer,
                signal=str(finding.signal),
                observed=finding.observed,
                baseline=finding.baseline,
                score=finding.score,
                action="none",
                details=json.dumps(_details(finding), separators=(",", ":"), sort_keys=True),
            )
        )
        (anomaly_id,) = result.inserted_primary_key or (None,)
        if anomaly_id is None:  # pragma: no cover - every supported driver reports the new id
            raise RuntimeError("the store did not report the new anomaly's id")
        return int(anomaly_id)

    async def _suspend(
        self, conn: AsyncConnection, anomaly_id: int, finding: Finding, key_id: str, now: datetime
    ) -> dict[str, Any] | None:
        """Suspend the key in `conn`'s transaction; its `key.auto_suspended` data, or None."""
        from portcullis.identity.key_repository import KeyConflict, KeyNotFound

        assert self._keys is not None  # checked in __init__
        assert self._audit is not None
        reason = (
            f"automatically suspended: anomaly {anomaly_id} ({finding.signal} {finding.observed:g}"
            f" vs baseline {finding.baseline:.1f}, z={finding.score:.1f})"
        )
        try:
            # Raises before writing anything, so the transaction goes on either way.
            before, after = await self._keys.suspend_in(conn, key_id, reason)
        except (KeyNotFound, KeyConflict) as exc:
            # Not an API key (another kind of credential), or not active any more.
            log.info("anomaly.not_suspended", credential_id=key_id, reason=str(exc))
            return None
        await conn.execute(
            update(AnomalyRow).where(AnomalyRow.id == anomaly_id).values(action="suspended")
        )
        await self._audit.record_system(
            conn,
            actor=ACTOR,
            action="suspend",
            resource_type="api_key",
            resource_id=key_id,
            before=before.as_json(now),
            after=after.as_json(now),
        )
        return {
            "credential_id": key_id,
            "consumer": after.consumer,
            "anomaly_id": anomaly_id,
            "signal": str(finding.signal),
            "reason": reason,
        }


def _event_data(anomaly_id: int, finding: Finding, action: str) -> dict[str, Any]:
    return {
        "anomaly_id": anomaly_id,
        "credential_id": finding.credential_id,
        "client_ip": finding.client_ip,
        "consumer": finding.consumer,
        "signal": str(finding.signal),
        "observed": finding.observed,
        "baseline": finding.baseline,
        "score": finding.score,
        "minute": datetime.fromtimestamp(finding.minute, UTC).isoformat().replace("+00:00", "Z"),
        "action": action,
    }


def anomaly_job(
    engine: AsyncEngine,
    settings: Settings,
    bus: EventBus,
    *,
    keys: KeyRepository,
    audit: SystemAudit,
) -> Periodic:
    """The background job: follow the request log every `anomaly_interval` seconds."""
    detector = AnomalyDetector(
        engine,
        bus,
        DetectorConfig.from_settings(settings),
        keys=keys,
        audit=audit,
        lateness=settings.analytics_rollup_lateness + settings.request_log_flush_interval,
    )
    return control_job("anomalies", detector.run_once, settings.anomaly_interval)
