"""The pipelined Redis connection of the data plane's decisions, against a real
redis-server, on the default event loop and on uvloop (the gateway's)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import pytest
import uvloop
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from portcullis.redis_client import SharedRedis
from portcullis.redis_pipe import RedisPipe
from support.redis import RedisServer, running_redis


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Awaitable[None]], None]:
    """Runs a test body on the loop the parameter names."""

    def runner(body: Awaitable[None]) -> None:
        factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop
        with asyncio.Runner(loop_factory=factory) as r:
            r.run(body)  # type: ignore[arg-type]

    return runner


def pipe_for(server: RedisServer) -> RedisPipe:
    pipe = SharedRedis.connect(server.url, timeout=2.0).pipe
    assert pipe is not None
    return pipe


def test_concurrent_commands_each_get_their_own_reply(
    redis_server: RedisServer, run: Callable[[Awaitable[None]], None]
) -> None:
    prefix = f"pipe:{uuid.uuid4().hex}:"

    async def body() -> None:
        pipe = pipe_for(redis_server)
        # 500 commands in flight at once on one connection: replies come back in order.
        replies = await asyncio.gather(
            *(pipe.execute("INCRBY", f"{prefix}{i}", i) for i in range(500))
        )
        assert replies == list(range(500))
        assert await pipe.execute("GET", f"{prefix}7") == b"7"
        assert await pipe.execute("SET", f"{prefix}s", "v") == b"OK"
        assert await pipe.execute("MGET", f"{prefix}s", f"{prefix}none") == [b"v", None]
        assert pipe.connects == 1
        await pipe.aclose()

    run(body())


def test_errors_are_redis_pys_own(
    redis_server: RedisServer, run: Callable[[Awaitable[None]], None]
) -> None:
    async def body() -> None:
        pipe = pipe_for(redis_server)
        with pytest.raises(NoScriptError):
            await pipe.execute("EVALSHA", "0" * 40, 0)
        with pytest.raises(ResponseError, match="unknown command"):
            await pipe.execute("NOT-A-COMMAND")
        # The connection is still in step after errors.
        assert await pipe.execute("PING") == b"PONG"
        await pipe.aclose()

    run(body())


def test_a_lost_server_fails_waiting_commands_and_a_restart_is_reconnected(
    run: Callable[[Awaitable[None]], None],
) -> None:
    with running_redis() as server:

        async def body() -> None:
            pipe = pipe_for(server)
            assert await pipe.execute("PING") == b"PONG"
            server.stop()
            with pytest.raises(RedisConnectionError):
                await pipe.execute("PING")
            server.start()
            assert await pipe.execute("PING") == b"PONG"
            assert pipe.connects == 2
            await pipe.aclose()

        run(body())


def test_reset_fails_the_commands_it_cuts_off_and_the_next_one_reconnects(
    redis_server: RedisServer, run: Callable[[Awaitable[None]], None]
) -> None:
    async def body() -> None:
        pipe = pipe_for(redis_server)
        assert await pipe.execute("PING") == b"PONG"
        # BLPOP holds the connection's reply queue, as a Redis that stopped answering would.
        held = pipe.submit("BLPOP", f"pipe:{uuid.uuid4().hex}", 0)
        behind = pipe.submit("PING")
        pipe.reset()
        for waiting in (held, behind):
            with pytest.raises(RedisConnectionError):
                await waiting
        assert await pipe.execute("PING") == b"PONG"
        assert pipe.connects == 2
        await pipe.aclose()

    run(body())


def test_a_missed_deadline_fails_the_commands_behind_it_and_drops_the_connection(
    redis_server: RedisServer, run: Callable[[Awaitable[None]], None]
) -> None:
    async def body() -> None:
        pipe = pipe_for(redis_server)
        assert await pipe.execute("PING", timeout=2.0) == b"PONG"
        # BLPOP answers after 1 s; the deadline is 0.1 s: the blocked command and the
        # one queued behind it both fail, and the connection is given up.
        held = asyncio.ensure_future(
            pipe.execute("BLPOP", f"pipe:{uuid.uuid4().hex}", 1, timeout=0.1)
        )
        behind = asyncio.ensure_future(pipe.execute("PING", timeout=5.0))
        for waiting in (held, behind):
            with pytest.raises(TimeoutError):
                await waiting
        assert not pipe.connected
        assert await pipe.execute("PING", timeout=2.0) == b"PONG"
        assert pipe.connects == 2
        await pipe.aclose()

    run(body())


def test_the_connection_selects_its_database_and_names_itself(
    redis_server: RedisServer, run: Callable[[Awaitable[None]], None]
) -> None:
    key, name = f"pipe:{uuid.uuid4().hex}", f"pipe-{uuid.uuid4().hex[:8]}"
    shared = SharedRedis.connect(redis_server.url.removesuffix("/0") + "/3", timeout=2.0)
    shared.client.connection_pool.connection_kwargs["client_name"] = name
    sync = Redis.from_url(redis_server.url.removesuffix("/0") + "/3", decode_responses=True)

    async def body() -> None:
        pipe = shared.pipe
        assert pipe is not None
        await pipe.execute("SET", key, "in-3")
        assert [c["name"] for c in sync.client_list() if c.get("name") == name] == [name]
        await pipe.aclose()

    try:
        run(body())
        assert sync.get(key) == "in-3"
    finally:
        sync.close()


def test_a_tls_redis_keeps_redis_py() -> None:
    shared = SharedRedis.connect("rediss://127.0.0.1:1/0", timeout=1.0)
    assert shared.pipe is None


@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_replies_split_anywhere_across_reads_are_parsed_whole(chunk: int) -> None:
    from portcullis.redis_pipe import _Protocol

    async def body() -> None:
        protocol = _Protocol()
        written: list[bytes] = []

        class Transport:
            def write(self, data: bytes) -> None:
                written.append(data)

        protocol.transport = Transport()  # type: ignore[assignment]
        first, second, third = (protocol.send(b"") for _ in range(3))
        stream = b"*3\r\n:1\r\n$3\r\nabc\r\n$-1\r\n+OK\r\n-NOSCRIPT no script\r\n"
        for i in range(0, len(stream), chunk):
            protocol.data_received(stream[i : i + chunk])
        assert await first == [1, b"abc", None]
        assert await second == b"OK"
        assert isinstance(await third, NoScriptError)
        assert protocol.buffer == bytearray()

    asyncio.run(body())


def test_commands_of_one_loop_iteration_go_out_in_one_write() -> None:
    from portcullis.redis_pipe import _Protocol, encode

    async def body() -> None:
        protocol = _Protocol()
        written: list[bytes] = []
        flushed = asyncio.Event()

        class Transport:
            def write(self, data: bytes) -> None:
                written.append(data)
                flushed.set()

        protocol.transport = Transport()  # type: ignore[assignment]
        futures = [protocol.send(encode("INCR", f"k{i}")) for i in range(50)]
        assert written == []  # nothing before the loop turns
        await flushed.wait()
        assert written == [b"".join(encode("INCR", f"k{i}") for i in range(50))]
        protocol.data_received(b"".join(b":%d\r\n" % i for i in range(50)))
        assert [await f for f in futures] == list(range(50))

    asyncio.run(body())


def test_encoded_arguments_are_reused_but_never_confused() -> None:
    from portcullis.redis_pipe import encode

    assert (
        encode("EVALSHA", 1, "1", b"1")
        == b"*4\r\n$7\r\nEVALSHA\r\n$1\r\n1\r\n$1\r\n1\r\n$1\r\n1\r\n"
    )
    assert encode(True, 1) == b"*2\r\n$4\r\nTrue\r\n$1\r\n1\r\n"
    assert encode(1, True) == b"*2\r\n$1\r\n1\r\n$4\r\nTrue\r\n"
