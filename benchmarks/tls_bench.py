"""TLS benchmark: plain HTTP/1.1 vs the TLS port on granian and on hypercorn, in one run.

One run starts an nginx origin (`{"ok":true}`) and two `portcullis serve --workers 1`
with `PORTCULLIS_PROXY_TLS=on` and one certificate, one with
`PORTCULLIS_PROXY_TLS_ENGINE=granian` (what "auto" picks for one certificate and no
client CA), one with `=hypercorn` (what several certificates or a client CA get), and
measures, with the same load (32 connections, one request in flight on each):

- `plain-h1`          wrk → the plain port (granian)                          → origin
- `granian-tls-h1`    wrk → the TLS port on granian's TLS (rustls)            → origin
- `granian-tls-h2`    h2load (1 stream per connection) → the same             → origin
- `hypercorn-tls-h1`  wrk → the TLS port on Python ssl + hypercorn (SNI)      → origin
- `hypercorn-tls-h2`  h2load → the same

wrk cannot speak HTTP/2, and h2load's HTTP/1.1 client (`--h1`) counts none of
hypercorn's responses (nghttp2 1.52), so HTTP/1.1 is measured with wrk (its
`--latency` percentiles) and HTTP/2 with h2load (p50/p99 from its `--log-file`).

    .venv/bin/python -m benchmarks.tls_bench [--duration 10] [--connections 32]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks._procs import (
    ManagedProcess,
    StartupError,
    find_executable,
    free_port,
    nginx_origin_conf,
    nginx_process,
    wait_until_ready,
)
from benchmarks.proxy_bench import ORIGIN_BODY, REPO_ROOT, parse_wrk, portcullis_config, run_wrk

TARGETS = (
    "plain-h1", "granian-tls-h1", "granian-tls-h2", "hypercorn-tls-h1", "hypercorn-tls-h2"
)  # fmt: skip
console = Console()


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    succeeded: int
    failed: int


def h2load(
    url: str, *, h1: bool, connections: int, threads: int, duration: int, warmup: int, log: Path
) -> tuple[float, int, int]:
    argv = ["h2load", "-c", str(connections), "-t", str(threads), "-m", "1"]
    argv += ["-D", str(duration), f"--warm-up-time={warmup}", f"--log-file={log}"]
    argv += ["--h1"] if h1 else []
    out = subprocess.run(
        [*argv, url], capture_output=True, text=True, timeout=duration + warmup + 60
    ).stdout
    rps = succeeded = failed = 0
    for line in out.splitlines():
        if line.startswith("finished in"):
            rps = float(line.split(",")[1].split()[0])
        elif line.startswith("requests:"):
            words = line.replace(",", "").split()
            succeeded = int(words[words.index("succeeded") - 1])
            failed = int(words[words.index("failed") - 1]) + int(words[words.index("errored") - 1])
    if not rps:
        raise StartupError(f"h2load gave no figures for {url}:\n{out}")
    return float(rps), succeeded, failed


def latencies_ms(log: Path) -> list[float]:
    """Per-request durations from h2load's log: start (µs), status, duration (µs)."""
    out = []
    for line in log.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 3:
            out.append(int(parts[2]) / 1000)
    return sorted(out)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


def issue_certificate(work: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 from a fresh test CA (tests/support/tls.py)."""
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from support.tls import CertificateAuthority

    issued = CertificateAuthority().issue("bench.example.test", "127.0.0.1")
    cert, key = work / "cert.pem", work / "key.pem"
    cert.write_text(issued.cert)
    key.write_text(issued.key)
    return cert, key


def serve(work: Path, origin: int, engine: str) -> tuple[ManagedProcess, int, int]:
    """`portcullis serve --workers 1` (plain + TLS port, one certificate) on its own store,
    its TLS port on `engine`: (process, plain port, TLS port)."""
    work.mkdir()
    issue_certificate(work)
    config = work / "gateway.yaml"
    config.write_text(
        portcullis_config(origin)
        + "certificates:\n  - name: bench\n    cert_file: cert.pem\n    key_file: key.pem\n"
        "    snis: [bench.example.test]\n"
    )
    plain, admin, tls = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTCULLIS_")}
    env |= {
        "PORTCULLIS_DATABASE_URL": f"sqlite+aiosqlite:///{work / 'bench.db'}",
        "PORTCULLIS_LOG_LEVEL": "warning",
        "PORTCULLIS_SHUTDOWN_GRACE": "2",
        "PORTCULLIS_PROXY_TLS": "on",
        "PORTCULLIS_PROXY_TLS_ENGINE": engine,
        "PORTCULLIS_PROXY_TLS_PORT": str(tls),
        "PORTCULLIS_SECRET_KEY_FILE": str(work / "secret"),
    }
    argv = [sys.executable, "-m", "portcullis", "serve", "--config", str(config)]
    argv += ["--proxy-port", str(plain), "--admin-port", str(admin), "--workers", "1"]
    process = ManagedProcess(
        f"portcullis ({engine} TLS)", argv, log_path=work / "serve.log", env=env, cwd=work
    )
    return process, plain, tls


@contextlib.contextmanager
def gateway(work: Path, origin: int, timeout: float) -> Iterator[tuple[int, int, int]]:
    """Two `portcullis serve`, one certificate each, the TLS port on granian
    (PORTCULLIS_PROXY_TLS_ENGINE=granian, what "auto" picks for one certificate) and on
    hypercorn: yields (plain port, granian TLS port, hypercorn TLS port)."""
    fast, plain, granian_tls = serve(work / "granian", origin, "granian")
    slow, _, hypercorn_tls = serve(work / "hypercorn", origin, "hypercorn")
    try:
        for process, port in ((fast, plain), (slow, None)):
            process.start()
            if port is not None:
                wait_until_ready(process, port, timeout=timeout, expect_body=ORIGIN_BODY.encode())
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", granian_tls), timeout=1).close()
                socket.create_connection(("127.0.0.1", hypercorn_tls), timeout=1).close()
                break
            if time.monotonic() > deadline:
                raise StartupError("the TLS ports never listened")
            time.sleep(0.1)
        yield plain, granian_tls, hypercorn_tls
    finally:
        slow.stop()
        fast.stop()


def wrk_target(name: str, url: str, args: argparse.Namespace) -> Result:
    scheme, _, rest = url.partition("://")
    port = int(rest.split(":")[1].rstrip("/"))
    load = (args.threads, args.connections)
    wrk = find_executable("wrk", "/usr/bin/wrk")
    run_wrk(wrk, port, load, duration=args.warmup, scheme=scheme)
    r = parse_wrk(run_wrk(wrk, port, load, duration=args.duration, scheme=scheme))
    return Result(name, r.requests_per_sec, r.p50_ms, r.p99_ms, r.requests - r.errors, r.errors)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--startup-timeout", type=float, default=60)
    args = parser.parse_args(argv)
    find_executable("h2load", "/usr/bin/h2load")
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="portcullis-tls-bench-") as name:
        tmp = Path(name)
        origin_port = free_port()
        origin = nginx_process(
            "nginx origin",
            tmp / "origin",
            nginx_origin_conf(tmp / "origin", origin_port, ORIGIN_BODY),
        )
        origin.start()
        try:
            wait_until_ready(origin, origin_port, timeout=args.startup_timeout)
            with gateway(tmp, origin_port, args.startup_timeout) as (plain, g_tls, h_tls):
                urls = {
                    "plain-h1": (f"http://127.0.0.1:{plain}/", True),
                    "granian-tls-h1": (f"https://127.0.0.1:{g_tls}/", True),
                    "granian-tls-h2": (f"https://127.0.0.1:{g_tls}/", False),
                    "hypercorn-tls-h1": (f"https://127.0.0.1:{h_tls}/", True),
                    "hypercorn-tls-h2": (f"https://127.0.0.1:{h_tls}/", False),
                }
                for target in args.targets.split(","):
                    url, h1 = urls[target]
                    if h1:
                        results.append(wrk_target(target, url, args))
                        continue
                    log = tmp / f"{target}.log"
                    rps, ok, failed = h2load(
                        url,
                        h1=h1,
                        connections=args.connections,
                        threads=args.threads,
                        duration=args.duration,
                        warmup=args.warmup,
                        log=log,
                    )
                    lat = latencies_ms(log)
                    results.append(
                        Result(target, rps, percentile(lat, 0.5), percentile(lat, 0.99), ok, failed)
                    )
        finally:
            origin.stop()
    base = next((r for r in results if r.name == "plain-h1"), None)
    table = Table(
        title=f"TLS benchmark: -c {args.connections} -t {args.threads} (h2: -m 1), "
        f"{args.duration} s (+{args.warmup} s warm-up), 1 worker each"
    )
    for column in ("target", "client", "req/s", "vs plain-h1", "p50 ms", "p99 ms", "ok", "errors"):
        left = column == "target"
        table.add_column(column, justify="left" if left else "right", no_wrap=left)
    for r in results:
        ratio = f"{r.rps / base.rps:.2f}x" if base and base.rps else "-"
        client = "h2load" if r.name.endswith("h2") else "wrk"
        table.add_row(
            r.name, client, f"{r.rps:,.0f}", ratio, f"{r.p50_ms:.1f}", f"{r.p99_ms:.1f}",
            str(r.succeeded), str(r.failed),
        )  # fmt: skip
    console.print(table)
    return 0 if all(r.failed == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
