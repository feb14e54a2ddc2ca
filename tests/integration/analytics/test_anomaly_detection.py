"""Anomaly detection on a real request log (SQLite and PostgreSQL): a burst on one key,
credential stuffing (one address trying many keys; one key used from many addresses),
the auto-suspend policy with its audit entry, restarts and two detectors racing."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.admin.background import SystemAuditTrail
from portcullis.analytics.anomalies import AnomalyDetector, DetectorConfig, Signal
from portcullis.analytics.record import Flag
from portcullis.events.bus import InProcessBus, read_events
from portcullis.identity.events import IdentityEventFeed
from portcullis.identity.key_admin import KeySpec
from portcullis.identity.key_records import KeyStatus
from portcullis.identity.key_repository import KeyRepository
from portcullis.identity.secrets import ServerSecret
from portcullis.services.audit import AuditFilter, AuditLog
from portcullis.store.analytics_tables import AnalyticsCursorRow, AnomalyRow, RequestLogRow
from portcullis.store.engine import create_engine, write_transaction
from portcullis.store.migrations import upgrade_to_head

N = 1_900_000_020 // 60 * 60  # a minute boundary (2030)
LATENESS = 11.0
CONFIG = DetectorConfig(history_minutes=30, warmup_minutes=5)
SECRET = ServerSecret.from_secret(b"s" * 32)
_ids = itertools.count()


def now_after(minute: int) -> datetime:
    """A time at which minute `minute` (relative to N) is the last closed one."""
    return datetime.fromtimestamp(N + (minute + 1) * 60 + LATENESS + 1, UTC)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await upgrade_to_head(database_url)
    eng = create_engine(database_url)
    yield eng
    await eng.dispose()


def row(
    minute: int,
    *,
    key: str | None,
    ip: str = "192.0.2.10",
    status: int = 200,
    flags: int = 0,
    consumer: str | None = "acme",
    error_kind: str | None = None,
    second: int = 0,
) -> dict[str, Any]:
    return {
        "ts_ms": (N + minute * 60 + second % 60) * 1000 + 123,
        "request_id": f"r{next(_ids)}",
        "node": "test",
        "method": "GET",
        "path": "/orders",
        "path_template": "/orders",
        "route": "orders",
        "service": "shop",
        "upstream_target": None,
        "consumer": consumer if key else None,
        "credential_id": key,
        "status": status,
        "bytes_in": 0,
        "bytes_out": 10,
        "client_ip": ip,
        "user_agent": "test",
        "latency_ms": 5.0,
        "upstream_ms": 4.0,
        "gateway_ms": 1.0,
        "flags": flags,
        "error_kind": error_kind,
        "trace_id": None,
        "priority": None,
    }


async def add(engine: AsyncEngine, rows: list[dict[str, Any]]) -> None:
    async with write_transaction(engine) as conn:
        for start in range(0, len(rows), 500):
            await conn.execute(insert(RequestLogRow), rows[start : start + 500])


def steady(key: str, minutes: range, per_minute: int = 10) -> list[dict[str, Any]]:
    return [row(m, key=key, second=s) for m in minutes for s in range(per_minute)]


async def anomalies(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(AnomalyRow).order_by(AnomalyRow.id))).all())


async def cursor(engine: AsyncEngine) -> int | None:
    async with engine.connect() as conn:
        value = await conn.scalar(
            select(AnalyticsCursorRow.position).where(AnalyticsCursorRow.job == "anomalies")
        )
    return None if value is None else int(value)


def detector(engine: AsyncEngine, config: DetectorConfig = CONFIG, **kwargs: Any) -> Any:
    return AnomalyDetector(engine, InProcessBus(engine), config, lateness=LATENESS, **kwargs)


async def test_a_burst_on_one_key_raises_a_request_rate_anomaly(engine: AsyncEngine) -> None:
    await add(engine, steady("k1", range(-20, 0)) + steady("k2", range(-20, 1)))
    await add(engine, steady("k1", range(1), per_minute=600))
    bus = InProcessBus(engine)
    subscription = bus.subscribe(["anomaly.detected"])
    found = await AnomalyDetector(engine, bus, CONFIG, lateness=LATENESS).run_once(now_after(0))
    assert [(a.finding.subject, a.finding.signal, a.action) for a in found] == [
        ("k1", Signal.REQUEST_RATE, "none")
    ]
    (stored,) = await anomalies(engine)
    assert (stored.credential_id, stored.consumer, stored.signal, stored.observed) == (
        "k1",
        "acme",
        "request_rate",
        600,
    )
    assert stored.baseline == pytest.approx(10)
    assert stored.score > 100
    assert stored.action == "none"
    details = json.loads(stored.details)
    assert details["minute"] == datetime.fromtimestamp(N, UTC).isoformat().replace("+00:00", "Z")
    assert details["requests"] == 600
    (event,) = await read_events(engine)
    assert (event.kind, event.subject) == ("anomaly.detected", "key:k1")
    assert event.data["anomaly_id"] == stored.id
    assert event.data["signal"] == "request_rate"
    assert await asyncio.wait_for(subscription.get(), 1) == event
    assert await cursor(engine) == N + 60


async def test_each_minute_is_reported_once_even_across_restarts(engine: AsyncEngine) -> None:
    await add(engine, steady("k1", range(-20, 0)) + steady("k1", range(1), per_minute=600))
    config = DetectorConfig(history_minutes=30, warmup_minutes=5, cooldown_seconds=120)
    first = detector(engine, config)
    assert len(await first.run_once(now_after(0))) == 1
    assert await first.run_once(now_after(0)) == []  # nothing new closed
    await add(engine, steady("k1", range(1, 3)))
    assert await first.run_once(now_after(2)) == []  # back to normal: nothing
    # A restarted control plane warms up from the log and does not report old minutes.
    restarted = detector(engine, config)
    assert await restarted.run_once(now_after(2)) == []
    await add(engine, steady("k1", range(3, 4), per_minute=900))
    later = await restarted.run_once(now_after(3))
    assert [(a.finding.subject, a.finding.signal) for a in later] == [("k1", "request_rate")]
    assert len(await anomalies(engine)) == 2
    assert await cursor(engine) == N + 4 * 60


async def test_two_detectors_racing_store_each_anomaly_once(
    database_url: str, engine: AsyncEngine
) -> None:
    await add(engine, steady("k1", range(-20, 0)) + steady("k1", range(1), per_minute=600))
    other = create_engine(database_url)
    try:
        a, b = await asyncio.gather(
            detector(engine).run_once(now_after(0)), detector(other).run_once(now_after(0))
        )
    finally:
        await other.dispose()
    assert len(a) + len(b) == 1
    assert len(await anomalies(engine)) == 1
    assert len(await read_events(engine)) == 1


def failures_from_one_address(minute: int, count: int) -> list[dict[str, Any]]:
    """Credential stuffing: one address presenting `count` unknown keys (401, no credential)."""
    return [
        row(minute, key=None, ip="203.0.113.9", status=401, flags=int(Flag.AUTH_FAILED), second=n)
        for n in range(count)
    ]


def one_key_from_many_addresses(minute: int, key: str, count: int) -> list[dict[str, Any]]:
    """A leaked key tried from `count` addresses, refused (e.g. by its IP allowlist)."""
    return [
        row(minute, key=key, ip=f"198.51.100.{n}", status=403, flags=int(Flag.AUTH_FAILED))
        for n in range(count)
    ]


async def test_credential_stuffing_is_detected_per_address_and_per_key(
    engine: AsyncEngine,
) -> None:
    background = [
        row(m, key=None, ip=f"192.0.2.{m + 30}", status=401, flags=int(Flag.AUTH_FAILED))
        for m in range(-20, 1)
    ]
    await add(engine, background + steady("k1", range(-20, 1)) + steady("k2", range(-20, 0)))
    await add(engine, failures_from_one_address(0, 300))
    await add(engine, one_key_from_many_addresses(0, "k2", 60))
    found = await detector(engine).run_once(now_after(0))
    by_subject = sorted((a.finding.event_subject, str(a.finding.signal)) for a in found)
    assert by_subject == [
        ("ip:203.0.113.9", "ip_auth_failures"),
        ("key:k2", "auth_failures"),
        ("key:k2", "distinct_ips"),
    ]
    stored = {(a.credential_id or a.client_ip, a.signal): a for a in await anomalies(engine)}
    address = stored["203.0.113.9", "ip_auth_failures"]
    assert (address.credential_id, address.client_ip) == (None, "203.0.113.9")
    assert address.observed == 300
    assert address.consumer is None
    assert "client_ip" not in json.loads(address.details)
    assert stored["k2", "distinct_ips"].client_ip is None
    assert stored["k2", "distinct_ips"].observed == 60
    assert stored["k2", "auth_failures"].observed == 60
    kinds = [(e.kind, e.subject, e.data["client_ip"]) for e in await read_events(engine)]
    assert ("anomaly.detected", "ip:203.0.113.9", "203.0.113.9") in kinds


async def test_auto_suspend_suspends_the_key_with_an_audit_entry(engine: AsyncEngine) -> None:
    keys = KeyRepository(engine, SECRET)
    created = await keys.create("acme", KeySpec(name="mobile"), created_by="t", organization=None)
    key_id = created.info.id
    await add(engine, steady(key_id, range(-20, 0)))
    await add(engine, steady(key_id, range(1), per_minute=700))
    feed = IdentityEventFeed(engine)
    before = await feed.latest()
    audit = AuditLog(engine)
    bus = InProcessBus(engine)
    subscription = bus.subscribe()
    config = DetectorConfig(
        history_minutes=30,
        warmup_minutes=5,
        auto_suspend=True,
        auto_suspend_signals=frozenset({Signal.REQUEST_RATE}),
    )
    found = await AnomalyDetector(
        engine, bus, config, keys=keys, audit=SystemAuditTrail(audit), lateness=LATENESS
    ).run_once(now_after(0))
    assert [(a.finding.signal, a.action) for a in found] == [(Signal.REQUEST_RATE, "suspended")]

    info = await keys.get(key_id)
    assert info.status is KeyStatus.suspended
    assert info.status_reason is not None
    assert info.status_reason.startswith(f"automatically suspended: anomaly {found[0].id}")
    # The suspension went through the identity feed that makes workers refuse the key.
    assert await feed.latest() > before
    (entry,) = await audit.page(
        AuditFilter(actor="system:anomaly-detector"), limit=10, before_id=None
    )
    assert (entry.action, entry.resource_type, entry.resource_id) == ("suspend", "api_key", key_id)
    assert entry.diff["before"]["status"] == "active"
    assert entry.diff["after"]["status"] == "suspended"
    (stored,) = await anomalies(engine)
    assert stored.action == "suspended"
    stored_events = await read_events(engine)
    # The key's own lifecycle events (key.created, key.suspended) are stored beside them.
    lifecycle = [e for e in stored_events if e.kind in {"key.created", "key.suspended"}]
    assert [(e.kind, e.data["status"]) for e in lifecycle][-1:] == [("key.suspended", "suspended")]
    events = [e for e in stored_events if e.kind in {"anomaly.detected", "key.auto_suspended"}]
    assert [(e.kind, e.subject) for e in events] == [
        ("anomaly.detected", f"key:{key_id}"),
        ("key.auto_suspended", f"key:{key_id}"),
    ]
    assert events[1].data["anomaly_id"] == stored.id
    assert events[1].data["consumer"] == "acme"
    # The anomaly's own event says what was done about it.
    assert events[0].data["anomaly_id"] == stored.id
    assert events[0].data["action"] == "suspended"
    # Published on the bus too, the key store's key.suspended included (not only stored).
    delivered = [await asyncio.wait_for(subscription.get(), 1) for _ in range(3)]
    assert delivered == [lifecycle[-1], *events]
    assert subscription.pending() == 0


async def test_the_policy_leaves_other_signals_and_unknown_credentials_alone(
    engine: AsyncEngine,
) -> None:
    keys = KeyRepository(engine, SECRET)
    created = await keys.create("acme", KeySpec(name="web"), created_by="t", organization=None)
    key_id = created.info.id
    await add(engine, steady(key_id, range(-20, 1)) + steady("jwt-client", range(-20, 0)))
    await add(engine, one_key_from_many_addresses(0, key_id, 40))
    await add(engine, steady("jwt-client", range(1), per_minute=700))
    config = DetectorConfig(
        history_minutes=30,
        warmup_minutes=5,
        auto_suspend=True,
        auto_suspend_signals=frozenset({Signal.REQUEST_RATE}),
    )
    found = await AnomalyDetector(
        engine,
        InProcessBus(engine),
        config,
        keys=keys,
        audit=SystemAuditTrail(AuditLog(engine)),
        lateness=LATENESS,
    ).run_once(now_after(0))
    # The key's anomalies are distinct IPs and auth failures (not covered by the policy);
    # the request-rate anomaly is on a credential that is not an API key (nothing to suspend).
    assert sorted((a.finding.subject, str(a.finding.signal), a.action) for a in found) == sorted(
        [
            (key_id, "auth_failures", "none"),
            (key_id, "distinct_ips", "none"),
            ("jwt-client", "request_rate", "none"),
        ]
    )
    assert (await keys.get(key_id)).status is KeyStatus.active
    events = await read_events(engine)
    assert [e.kind for e in events].count("key.auto_suspended") == 0
    assert {e.data["action"] for e in events if e.kind == "anomaly.detected"} == {"none"}


def test_auto_suspend_needs_the_repository_and_the_audit_log() -> None:
    engine = create_engine("sqlite+aiosqlite:///:memory:")  # never connected
    with pytest.raises(ValueError, match="auto-suspend"):
        AnomalyDetector(engine, InProcessBus(engine), DetectorConfig(auto_suspend=True))


@pytest.mark.parametrize(
    ("credential_id", "client_ip"), [(None, None), ("k1", "203.0.113.9")], ids=["none", "both"]
)
async def test_an_anomaly_names_exactly_one_subject(
    engine: AsyncEngine, credential_id: str | None, client_ip: str | None
) -> None:
    with pytest.raises(IntegrityError):
        async with write_transaction(engine) as conn:
            await conn.execute(
                insert(AnomalyRow).values(
                    detected_at=datetime.now(UTC),
                    credential_id=credential_id,
                    client_ip=client_ip,
                    signal="request_rate",
                    observed=1.0,
                    baseline=0.0,
                    score=9.0,
                    action="none",
                    details="{}",
                )
            )
