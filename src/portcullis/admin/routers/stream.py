"""`GET /admin/v1/stream`: platform events live, as server-sent events, resumable.

Every event carries its position as `id:` (the event's id, the same on every node of
one store) and its kind as `event:`; a client that reconnects with `Last-Event-ID`
(browsers' EventSource do it by themselves) gets exactly the events after that
position. A position that cannot be resumed (deleted by retention, or unknown) gets
an explicit `reset` event first. The protocol, rooms and WebSocket face are described
in docs/realtime.md.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from starlette.responses import StreamingResponse

from portcullis.admin import sse
from portcullis.admin.credential_watch import CredentialWatch
from portcullis.admin.operations import admin_state, as_query_errors, operation
from portcullis.admin.problems import problem_responses
from portcullis.events.bus import Event
from portcullis.services.context import Operation
from portcullis.services.errors import ServiceError, invalid
from portcullis.services.rbac import Permission
from portcullis.services.streams.access import StreamService
from portcullis.services.streams.hub import EventStream, StreamItem

router = APIRouter(tags=["Live streams"])

_SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A `text/event-stream` of platform events: `id:` the event's position, "
        "`event:` its kind, `data:` the event as `GET /admin/v1/events` lists it. A `reset` "
        "event (data: reason, requested, resume_after) comes first when the requested "
        "position cannot be resumed; `:` comments are heartbeats.",
        "content": {sse.MEDIA_TYPE: {"schema": {"type": "string"}}},
    }
}


def _csv(values: list[str]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def _position(last_event_id: str | None, after: int | None) -> int | None:
    """Where to resume: the `Last-Event-ID` a reconnecting client sends wins over the
    `after` of the URL it first opened."""
    if last_event_id is None or last_event_id.strip() == "":
        return after
    text = last_event_id.strip()
    if not text.isdigit() or len(text) > 19:
        raise invalid(
            [("#", "header 'Last-Event-ID': must be an event id (a non-negative integer)")]
        )
    return int(text)


@router.get(
    "/stream",
    summary="Platform events live (server-sent events), resumable with Last-Event-ID",
    response_class=StreamingResponse,
    responses={**_SSE_RESPONSE, **problem_responses(401, 403, 404, 422, 429, 503)},
    operation_id="stream_events",
)
async def stream_events(
    request: Request,
    types: Annotated[
        list[str],
        Query(
            description="Event kinds (`key.revoked`), areas (`key.*`) or `*`; "
            "repeat or separate with commas. Default: every kind."
        ),
    ] = [],  # noqa: B006 - FastAPI copies a list default per request
    resource: Annotated[
        list[str],
        Query(
            description="Rooms the events must belong to (any of them): `alerts`, "
            "`config`, `organization:<id>`, `service:<name>`, `route:<name>`, "
            "`consumer:<name>`, `upstream:<name>`, `key:<id>`, `alert:<rule>`."
        ),
    ] = [],  # noqa: B006
    organization: Annotated[
        str | None,
        Query(
            description="Only this organization's events (id or name); an "
            "organization's admins always see their own only."
        ),
    ] = None,
    after: Annotated[
        int | None,
        Query(
            ge=0,
            description="Start after this position (an event id); default: now. "
            "`Last-Event-ID` overrides it.",
        ),
    ] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    op: Operation = Depends(operation(Permission.ALERTS_READ)),
) -> StreamingResponse:
    state = admin_state(request)
    service = StreamService(state.engine, state.streams)
    try:
        stream = await service.open(
            op,
            types=_csv(types),
            rooms=_csv(resource),
            organization=organization,
            after=_position(last_event_id, after),
        )
    except ServiceError as exc:
        raise as_query_errors(exc, ("types", "resource")) from None
    settings = state.settings
    assert op.caller is not None  # the operation dependency authenticated the request
    watch = CredentialWatch(
        request.app.state.authenticator,
        request.headers["authorization"].partition(" ")[2].strip(),
        op.caller,
        Permission.ALERTS_READ,
        interval=settings.stream_recheck_seconds,
    )
    return sse.event_stream(
        _frames(stream, watch, settings.stream_retry_ms, settings.stream_heartbeat_seconds)
    )


async def _frames(
    stream: EventStream, watch: CredentialWatch, retry_ms: int, heartbeat: float
) -> AsyncIterator[str]:
    try:
        # The first bytes go out at once: the client knows the stream is open.
        yield sse.retry(retry_ms) + sse.comment("stream open")
        while True:
            try:
                async with asyncio.timeout(heartbeat):
                    item = await anext(stream)
            except TimeoutError:
                item = None
            except StopAsyncIteration:
                return
            if not await watch.valid():
                # No id: a reconnect with this credential gets the 401/403 it deserves.
                yield sse.frame({"reason": watch.reason}, event="closed")
                return
            if item is None:
                yield sse.comment("heartbeat")
            else:
                # What queued up meanwhile goes in the same write: under fan-out load the
                # cost per write, not per byte, is what limits a process.
                yield "".join(encode(i) for i in (item, *stream.take_ready(_BATCH - 1)))
    finally:
        stream.close()


def encode(item: StreamItem) -> str:
    """An event as an SSE frame; a reset carries the position the stream goes on from.

    The hub hands the same `Event` object to every stream that wants it, so its frame
    is encoded once for all of them (an event fanned out to 5,000 clients is one
    `json.dumps`, not 5,000). Keyed by object identity, holding the event so the id
    cannot be reused: two stores in one process never share a frame."""
    if not isinstance(item, Event):
        return sse.frame(item.as_json(), event="reset", id=str(item.resume_after))
    cached = _FRAMES.get(id(item))
    if cached is not None and cached[0] is item:
        return cached[1]
    text = sse.frame(item.as_json(), event=item.kind, id=str(item.id))
    _FRAMES[id(item)] = (item, text)
    if len(_FRAMES) > _FRAMES_KEPT:
        _FRAMES.popitem(last=False)
    return text


_BATCH = 64
_FRAMES: OrderedDict[int, tuple[Event, str]] = OrderedDict()
_FRAMES_KEPT = 4096
