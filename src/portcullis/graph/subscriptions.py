"""The schema's `Subscription` root: platform events live, resumable by position.

`events` is the GraphQL face of `GET /admin/v1/stream`: the same `StreamService`
(inputs checked, organization scope applied), the same `alerts:read` permission, the
same positions (event ids) and the same explicit reset when a position cannot be
resumed. Each item is an `EventStreamItem`: its `position` (where a client resumes
from, with `after`) is always there; `event` is the event, or null when the item is a
`reset` — a client that selects only `event` meets a null it has to handle, so a gap
is never silent.

The transports (graphql-transport-ws, graphql-sse) run these generators; they close
the underlying stream when the client goes (the generator's `finally`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Annotated, Any

import strawberry
from graphql import DocumentNode, FieldNode, get_operation_ast
from strawberry.scalars import JSON
from strawberry.types import Info

from portcullis.events.bus import Event
from portcullis.graph.alerts import PlatformEvent
from portcullis.graph.context import context_of
from portcullis.services.errors import ServiceError, invalid
from portcullis.services.rbac import Permission
from portcullis.services.streams.access import STREAMS_UNAVAILABLE, StreamService
from portcullis.services.streams.hub import EventStream, Reset, StreamItem
from portcullis.services.streams.traffic import TrafficFrame, TrafficListener


@strawberry.type(description="The stream could not resume from the position asked for.")
class StreamReset:
    reason: str = strawberry.field(description="retention or unknown_position")
    requested: strawberry.ID = strawberry.field(description="The position asked for")
    resume_after: strawberry.ID = strawberry.field(
        description="The position the stream goes on after (events in between are lost)"
    )
    detail: str


@strawberry.type(
    description="One item of a live event stream: an event, or a reset (then `event` is "
    "null and `reset` says what was skipped). Resume after `position`."
)
class EventStreamItem:
    position: strawberry.ID = strawberry.field(
        description="The stream position after this item: pass it as `after` to resume"
    )
    event: PlatformEvent | None = strawberry.field(description="The event; null on a reset")
    reset: StreamReset | None = strawberry.field(
        description="Non-null when the stream could not resume where asked (a gap)"
    )


def item_of(item: StreamItem) -> EventStreamItem:
    if isinstance(item, Event):
        event: Any = item.as_json()
        return EventStreamItem(position=strawberry.ID(str(item.id)), event=event, reset=None)
    assert isinstance(item, Reset)
    reset = StreamReset(
        reason=item.reason,
        requested=strawberry.ID(str(item.requested)),
        resume_after=strawberry.ID(str(item.resume_after)),
        detail=str(item.as_json()["detail"]),
    )
    return EventStreamItem(position=strawberry.ID(str(item.resume_after)), event=None, reset=reset)


def _position(after: str | None) -> int | None:
    if after is None:
        return None
    text = str(after).strip()
    if not text.isdigit() or len(text) > 19:
        raise invalid([("#/after", "must be a stream position (a non-negative integer)")])
    return int(text)


async def _open(
    info: Info[Any, Any],
    *,
    types: list[str] | None,
    resources: list[str] | None,
    organization: str | None,
    after: str | None,
) -> AsyncGenerator[EventStreamItem, None]:
    """The stream, opened now: a refusal (permission, scope, bad input, too many
    streams) is the subscription's error before any item, not a failure mid-stream."""
    context = context_of(info)
    op = await context.operation(Permission.ALERTS_READ)
    state = context.state
    stream = await StreamService(state.engine, state.streams).open(
        op,
        types=types or (),
        rooms=resources or (),
        organization=organization,
        after=_position(after),
    )
    return _items(stream)


async def _items(stream: EventStream) -> AsyncGenerator[EventStreamItem, None]:
    try:
        async for item in stream:
            yield item_of(item)
    finally:
        stream.close()


async def events(
    info: Info[Any, Any],
    types: Annotated[
        list[str] | None,
        strawberry.argument(description="Event kinds (`key.revoked`), areas (`key.*`) or `*`"),
    ] = None,
    resources: Annotated[
        list[str] | None,
        strawberry.argument(
            description="Rooms the events must belong to (any of them): `alerts`, `config`, "
            "`organization:<id>`, `service:<name>`, `route:<name>`, `consumer:<name>`, "
            "`upstream:<name>`, `key:<id>`, `alert:<rule>`"
        ),
    ] = None,
    organization: Annotated[
        str | None,
        strawberry.argument(description="Only this organization's events (id or name)"),
    ] = None,
    after: Annotated[
        strawberry.ID | None,
        strawberry.argument(description="Start after this position; default: from now on"),
    ] = None,
) -> AsyncGenerator[EventStreamItem, None]:
    return await _open(
        info, types=types, resources=resources, organization=organization, after=after
    )


async def config_changes(
    info: Info[Any, Any],
    after: Annotated[
        strawberry.ID | None,
        strawberry.argument(description="Start after this position; default: from now on"),
    ] = None,
) -> AsyncGenerator[EventStreamItem, None]:
    return await _open(info, types=None, resources=["config"], organization=None, after=after)


@strawberry.type(
    description="Every data-plane worker's traffic in one second, merged (as GET "
    "/admin/v1/analytics/live's frames; an organization's admins: its routes and consumers)"
)
class TrafficSecond:
    second: int = strawberry.field(description="Epoch second: the position (resume `after`)")
    workers: int = strawberry.field(description="Worker reports merged")
    totals: JSON = strawberry.field(
        description="requests, errors_4xx, errors_5xx, p95_ms, organization_id"
    )
    routes: JSON = strawberry.field(description="The same figures per route, by name")
    consumers: JSON = strawberry.field(description="The same figures per consumer, by name")
    dropped: int = strawberry.field(description="Records the workers dropped (full queues)")
    folded: JSON = strawberry.field(
        description="Distinct routes / consumers summed under `_other` (over the caps)"
    )


def _second(frame: TrafficFrame) -> TrafficSecond:
    body = frame.as_json()
    return TrafficSecond(**body)


async def traffic(
    info: Info[Any, Any],
    after: Annotated[
        int | None,
        strawberry.argument(
            description="Resume after this second (the frames still kept, then live); "
            "default: from the next frame on"
        ),
    ] = None,
) -> AsyncGenerator[TrafficSecond, None]:
    context = context_of(info)
    op = await context.operation(Permission.ANALYTICS_READ)
    live = context.state.live_traffic
    if live is None:
        raise ServiceError(
            STREAMS_UNAVAILABLE,
            "live traffic is not running (live_traffic_enabled, or the background jobs)",
        )
    # Listening first, then the kept frames, with no await in between: no frame is
    # missed between the two, and the listener's copies of kept frames are skipped.
    listener = live.listen()
    kept = live.since(after) if after is not None else []
    return _frames(listener, kept, op.scope.organization_id)


async def _frames(
    listener: TrafficListener, kept: list[TrafficFrame], organization_id: str | None
) -> AsyncGenerator[TrafficSecond, None]:
    last: int | None = None
    try:
        for frame in kept:
            yield _second(frame.visible_to(organization_id))
            last = frame.second
        async for frame in listener:
            if last is not None and frame.second <= last:
                continue
            yield _second(frame.visible_to(organization_id))
            last = frame.second
    finally:
        listener.close()


# The permission each subscription's stream needs for as long as it runs (the transports
# re-check it with the credential: admin/credential_watch.py).
PERMISSIONS = {
    "events": Permission.ALERTS_READ,
    "configChanges": Permission.ALERTS_READ,
    "traffic": Permission.ANALYTICS_READ,
}


def stream_permission(document: DocumentNode, operation_name: str | None) -> Permission:
    """The permission the subscription in `document` keeps needing: its root field's
    (a validated subscription has exactly one root field)."""
    operation = get_operation_ast(document, operation_name)
    if operation is not None:
        for selection in operation.selection_set.selections:
            if isinstance(selection, FieldNode) and selection.name.value in PERMISSIONS:
                return PERMISSIONS[selection.name.value]
    return Permission.ALERTS_READ


SUBSCRIPTIONS: dict[str, Any] = {
    "events": strawberry.subscription(
        resolver=events,
        description="Platform events live, in order, resumable with `after` (as "
        "GET /admin/v1/stream; needs alerts:read; an organization's admins: its own)",
    ),
    "configChanges": strawberry.subscription(
        resolver=config_changes,
        description="Config changes live (config.* events, consumer.created): the "
        "`config` room of `events`",
    ),
    "traffic": strawberry.subscription(
        resolver=traffic,
        description="Live traffic, one frame per second from every data-plane worker "
        "(needs analytics:read; an organization's admins: its routes and consumers)",
    ),
}
