"""The catalogue of platform events: every kind the platform emits, its version, what its
subject names and the JSON Schema of its data.

Kinds are dotted lower-case names, `<area>.<what happened>`; they are the contract
between publishers and consumers (the admin API's event listing, webhook subscriptions,
live streams), so a kind is only ever added here, never renamed. A change to a kind's
data that could break a consumer bumps its version. Adding one is a new `EventType`
member, a data model, and its `EventSpec`.

Data models describe what `record_event` stores; `record_event` checks the data against
the model, so a publisher cannot drift from the published schema unnoticed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from fnmatch import fnmatchcase
from types import MappingProxyType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class EventType(StrEnum):
    """An event kind (its value is what is stored and sent)."""

    ALERT_FIRING = "alert.firing"
    ALERT_RESOLVED = "alert.resolved"
    ANOMALY_DETECTED = "anomaly.detected"
    KEY_AUTO_SUSPENDED = "key.auto_suspended"
    KEY_CREATED = "key.created"
    KEY_REVOKED = "key.revoked"
    KEY_ROTATED = "key.rotated"
    KEY_SUSPENDED = "key.suspended"
    KEY_RESUMED = "key.resumed"
    KEY_EXPIRING = "key.expiring"
    CREDENTIAL_CREATED = "credential.created"
    CREDENTIAL_ROTATED = "credential.rotated"
    CREDENTIAL_DELETED = "credential.deleted"
    UPSTREAM_HEALTH_CHANGED = "upstream.health_changed"
    CIRCUIT_OPENED = "circuit.opened"
    CIRCUIT_CLOSED = "circuit.closed"
    CONSUMER_CREATED = "consumer.created"
    CONFIG_APPLIED = "config.applied"
    QUOTA_THRESHOLD_REACHED = "quota.threshold_reached"
    WEBHOOK_ENDPOINT_DISABLED = "webhook.endpoint_disabled"
    WEBHOOK_TEST = "webhook.test"
    VERSION_SUNSET_APPROACHING = "version.sunset_approaching"
    CERTIFICATE_EXPIRING = "certificate.expiring"
    PORTAL_ACCESS_REQUESTED = "portal.access_requested"
    PORTAL_ACCESS_APPROVED = "portal.access_approved"
    PORTAL_ACCESS_REJECTED = "portal.access_rejected"


class EventData(BaseModel):
    # Publishers may add a field before the schema names it; consumers must ignore
    # fields they don't know (the usual webhook contract).
    model_config = ConfigDict(extra="allow", frozen=True)


class AlertData(EventData):
    rule: str = Field(description="the alert rule's name")
    kind: str = Field(description="what the rule measures (error_rate, latency_p95, ...)")
    value: float | None = Field(description="the measured value (None: no traffic)")
    threshold: float
    window_seconds: int
    scope: dict[str, str] = Field(description="route/service/consumer/upstream it watches")


class AlertFiringData(AlertData):
    since: str = Field(description="when the condition started holding (RFC 3339)")


class AlertResolvedData(AlertData):
    reason: str | None = Field(default=None, description="`deleted`, `disabled` or absent")


class AnomalyData(EventData):
    anomaly_id: int
    credential_id: str | None
    client_ip: str | None
    consumer: str | None
    signal: str
    observed: float
    baseline: float
    score: float
    minute: str = Field(description="the minute the deviation was seen (RFC 3339)")
    action: Literal["none", "suspended"]


class KeyAutoSuspendedData(EventData):
    credential_id: str
    consumer: str | None
    anomaly_id: int
    signal: str
    reason: str


class KeyData(EventData):
    key_id: str
    consumer: str
    name: str | None = None
    environment: str
    status: str = Field(description="the key's status after the change")


class KeyStatusData(KeyData):
    reason: str | None = Field(default=None, description="the reason given, if any")


class KeyRotatedData(KeyData):
    successor_key_id: str
    grace_until: str = Field(description="the old key works until then (RFC 3339)")


HealthStatus = Literal["up", "degraded", "down"]


class UpstreamHealthData(EventData):
    upstream: str
    target: str | None = Field(description="the target (host:port); None: the upstream as a whole")
    status: HealthStatus
    previous: HealthStatus
    workers: int = Field(description="data-plane workers whose reports were merged")


class CircuitData(EventData):
    upstream: str
    target: str
    open_workers: int = Field(description="workers whose breaker for the target is open")
    workers: int


class CredentialData(EventData):
    credential_id: str
    kind: Literal["basic", "hmac", "mtls"] = Field(description="basic-auth, hmac-auth or mtls-auth")
    consumer: str
    identifier: str = Field(
        description="the basic-auth username, the hmac key id or the mtls match (no secret)"
    )


class CredentialDeletedData(CredentialData):
    reason: Literal["deleted", "consumer_removed"] = Field(
        description="deleted by an admin, or with its consumer"
    )


class KeyExpiringData(KeyData):
    expires_at: str = Field(description="when the key stops working (RFC 3339)")
    days_left: float


class ConsumerCreatedData(EventData):
    consumer: str = Field(description="the new consumer's username")
    organization: str | None = Field(description="its organization's name (None: the operator's)")
    plan: str | None
    status: str
    tags: list[str]
    config_version: int = Field(description="the config version that created it")


class ChangeCounts(BaseModel):
    model_config = ConfigDict(frozen=True)

    added: int
    removed: int
    changed: int


class ConfigAppliedData(EventData):
    version: int = Field(description="the new current config version")
    previous_version: int = Field(description="the version it replaced (0: none)")
    author: str | None = Field(description="who or what applied it (admin, CLI, serve)")
    comment: str | None
    source_version: int | None = Field(description="the version a rollback restored")
    checksum: str = Field(description="sha256 of the canonical document")
    changes: dict[str, ChangeCounts] = Field(
        description="per entity list (services, routes, consumers, ...): entities added, "
        "removed and changed; lists without changes are left out"
    )


class QuotaThresholdData(EventData):
    consumer: str
    key_id: str | None = Field(description="set when the quota counts per API key")
    plan: str
    quota: str = Field(description="the quota's name in the plan")
    route: str | None = Field(description="the route of a route override; None: plan-wide")
    period: Literal["day", "month"]
    period_id: str = Field(description="the calendar period, e.g. `2026-12` or `2026-12-07`")
    resets_at: str = Field(description="when the next period starts (RFC 3339)")
    threshold: Literal[80, 100] = Field(description="percent of the limit reached")
    limit: int = Field(description="the limit in force (an override or boost changes it)")
    used: int = Field(description="requests counted in the period when it was seen")


class VersionSunsetData(EventData):
    api: str = Field(description="the API product's name")
    version: str = Field(description="the version whose sunset approaches")
    sunset_at: str = Field(description="from then on its requests get 410 (RFC 3339)")
    successor: str | None = Field(description="the version to move to (None: not named)")
    consumer: str = Field(description="the consumer that still calls the version")
    last_seen: str = Field(description="the consumer's last request of the version (RFC 3339)")
    requests: int = Field(description="its requests of the version over the look-back window")
    window_days: int = Field(description="the look-back window, in UTC days")


class CertificateExpiringData(EventData):
    certificate: str = Field(description="the certificate's name")
    not_after: str = Field(description="when its leaf expires (RFC 3339)")
    days_left: int = Field(description="whole days until then (0: today or expired)")
    expired: bool = Field(description="it has expired already")
    snis: list[str] = Field(description="the server names it is served for")


class PortalAccessData(EventData):
    request_id: str = Field(description="the access request's id")
    application_id: str
    application: str = Field(description="the application's name")
    team_id: str = Field(description="the developer team the application belongs to")
    api: str = Field(description="the API product asked for")
    plan: str | None = Field(description="the plan asked for (None: none)")
    status: Literal["pending", "approved", "rejected"]
    reason: str | None = Field(description="the operator's reason (approvals and rejections)")
    consumer: str | None = Field(description="the application's gateway consumer, once approved")


class EndpointDisabledData(EventData):
    endpoint_id: str
    reason: Literal["gone", "failing"]


class WebhookTestData(EventData):
    endpoint_id: str
    message: str


@dataclass(frozen=True, slots=True)
class EventSpec:
    """What one kind means: `subject` says what the event's subject names, `model` what
    its data holds."""

    kind: EventType
    summary: str
    subject: str
    model: type[EventData]
    version: int = 1

    @property
    def data(self) -> tuple[str, ...]:
        return tuple(self.model.model_fields)

    def schema(self) -> dict[str, Any]:
        return self.model.model_json_schema()


_KEY_SUBJECT = "`key:<key id>`"
_CREDENTIAL_SUBJECT = "`credential:<credential id>`"
_ACCESS_SUBJECT = "`access_request:<request id>`"

CATALOGUE: MappingProxyType[EventType, EventSpec] = MappingProxyType(
    {
        spec.kind: spec
        for spec in (
            EventSpec(
                EventType.ALERT_FIRING,
                "An alert rule's condition held (for its `for` duration): the alert fires",
                "the alert rule's name",
                AlertFiringData,
            ),
            EventSpec(
                EventType.ALERT_RESOLVED,
                "A firing alert's condition stopped holding (or its rule was disabled or "
                "deleted): the alert is resolved",
                "the alert rule's name",
                AlertResolvedData,
            ),
            EventSpec(
                EventType.ANOMALY_DETECTED,
                "A credential's (or a client IP's) traffic deviated significantly from its "
                "rolling baseline",
                "`key:<credential id>` or `ip:<client address>`",
                AnomalyData,
            ),
            EventSpec(
                EventType.KEY_AUTO_SUSPENDED,
                "The anomaly policy suspended an API key automatically",
                "`key:<credential id>`",
                KeyAutoSuspendedData,
            ),
            EventSpec(EventType.KEY_CREATED, "An API key was issued", _KEY_SUBJECT, KeyData),
            EventSpec(
                EventType.KEY_REVOKED,
                "An API key was revoked (final)",
                _KEY_SUBJECT,
                KeyStatusData,
            ),
            EventSpec(
                EventType.KEY_ROTATED,
                "An API key was rotated: a successor was issued and the old key works "
                "until the grace period ends",
                _KEY_SUBJECT,
                KeyRotatedData,
            ),
            EventSpec(
                EventType.KEY_SUSPENDED,
                "An API key was suspended (by an admin or the anomaly policy)",
                _KEY_SUBJECT,
                KeyStatusData,
            ),
            EventSpec(
                EventType.KEY_RESUMED,
                "A suspended API key works again",
                _KEY_SUBJECT,
                KeyStatusData,
            ),
            EventSpec(
                EventType.KEY_EXPIRING,
                "An active API key expires within `key_expiry_notice_days` (sent once per "
                "expiry: a changed expiry is announced again)",
                _KEY_SUBJECT,
                KeyExpiringData,
            ),
            EventSpec(
                EventType.CREDENTIAL_CREATED,
                "A basic-auth, hmac-auth or mtls-auth credential was created",
                _CREDENTIAL_SUBJECT,
                CredentialData,
            ),
            EventSpec(
                EventType.CREDENTIAL_ROTATED,
                "A basic-auth or hmac-auth credential's secret was replaced (the old one "
                "stopped working)",
                _CREDENTIAL_SUBJECT,
                CredentialData,
            ),
            EventSpec(
                EventType.CREDENTIAL_DELETED,
                "A basic-auth, hmac-auth or mtls-auth credential was deleted (by an admin, or "
                "with its consumer)",
                _CREDENTIAL_SUBJECT,
                CredentialDeletedData,
            ),
            EventSpec(
                EventType.UPSTREAM_HEALTH_CHANGED,
                "An upstream's (or one target's) health, merged over every data-plane worker, "
                "changed between up, degraded and down",
                "`upstream:<name>` or `upstream:<name>/<target>`",
                UpstreamHealthData,
            ),
            EventSpec(
                EventType.CIRCUIT_OPENED,
                "A circuit breaker opened for a target on some data-plane worker (none had it "
                "open before)",
                "`upstream:<name>/<target>`",
                CircuitData,
            ),
            EventSpec(
                EventType.CIRCUIT_CLOSED,
                "No data-plane worker has the target's circuit breaker open any more",
                "`upstream:<name>/<target>`",
                CircuitData,
            ),
            EventSpec(
                EventType.CONSUMER_CREATED,
                "A consumer was created (by a config apply, the admin API or the CLI: every "
                "config version that adds a username)",
                "`consumer:<username>`",
                ConsumerCreatedData,
            ),
            EventSpec(
                EventType.CONFIG_APPLIED,
                "A new config version became current (an apply, an admin edit or a rollback)",
                "`config:<version>`",
                ConfigAppliedData,
            ),
            EventSpec(
                EventType.QUOTA_THRESHOLD_REACHED,
                "A consumer's (or an API key's) quota reached 80 % or 100 % of its limit in "
                "the current period (once per quota, subject, period and threshold)",
                "`consumer:<username>` or `key:<key id>`",
                QuotaThresholdData,
            ),
            EventSpec(
                EventType.WEBHOOK_ENDPOINT_DISABLED,
                "A webhook endpoint stopped receiving: its receiver answered 410 Gone "
                "(`reason: gone`) or every attempt failed for the configured number of days "
                "(`reason: failing`)",
                "the endpoint's id",
                EndpointDisabledData,
            ),
            EventSpec(
                EventType.VERSION_SUNSET_APPROACHING,
                "A consumer still calls an API version whose sunset is within "
                "`sunset_notice_days` (sent once per consumer, version and sunset date: a "
                "moved sunset is announced again)",
                "`consumer:<username>`",
                VersionSunsetData,
            ),
            EventSpec(
                EventType.CERTIFICATE_EXPIRING,
                "A certificate expires within `certificate_expiry_warning_days` (or has "
                "expired): sent once per certificate and expiry date (a renewed certificate "
                "is announced again when its time comes)",
                "`certificate:<name>`",
                CertificateExpiringData,
            ),
            EventSpec(
                EventType.PORTAL_ACCESS_REQUESTED,
                "A developer asked for an application's access to an API (and plan) in the "
                "developer portal",
                _ACCESS_SUBJECT,
                PortalAccessData,
            ),
            EventSpec(
                EventType.PORTAL_ACCESS_APPROVED,
                "An application's access request was approved (by an operator, or at once "
                "for an API with automatic approval): its consumer may call the API",
                _ACCESS_SUBJECT,
                PortalAccessData,
            ),
            EventSpec(
                EventType.PORTAL_ACCESS_REJECTED,
                "An operator rejected an application's access request, with a reason",
                _ACCESS_SUBJECT,
                PortalAccessData,
            ),
            EventSpec(
                EventType.WEBHOOK_TEST,
                "A test event sent on request to one endpoint",
                "the endpoint's id",
                WebhookTestData,
            ),
        )
    }
)


def event_type(kind: str) -> EventType:
    """The catalogued kind named `kind`; `ValueError` naming the known kinds otherwise."""
    try:
        return EventType(kind)
    except ValueError:
        known = ", ".join(k.value for k in EventType)
        raise ValueError(f"unknown event kind {kind!r} (known: {known})") from None


def event_pattern(pattern: str) -> str:
    """An event-kind pattern: a catalogued kind, `<area>.*` of a catalogued area, or `*`
    (webhook subscriptions and live streams take the same patterns); `ValueError` else."""
    kinds = [k.value for k in EventType]
    if pattern == "*" or pattern in kinds:
        return pattern
    if pattern.endswith(".*") and "*" not in pattern[:-2]:
        if any(fnmatchcase(kind, pattern) for kind in kinds):
            return pattern
        raise ValueError(f"no event kind matches {pattern!r} (see GET /admin/v1/event-types)")
    raise ValueError(
        f"{pattern!r} is not an event kind; use a kind (key.revoked), an area (key.*) or *"
        " (see GET /admin/v1/event-types)"
    )


def kinds_matching(patterns: Iterable[str]) -> frozenset[str]:
    """Every catalogued kind that one of `patterns` (checked by `event_pattern`) matches."""
    checked = [event_pattern(p) for p in patterns]
    return frozenset(k.value for k in EventType if any(fnmatchcase(k.value, p) for p in checked))


def check_data(kind: EventType, data: dict[str, Any]) -> None:
    """`ValueError` naming the field when `data` does not match `kind`'s schema."""
    from pydantic import ValidationError

    try:
        CATALOGUE[kind].model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "data"
        raise ValueError(f"{kind} event data: {where}: {first['msg']}") from None
