"""The operational areas of the graph: config, audit, alerts, analytics, webhooks and
the data plane (one list, so the schema registers them with one line)."""

from __future__ import annotations

from portcullis.graph import alerts, analytics, audit, config, operations, webhooks
from portcullis.graph.support import Area


def areas() -> list[Area]:
    return [
        config.build(),
        audit.build(),
        analytics.build(),
        operations.build(),
        alerts.build(),
        webhooks.build(),
    ]
