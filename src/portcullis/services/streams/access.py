"""Opening a live stream for a caller: the one place its inputs are checked and its
organization scope applied (SSE, WebSocket rooms and GraphQL subscriptions call it).

A stream shows what `GET /admin/v1/events` shows the same caller: an admin limited to
an organization gets that organization's events only; an unlimited admin may narrow a
stream to one organization (by id or name).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from portcullis.problems import ProblemKind
from portcullis.services.context import Operation
from portcullis.services.errors import NOT_FOUND, ServiceError, invalid
from portcullis.services.streams.filters import EventFilter
from portcullis.services.streams.hub import EventStream, StreamHub, StreamsFull
from portcullis.store.admin_tables import OrganizationRow

STREAMS_FULL = ProblemKind("streams-full", "Too many open streams", 503)
STREAMS_UNAVAILABLE = ProblemKind("streams-unavailable", "Live streams are not available", 503)


def stream_filter(
    *, types: Iterable[str] = (), rooms: Iterable[str] = (), organization_id: str | None = None
) -> EventFilter:
    """`EventFilter.of`, a bad kind or room refused as a 422 naming its parameter."""
    try:
        kinds = EventFilter.of(types=types).kinds
    except ValueError as exc:
        raise invalid([("#/types", str(exc))]) from None
    try:
        wanted = EventFilter.of(rooms=rooms).rooms
    except ValueError as exc:
        raise invalid([("#/resource", str(exc))]) from None
    return EventFilter(kinds, wanted, organization_id)


class StreamService:
    """Opens streams on the process's hub for callers (see the module docstring)."""

    def __init__(self, engine: AsyncEngine, hub: StreamHub | None) -> None:
        self._engine = engine
        self._hub = hub

    async def scope(self, op: Operation, organization: str | None) -> str | None:
        """The organization id a caller's stream is limited to: their own when limited
        (asking for another is "not found", as everywhere), else the one named, else None."""
        if organization is None or organization == "":
            return op.scope.organization_id
        async with self._engine.connect() as conn:
            found = await conn.scalar(
                select(OrganizationRow.id).where(
                    or_(OrganizationRow.id == organization, OrganizationRow.name == organization)
                )
            )
        if found is None or not op.scope.owns(found):
            raise ServiceError(
                NOT_FOUND, f"no organization {organization!r}", target="organization"
            )
        return str(found)

    async def open(
        self,
        op: Operation,
        *,
        types: Iterable[str] = (),
        rooms: Iterable[str] = (),
        organization: str | None = None,
        after: int | None = None,
    ) -> EventStream:
        """A stream of the caller's events of `types` in `rooms`, after position `after`
        (None: from now on)."""
        hub = self.hub
        wanted = stream_filter(
            types=types,
            rooms=[await self._room(op, room) for room in rooms],
            organization_id=await self.scope(op, organization),
        )
        try:
            return await hub.open(wanted, after=after)
        except StreamsFull:
            raise ServiceError(
                STREAMS_FULL,
                f"this control-plane process serves {hub.max_clients} streams already",
                headers={"retry-after": "5"},
            ) from None

    async def _room(self, op: Operation, room: str) -> str:
        """`organization:<id or name>` as the room events carry (`organization:<id>`);
        another organization's is "not found" like everywhere."""
        head, sep, name = room.partition(":")
        if head != "organization" or not sep or not name:
            return room
        return f"organization:{await self.scope(op, name)}"

    @property
    def hub(self) -> StreamHub:
        if self._hub is None:
            raise ServiceError(
                STREAMS_UNAVAILABLE, "the control plane's background jobs are not running"
            )
        return self._hub
