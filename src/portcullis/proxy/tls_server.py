"""The proxy's TLS port: the data plane's ASGI app behind Python's TLS, served by hypercorn.

granian (the plain port's server) takes one certificate from files at start and
never reloads it, and puts no TLS details in the scope (docs/decisions/028). This
server runs the same `DataPlane` (same snapshot watcher, plugins, observers) with:

- a TLS context whose SNI callback picks the certificate from the current snapshot
  (`sni.SniTable`, rebuilt only when the snapshot's certificates change), so a
  certificate applied through the admin API, CLI or config file is served to the
  next connection without a restart;
- HTTP/2 and HTTP/1.1 by ALPN (hypercorn speaks both, and WebSocket over HTTP/1.1);
- `scope["scheme"] == "https"` and `scope["extensions"]["tls"]` (the ASGI TLS
  extension: server name, client certificate chain, version, suite) for the
  `mtls-auth` plugin.

hypercorn's own `worker_serve` offers no per-connection hook, so this module runs
its connection handler (`TCPServer`) itself; only that and `Lifespan` are used.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import ssl
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from portcullis.asgi import ASGIApp, Receive, Scope, Send
from portcullis.model.certificates import Certificate
from portcullis.proxy.sni import SniTable, material_of, server_context, tls_extension
from portcullis.runtime.holder import SnapshotHolder
from portcullis.settings import Settings
from portcullis.store.sealing import unseal_key

log = structlog.get_logger(__name__)


@dataclass
class SniSelector:
    """The listener's SNI callback over the holder's current snapshot."""

    holder: SnapshotHolder
    client_ca: str | None = None
    _material: object = None
    _last: object = None
    _table: SniTable = field(default_factory=SniTable)
    # The server name each handshake asked for, by SSL object (read once it completes;
    # weak, so a handshake that fails after the callback leaves nothing behind).
    server_names: weakref.WeakKeyDictionary[Any, str | None] = field(
        default_factory=weakref.WeakKeyDictionary
    )

    def table(self) -> SniTable:
        certificates: list[Certificate] = self.holder.current.config.certificates
        if certificates is not self._material:
            material = material_of(certificates)
            if material != self._last:
                self._table = SniTable.build(certificates, self.client_ca, unseal_key)
                self._last = material
                for name, error in self._table.errors.items():
                    # Checked when applied: a key sealed under another deployment secret.
                    log.error("tls.certificate_unusable", certificate=name, error=error)
                log.info(
                    "tls.certificates_loaded",
                    certificates=sorted(set(self._table.names.values())),
                )
            self._material = certificates
        return self._table

    def __call__(self, ssl_object: Any, server_name: str | None, _: ssl.SSLContext) -> int | None:
        chosen = self.table().select(server_name)
        if chosen is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        ssl_object.context = chosen
        self.server_names[ssl_object] = server_name
        return None

    def listener_context(self) -> ssl.SSLContext:
        ctx = server_context(self.client_ca)
        ctx.sni_callback = self
        return ctx


def with_tls(app: ASGIApp, tls: dict[str, Any]) -> ASGIApp:
    """`app` with the connection's TLS extension in every scope."""

    async def call(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            extensions = scope.get("extensions")
            scope["extensions"] = {**(extensions or {}), "tls": tls}
        await app(scope, receive, send)

    return call


def tls_settings(settings: Settings) -> Settings:
    """The data plane's settings for this process: its silent-connection reaper watches
    the plain port's sockets; here hypercorn's handshake and idle timeouts do that."""
    return settings.model_copy(update={"client_first_byte_timeout": 0.0})


def bind(host: str, port: int, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


async def serve(
    settings: Settings, host: str, port: int, stop: asyncio.Event | None = None
) -> None:
    """Serve the data plane on `host:port` over TLS until SIGTERM/SIGINT (or `stop`)."""
    from hypercorn.app_wrappers import ASGIWrapper
    from hypercorn.asyncio.lifespan import Lifespan
    from hypercorn.asyncio.tcp_server import TCPServer
    from hypercorn.asyncio.worker_context import WorkerContext
    from hypercorn.config import Config

    from portcullis.proxy.server import DataPlane

    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    plane = DataPlane(tls_settings(settings))
    config = Config()
    config.graceful_timeout = settings.shutdown_grace
    config.keep_alive_timeout = 75
    config.ssl_handshake_timeout = max(1.0, settings.client_header_timeout)
    config.h11_max_incomplete_size = settings.max_header_bytes
    config.backlog = settings.listen_backlog
    config.accesslog = None
    config.errorlog = None
    state: dict[str, Any] = {}
    lifespan = Lifespan(ASGIWrapper(plane), config, loop, state)  # type: ignore[arg-type]
    lifespan_task = loop.create_task(lifespan.handle_lifespan())
    await lifespan.wait_for_startup()
    if lifespan_task.done() and lifespan_task.exception() is not None:
        raise RuntimeError(f"the data plane failed to start: {lifespan_task.exception()}")
    ca_file = settings.proxy_tls_client_ca_file
    client_ca = await asyncio.to_thread(Path(ca_file).read_text) if ca_file else None
    selector = SniSelector(plane.holder, client_ca)
    selector.table()  # certificates loaded (and logged) before the first client
    context = WorkerContext(None)
    tasks: set[asyncio.Task[None]] = set()

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        ssl_object = writer.get_extra_info("ssl_object")
        server_name = selector.server_names.pop(ssl_object, None)
        app = with_tls(plane, tls_extension(ssl_object, server_name))
        await TCPServer(ASGIWrapper(app), loop, config, context, state, reader, writer)  # type: ignore[arg-type]

    server = await asyncio.start_server(
        connection,
        sock=bind(host, port, settings.listen_backlog),
        ssl=selector.listener_context(),
        ssl_handshake_timeout=config.ssl_handshake_timeout,
        backlog=settings.listen_backlog,
    )
    log.info("tls.listening", host=host, port=port)
    try:
        await stop.wait()
    finally:
        await context.terminated.set()
        server.close()
        await server.wait_closed()
        if tasks:
            await asyncio.wait(set(tasks), timeout=config.graceful_timeout)
        await lifespan.wait_for_shutdown()
        lifespan_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lifespan_task
