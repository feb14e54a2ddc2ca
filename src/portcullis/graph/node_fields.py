"""Fields the operational areas add to the entity node types built in
`graph.entities`: traffic `usage(range:)` on routes, services and consumers, and live
`health` on upstreams."""

from __future__ import annotations

from typing import Any

from portcullis.graph.analytics import usage_field
from portcullis.graph.operations import health_field
from portcullis.services.entity_kinds import Kind


def node_fields(kind: Kind) -> dict[str, tuple[Any, Any]]:
    """Extra fields of `kind`'s node type: name -> (annotation, strawberry field)."""
    identity = kind.identity_fields[0]
    if kind.singular in ("route", "service", "consumer"):
        return {"usage": usage_field(kind.singular, identity)}  # type: ignore[arg-type]
    if kind.singular == "upstream":
        return {"health": health_field()}
    return {}
