"""An aiohttp server on a thread and event loop of its own, for receivers that must keep
answering while the test's or benchmark's own loop is busy (or blocked in a subprocess
wait). Receivers give it their routes; it owns start, the port and a clean stop."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Callable

from aiohttp import web


class ThreadedAiohttpServer:
    """Serves `routes(app)` on 127.0.0.1 and an ephemeral port until `stop()` (over TLS
    with `ssl_context`).

    `stopping` is set (on the server's loop) when `stop()` is called, so a handler that
    holds a request open on purpose can end it at once instead of delaying shutdown.
    """

    def __init__(
        self,
        routes: Callable[[web.Application], object],
        *,
        name: str = "aiohttp-receiver",
        backlog: int = 128,
        shutdown_timeout: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._routes = routes
        self._ssl_context = ssl_context
        self._backlog = backlog
        self._shutdown_timeout = shutdown_timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._ready = threading.Event()
        self.stopping: asyncio.Event | None = None
        self.port = 0

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self.stopping = asyncio.Event()
        app = web.Application()
        self._routes(app)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=self._shutdown_timeout)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(
            runner, "127.0.0.1", 0, backlog=self._backlog, ssl_context=self._ssl_context
        )
        self._loop.run_until_complete(site.start())
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    def start(self, timeout: float = 30.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"{self._thread.name} did not start within {timeout} s")

    def stop(self, timeout: float = 30.0) -> None:
        def _stop() -> None:
            assert self.stopping is not None
            self.stopping.set()
            self._loop.stop()

        self._loop.call_soon_threadsafe(_stop)
        self._thread.join(timeout)
