"""Upstream transport benchmark: each transport alone against a local nginx.

Starts nginx (1 worker, no master, `return 200` of a small fixed body, access log
off) on a free 127.0.0.1 port, then from one event loop (uvloop by default)
sends N GETs with C concurrent workers through each transport, reading every
body to the end and closing every response as the proxy does:

- `http1`    `Http1Transport`, the project's own pool (asyncio Protocol + httptools)
- `aiohttp`  `AiohttpTransport`, the reference transport
- `streams`  a minimal asyncio-streams + httptools keep-alive client (GET and
             content-length bodies only), kept here to measure Protocol against
             streams; being minimal it is a best case for streams

Rounds alternate between transports so drift on a shared machine hits them
alike; the best round of each is reported with the ratio to `aiohttp`.

Run from the repository root (about 15 s with the defaults):
    .venv/bin/python benchmarks/transport_bench.py [-n 20000] [-c 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script (`python benchmarks/transport_bench.py`): make the package importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httptools
import uvloop

from benchmarks._procs import (
    ManagedProcess,
    find_executable,
    free_port,
    wait_until_ready,
)
from portcullis.upstream.aiohttp_transport import AiohttpTransport
from portcullis.upstream.http1 import Http1Transport
from portcullis.upstream.transport import (
    Origin,
    Transport,
    TransportTimeouts,
    UpstreamRequest,
    UpstreamResponse,
)

BODY = b"hello from nginx, a small fixed upstream response\n"
TIMEOUTS = TransportTimeouts(connect=5.0, read=30.0, write=30.0)

NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{
    worker_connections 1024;
}}
http {{
    access_log off;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy_temp;
    fastcgi_temp_path {dir}/fastcgi_temp;
    uwsgi_temp_path {dir}/uwsgi_temp;
    scgi_temp_path {dir}/scgi_temp;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type text/plain;
            return 200 "{body}";
        }}
    }}
}}
"""


def start_nginx(prefix: Path, port: int) -> ManagedProcess:
    """Start nginx confined to `prefix` and wait until it answers with `BODY`."""
    conf = prefix / "nginx.conf"
    body = BODY.decode().replace("\n", "\\n")
    conf.write_text(NGINX_CONF.format(dir=prefix, port=port, body=body))
    argv = [
        find_executable("nginx", "/usr/sbin/nginx"),
        "-p",
        f"{prefix}/",
        "-c",
        str(conf),
        "-e",
        str(prefix / "error.log"),
    ]
    proc = ManagedProcess("nginx", argv, log_path=prefix / "stdout.log")
    proc.start()
    try:
        wait_until_ready(proc, port, timeout=15.0, expect_body=BODY)
    except BaseException:
        proc.stop()
        raise
    return proc


class _StreamsBody:
    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data

    def __aiter__(self) -> _StreamsBody:
        return self

    async def __anext__(self) -> bytes:
        data, self._data = self._data, None
        if not data:
            raise StopAsyncIteration
        return data

    async def aclose(self) -> None:
        self._data = None


class _StreamsParse:
    """httptools callbacks collecting one response."""

    __slots__ = ("body", "done", "headers", "keep_alive", "parser")

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.done = False
        self.keep_alive = False
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        # Asked here: llhttp resets its flags once the message is complete.
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done = True


class StreamsPrototype:
    """Minimal keep-alive client on asyncio streams + httptools (benchmark comparison only).

    No timeouts, retries, framing edge cases or streaming: it reads the whole
    (small) body before returning, which only flatters it.
    """

    def __init__(self) -> None:
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def send(
        self, origin: Origin, request: UpstreamRequest, timeouts: TransportTimeouts
    ) -> UpstreamResponse:
        if self._idle:
            reader, writer = self._idle.pop()
        else:
            reader, writer = await asyncio.open_connection(origin.host, origin.port)
        head = [request.method.encode(), b" ", request.target, b" HTTP/1.1\r\n"]
        for name, value in request.headers:
            head += (name, b": ", value, b"\r\n")
        head.append(b"\r\n")
        writer.write(b"".join(head))
        state = _StreamsParse()
        parser = state.parser
        while not state.done:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("upstream closed the connection")
            parser.feed_data(data)
        if state.keep_alive:
            self._idle.append((reader, writer))
        else:
            writer.close()
        body = _StreamsBody(b"".join(state.body))
        return UpstreamResponse(parser.get_status_code(), state.headers, body, b"", body)

    async def aclose(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


TRANSPORTS: dict[str, Callable[[], Transport]] = {
    "http1": Http1Transport,
    "aiohttp": AiohttpTransport,
    "streams": StreamsPrototype,
}


async def drive(
    transport: Transport, origin: Origin, request: UpstreamRequest, n: int, concurrency: int
) -> tuple[float, float]:
    """Send `n` requests with `concurrency` workers; returns (wall, CPU) seconds.

    CPU is this process's (the client's) time: what the transport costs the
    gateway's event loop per request, nginx excluded.
    """
    remaining = n

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            resp = await transport.send(origin, request, TIMEOUTS)
            async for _ in resp.body:
                pass
            await resp.aclose()

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, time.process_time() - cpu


async def check(transport: Transport, origin: Origin, request: UpstreamRequest) -> None:
    resp = await transport.send(origin, request, TIMEOUTS)
    body = b"".join([chunk async for chunk in resp.body])
    await resp.aclose()
    if resp.status != 200 or body != BODY:
        raise RuntimeError(f"unexpected response {resp.status} {body[:80]!r}")


async def bench(
    port: int, names: list[str], n: int, concurrency: int, rounds: int, warmup: int
) -> dict[str, list[tuple[float, float]]]:
    """Run every transport `rounds` times; per transport a list of (req/s, CPU µs/req)."""
    origin = Origin("http", "127.0.0.1", port)
    request = UpstreamRequest("GET", b"/", [(b"host", f"127.0.0.1:{port}".encode())])
    transports = {name: TRANSPORTS[name]() for name in names}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    try:
        for transport in transports.values():
            await check(transport, origin, request)
            await drive(transport, origin, request, warmup, concurrency)
        for r in range(rounds):
            for name, transport in transports.items():
                wall, cpu = await drive(transport, origin, request, n, concurrency)
                results[name].append((n / wall, cpu / n * 1e6))
                print(
                    f"  round {r + 1} {name:8} {n / wall:9.0f} req/s "
                    f"{cpu / n * 1e6:6.1f} µs CPU/req",
                    flush=True,
                )
    finally:
        for transport in transports.values():
            await transport.aclose()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--requests", type=int, default=20_000)
    parser.add_argument("-c", "--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument(
        "--transports", default="http1,aiohttp,streams", help="comma-separated subset"
    )
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.transports.split(",") if name.strip()]
    unknown = set(names) - set(TRANSPORTS)
    if unknown:
        parser.error(f"unknown transports: {', '.join(sorted(unknown))}")

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="portcullis-transport-bench-") as tmp:
        nginx = start_nginx(Path(tmp), port)
        try:
            print(
                f"nginx on 127.0.0.1:{port}; {args.requests} requests x {args.rounds} rounds, "
                f"concurrency {args.concurrency}, {args.loop} loop",
                flush=True,
            )
            run = bench(port, names, args.requests, args.concurrency, args.rounds, args.warmup)
            results = uvloop.run(run) if args.loop == "uvloop" else asyncio.run(run)
        finally:
            nginx.stop()

    best = {name: max(values) for name, values in results.items()}
    base = best["aiohttp"][0] if "aiohttp" in best else None
    print("\ntransport   best req/s   vs aiohttp   CPU µs/req (that round)")
    for name, (rate, cpu_us) in best.items():
        ratio = f"{rate / base:.2f}x" if base else "-"
        print(f"{name:10} {rate:11.0f}   {ratio:>10}   {cpu_us:10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
