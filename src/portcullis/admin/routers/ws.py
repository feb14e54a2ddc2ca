"""`/admin/v1/ws`: platform events, live traffic and presence over one WebSocket.

The protocol (services/streams/rooms.py, described in docs/realtime.md) runs on this
endpoint's small transport: text frames in, JSON messages out, a close code at the end.
Authentication is the admin bearer token, from the upgrade's `Authorization` header or
a first `auth` message (browsers can't set headers on a WebSocket); the credential is
checked again every `stream_recheck_seconds` (`CredentialWatch`).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketState

from portcullis.admin.credential_watch import CredentialWatch
from portcullis.admin.dependencies import Authenticator
from portcullis.services.context import Operation, RequestFacts
from portcullis.services.rbac import Caller
from portcullis.services.scoping import resolve_scope
from portcullis.services.state import AdminState
from portcullis.services.streams.access import StreamService
from portcullis.services.streams.rooms import Access, Lapsed, Limits, RoomSession, TrafficSource
from portcullis.services.web_sessions import DASHBOARD_COOKIE, DashboardSessions

router = APIRouter()


class StarletteTransport:
    """A Starlette WebSocket as the rooms protocol's `Transport`."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket

    async def receive(self) -> str | bytes | None:
        message = await self.websocket.receive()
        if message["type"] == "websocket.disconnect":
            return None
        text = message.get("text")
        if text is not None:
            return str(text)
        return bytes(message.get("bytes") or b"")

    async def send(self, message: dict[str, Any]) -> None:
        await self.websocket.send_text(json.dumps(message, separators=(",", ":")))

    async def close(self, code: int, reason: str) -> None:
        if self.websocket.application_state == WebSocketState.CONNECTED:
            await self.websocket.close(code, reason)


def header_token(websocket: WebSocket) -> str | None:
    """The bearer token of the upgrade request (never one in the URL); "" when the header
    is there but is not a bearer credential (refused like a bad token)."""
    header = websocket.headers.get("authorization")
    if header is None:
        return None
    scheme, _, credential = header.strip().partition(" ")
    return credential.strip() if scheme.lower() == "bearer" else ""


def limits_of(state: AdminState) -> Limits:
    s = state.settings
    return Limits(
        auth_timeout=s.ws_auth_timeout,
        idle_timeout=s.ws_idle_timeout,
        heartbeat=s.stream_heartbeat_seconds,
        max_rooms=s.ws_max_rooms,
        max_message_bytes=s.ws_max_message_bytes,
        send_queue=s.ws_send_queue,
        send_timeout=s.ws_send_timeout,
    )


@router.websocket("/ws")
async def rooms(websocket: WebSocket) -> None:
    authenticator: Authenticator = websocket.app.state.authenticator
    await serve_rooms(websocket, authenticator, header_token(websocket))


# The dashboard's own socket (portcullis/web): the browser's dashboard session cookie
# (Path=/dashboard) is the credential. A cookie goes with any page's request, so the
# upgrade must come from a page of this origin (no cross-site WebSocket hijacking).
dashboard_router = APIRouter()


def same_origin(websocket: WebSocket) -> bool:
    origin = websocket.headers.get("origin")
    if origin is None:
        return False
    scheme, _, rest = origin.partition("://")
    host = websocket.headers.get("host", "")
    return scheme in ("http", "https") and bool(host) and rest.lower() == host.lower()


@dashboard_router.websocket("/dashboard/ws")
async def dashboard_rooms(websocket: WebSocket) -> None:
    if not same_origin(websocket):
        await websocket.close(code=4403, reason="cross-origin WebSocket refused")
        return
    sessions = DashboardSessions(
        websocket.app.state.web_sessions, websocket.app.state.authenticator
    )
    await serve_rooms(websocket, sessions, websocket.cookies.get(DASHBOARD_COOKIE, ""))


async def serve_rooms(
    websocket: WebSocket, authenticator: Authenticator, token: str | None
) -> None:
    """The rooms protocol on `websocket`, for the caller `authenticator` finds behind
    `token` (None: the client sends an `auth` message first)."""
    state: AdminState = websocket.app.state.admin
    facts = RequestFacts.of(
        websocket.headers.get("x-request-id", ""),
        websocket.client.host if websocket.client else None,
    )

    async def authenticate(token: str) -> Access | None:
        caller = await authenticator.authenticate(token) if token else None
        if caller is None:
            return None
        scope = await resolve_scope(state.engine, caller.organization_id)
        op = Operation.for_caller(caller, facts, state.audit, scope)
        watch = CredentialWatch(
            authenticator, token, caller, None, interval=state.settings.stream_recheck_seconds
        )

        async def recheck() -> Caller | Lapsed:
            if await watch.valid():
                return watch.caller
            reason = watch.reason or "the credential no longer holds"
            return Lapsed(reason, "no longer valid" in reason)

        return Access(caller, op, recheck)

    await websocket.accept()
    traffic: TrafficSource | None = state.live_traffic
    session = RoomSession(
        StarletteTransport(websocket),
        authenticate,
        StreamService(state.engine, state.streams),
        limits=limits_of(state),
        traffic=traffic,
        presence=state.presence,
    )
    await session.run(token)
