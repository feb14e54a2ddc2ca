"""Valid data for each catalogued event kind (record_event checks data against the
kind's schema), with fields a test wants changed."""

from __future__ import annotations

from typing import Any

from portcullis.events.catalogue import EventType

_ALERT = {
    "rule": "errors",
    "kind": "error_rate",
    "value": 0.5,
    "threshold": 0.1,
    "window_seconds": 60,
    "scope": {},
}
_KEY = {"key_id": "k1", "consumer": "alice", "environment": "live", "status": "active"}

SAMPLES: dict[EventType, dict[str, Any]] = {
    EventType.ALERT_FIRING: {**_ALERT, "since": "2026-12-07T06:00:00Z"},
    EventType.ALERT_RESOLVED: dict(_ALERT),
    EventType.ANOMALY_DETECTED: {
        "anomaly_id": 1,
        "credential_id": "k1",
        "client_ip": None,
        "consumer": "alice",
        "signal": "request_rate",
        "observed": 900.0,
        "baseline": 10.0,
        "score": 12.5,
        "minute": "2026-12-07T06:00:00Z",
        "action": "none",
    },
    EventType.KEY_AUTO_SUSPENDED: {
        "credential_id": "k1",
        "consumer": "alice",
        "anomaly_id": 1,
        "signal": "request_rate",
        "reason": "anomaly",
    },
    EventType.KEY_CREATED: dict(_KEY),
    EventType.KEY_REVOKED: {**_KEY, "status": "revoked", "reason": "leaked"},
    EventType.KEY_ROTATED: {
        **_KEY,
        "successor_key_id": "k2",
        "grace_until": "2026-12-08T06:00:00Z",
    },
    EventType.KEY_SUSPENDED: {**_KEY, "status": "suspended"},
    EventType.KEY_RESUMED: dict(_KEY),
    EventType.KEY_EXPIRING: {**_KEY, "expires_at": "2026-12-14T07:00:00Z", "days_left": 7.0},
    EventType.UPSTREAM_HEALTH_CHANGED: {
        "upstream": "pool",
        "target": None,
        "status": "down",
        "previous": "up",
        "workers": 2,
    },
    EventType.CIRCUIT_OPENED: {
        "upstream": "pool",
        "target": "10.0.0.1:80",
        "open_workers": 1,
        "workers": 2,
    },
    EventType.CIRCUIT_CLOSED: {
        "upstream": "pool",
        "target": "10.0.0.1:80",
        "open_workers": 0,
        "workers": 2,
    },
    EventType.CONSUMER_CREATED: {
        "consumer": "alice",
        "organization": None,
        "plan": None,
        "status": "active",
        "tags": [],
        "config_version": 1,
    },
    EventType.CONFIG_APPLIED: {
        "version": 2,
        "previous_version": 1,
        "author": "admin",
        "comment": None,
        "source_version": None,
        "checksum": "0" * 64,
        "changes": {"consumers": {"added": 1, "removed": 0, "changed": 0}},
    },
    EventType.QUOTA_THRESHOLD_REACHED: {
        "consumer": "alice",
        "key_id": None,
        "plan": "basic",
        "quota": "monthly",
        "route": None,
        "period": "month",
        "period_id": "2026-12",
        "resets_at": "2027-01-01T00:00:00Z",
        "threshold": 80,
        "limit": 100,
        "used": 80,
    },
    EventType.WEBHOOK_ENDPOINT_DISABLED: {"endpoint_id": "ep_1", "reason": "gone"},
    EventType.WEBHOOK_TEST: {"endpoint_id": "ep_1", "message": "hello"},
    EventType.VERSION_SUNSET_APPROACHING: {
        "api": "demo",
        "version": "v1",
        "sunset_at": "2027-12-31T00:00:00Z",
        "successor": "v2",
        "consumer": "alice",
        "last_seen": "2027-12-01T10:00:00Z",
        "requests": 42,
        "window_days": 30,
    },
}


def sample(kind: EventType | str, **changes: Any) -> dict[str, Any]:
    return {**SAMPLES[EventType(kind)], **changes}
