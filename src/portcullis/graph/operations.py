"""The gateway's operational views in the graph: the data-plane workers and the
upstream health they report (also as `Upstream.health`), response-cache purges, the
platform's event types and the plugins' config schemas - on the services REST's
`/admin/v1/data-plane`, `/cache`, `/event-types` and `/schemas` routers call.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from portcullis.events.catalogue import CATALOGUE, EventSpec
from portcullis.graph.connections import Connection
from portcullis.graph.context import context_of
from portcullis.graph.models import output_type
from portcullis.graph.problems import result_union
from portcullis.graph.support import (
    Area,
    as_data,
    mutation,
    query,
    returning,
    sorted_connection,
    validated,
)
from portcullis.services.cache import CachePurgeOut, CacheService, PurgeRequest
from portcullis.services.data_plane import NODE_SORT, DataPlaneService, NodeState
from portcullis.services.rbac import Permission

CachePurged = output_type(CachePurgeOut, "CachePurged")
NodeStateEnum = strawberry.enum(NodeState, name="DataPlaneNodeState")
PurgeCacheResult = result_union("PurgeCacheResult", CachePurged)


@strawberry.type(description="A data-plane worker and the config version it serves.")
class DataPlaneNode:
    id: strawberry.ID = strawberry.field(description="node_name:hostname:pid")
    node_name: str
    pid: int
    config_version: int
    started_at: str = strawberry.field(description="RFC 3339")
    heartbeat_at: str = strawberry.field(description="RFC 3339")
    heartbeat_age: float = strawberry.field(description="Seconds since the last heartbeat")
    state: str = strawberry.field(description="current, propagating, lagging or stale")


@strawberry.type(description="One target's health merged over live workers.")
class UpstreamTargetHealth:
    target: str
    status: str = strawberry.field(description="up, degraded or down")
    workers: int
    unhealthy_workers: int
    breakers: JSON = strawberry.field(description="Workers per circuit-breaker state")


@strawberry.type(description="An upstream's target health (`<service>@url` for a service URL).")
class UpstreamHealth:
    name: str
    status: str = strawberry.field(description="up, degraded or down")
    targets: list[UpstreamTargetHealth]


@strawberry.type(description="Upstream health over the live workers.")
class UpstreamHealthSummary:
    workers: int = strawberry.field(description="Live workers that reported upstream health")
    upstreams: list[UpstreamHealth]


@strawberry.type(description="A platform event kind, as webhook endpoints' eventTypes name it.")
class EventType:
    name: str
    version: int
    summary: str
    subject: str = strawberry.field(description="What the event's subject names")
    schema: JSON = strawberry.field(description="JSON Schema of the event's data")


@strawberry.type(description="A plugin and its config's JSON Schema 2020-12.")
class PluginSchema:
    name: str
    title: str | None
    schema: JSON


def _data_plane(info: Info[Any, Any]) -> DataPlaneService:
    ctx = context_of(info)
    state = ctx.state
    return DataPlaneService(
        state.engine,
        ctx.editor,
        heartbeat_interval=state.settings.heartbeat_interval,
        poll_interval=state.settings.config_poll_interval,
    )


async def data_plane_nodes(
    info: Info[Any, Any],
    first: int | None = None,
    after: str | None = None,
    sort: str | None = None,
    state: NodeStateEnum | None = None,  # type: ignore[valid-type]
    node_name: str | None = None,
) -> Connection[DataPlaneNode]:
    op = await context_of(info).operation(Permission.CONFIG_READ)
    items = await _data_plane(info).nodes(op, state=state, node_name=node_name)
    return sorted_connection(
        items,
        lambda item: str(item["id"]),
        allowed=NODE_SORT,
        default="node_name",
        sort=sort,
        first=first,
        after=after,
    )


async def _health(info: Info[Any, Any]) -> dict[str, Any]:
    """The request's upstream-health summary, read once however many fields ask."""
    ctx = context_of(info)

    async def read() -> dict[str, Any]:
        op = await ctx.operation(Permission.CONFIG_READ)
        return await _data_plane(info).upstream_health(op)

    task: asyncio.Future[Any] = ctx.loader(
        "data_plane.upstream_health", lambda: asyncio.ensure_future(read())
    )
    return await asyncio.shield(task)


async def upstream_health(info: Info[Any, Any]) -> UpstreamHealthSummary:
    return await _health(info)  # type: ignore[return-value]  # dict-backed


def health_field() -> tuple[Any, Any]:
    """`Upstream.health`: the upstream's merged target health (null: no live worker
    reported it)."""

    async def health(self: Any, info: Info[Any, Any]) -> UpstreamHealth | None:
        summary = await _health(info)
        return next((u for u in summary["upstreams"] if u["name"] == self["name"]), None)

    health.__annotations__ = {"self": Any, "info": Info, "return": UpstreamHealth | None}
    return (
        UpstreamHealth | None,
        strawberry.field(
            resolver=health,
            description="Live target health and breaker states (null: no worker reported it)",
        ),
    )


@returning(PurgeCacheResult)
async def purge_cache(
    info: Info[Any, Any],
    route: str | None = None,
    path: str | None = None,
    path_prefix: str | None = None,
) -> Any:
    async def run() -> Any:
        ctx = context_of(info)
        op = await ctx.operation(Permission.CONFIG_WRITE)
        state = ctx.state
        service = CacheService(state.engine, ctx.editor, state.settings)
        given = validated(PurgeRequest, None, route=route, path=path, path_prefix=path_prefix)
        out = await service.purge(
            op, route=given.route, path=given.path, path_prefix=given.path_prefix
        )
        return CachePurged(**out.model_dump())

    return await as_data(run)


def _event_type(spec: EventSpec) -> EventType:
    return EventType(
        name=spec.kind.value,
        version=spec.version,
        summary=spec.summary,
        subject=spec.subject,
        schema=cast(JSON, spec.schema()),
    )


async def event_types(info: Info[Any, Any]) -> list[EventType]:
    await context_of(info).operation(Permission.CONFIG_READ)
    return [_event_type(spec) for spec in CATALOGUE.values()]


def _schemas(info: Info[Any, Any]) -> tuple[Any, Any]:
    """The application's plugin-schema functions `(names, schema_of)` (GraphDeps.extras)."""
    found = context_of(info).deps.extras("plugin_schemas")
    assert found is not None, "the mounting application supplies plugin_schemas"
    return found  # type: ignore[no-any-return]


def _plugin_schema(name: str, schema: dict[str, Any]) -> PluginSchema:
    title = schema.get("title")
    return PluginSchema(
        name=name, title=title if isinstance(title, str) else None, schema=cast(JSON, schema)
    )


async def plugin_schemas(info: Info[Any, Any]) -> list[PluginSchema]:
    await context_of(info).operation(Permission.CONFIG_READ)
    names, schema_of = _schemas(info)
    return [_plugin_schema(name, schema_of(name)) for name in names()]


async def plugin_schema(info: Info[Any, Any], name: str) -> PluginSchema | None:
    await context_of(info).operation(Permission.CONFIG_READ)
    names, schema_of = _schemas(info)
    return _plugin_schema(name, schema_of(name)) if name in names() else None


def build() -> Area:
    field = query
    return Area(
        queries={
            "dataPlaneNodes": field(
                data_plane_nodes, "Data-plane workers and the config version each serves"
            ),
            "upstreamHealth": field(
                upstream_health, "Upstream target health and breaker states, over live workers"
            ),
            "eventTypes": field(event_types, "The platform's event kinds with their schemas"),
            "pluginSchemas": field(plugin_schemas, "Every plugin with its config's JSON Schema"),
            "pluginSchema": field(plugin_schema, "One plugin's config schema; null when unknown"),
        },
        mutations={
            "purgeCache": mutation(
                purge_cache, "Purge cached responses (all, by route, by path or path prefix)"
            )
        },
    )
