"""A `RawUpstream` on its own event loop in a background thread, for synchronous tests.

Tests that drive a gateway subprocess with blocking clients (httpx, raw sockets)
still want an upstream whose every byte they control and whose received
requests they can count; this runs one beside them. Read `upstream.requests` /
`upstream.accepts` from the test thread (appends are atomic), and wait for them
with `wait_until`.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from support.raw_upstream import Handler, RawUpstream


@contextmanager
def threaded_upstream(handler: Handler) -> Iterator[RawUpstream]:
    """Serve `handler` on 127.0.0.1 from a thread; yields the started `RawUpstream`."""
    loop = asyncio.new_event_loop()
    upstream = RawUpstream(handler)
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(upstream.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="raw-upstream", daemon=True)
    thread.start()
    if not ready.wait(10):
        raise TimeoutError("the threaded upstream did not start")
    try:
        yield upstream
    finally:
        asyncio.run_coroutine_threadsafe(upstream.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
    assert upstream.errors == []


async def eventually(condition: Callable[[], object], timeout: float = 10.0) -> None:
    """`wait_until` for async tests: poll `condition` (a coroutine function too) without
    blocking the event loop."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.005)


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll `condition` until it holds; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.01)
