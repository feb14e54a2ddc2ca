"""Tables of analytics and alerting: the request log, rollups, alert rules and states,
anomalies, and the persisted internal event log.

Times in the request log and rollups are integers (epoch milliseconds and epoch
seconds): they index and compare the same way on SQLite and PostgreSQL, and the
writer never converts datetimes on the hot side of the queue. Rollup dimensions
use '' rather than NULL for "none" so that the unique key really is unique (NULLs
never collide in a SQL unique constraint).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy import (
    false as sql_false,
)
from sqlalchemy.orm import Mapped, mapped_column

from portcullis.store.tables import Base, UTCDateTime

# SQLite only auto-increments an INTEGER PRIMARY KEY; BIGINT elsewhere.
AutoId = BigInteger().with_variant(Integer(), "sqlite")


class RequestLogRow(Base):
    """One proxied request (see `analytics.record.RequestRecord` for the fields)."""

    __tablename__ = "request_log"
    __table_args__ = (
        Index("ix_request_log_ts", "ts_ms"),
        Index("ix_request_log_consumer_ts", "consumer", "ts_ms"),
        Index("ix_request_log_credential_ts", "credential_id", "ts_ms"),
        Index("ix_request_log_api_ts", "api", "api_version", "ts_ms"),
    )

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    ts_ms: Mapped[int] = mapped_column(BigInteger)
    request_id: Mapped[str] = mapped_column(String(128))
    node: Mapped[str] = mapped_column(String(160))
    method: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(String(2048))
    path_template: Mapped[str | None] = mapped_column(String(1024))
    route: Mapped[str | None] = mapped_column(String(128))
    service: Mapped[str | None] = mapped_column(String(128))
    upstream_target: Mapped[str | None] = mapped_column(String(300))
    consumer: Mapped[str | None] = mapped_column(String(128))
    credential_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(SmallInteger)
    bytes_in: Mapped[int] = mapped_column(BigInteger)
    bytes_out: Mapped[int] = mapped_column(BigInteger)
    client_ip: Mapped[str] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    latency_ms: Mapped[float] = mapped_column(Float)
    upstream_ms: Mapped[float | None] = mapped_column(Float)
    gateway_ms: Mapped[float] = mapped_column(Float)
    flags: Mapped[int] = mapped_column(Integer)
    error_kind: Mapped[str | None] = mapped_column(String(64))
    trace_id: Mapped[str | None] = mapped_column(String(32))
    priority: Mapped[str | None] = mapped_column(String(16))
    # The API product and version the request was served as (None: no API), and whether
    # a version's sandbox (another service or a mock) answered it.
    api: Mapped[str | None] = mapped_column(String(128))
    api_version: Mapped[str | None] = mapped_column(String(64))
    sandbox: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sql_false())


class RollupRow(Base):
    """Traffic of one time bucket for one (route, service, consumer, status class, api,
    api version, sandbox).

    `granularity` is minute | hour | day; `bucket_start` epoch seconds (UTC).
    `sketch` is a serialized mergeable latency sketch (total latency, ms), so
    coarser buckets and any range merge sketches instead of averaging percentiles.
    `status_class` is 1..5 (1xx..5xx). `errors` counts 5xx plus gateway-refused
    requests (`error_kind` set); 4xx client errors are visible per status class.
    """

    __tablename__ = "analytics_rollups"
    __table_args__ = (
        UniqueConstraint(
            "granularity",
            "bucket_start",
            "route",
            "service",
            "consumer",
            "status_class",
            "api",
            "api_version",
            "sandbox",
            name="uq_analytics_rollups_bucket",
        ),
        Index("ix_analytics_rollups_bucket", "granularity", "bucket_start"),
    )

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    granularity: Mapped[str] = mapped_column(String(8))
    bucket_start: Mapped[int] = mapped_column(BigInteger)
    route: Mapped[str] = mapped_column(String(128), default="")
    service: Mapped[str] = mapped_column(String(128), default="")
    consumer: Mapped[str] = mapped_column(String(128), default="")
    status_class: Mapped[int] = mapped_column(SmallInteger)
    api: Mapped[str] = mapped_column(String(128), default="", server_default="")
    api_version: Mapped[str] = mapped_column(String(64), default="", server_default="")
    sandbox: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sql_false())
    requests: Mapped[int] = mapped_column(BigInteger)
    errors: Mapped[int] = mapped_column(BigInteger)
    rate_limited: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_in: Mapped[int] = mapped_column(BigInteger)
    bytes_out: Mapped[int] = mapped_column(BigInteger)
    latency_sum_ms: Mapped[float] = mapped_column(Float)
    sketch: Mapped[bytes] = mapped_column(LargeBinary)


class ApiCallerRow(Base):
    """Who called an API version on one UTC day: one row per (day, api, version, consumer,
    API key, sandbox), with the request count and the last request's time.

    Written by the minute rollup round in the transaction that moves its cursor (counts
    are added, so every raw row is counted once), kept as long as day rollups. It answers
    "who still calls v1" with keys and exact last-seen times over any number of days,
    which the rollups (no key dimension) and the raw log (kept for days) cannot.
    `consumer` and `credential_id` are '' when the request had none.
    """

    __tablename__ = "api_callers"
    __table_args__ = (
        Index("ix_api_callers_version_day", "api", "api_version", "day"),
        Index("ix_api_callers_day", "day"),
    )

    day: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    api: Mapped[str] = mapped_column(String(128), primary_key=True)
    api_version: Mapped[str] = mapped_column(String(64), primary_key=True)
    consumer: Mapped[str] = mapped_column(String(128), primary_key=True)
    credential_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sandbox: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger)
    last_seen_ms: Mapped[int] = mapped_column(BigInteger)


class SunsetNoticeRow(Base):
    """A `version.sunset_approaching` event sent to one consumer for one API version:
    inserted (ON CONFLICT DO NOTHING) in the transaction that records the event, so each
    consumer hears of a version's sunset once across control planes and restarts. The
    sunset is part of the key: a moved sunset is announced again."""

    __tablename__ = "version_sunset_notices"

    api: Mapped[str] = mapped_column(String(128), primary_key=True)
    api_version: Mapped[str] = mapped_column(String(64), primary_key=True)
    consumer: Mapped[str] = mapped_column(String(128), primary_key=True)
    sunset_at: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    announced_at: Mapped[datetime] = mapped_column(UTCDateTime())


class CertificateExpiryNoticeRow(Base):
    """A `certificate.expiring` event sent for one certificate and expiry date: inserted
    (ON CONFLICT DO NOTHING) in the transaction that records the event, so it is sent
    once across control planes and restarts; a renewed certificate is a new key."""

    __tablename__ = "certificate_expiry_notices"

    certificate: Mapped[str] = mapped_column(String(128), primary_key=True)
    not_after: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    announced_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AnalyticsCursorRow(Base):
    """How far a background job (rollups, retention, alerts) has got: one row per job."""

    __tablename__ = "analytics_cursors"

    job: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AlertRuleRow(Base):
    """An alert rule evaluated on the rollups (or on upstream health for `upstream_down`).

    `kind`: error_rate | p95_latency | rate_429 | upstream_down. `threshold` is a
    ratio (0..1) for rates and milliseconds for latency; `window_seconds` is the
    range of rollups looked at. The optional scope narrows the traffic considered.
    """

    __tablename__ = "alert_rules"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    threshold: Mapped[float] = mapped_column(Float)
    window_seconds: Mapped[int] = mapped_column(Integer)
    min_requests: Mapped[int] = mapped_column(Integer, default=1)
    # Seconds a breach (or a recovery) must hold before the rule fires (or resolves).
    for_seconds: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    route: Mapped[str | None] = mapped_column(String(128))
    service: Mapped[str | None] = mapped_column(String(128))
    consumer: Mapped[str | None] = mapped_column(String(128))
    upstream: Mapped[str | None] = mapped_column(String(128))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    description: Mapped[str | None] = mapped_column(Text)
    # JSON `{"webhooks": [endpoint id, ...]}`: where the rule's alerts are also sent.
    notify: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AlertStateRow(Base):
    """The current state of one rule: ok or firing, since when, with the last value seen."""

    __tablename__ = "alert_states"

    rule: Mapped[str] = mapped_column(String(128), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    since: Mapped[datetime] = mapped_column(UTCDateTime())
    value: Mapped[float | None] = mapped_column(Float)
    evaluated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AnomalyRow(Base):
    """A significant deviation of one API key's or client address's traffic from its
    rolling baseline.

    Exactly one of `credential_id` (an API key's anomaly) and `client_ip` (a client
    address's) is set. `signal`: request_rate | error_rate | auth_failures |
    distinct_ips (keys), ip_auth_failures (addresses). `action` is what the policy
    did: none | suspended.
    """

    __tablename__ = "anomalies"
    __table_args__ = (
        Index("ix_anomalies_detected", "detected_at"),
        CheckConstraint("(credential_id IS NULL) <> (client_ip IS NULL)", name="one_subject"),
    )

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    detected_at: Mapped[datetime] = mapped_column(UTCDateTime())
    credential_id: Mapped[str | None] = mapped_column(String(64), index=True)
    client_ip: Mapped[str | None] = mapped_column(String(64), index=True)
    consumer: Mapped[str | None] = mapped_column(String(128))
    signal: Mapped[str] = mapped_column(String(32))
    observed: Mapped[float] = mapped_column(Float)
    baseline: Mapped[float] = mapped_column(Float)
    score: Mapped[float] = mapped_column(Float)
    action: Mapped[str] = mapped_column(String(16))
    details: Mapped[str] = mapped_column(Text, default="{}")


class EventRow(Base):
    """An internal event (alert fired/resolved, anomaly, key auto-suspended...), kept for
    listing and for delivery to later consumers (webhooks). `data` is JSON text."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_kind_id", "kind", "id"),)

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(256))
    data: Mapped[str] = mapped_column(Text, default="{}")
    # The organization the event belongs to (None: gateway-wide, seen by operators only).
    organization_id: Mapped[str | None] = mapped_column(String(36), index=True)


class QuotaUsageRow(Base):
    """One data-plane worker's count on one calendar-quota counter (memory limit backend).

    Without Redis each worker counts quotas in its own memory; it publishes those
    counts here (`limits/quota_usage.py`) so the control plane can report usage.
    `counter_key` is the plan-limits counter key (`pq:<quota>:<period id>:<who>`),
    `period_end_us` the end of its calendar window (epoch µs: rows past it are
    deleted). The pseudo-worker `retired` holds the final counts of workers that
    stopped (folded in, so rows stay one per live worker and counter).
    """

    __tablename__ = "quota_usage"
    __table_args__ = (
        Index("ix_quota_usage_counter", "counter_key"),
        Index("ix_quota_usage_period_end", "period_end_us"),
    )

    worker_id: Mapped[str] = mapped_column(String(160), primary_key=True)
    counter_key: Mapped[str] = mapped_column(String(512), primary_key=True)
    period_end_us: Mapped[int] = mapped_column(BigInteger)
    used: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class QuotaThresholdRow(Base):
    """A quota threshold announced once (`quota.threshold_reached`): one row per subject
    (`consumer:<username>` / `key:<id>`), quota (its counter prefix), period and threshold
    percent. Control planes insert it with ON CONFLICT DO NOTHING in the transaction that
    records the event, so the event is recorded once however many of them see the count.
    Rows of ended periods (`period_end_us`, epoch µs) are deleted."""

    __tablename__ = "quota_thresholds"
    __table_args__ = (Index("ix_quota_thresholds_period_end", "period_end_us"),)

    subject: Mapped[str] = mapped_column(String(200), primary_key=True)
    quota: Mapped[str] = mapped_column(String(512), primary_key=True)
    period_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    threshold: Mapped[int] = mapped_column(Integer, primary_key=True)
    period_end_us: Mapped[int] = mapped_column(BigInteger)
    reached_at: Mapped[datetime] = mapped_column(UTCDateTime())


class UpstreamHealthStateRow(Base):
    """The last upstream (target '') or target health the control plane announced, so a
    change is announced once across control planes and restarts (analytics/health_events)."""

    __tablename__ = "upstream_health_states"

    upstream: Mapped[str] = mapped_column(String(256), primary_key=True)
    target: Mapped[str] = mapped_column(String(256), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    circuit_open: Mapped[bool] = mapped_column(Boolean, default=False)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class LiveTrafficReportRow(Base):
    """One data-plane worker's report of one second of traffic (`analytics/live.py`), the
    live-traffic transport when there is no Redis: control planes poll the rows of the
    last seconds; workers delete rows older than a few minutes. `payload` is the report's
    JSON text (counts and latency sketches per route, consumer and organization)."""

    __tablename__ = "live_traffic_reports"
    __table_args__ = (Index("ix_live_traffic_reports_second", "second"),)

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    second: Mapped[int] = mapped_column(BigInteger)
    worker: Mapped[str] = mapped_column(String(160))
    payload: Mapped[str] = mapped_column(Text)
