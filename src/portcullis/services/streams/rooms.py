"""The WebSocket rooms protocol (`/admin/v1/ws`), apart from any transport.

`RoomSession.run` drives one connection through a small `Transport` (receive a text
frame, send a JSON message, close with a code), so the protocol is tested with a fake
transport and served by the Starlette endpoint in admin/routers/ws.py. The protocol
itself (every message and close code) is described in docs/realtime.md:

- **Authentication** first: the bearer token of the upgrade request, or a first
  `{"type": "auth", "token": ...}` message within `auth_timeout` seconds (browsers
  can't set headers on a WebSocket; a token is never taken from the URL).
- **Rooms**: `subscribe` / `unsubscribe`, each room with its own `types` and resume
  position `after`; every server frame names its room and its position. Event rooms
  are opened through `StreamService` (the one place inputs and the organization scope
  are checked); `traffic` comes from the live traffic feed (`TrafficSource`).
- **Presence**: `presence.join` / `presence.leave` on config entities (presence.py).
- **Bounds**: at most `max_rooms` rooms and presence entries, frames of at most
  `max_message_bytes`, one bounded send queue (`send_queue` messages). A room's pump
  waits while the queue is full, so its hub stream falls behind and catches up from
  the event log (the client is told with a `lagged` frame, nothing is lost); a queue
  that stays full for `send_timeout` seconds closes the connection with 4429.
- **Liveness**: a `heartbeat` frame after `heartbeat` seconds without output, the
  credential checked again at each heartbeat (4401/4403 when it no longer holds),
  4000 after `idle_timeout` seconds without a client frame (`ping` keeps it open).

Whatever ends the connection (the client, an abrupt drop, a close code), every hub
stream, traffic listener and presence entry of the session is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import structlog

from portcullis.events.bus import Event
from portcullis.services.context import Operation
from portcullis.services.errors import ServiceError
from portcullis.services.rbac import Caller, Permission
from portcullis.services.streams.access import StreamService
from portcullis.services.streams.hub import EventStream, Reset
from portcullis.services.streams.presence import PresenceHub, PresenceWatcher

log = structlog.get_logger(__name__)

# Close codes (docs/realtime.md).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_TOO_BIG = 1009
CLOSE_IDLE = 4000
CLOSE_MALFORMED = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_AUTH_TIMEOUT = 4408
CLOSE_SLOW_CONSUMER = 4429

TRAFFIC_ROOM = "traffic"
ROOM_PERMISSION = Permission.ALERTS_READ
TRAFFIC_PERMISSION = Permission.ANALYTICS_READ
PRESENCE_PERMISSION = Permission.CONFIG_READ


class Transport(Protocol):
    """One WebSocket as the protocol sees it."""

    async def receive(self) -> str | bytes | None:
        """The next frame; None once the client has gone (closed or dropped)."""

    async def send(self, message: dict[str, Any]) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class TrafficFrameLike(Protocol):
    """What the rooms need of a live traffic frame (services/streams/traffic.py)."""

    @property
    def second(self) -> int: ...

    def visible_to(self, organization_id: str | None) -> TrafficFrameLike: ...

    def as_json(self) -> dict[str, Any]: ...


class TrafficListenerLike(Protocol):
    def __aiter__(self) -> AsyncIterator[TrafficFrameLike]: ...

    def close(self) -> None: ...


class TrafficSource(Protocol):
    """The live traffic feed (`LiveTraffic`): a listener of frames to come, and the
    frames kept in memory after a second (the room's resume)."""

    def listen(self, maxsize: int) -> TrafficListenerLike: ...

    def since(self, second: int) -> Sequence[TrafficFrameLike]: ...


@dataclass(frozen=True, slots=True)
class Access:
    """An authenticated connection: its caller and operation (scope), and the check
    that the credential still holds (`CredentialWatch`)."""

    caller: Caller
    op: Operation
    # The caller as authenticated again now, or why the credential no longer holds
    # (`unauthenticated`: True when it is no longer valid at all).
    recheck: Callable[[], Awaitable[Caller | Lapsed]]


@dataclass(frozen=True, slots=True)
class Lapsed:
    reason: str
    unauthenticated: bool


@dataclass(frozen=True, slots=True)
class Limits:
    auth_timeout: float = 5.0
    idle_timeout: float = 60.0
    heartbeat: float = 15.0
    max_rooms: int = 32
    max_message_bytes: int = 65_536
    send_queue: int = 256
    send_timeout: float = 10.0
    traffic_queue: int = 64


class _Ended(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass
class _Room:
    name: str
    pump: asyncio.Task[None] | None = None
    stream: EventStream | None = None
    listener: TrafficListenerLike | None = None
    position: int | None = None

    def release(self) -> None:
        if self.pump is not None:
            self.pump.cancel()
        if self.stream is not None:
            self.stream.close()
        if self.listener is not None:
            self.listener.close()


def error_frame(
    status: int, code: str, detail: str, request_id: Any = None, **members: Any
) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "status": status, "code": code, "detail": detail}
    if request_id is not None:
        frame["id"] = request_id
    frame.update({k: v for k, v in members.items() if v is not None})
    return frame


class RequestError(Exception):
    """A client message refused with an error frame (the connection stays open)."""

    def __init__(self, status: int, code: str, detail: str, **members: Any) -> None:
        super().__init__(detail)
        self.frame = error_frame(status, code, detail, **members)


@dataclass
class SessionCounters:
    """Process-wide counts (leak checks, metrics)."""

    open: int = 0
    rooms: int = 0
    slow_closed: int = 0
    lagged: int = 0
    queued_max: int = 0
    by_code: dict[int, int] = field(default_factory=dict)


COUNTERS = SessionCounters()


class RoomSession:
    """One WebSocket connection's protocol (see the module docstring)."""

    def __init__(
        self,
        transport: Transport,
        authenticate: Callable[[str], Awaitable[Access | None]],
        streams: StreamService,
        *,
        limits: Limits = Limits(),
        traffic: TrafficSource | None = None,
        presence: PresenceHub | None = None,
    ) -> None:
        self.transport = transport
        self._authenticate = authenticate
        self._streams = streams
        self.limits = limits
        self._traffic = traffic
        self._presence = presence
        self.id = secrets.token_hex(8)
        self.access: Access | None = None
        self.rooms: dict[str, _Room] = {}
        self.joined: set[str] = set()
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(limits.send_queue)
        self.queued_max = 0
        self._ended: asyncio.Future[_Ended] | None = None
        self._sent_since_tick = False

    # ------------------------------------------------------------------ lifecycle

    async def run(self, header_token: str | None) -> int:
        """Serve the connection until it ends; the close code it ended with."""
        COUNTERS.open += 1
        self._ended = asyncio.get_running_loop().create_future()
        tasks: list[asyncio.Task[Any]] = []
        code, reason = CLOSE_NORMAL, ""
        try:
            self.access = await self._authenticated(header_token)
            caller = self.access.caller
            await self.transport.send(
                {
                    "type": "welcome",
                    "session": self.id,
                    "actor": caller.actor,
                    "organization_id": caller.organization_id,
                    "heartbeat": self.limits.heartbeat,
                    "idle_timeout": self.limits.idle_timeout,
                    "max_rooms": self.limits.max_rooms,
                    "max_message_bytes": self.limits.max_message_bytes,
                }
            )
            tasks = [
                asyncio.create_task(self._sender(), name="ws-sender"),
                asyncio.create_task(self._ticker(), name="ws-ticker"),
                asyncio.create_task(self._receiver(), name="ws-receiver"),
            ]
            ended = await self._ended
            code, reason = ended.code, ended.reason
        except _Ended as ended:
            code, reason = ended.code, ended.reason
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self._release()
            COUNTERS.open -= 1
            COUNTERS.by_code[code] = COUNTERS.by_code.get(code, 0) + 1
        if code != 0:
            with contextlib.suppress(Exception):
                await self.transport.close(code, reason)
        return code

    def end(self, code: int, reason: str) -> None:
        """End the connection with `code` (0: the client went away)."""
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(_Ended(code, reason))

    async def _release(self) -> None:
        for room in self.rooms.values():
            room.release()
        COUNTERS.rooms -= len(self.rooms)
        self.rooms.clear()
        if self._presence is not None and self.joined:
            joined, self.joined = self.joined, set()
            with contextlib.suppress(Exception):
                await self._presence.leave_all(self.id, joined)

    async def _authenticated(self, header_token: str | None) -> Access:
        token = header_token
        if token is None:
            limit = (self.limits.auth_timeout, CLOSE_AUTH_TIMEOUT, "no auth message in time")
            message = await self._next(*limit)
            value = message.get("token")
            if message.get("type") != "auth" or not isinstance(value, str) or not value:
                raise _Ended(CLOSE_UNAUTHORIZED, "the first message must be auth with a token")
            token = value
        access = await self._authenticate(token)
        if access is None:
            raise _Ended(CLOSE_UNAUTHORIZED, "the token is invalid, expired or revoked")
        return access

    async def _next(self, timeout: float, code: int, reason: str) -> dict[str, Any]:
        """The client's next message; the connection ends with `code` when none comes
        within `timeout` seconds (and without one when the client went away)."""
        try:
            async with asyncio.timeout(timeout):
                raw = await self.transport.receive()
        except TimeoutError:
            raise _Ended(code, reason) from None
        if raw is None:
            raise _Ended(0, "")
        return self._parse(raw)

    def _parse(self, raw: str | bytes) -> dict[str, Any]:
        if isinstance(raw, bytes):
            raise _Ended(CLOSE_MALFORMED, "binary frames are not part of the protocol")
        if len(raw.encode()) > self.limits.max_message_bytes:
            raise _Ended(
                CLOSE_TOO_BIG, f"messages are limited to {self.limits.max_message_bytes} bytes"
            )
        try:
            value = json.loads(raw)
        except ValueError:
            raise _Ended(CLOSE_MALFORMED, "a message must be a JSON object") from None
        if not isinstance(value, dict):
            raise _Ended(CLOSE_MALFORMED, "a message must be a JSON object")
        return value

    # ------------------------------------------------------------------ tasks

    async def _receiver(self) -> None:
        try:
            idle = (
                self.limits.idle_timeout,
                CLOSE_IDLE,
                "nothing received within the idle timeout",
            )
            while True:
                message = await self._next(*idle)
                try:
                    await self._handle(message)
                except RequestError as exc:
                    if "id" in message and "id" not in exc.frame:
                        exc.frame["id"] = message["id"]
                    await self.put(exc.frame)
        except _Ended as ended:
            self.end(ended.code, ended.reason)

    async def _sender(self) -> None:
        try:
            while True:
                message = await self.queue.get()
                try:
                    async with asyncio.timeout(self.limits.send_timeout):
                        await self.transport.send(message)
                except TimeoutError:
                    COUNTERS.slow_closed += 1
                    raise _Ended(
                        CLOSE_SLOW_CONSUMER, "the client does not read its messages"
                    ) from None
                self._sent_since_tick = True
        except _Ended as ended:
            self.end(ended.code, ended.reason)
        except Exception:  # the transport broke: the client is gone
            self.end(0, "")

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.limits.heartbeat)
            lapsed = await self._recheck()
            if lapsed is not None:
                await self._put_now({"type": "closed", "reason": lapsed.reason})
                code = CLOSE_UNAUTHORIZED if lapsed.unauthenticated else CLOSE_FORBIDDEN
                self.end(code, lapsed.reason[:120])
                return
            if not self._sent_since_tick:
                await self.put({"type": "heartbeat"})
            self._sent_since_tick = False

    async def _recheck(self) -> Lapsed | None:
        """The credential again: still valid, and still holding what each room needs?"""
        assert self.access is not None
        found = await self.access.recheck()
        if isinstance(found, Lapsed):
            return found
        self.access = replace(self.access, caller=found)
        needed = {_permission_of(name) for name in self.rooms}
        if self.joined:
            needed.add(PRESENCE_PERMISSION)
        for permission in sorted(needed):
            if not found.can(permission):
                return Lapsed(f"the caller no longer holds {permission.value!r}", False)
        return None

    async def _put_now(self, message: dict[str, Any]) -> None:
        """Send a last message directly (the queue may be full), bounded in time."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await self.transport.send(message)

    async def put(self, message: dict[str, Any]) -> None:
        """Queue a message; a queue full for `send_timeout` seconds ends the connection."""
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            try:
                async with asyncio.timeout(self.limits.send_timeout):
                    await self.queue.put(message)
            except TimeoutError:
                COUNTERS.slow_closed += 1
                ended = _Ended(CLOSE_SLOW_CONSUMER, "the client does not read its messages")
                self.end(ended.code, ended.reason)
                raise ended from None
        size = self.queue.qsize()
        if size > self.queued_max:
            self.queued_max = size
            COUNTERS.queued_max = max(COUNTERS.queued_max, size)

    def offer(self, message: dict[str, Any]) -> None:
        """Queue a message without waiting (presence); a full queue ends the connection."""
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            COUNTERS.slow_closed += 1
            self.end(CLOSE_SLOW_CONSUMER, "the client does not read its messages")

    # ------------------------------------------------------------------ messages

    async def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        request_id = message.get("id")
        if kind == "ping":
            await self.put(
                {"type": "pong", **({"id": request_id} if request_id is not None else {})}
            )
        elif kind == "subscribe":
            await self._subscribe(message)
        elif kind == "unsubscribe":
            await self._unsubscribe(_room_of(message))
        elif kind == "presence.join":
            await self._join(message)
        elif kind == "presence.leave":
            await self._leave(_text(message, "resource"))
        elif kind == "auth":
            raise RequestError(
                400, "already-authenticated", "the connection is authenticated already"
            )
        else:
            raise RequestError(
                400,
                "unknown-type",
                f"unknown message type {kind!r}: use ping, subscribe, unsubscribe, "
                "presence.join or presence.leave",
            )

    def _require(self, permission: Permission) -> None:
        assert self.access is not None
        if not self.access.caller.can(permission):
            raise RequestError(
                403,
                "forbidden",
                f"this needs the {permission.value!r} permission",
                required_permission=permission.value,
            )

    def _check_room_budget(self) -> None:
        if len(self.rooms) + len(self.joined) >= self.limits.max_rooms:
            raise RequestError(
                429, "too-many-rooms", f"a connection holds at most {self.limits.max_rooms} rooms"
            )

    async def _subscribe(self, message: dict[str, Any]) -> None:
        assert self.access is not None
        name = _room_of(message)
        after = message.get("after")
        if after is not None and (
            not isinstance(after, int) or isinstance(after, bool) or after < 0
        ):
            raise RequestError(
                422, "invalid", "'after' must be a non-negative integer", field="after"
            )
        types = message.get("types", [])
        if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
            raise RequestError(422, "invalid", "'types' must be a list of strings", field="types")
        if name in self.rooms:
            raise RequestError(
                409, "already-subscribed", f"already subscribed to {name!r}", room=name
            )
        self._check_room_budget()
        room = _Room(name)
        if name == TRAFFIC_ROOM:
            self._require(TRAFFIC_PERMISSION)
            if self._traffic is None:
                raise RequestError(
                    503,
                    "traffic-unavailable",
                    "live traffic is not available on this node",
                    room=name,
                )
            room.listener = self._traffic.listen(self.limits.traffic_queue)
            backlog = self._traffic.since(after) if after is not None else []
            room.position = after
            pump = self._traffic_pump(room, backlog)
        else:
            self._require(ROOM_PERMISSION)
            head, _, rest = name.partition(":")
            try:
                if head == "organization":
                    stream = await self._streams.open(
                        self.access.op, types=types, organization=rest, after=after
                    )
                else:
                    stream = await self._streams.open(
                        self.access.op, types=types, rooms=[name], after=after
                    )
            except ServiceError as exc:
                raise RequestError(
                    exc.kind.status,
                    exc.kind.slug,
                    exc.detail or exc.kind.title,
                    room=name,
                    errors=[e.as_json() for e in exc.errors] or None,
                ) from None
            room.stream = stream
            room.position = stream.position
            pump = self._event_pump(room, stream)
        self.rooms[name] = room
        COUNTERS.rooms += 1
        ack: dict[str, Any] = {"type": "subscribed", "room": name, "position": room.position}
        if "id" in message:
            ack["id"] = message["id"]
        await self.put(ack)
        room.pump = asyncio.create_task(pump, name=f"ws-room-{name}")

    async def _unsubscribe(self, name: str) -> None:
        room = self.rooms.pop(name, None)
        if room is None:
            raise RequestError(404, "not-subscribed", f"not subscribed to {name!r}", room=name)
        room.release()
        COUNTERS.rooms -= 1
        await self.put({"type": "unsubscribed", "room": name, "position": room.position})

    async def _event_pump(self, room: _Room, stream: EventStream) -> None:
        lagged = 0
        with contextlib.suppress(asyncio.CancelledError, _Ended):
            async for item in stream:
                if stream.lagged > lagged:
                    lagged = stream.lagged
                    COUNTERS.lagged += 1
                    await self.put({"type": "lagged", "room": room.name, "position": room.position})
                if isinstance(item, Event):
                    room.position = item.id
                    await self.put(
                        {
                            "type": "event",
                            "room": room.name,
                            "position": item.id,
                            "event": item.as_json(),
                        }
                    )
                elif isinstance(item, Reset):
                    room.position = item.resume_after
                    await self.put(
                        {
                            "type": "reset",
                            "room": room.name,
                            "position": item.resume_after,
                            "reset": item.as_json(),
                        }
                    )

    async def _traffic_pump(self, room: _Room, backlog: Sequence[TrafficFrameLike]) -> None:
        assert self.access is not None
        assert room.listener is not None
        organization_id = self.access.op.scope.organization_id

        async def deliver(frame: TrafficFrameLike) -> None:
            if room.position is not None and frame.second <= room.position:
                return  # sent from the backlog already
            room.position = frame.second
            visible = frame.visible_to(organization_id)
            await self.put(
                {
                    "type": "traffic",
                    "room": room.name,
                    "position": frame.second,
                    "traffic": visible.as_json(),
                }
            )

        with contextlib.suppress(asyncio.CancelledError, _Ended):
            for frame in backlog:
                await deliver(frame)
            async for frame in room.listener:
                await deliver(frame)

    async def _join(self, message: dict[str, Any]) -> None:
        assert self.access is not None
        resource = _text(message, "resource")
        state = message.get("state", "viewing")
        if state not in ("viewing", "editing"):
            raise RequestError(422, "invalid", "'state' must be viewing or editing", field="state")
        self._require(PRESENCE_PERMISSION)
        if self._presence is None:
            raise RequestError(503, "presence-unavailable", "presence is not available")
        if resource not in self.joined:
            self._check_room_budget()
        watcher = PresenceWatcher(
            session=self.id,
            caller=self.access.caller,
            scope=self.access.op.scope,
            notify=self.offer,
        )
        try:
            await self._presence.join(watcher, resource, state)
        except ServiceError as exc:
            raise RequestError(
                exc.kind.status, exc.kind.slug, exc.detail or exc.kind.title, resource=resource
            ) from None
        except ValueError as exc:
            raise RequestError(422, "invalid", str(exc), field="resource") from None
        self.joined.add(resource)

    async def _leave(self, resource: str) -> None:
        if resource not in self.joined or self._presence is None:
            raise RequestError(404, "not-joined", f"not present on {resource!r}", resource=resource)
        self.joined.discard(resource)
        await self._presence.leave(self.id, resource)
        await self.put({"type": "presence.left", "resource": resource})


def _text(message: dict[str, Any], name: str) -> str:
    value = message.get(name)
    if not isinstance(value, str) or not value:
        raise RequestError(422, "invalid", f"{name!r} must be a non-empty string", field=name)
    return value


def _permission_of(room: str) -> Permission:
    return TRAFFIC_PERMISSION if room == TRAFFIC_ROOM else ROOM_PERMISSION


def _room_of(message: dict[str, Any]) -> str:
    return _text(message, "room")
