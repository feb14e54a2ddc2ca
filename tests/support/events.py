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
    EventType.WEBHOOK_ENDPOINT_DISABLED: {"endpoint_id": "ep_1", "reason": "gone"},
    EventType.WEBHOOK_TEST: {"endpoint_id": "ep_1", "message": "hello"},
}


def sample(kind: EventType | str, **changes: Any) -> dict[str, Any]:
    return {**SAMPLES[EventType(kind)], **changes}
