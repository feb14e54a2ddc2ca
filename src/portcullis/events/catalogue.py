"""The catalogue of internal events: every kind the bus carries, what its subject names
and what its data holds.

Kinds are dotted lower-case names, `<area>.<what happened>`; they are the contract
between publishers and consumers (the admin API's event listing, and later webhook
subscriptions), so a kind is only ever added here, never renamed. Adding one is a
new `EventType` member plus its `EventSpec`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class EventType(StrEnum):
    """An event kind (its value is what is stored and sent)."""

    ALERT_FIRING = "alert.firing"
    ALERT_RESOLVED = "alert.resolved"
    ANOMALY_DETECTED = "anomaly.detected"
    KEY_AUTO_SUSPENDED = "key.auto_suspended"
    WEBHOOK_ENDPOINT_DISABLED = "webhook.endpoint_disabled"


@dataclass(frozen=True, slots=True)
class EventSpec:
    """What one kind means: `subject` says what the event's subject names, `data` lists
    the keys its data carries."""

    kind: EventType
    summary: str
    subject: str
    data: tuple[str, ...]


CATALOGUE: MappingProxyType[EventType, EventSpec] = MappingProxyType(
    {
        spec.kind: spec
        for spec in (
            EventSpec(
                EventType.ALERT_FIRING,
                "An alert rule's condition held (for its `for` duration): the alert fires",
                "the alert rule's name",
                (
                    "rule",
                    "kind",
                    "value",
                    "threshold",
                    "window_seconds",
                    "scope",
                    "since",
                ),
            ),
            EventSpec(
                EventType.ALERT_RESOLVED,
                "A firing alert's condition stopped holding (or its rule was disabled or "
                "deleted): the alert is resolved",
                "the alert rule's name",
                ("rule", "kind", "value", "threshold", "window_seconds", "scope", "reason"),
            ),
            EventSpec(
                EventType.ANOMALY_DETECTED,
                "A credential's (or a client IP's) traffic deviated significantly from its "
                "rolling baseline",
                "`key:<credential id>` or `ip:<client address>`",
                (
                    "anomaly_id",
                    "credential_id",
                    "client_ip",
                    "consumer",
                    "signal",
                    "observed",
                    "baseline",
                    "score",
                    "minute",
                    "action",
                ),
            ),
            EventSpec(
                EventType.KEY_AUTO_SUSPENDED,
                "The anomaly policy suspended an API key automatically",
                "`key:<credential id>`",
                ("credential_id", "consumer", "anomaly_id", "signal", "reason"),
            ),
            EventSpec(
                EventType.WEBHOOK_ENDPOINT_DISABLED,
                "A webhook endpoint stopped receiving: its receiver answered 410 Gone "
                "(`reason: gone`) or every attempt failed for the configured number of days "
                "(`reason: failing`)",
                "the endpoint's id",
                ("endpoint_id", "reason"),
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
