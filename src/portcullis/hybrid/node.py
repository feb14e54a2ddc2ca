"""The node agent of a data-plane node: the one connection to the control plane.

`portcullis serve --role data-plane` runs this process beside the data plane's
granian workers (a plane of the supervisor, restarted if it dies). It

- opens one WebSocket to the control plane (hybrid/protocol.py), says which version
  it holds, and applies what it is sent: a snapshot, or deltas that it applies to
  the document it holds and checks against the version's checksum (a mismatch asks
  for a snapshot);
- writes every applied version to the last-known-good directory (hybrid/lkg.py),
  which is where the node's workers read their config from (hybrid/source.py);
- reconnects after a backoff with jitter when the connection drops or fails;
- answers `/health/live` and `/health/ready` on the admin port: ready while the node
  serves a config, saying "serving stale config (version N, age …)" while it is cut
  off from the control plane; 503 only while it holds no config at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import ssl
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from portcullis.hybrid.edge_identity import IdentitySet, identity_store
from portcullis.hybrid.lkg import CorruptSnapshot, LkgStore, StoredSnapshot
from portcullis.hybrid.protocol import (
    CLOSE_REASONS,
    RESYNC,
    Current,
    Delta,
    Hello,
    Identity,
    ProtocolError,
    Snapshot,
    parse_binary,
    parse_text,
)
from portcullis.hybrid.roles import websocket_url
from portcullis.logging import configure_logging
from portcullis.model.canonical_text import canonical_text, checksum_of
from portcullis.model.delta import apply_delta
from portcullis.problems import PROBLEM_CONTENT_TYPE, ProblemKind, problem_body
from portcullis.settings import Settings

log = structlog.get_logger(__name__)

NODE_NOT_READY = ProblemKind("node-not-ready", "Data-plane node is not ready", 503)
# Pings keep the connection's liveness known on both sides (and through proxies).
HEARTBEAT = 15.0
CONNECT_TIMEOUT = 10.0


def backoff_delay(
    attempt: int, low: float, high: float, rand: random.Random | None = None
) -> float:
    """Seconds before reconnect `attempt` (0 = the first): `low` doubling to `high`, each
    scaled by a random factor in [0.5, 1.5) so nodes cut off together come back apart."""
    base = min(high, low * 2 ** min(attempt, 32))
    return float(base * (0.5 + (rand or random).random()))


@dataclass
class NodeStatus:
    """What readiness reports; updated by the agent."""

    version: int = 0
    checksum: str = ""
    received_at: float | None = None
    connected: bool = False
    disconnected_at: float | None = None
    last_error: str | None = None
    identity_seq: int = 0
    secret_mismatch: bool = False

    def readiness(self, now: float) -> tuple[int, dict[str, Any]]:
        if self.version == 0:
            detail = "no config yet: the control plane was not reached and last-known-good is empty"
            if self.connected:
                detail = "connected; the control plane holds no config yet"
            return 503, {"detail": detail, "last_error": self.last_error}
        body: dict[str, Any] = {
            "status": "ok",
            "role": "data-plane",
            "config_version": self.version,
            "connected": self.connected,
            "identity_seq": self.identity_seq,
        }
        if self.secret_mismatch:
            # Every presented key would hash differently from the stored ones: the node
            # would answer 401 to all of them, so a load balancer must not send it traffic.
            body["status"] = "misconfigured"
            body["identity_warning"] = (
                "PORTCULLIS_SECRET_KEY differs from the control plane's: API keys are refused"
            )
            return 503, body
        age = now - self.received_at if self.received_at is not None else None
        if age is not None:
            body["config_age_seconds"] = round(age, 1)
        if not self.connected:
            body["status"] = "stale"
            age_text = f"{age:.0f} s" if age is not None else "unknown age"
            body["detail"] = f"serving stale config (version {self.version}, age {age_text})"
            if self.disconnected_at is not None:
                body["disconnected_seconds"] = round(now - self.disconnected_at, 1)
            body["last_error"] = self.last_error
        return 200, body


class NodeAgent:
    def __init__(
        self,
        settings: Settings,
        store: LkgStore | None = None,
        *,
        clock: Any = time.time,
        rand: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.store = store or LkgStore(settings.lkg_dir)
        self.status = NodeStatus()
        self.clock = clock
        self.rand = rand or random.Random()
        self.url = websocket_url(settings.control_plane_url or "")
        # The document of `status.version` (parsed on first need: deltas apply to it).
        self._document: dict[str, Any] | None = None
        self._snapshot: StoredSnapshot | None = None
        self.applied = asyncio.Event()
        # Identity at the edge (hybrid/edge_identity.py): the set and its file.
        self.identity = IdentitySet(records=False)
        self.identity_store = identity_store(settings.lkg_dir)
        self._identity_checksum = ""

    async def load_last_known_good(self) -> None:
        """Set aside corrupt generations, then start from the newest whole one."""
        moved = await asyncio.to_thread(self.store.sweep)
        newest = await asyncio.to_thread(self.store.newest)
        for path in moved:
            log.warning("node.lkg_corrupt_set_aside", file=str(path))
        if newest is not None:
            self._use(newest, None)
            log.info("node.lkg_loaded", version=newest.version, file=str(newest.path))
        for path in await asyncio.to_thread(self.identity_store.sweep):
            log.warning("node.identity_lkg_corrupt_set_aside", file=str(path))
        stored = await asyncio.to_thread(self.identity_store.newest)
        if stored is not None:
            try:
                self.identity = await asyncio.to_thread(IdentitySet.load, stored, records=False)
            except (CorruptSnapshot, ValueError, KeyError, TypeError, IndexError) as exc:
                log.warning("node.identity_lkg_unusable", file=str(stored.path), error=str(exc))
            else:
                self._identity_checksum = stored.checksum
                log.info("node.identity_loaded", seq=stored.version, keys=len(self.identity))

    def _use(self, stored: StoredSnapshot, document: dict[str, Any] | None) -> None:
        self._snapshot = stored
        self._document = document
        self.status.version = stored.version
        self.status.checksum = stored.checksum
        self.status.received_at = stored.received_at

    def _ssl(self) -> ssl.SSLContext | bool:
        if self.url.startswith("wss:"):
            cafile = self.settings.cluster_ca_file
            return ssl.create_default_context(cafile=str(cafile) if cafile else None)
        return False

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until `stop` is set."""
        attempt = 0
        timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not stop.is_set():
                try:
                    if await self._connection(session, stop):
                        attempt = 0
                except (aiohttp.ClientError, OSError, ProtocolError, TimeoutError) as exc:
                    error = f"{type(exc).__name__}: {exc}"[:300]
                    # Once per distinct failure, not once per attempt of an outage.
                    report = log.warning if error != self.status.last_error else log.debug
                    report("node.connection_failed", url=self.url, error=error)
                    self.status.last_error = error
                if self.status.connected or self.status.disconnected_at is None:
                    self.status.disconnected_at = self.clock()
                self.status.connected = False
                delay = backoff_delay(
                    attempt,
                    self.settings.cluster_reconnect_min,
                    self.settings.cluster_reconnect_max,
                    self.rand,
                )
                attempt += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)

    async def _connection(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> bool:
        """One connection, until it ends; True if the control plane sent anything."""
        headers = {"Authorization": f"Bearer {self.settings.cluster_token}"}
        heard = False
        async with session.ws_connect(
            self.url, headers=headers, heartbeat=HEARTBEAT, max_msg_size=0, ssl=self._ssl()
        ) as ws:
            hello = Hello(self.settings.node_name, self.status.version, self.status.checksum)
            await ws.send_str(hello.encode())
            stopping = asyncio.ensure_future(stop.wait())
            try:
                while True:
                    receiving = asyncio.ensure_future(ws.receive())
                    await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
                    if not receiving.done():
                        receiving.cancel()
                        return heard
                    message = receiving.result()
                    if message.type == aiohttp.WSMsgType.TEXT:
                        await self._on_text(ws, parse_text(message.data))
                    elif message.type == aiohttp.WSMsgType.BINARY:
                        await self._on_snapshot(parse_binary(message.data))
                    else:
                        break
                    if not heard:
                        heard = True
                        self.status.connected = True
                        self.status.disconnected_at = None
                        self.status.last_error = None
                        log.info("node.connected", url=self.url, version=self.status.version)
            finally:
                stopping.cancel()
        code = ws.close_code
        if code is not None and code in CLOSE_REASONS:
            self.status.last_error = f"closed by the control plane: {code} {CLOSE_REASONS[code]}"
            log.error("node.refused", url=self.url, code=code, reason=CLOSE_REASONS[code])
        else:
            self.status.last_error = f"connection closed ({code})"
        return heard

    async def _on_text(
        self, ws: aiohttp.ClientWebSocketResponse, message: Current | Delta | Identity
    ) -> None:
        if isinstance(message, Current):
            return
        if isinstance(message, Identity):
            await asyncio.to_thread(self._apply_identity, message)
            return
        if message.start != self.status.version:
            await ws.send_str(RESYNC)
            return
        stored = await asyncio.to_thread(self._apply_delta, message)
        if stored is None:
            log.warning("node.delta_mismatch", version=message.end)
            await ws.send_str(RESYNC)

    def _apply_identity(self, message: Identity) -> None:
        """Apply and persist an identity message (the workers read the file)."""
        check = message.changes.pop("pepper_check", None)
        if check is not None:
            self._check_pepper(check)
        previous = (self.identity.seq, self._identity_checksum)
        if message.full:
            self.identity.replace(message.seq, message.changes)
            step = None
        else:
            self.identity.apply(message.seq, message.changes)
            step = (previous[0], previous[1], [message.changes]) if previous[1] else None
        stored = self.identity_store.save(self.identity.seq, self.identity.body(), step)
        self._identity_checksum = stored.checksum
        self.status.identity_seq = stored.version
        log.info(
            "node.identity_applied",
            seq=stored.version,
            full=message.full,
            keys=len(self.identity),
            bytes=len(stored.body),
        )

    def _check_pepper(self, check: str) -> None:
        from portcullis.hybrid.edge_identity import pepper_check
        from portcullis.identity.secrets import load_server_secret

        settings = self.settings
        mine = pepper_check(load_server_secret(settings.secret_key, settings.secret_key_file))
        self.status.secret_mismatch = mine != check
        if self.status.secret_mismatch:
            log.error(
                "node.server_secret_mismatch",
                detail="this node's PORTCULLIS_SECRET_KEY differs from the control plane's: "
                "every API key will be refused here",
            )

    def _apply_delta(self, message: Delta) -> StoredSnapshot | None:
        document = self._document
        if document is None:
            assert self._snapshot is not None
            document = self._snapshot.document()
        for delta in message.deltas:
            document = apply_delta(document, delta)
        text = canonical_text(document)
        if checksum_of(text) != message.checksum:
            return None
        step = (message.start, self.status.checksum, message.deltas)
        stored = self.store.save(message.end, text.encode(), step)
        self._use(stored, document)
        self._applied(stored, "delta")
        return stored

    async def _on_snapshot(self, snapshot: Snapshot) -> None:
        if not snapshot.verified():
            raise ProtocolError(f"snapshot of version {snapshot.version} fails its checksum")
        stored = await asyncio.to_thread(self.store.save, snapshot.version, snapshot.body)
        self._use(stored, None)
        self._applied(stored, "snapshot")

    def _applied(self, stored: StoredSnapshot, how: str) -> None:
        log.info("node.config_applied", version=stored.version, how=how, bytes=len(stored.body))
        self.applied.set()


def status_app(agent: NodeAgent) -> web.Application:
    async def live(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def ready(_: web.Request) -> web.Response:
        code, body = agent.status.readiness(agent.clock())
        if code == 200:
            return web.json_response(body)
        problem = problem_body(NODE_NOT_READY, body["detail"], last_error=body["last_error"])
        return web.Response(
            body=problem,
            status=code,
            content_type=PROBLEM_CONTENT_TYPE,
            headers={"retry-after": "5"},
        )

    app = web.Application()
    app.router.add_get("/health/live", live)
    app.router.add_get("/health/ready", ready)
    return app


async def serve(settings: Settings) -> None:
    agent = NodeAgent(settings)
    await agent.load_last_known_good()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner = web.AppRunner(status_app(agent), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.admin_host, settings.admin_port)
    await site.start()
    log.info("node.started", url=agent.url, lkg_dir=str(settings.lkg_dir))
    try:
        await agent.run(stop)
    finally:
        await runner.cleanup()


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level, json=settings.log_json)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
