"""One pipelined Redis connection for the data plane's per-request commands.

A rate-limit decision is one `EVALSHA` per request. Through redis-py's asyncio client
it costs ~190 µs of worker CPU at 32 concurrent requests, almost all of it in the
client (pool checkout, command packing, response handling per call); through this
pipe, 18-30 µs (docs/decisions/027-pipelined-redis-decisions.md;
`benchmarks/limits_bench.py` reports both). So the hot path (rate-limit decisions,
response-cache reads and writes) talks to Redis through this: one connection per
worker (`SharedRedis.pipe`), the commands of one event-loop turn written together
(Redis answers in order, so replies are matched first-in-first-out), replies parsed
from the socket buffer as they arrive. Deadlines are watched by one timer per
connection on the oldest command, not a timeout per call.

What it does not do: TLS (`rediss://`: `SharedRedis.pipe` is None and callers keep
redis-py), Cluster redirections, RESP3. A reply error is raised as redis-py's own
`ResponseError` / `NoScriptError`, a lost or refused connection as its
`ConnectionError`, a missed deadline as `TimeoutError`, so callers handle both clients
alike (`REDIS_FAILURES`). When the oldest command misses its deadline the connection
is dropped, the commands still waiting on it fail, and the next command connects
again, so a Redis that stopped answering never leaves an unbounded queue behind.
"""

from __future__ import annotations

import asyncio
import collections
import math
from typing import Any, cast

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

Reply = Any


class _Incomplete(Exception):
    """The buffer ends inside a reply: wait for more bytes."""


_INCOMPLETE = _Incomplete()


def _parse(buf: bytearray, pos: int) -> tuple[Reply, int]:
    """One RESP2 reply at `pos`: (value, position after it); `_Incomplete` if cut short."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _INCOMPLETE
    kind = buf[pos]
    after = end + 2
    if kind == 0x3A:  # ':' integer
        return int(buf[pos + 1 : end]), after
    if kind == 0x2A:  # '*' array
        count = int(buf[pos + 1 : end])
        if count < 0:
            return None, after
        items: list[Reply] = []
        for _ in range(count):
            if buf[after : after + 1] == b":":  # integers inline: a decision's reply
                end = buf.find(b"\r\n", after)
                if end < 0:
                    raise _INCOMPLETE
                items.append(int(buf[after + 1 : end]))
                after = end + 2
            else:
                item, after = _parse(buf, after)
                items.append(item)
        return items, after
    if kind == 0x24:  # '$' bulk string
        size = int(buf[pos + 1 : end])
        if size < 0:
            return None, after
        if len(buf) < after + size + 2:
            raise _INCOMPLETE
        return bytes(buf[after : after + size]), after + size + 2
    if kind == 0x2B:  # '+' simple string
        return bytes(buf[pos + 1 : end]), after
    if kind == 0x2D:  # '-' error
        message = buf[pos + 1 : end].decode("utf-8", "replace")
        error = NoScriptError if message.startswith("NOSCRIPT") else ResponseError
        return error(message), after
    raise ValueError(f"not a RESP2 reply type: {kind!r}")


# Encoded arguments, reused: a decision's script SHA, key count, limits and costs repeat
# from request to request, and so do hot keys. Bounded: cleared when full.
_ENCODED: dict[bytes | str | int, bytes] = {}
_ENCODED_MAX = 65_536


def encode(*args: bytes | str | int) -> bytes:
    """A command as a RESP2 array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    cache = _ENCODED
    for arg in args:
        # A bool equals 1 or 0 as a dict key: never looked up nor kept.
        chunk = None if arg is True or arg is False else cache.get(arg)
        if chunk is None:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            chunk = b"$%d\r\n%b\r\n" % (len(data), data)
            if len(data) <= 256 and arg is not True and arg is not False:
                if len(cache) >= _ENCODED_MAX:
                    cache.clear()
                cache[arg] = chunk
        parts.append(chunk)
    return b"".join(parts)


class _Protocol(asyncio.Protocol):
    """Replies matched to commands first-in-first-out; one timer watches the oldest
    command's deadline (cheaper than a timeout per call: ~8 µs each under load)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: collections.deque[asyncio.Future[Reply]] = collections.deque()
        self.deadlines: collections.deque[float] = collections.deque()
        self.buffer = bytearray()
        self.lost = False
        self._timer: asyncio.TimerHandle | None = None
        # Commands of one loop iteration go out in one write (one system call).
        self._outgoing: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        pos = 0
        try:
            while pos < len(buf):
                reply, pos = _parse(buf, pos)
                future = self.waiting.popleft()
                self.deadlines.popleft()
                if not future.done():  # its caller may have given up (deadline)
                    future.set_result(reply)
        except _Incomplete:
            pass
        except (ValueError, IndexError) as exc:
            # Not Redis, or a reply nobody asked for: nothing after it can be trusted.
            self._fail(RedisConnectionError(f"unexpected data from Redis: {exc}"))
            if self.transport is not None:
                self.transport.abort()
            return
        del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"connection to Redis lost: {exc or 'closed'}"))

    def _fail(self, error: Exception) -> None:
        self.lost = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.deadlines.clear()
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)

    def send(self, payload: bytes, deadline: float = math.inf) -> asyncio.Future[Reply]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply] = loop.create_future()
        if self.lost or self.transport is None:
            future.set_exception(RedisConnectionError("connection to Redis lost"))
            return future
        self.waiting.append(future)
        self.deadlines.append(deadline)
        if not self._outgoing:
            loop.call_soon(self._flush)
        self._outgoing.append(payload)
        # Deadlines mostly grow (one timeout per caller), so this rarely re-arms.
        timer = self._timer
        if deadline != math.inf and (timer is None or deadline < timer.when()):
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(deadline, self._check_deadline)
        return future

    def _flush(self) -> None:
        outgoing, self._outgoing = self._outgoing, []
        if self.transport is not None and not self.lost:
            self.transport.write(b"".join(outgoing))

    def _check_deadline(self) -> None:
        self._timer = None
        if not self.deadlines:
            return
        oldest = self.deadlines[0]
        loop = asyncio.get_running_loop()
        if loop.time() >= oldest:
            # Redis has not answered the oldest command in time; every later reply is
            # queued behind it. Give up on the connection: all of them fail now.
            self._fail(TimeoutError("Redis did not answer within the deadline"))
            if self.transport is not None:
                self.transport.abort()
        elif oldest != math.inf:
            self._timer = loop.call_at(oldest, self._check_deadline)


class RedisPipe:
    """One pipelined connection (see the module doc); connects on first use."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 6379,
        path: str | None = None,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        client_name: str | None = None,
    ) -> None:
        self._address = (host, port, path)
        # Sent before any command on each new connection, pipelined with it.
        hello: list[bytes] = []
        if password is not None:
            auth = ("AUTH", username, password) if username else ("AUTH", password)
            hello.append(encode(*auth))
        if db:
            hello.append(encode("SELECT", db))
        if client_name:
            hello.append(encode("CLIENT", "SETNAME", client_name))
        self._hello = hello
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self.connects = 0

    @property
    def connected(self) -> bool:
        return self._protocol is not None and not self._protocol.lost

    async def execute(self, *args: bytes | str | int, timeout: float | None = None) -> Reply:
        """Send one command and wait for its reply (a reply error is raised). With a
        `timeout`, connecting and the reply must come within it, else `TimeoutError`
        (and, for the reply, the connection is dropped: see `_Protocol`)."""
        if timeout is None:
            if not self.connected:
                await self._connect()
            reply = await self.submit(*args)
        else:
            deadline = asyncio.get_running_loop().time() + timeout
            if not self.connected:
                async with asyncio.timeout_at(deadline):
                    await self._connect()
            reply = await self.submit(*args, deadline=deadline)
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    def submit(self, *args: bytes | str | int, deadline: float = math.inf) -> asyncio.Future[Reply]:
        """Write one command now on the open connection; its reply (an error reply as
        the exception instance, not raised) when it comes, or `TimeoutError` after the
        loop-time `deadline`. Fails at once when the connection is not open."""
        protocol = self._protocol
        if protocol is None:
            raise RedisConnectionError("not connected to Redis")
        return protocol.send(encode(*args), deadline)

    async def _connect(self) -> _Protocol:
        # One connection attempt at a time; concurrent callers wait for it. Shielded:
        # a caller's deadline does not abort an attempt the others are waiting on.
        if self._connecting is None:
            self._connecting = connecting = asyncio.ensure_future(self._open())
            connecting.add_done_callback(self._connected)
        return await asyncio.shield(self._connecting)

    def _connected(self, attempt: asyncio.Future[_Protocol]) -> None:
        self._connecting = None
        if not attempt.cancelled():
            attempt.exception()  # retrieved: a failure nobody waited for is not an error

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        host, port, path = self._address
        try:
            if path is not None:
                _, protocol = await loop.create_unix_connection(_Protocol, path)
            else:
                _, protocol = await loop.create_connection(_Protocol, host, port)
        except OSError as exc:
            raise RedisConnectionError(f"cannot connect to Redis: {exc}") from exc
        self.connects += 1
        replies = [protocol.send(hello) for hello in self._hello]
        for reply in await asyncio.gather(*replies):
            if isinstance(reply, ResponseError):
                assert protocol.transport is not None
                protocol.transport.abort()
                raise RedisConnectionError(f"Redis refused the connection setup: {reply}")
        self._protocol = protocol
        return protocol

    def reset(self) -> None:
        """Drop the connection: commands waiting on it fail; the next one reconnects."""
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.abort()

    async def aclose(self) -> None:
        self.reset()
