"""The operational areas of the graph: config, audit, alerts, analytics, webhooks and
the data plane (one list, so the schema registers them with one line)."""

from __future__ import annotations

from typing import Any

from portcullis.graph import (
    alerts,
    analytics,
    audit,
    catalogue,
    config,
    inspector,
    operations,
    webhooks,
)
from portcullis.graph.node_fields import node_fields
from portcullis.graph.support import Area
from portcullis.services.entity_kinds import KINDS


def areas() -> list[Area]:
    return [
        config.build(),
        audit.build(),
        analytics.build(),
        operations.build(),
        alerts.build(),
        webhooks.build(),
        catalogue.build(),
        inspector.build(),
    ]


def node_links() -> dict[str, dict[str, tuple[Any, Any]]]:
    """The fields these areas add to entity node types, by collection (for
    `graph.entities.build_entities`' links)."""
    return {kind.collection: fields for kind in KINDS if (fields := node_fields(kind))}
