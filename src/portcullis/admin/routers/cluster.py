"""`/cluster/v1/connect`: data-plane nodes take their config from here (hybrid mode).

The protocol is in hybrid/protocol.py, the choice of what to send in hybrid/feed.py.
Each connection follows the control plane's `config.applied` events through the
process's stream hub (the same path live streams use: the event bus wakes the hub at
commit, the hub's tail of the event log covers other processes' writes), so a new
version is pushed to every node as it commits; nothing on the node polls the database.
Beside the config, each connection sends the node its identity set and then each
committed key or credential change (hybrid/identity_feed.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from portcullis.events.catalogue import EventType
from portcullis.hybrid.feed import ConfigFeed, Sync
from portcullis.hybrid.identity_feed import IdentityFeed
from portcullis.hybrid.metrics import cluster_metrics
from portcullis.hybrid.protocol import (
    CLOSE_BAD_TOKEN,
    CLOSE_DISABLED,
    CLOSE_PROTOCOL,
    CLOSE_REASONS,
    CLOSE_TRY_AGAIN,
    PATH,
    ProtocolError,
    bearer,
    is_resync,
    parse_hello,
    token_matches,
)
from portcullis.services.state import AdminState
from portcullis.services.streams.filters import EventFilter
from portcullis.services.streams.hub import StreamsFull

log = structlog.get_logger(__name__)
router = APIRouter()
HELLO_TIMEOUT = 10.0
REFUSE_DRAIN = 1.0
_feeds: dict[int, ConfigFeed] = {}


def _feed(state: AdminState) -> ConfigFeed:
    found = _feeds.get(id(state))
    if found is None:
        _feeds.clear()  # one control plane per process (tests may build several in turn)
        found = _feeds[id(state)] = ConfigFeed.on(state.engine)
    return found


async def _close(websocket: WebSocket, code: int, reason: str | None = None) -> None:
    with contextlib.suppress(Exception):
        await websocket.close(code, reason or CLOSE_REASONS[code])


async def _refuse(websocket: WebSocket, code: int) -> None:
    """Close with `code` after the node's hello (read for at most a second, unused): a
    close frame sent while the node's hello is on its way can reach the node as a reset
    (1006) instead of the code that says what is wrong."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(websocket.receive(), REFUSE_DRAIN)
    await _close(websocket, code)


async def _send(websocket: WebSocket, sync: Sync, lock: asyncio.Lock) -> None:
    metrics = cluster_metrics()
    message = sync.message
    async with lock:  # the identity task sends on the same socket
        if isinstance(message, bytes):
            await websocket.send_bytes(message)
        else:
            await websocket.send_text(message)
    metrics.sent.labels(sync.kind).inc()
    metrics.sent_bytes.labels(sync.kind).inc(len(message))


@router.websocket(PATH)
async def connect(websocket: WebSocket) -> None:
    state: AdminState = websocket.app.state.admin
    settings = state.settings
    metrics = cluster_metrics()
    await websocket.accept()
    if not settings.cluster_token:
        metrics.refused.labels("disabled").inc()
        await _refuse(websocket, CLOSE_DISABLED)
        return
    if not token_matches(bearer(websocket.headers.get("authorization")), settings.cluster_token):
        metrics.refused.labels("token").inc()
        log.warning("cluster.token_refused", client=str(websocket.client))
        await _refuse(websocket, CLOSE_BAD_TOKEN)
        return
    try:
        hello = parse_hello(await asyncio.wait_for(websocket.receive_text(), HELLO_TIMEOUT))
    except (ProtocolError, TimeoutError, KeyError) as exc:
        metrics.refused.labels("protocol").inc()
        await _close(websocket, CLOSE_PROTOCOL, f"{CLOSE_REASONS[CLOSE_PROTOCOL]}: {exc}"[:120])
        return
    except WebSocketDisconnect:
        return
    hub = state.streams
    if hub is None:
        await _close(websocket, CLOSE_TRY_AGAIN)
        return
    try:
        # Opened before the first catch-up: a version committed meanwhile is an event here.
        stream = await hub.open(EventFilter.of(types=[EventType.CONFIG_APPLIED.value]))
    except StreamsFull:
        await _close(websocket, CLOSE_TRY_AGAIN)
        return
    log.info("cluster.node_connected", node=hello.node, version=hello.version)
    feed = _feed(state)
    resync = asyncio.Event()

    async def listen() -> None:
        while True:
            text = await websocket.receive_text()
            if is_resync(text):
                resync.set()

    listener = asyncio.create_task(listen(), name="portcullis-cluster-listen")
    lock = asyncio.Lock()

    async def send_identity(text: str) -> None:
        await _send(websocket, Sync(text, 0, "", "identity"), lock)

    # Identity at the edge (hybrid/identity_feed.py): the set, then each change.
    identity = asyncio.create_task(
        IdentityFeed(state.engine, issuer=settings.issuer, secret=state.secret).follow(
            send_identity
        ),
        name="portcullis-cluster-identity",
    )
    events = aiter(stream)
    # The pending read of the next event; kept across rounds (never cancelled midway).
    waiter: asyncio.Future[Any] | None = None
    version, checksum = hello.version, hello.checksum
    try:
        full, first = False, True
        while True:
            sync = await feed.catch_up(version, checksum, full=full)
            # "current" only once, when the node connects: it then knows it is up to date.
            if first or sync.kind != "current":
                await _send(websocket, sync, lock)
                version, checksum, first = sync.version, sync.checksum, False
            # Wait for the next config event, a resync request, or the node leaving. A
            # burst of versions is one round: each round reads the head afresh.
            pending = waiter = waiter or asyncio.ensure_future(anext(events))
            resynced = asyncio.ensure_future(resync.wait())
            done, _ = await asyncio.wait(
                {pending, resynced, listener, identity}, return_when=asyncio.FIRST_COMPLETED
            )
            if resynced not in done:
                resynced.cancel()
            if listener in done:
                break  # the node left (or broke the protocol)
            if identity in done:
                identity.result()  # it failed: close, the node reconnects
            if pending in done:
                pending.result()  # StopAsyncIteration: the hub stopped (shutting down)
                waiter = None
            full = resync.is_set()
            resync.clear()
    except (WebSocketDisconnect, StopAsyncIteration):
        pass
    except Exception as exc:  # the store or the socket failed: the node reconnects
        log.warning("cluster.session_failed", node=hello.node, error=f"{type(exc).__name__}: {exc}")
        await _close(websocket, CLOSE_TRY_AGAIN)
    finally:
        for task in (listener, waiter, identity):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        stream.close()
        log.info("cluster.node_disconnected", node=hello.node)
