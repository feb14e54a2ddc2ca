"""Side-by-side proxy benchmark: the same upstream direct, through nginx and through Portcullis.

One run starts an nginx origin that answers `{"ok":true}`, then measures with wrk,
one target after the other:

- `direct`              wrk → origin
- `nginx`               wrk → nginx proxy_pass (1 worker, upstream keepalive 64) → origin
- `portcullis-http1`    wrk → `portcullis serve --workers 1`, own HTTP/1.1 pool → origin
- `portcullis-aiohttp`  the same with PORTCULLIS_TRANSPORT=aiohttp (the reference transport)

It prints req/s, p50/p99 latency, errors, throughput relative to nginx and p99
added over direct, checks the issue's targets (Portcullis ≥ 0.30 x nginx,
http1 ≥ 2 x aiohttp, added p99 ≤ 3 ms) and writes everything as JSON to
`benchmarks/results/proxy-<UTC timestamp>.json`.

Run from the repository root: `.venv/bin/python benchmarks/proxy_bench.py --help`
(or `.venv/bin/python -m benchmarks`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import FrameType

if __package__ in (None, ""):
    # Run as a script (`python benchmarks/proxy_bench.py`): make the package importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
from rich.console import Console
from rich.table import Table

from benchmarks._procs import (
    ManagedProcess,
    StartupError,
    find_executable,
    free_port,
    nginx_origin_conf,
    nginx_process,
    nginx_proxy_conf,
    wait_until_ready,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
ORIGIN_BODY = '{"ok":true}'
TARGETS = ("direct", "nginx", "portcullis-http1", "portcullis-aiohttp")
DESCRIPTIONS = {
    "direct": "wrk → nginx origin",
    "nginx": "nginx proxy_pass, 1 worker, upstream keepalive 64",
    "portcullis-http1": "portcullis serve --workers 1, PORTCULLIS_TRANSPORT=http1",
    "portcullis-aiohttp": "portcullis serve --workers 1, PORTCULLIS_TRANSPORT=aiohttp",
}
# The targets, all measured without plugins.
MIN_RATIO_VS_NGINX = 0.30
MIN_RATIO_VS_AIOHTTP = 2.0
MAX_ADDED_P99_MS = 3.0
TARGET_CONNECTIONS = 32
BUSY_WARNING_PCT = 15.0
OTHER_CPU_WARNING_PCT = 5.0

# Piped output (e.g. into a file) gets a width that fits the tables, not 80 columns.
console = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True)


class BenchError(RuntimeError):
    """A target could not be measured (start failure, wrk failure, unparseable output)."""


# --------------------------------------------------------------------------- wrk


@dataclass(frozen=True, slots=True)
class WrkResult:
    """What one wrk --latency run reported. Latencies are in milliseconds."""

    requests_per_sec: float
    requests: int
    duration_s: float
    latency_ms: dict[str, float]
    socket_errors: dict[str, int]
    non_2xx_3xx: int

    @property
    def p50_ms(self) -> float:
        return self.latency_ms["50"]

    @property
    def p99_ms(self) -> float:
        return self.latency_ms["99"]

    @property
    def errors(self) -> int:
        return self.non_2xx_3xx + sum(self.socket_errors.values())


_TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_PERCENTILE = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)\s*$", re.MULTILINE)
_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),", re.MULTILINE)
_SOCKET_ERRORS = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", re.MULTILINE
)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)", re.MULTILINE)


def parse_wrk(output: str) -> WrkResult:
    """Parse wrk's text output (run with --latency); raises BenchError if it is incomplete."""
    rps = _RPS.search(output)
    total = _TOTAL.search(output)
    percentiles = {
        m.group(1).removesuffix(".0").removesuffix(".00"): float(m.group(2))
        * _TIME_UNITS_MS[m.group(3)]
        for m in _PERCENTILE.finditer(output)
    }
    if rps is None or total is None or not {"50", "99"} <= percentiles.keys():
        raise BenchError(f"could not parse wrk output:\n{output}")
    sock = _SOCKET_ERRORS.search(output)
    socket_errors = dict.fromkeys(("connect", "read", "write", "timeout"), 0)
    if sock is not None:
        socket_errors = dict(zip(socket_errors, map(int, sock.groups()), strict=True))
    non_2xx = _NON_2XX.search(output)
    return WrkResult(
        requests_per_sec=float(rps.group(1)),
        requests=int(total.group(1)),
        duration_s=float(total.group(2)) * _TIME_UNITS_MS[total.group(3)] / 1000.0,
        latency_ms=percentiles,
        socket_errors=socket_errors,
        non_2xx_3xx=int(non_2xx.group(1)) if non_2xx else 0,
    )


def run_wrk(
    wrk: str, port: int, load: tuple[int, int], *, duration: int, scheme: str = "http"
) -> str:
    """Run wrk with `load` = (threads, connections) against 127.0.0.1:port; return its output.

    wrk is killed if the harness is interrupted meanwhile.
    """
    threads, connections = load
    argv = [wrk, "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--latency"]
    argv.append(f"{scheme}://127.0.0.1:{port}/")
    # Own session: a terminal Ctrl-C reaches the harness, which kills wrk itself.
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=duration + 30)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise BenchError(f"wrk exited with status {proc.returncode}:\n{text}")
    return text


# --------------------------------------------------------------------------- targets


@dataclass(slots=True)
class Run:
    """Shared state of one benchmark run: temp dir, tools, the origin's port, options."""

    tmp: Path
    wrk: str
    python: str
    origin_port: int
    startup_timeout: float
    started: list[ManagedProcess] = field(default_factory=list)

    def track(self, proc: ManagedProcess) -> ManagedProcess:
        self.started.append(proc)
        return proc


@contextlib.contextmanager
def serve_direct(run: Run) -> Iterator[int]:
    """No proxy: wrk talks to the origin itself (the baseline for added latency)."""
    yield run.origin_port


@contextlib.contextmanager
def serve_nginx(run: Run) -> Iterator[int]:
    """nginx proxy_pass with upstream keep-alive, 1 worker: the reference proxy."""
    port = free_port()
    prefix = run.tmp / "nginx-proxy"
    proc = run.track(
        nginx_process("nginx proxy", prefix, nginx_proxy_conf(prefix, port, run.origin_port))
    )
    proc.start()
    try:
        wait_until_ready(proc, port, timeout=run.startup_timeout, expect_body=ORIGIN_BODY.encode())
        yield port
    finally:
        proc.stop()


# `--route api-deprecated`: the catch-all route as a deprecated API version's (issue 18),
# so every response gets the Deprecation/Sunset/Link headers and the sunset clock check.
API_DEPRECATED = (
    "apis:\n"
    "  - name: bench\n"
    "    versions:\n"
    "      - name: v1\n"
    "        status: deprecated\n"
    "        routes: [bench-all]\n"
    '        deprecated_at: "2026-01-01T00:00:00Z"\n'
    '        sunset_at: "2099-01-01T00:00:00Z"\n'
    "        deprecation_link: https://docs.example.com/deprecation\n"
    "        successor: v2\n"
    "      - name: v2\n"
)
ROUTES = ("plain", "api-deprecated")


def portcullis_config(origin_port: int, route: str = "plain") -> str:
    """Gateway YAML: one service on the origin, one catch-all route, no plugins."""
    return (
        'format_version: "1"\n'
        "services:\n"
        "  - name: bench-origin\n"
        f"    url: http://127.0.0.1:{origin_port}\n"
        "routes:\n"
        "  - name: bench-all\n"
        "    service: bench-origin\n"
        "    paths: [/]\n"
    ) + (API_DEPRECATED if route == "api-deprecated" else "")


def serve_portcullis(
    transport: str, route: str = "plain"
) -> Callable[[Run], contextlib.AbstractContextManager[int]]:
    """A target that runs `portcullis serve --workers 1` with the given upstream transport."""

    @contextlib.contextmanager
    def serve(run: Run) -> Iterator[int]:
        work = run.tmp / f"portcullis-{transport}"
        work.mkdir(parents=True, exist_ok=True)
        config = work / "gateway.yaml"
        config.write_text(portcullis_config(run.origin_port, route))
        proxy_port, admin_port = free_port(), free_port()
        # Inherited PORTCULLIS_* settings would make runs incomparable: start from none.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PORTCULLIS_")}
        env |= {
            "PORTCULLIS_DATABASE_URL": f"sqlite+aiosqlite:///{work / 'bench.db'}",
            "PORTCULLIS_LOG_LEVEL": "warning",
            "PORTCULLIS_TRANSPORT": transport,
            "PORTCULLIS_SHUTDOWN_GRACE": "2",
        }
        argv = [run.python, "-m", "portcullis", "serve", "--config", str(config)]
        argv += ["--proxy-port", str(proxy_port), "--admin-port", str(admin_port)]
        argv += ["--workers", "1"]
        proc = run.track(
            ManagedProcess(
                f"portcullis ({transport})",
                argv,
                log_path=work / "serve.log",
                env=env,
                cwd=REPO_ROOT,
            )
        )
        proc.start()
        try:
            wait_until_ready(
                proc, proxy_port, timeout=run.startup_timeout, expect_body=ORIGIN_BODY.encode()
            )
            proc.remember_tree()
            yield proxy_port
        finally:
            proc.stop()

    return serve


SERVERS: dict[str, Callable[[Run], contextlib.AbstractContextManager[int]]] = {
    "direct": serve_direct,
    "nginx": serve_nginx,
    "portcullis-http1": serve_portcullis("http1"),
    "portcullis-aiohttp": serve_portcullis("aiohttp"),
}


@dataclass(slots=True)
class TargetResult:
    """One target's measurement, or why it has none.

    `other_cpu_pct` is the CPU that processes outside this benchmark used while wrk
    measured, as a percentage of all cores: above a few percent the numbers are skewed.
    """

    name: str
    description: str
    result: WrkResult | None = None
    error: str | None = None
    wrk_output: str | None = None
    other_cpu_pct: float | None = None


class OtherCpuMeter:
    """Measures CPU used by processes other than ours (harness, servers, wrk) over a span.

    System-wide user+system time minus the time of our own processes: the harness,
    the given server processes and its reaped children (wrk). Interrupt and softirq
    time is left out of both sides, since loopback traffic lands there.
    """

    def __init__(self, servers: list[psutil.Process]) -> None:
        self._servers = servers
        self._start = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        t = psutil.cpu_times()
        busy = t.user + t.nice + t.system
        ours = 0.0
        for p in self._servers:
            with contextlib.suppress(psutil.Error):
                ct = p.cpu_times()
                ours += ct.user + ct.system
        me = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        ours += me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime
        return time.monotonic(), busy, ours

    def percent(self) -> float:
        """Other processes' CPU since construction, in percent of all cores."""
        wall0, busy0, ours0 = self._start
        wall1, busy1, ours1 = self._sample()
        capacity = (wall1 - wall0) * (os.cpu_count() or 1)
        return max(0.0, (busy1 - busy0) - (ours1 - ours0)) / capacity * 100 if capacity else 0.0


def wait_for_idle_cpu(name: str, limit: float) -> None:
    """Wait up to `limit` s for a 1-s sample of CPU use below BUSY_WARNING_PCT.

    On a machine shared with other work this keeps unrelated bursts out of the
    measurement more often; it cannot keep them out for sure, hence the meter.
    """
    deadline = time.monotonic() + limit
    busy = psutil.cpu_percent(interval=1.0)
    if busy < BUSY_WARNING_PCT:
        return
    err.print(f"[bold]{name}[/]: CPUs {busy:.0f}% busy, waiting up to {limit:.0f}s …")
    while time.monotonic() < deadline:
        busy = psutil.cpu_percent(interval=1.0)
        if busy < BUSY_WARNING_PCT:
            return
    err.print(f"[yellow]{name}: CPUs still {busy:.0f}% busy after {limit:.0f}s; going on[/]")


def measure(run: Run, name: str, args: argparse.Namespace) -> TargetResult:
    """Start `name`, warm it up, measure it with wrk, stop it."""
    out = TargetResult(name, DESCRIPTIONS[name])
    load = (args.threads, args.connections)
    if args.wait_idle > 0:
        wait_for_idle_cpu(name, args.wait_idle)
    err.print(f"[bold]{name}[/]: starting …")
    try:
        server = SERVERS[name]
        if name.startswith("portcullis-") and args.route != "plain":
            server = serve_portcullis(name.removeprefix("portcullis-"), args.route)
        with server(run) as port:
            if args.warmup > 0:
                err.print(f"[bold]{name}[/]: warm-up {args.warmup}s on port {port}")
                run_wrk(run.wrk, port, load, duration=args.warmup)
            err.print(f"[bold]{name}[/]: measuring {args.duration}s")
            meter = OtherCpuMeter([p for proc in run.started for p in proc.processes()])
            text = run_wrk(run.wrk, port, load, duration=args.duration)
            out.other_cpu_pct = meter.percent()
            out.wrk_output = text
            out.result = parse_wrk(text)
    except (BenchError, StartupError, OSError, subprocess.SubprocessError) as exc:
        out.error = f"{type(exc).__name__}: {exc}"
        err.print(f"[red]{name}: {out.error}[/]")
    return out


# --------------------------------------------------------------------------- report


@dataclass(frozen=True, slots=True)
class Check:
    """One of the issue's targets, with the measured value and the verdict."""

    id: str
    name: str
    measured: float | None
    threshold: float
    higher_is_better: bool
    unit: str
    status: str  # PASS | MISS | n/a
    note: str = ""


def _measured(results: dict[str, TargetResult], *names: str) -> list[WrkResult] | None:
    """The results of `names` in that order, or None unless every one was measured."""
    found = [results[n].result if n in results else None for n in names]
    measured = [r for r in found if r is not None]
    return measured if len(measured) == len(names) else None


def _verdict(
    check_id: str,
    name: str,
    compared: list[WrkResult] | None,
    value: Callable[[WrkResult, WrkResult], float],
    *,
    threshold: float,
    higher_is_better: bool,
    unit: str,
    note: str = "",
) -> Check:
    """Judge `value(a, b)` of the two compared runs; any wrk error in them makes it a MISS."""
    if compared is None:
        return Check(
            check_id, name, None, threshold, higher_is_better, unit, "n/a", "target not measured"
        )
    measured = value(compared[0], compared[1])
    good = measured >= threshold if higher_is_better else measured <= threshold
    errors = sum(r.errors for r in compared)
    notes = [note] if note else []
    if errors:
        notes.append(f"{errors} wrk errors in the compared runs")
    status = "PASS" if good and not errors else "MISS"
    text = "; ".join(notes)
    return Check(check_id, name, measured, threshold, higher_is_better, unit, status, text)


def _rps_ratio(a: WrkResult, b: WrkResult) -> float:
    return a.requests_per_sec / b.requests_per_sec


def _added_p99(a: WrkResult, b: WrkResult) -> float:
    return a.p99_ms - b.p99_ms


def evaluate(results: dict[str, TargetResult], connections: int) -> list[Check]:
    """The three checks from the issue, computed from whatever targets were measured."""
    at_target_load = connections == TARGET_CONNECTIONS
    return [
        _verdict(
            "ratio_vs_nginx",
            "portcullis-http1 / nginx (req/s)",
            _measured(results, "portcullis-http1", "nginx"),
            _rps_ratio,
            threshold=MIN_RATIO_VS_NGINX,
            higher_is_better=True,
            unit="x",
        ),
        _verdict(
            "ratio_vs_aiohttp",
            "portcullis-http1 / portcullis-aiohttp (req/s)",
            _measured(results, "portcullis-http1", "portcullis-aiohttp"),
            _rps_ratio,
            threshold=MIN_RATIO_VS_AIOHTTP,
            higher_is_better=True,
            unit="x",
        ),
        _verdict(
            "added_p99_ms",
            "added p99: portcullis-http1 - direct",
            _measured(results, "portcullis-http1", "direct"),
            _added_p99,
            threshold=MAX_ADDED_P99_MS,
            higher_is_better=False,
            unit="ms",
            note="" if at_target_load else f"the target is defined at -c{TARGET_CONNECTIONS}",
        ),
    ]


def _other_cpu_text(pct: float | None) -> str:
    if pct is None:
        return "—"
    text = f"{pct:.0f}%"
    return f"[yellow]{text}[/]" if pct > OTHER_CPU_WARNING_PCT else text


def _errors_text(r: WrkResult) -> str:
    parts = [f"{k} {v}" for k, v in r.socket_errors.items() if v]
    if r.non_2xx_3xx:
        parts.insert(0, f"non-2xx/3xx {r.non_2xx_3xx}")
    return ", ".join(parts) if parts else "0"


def render(
    results: list[TargetResult], checks: list[Check], args: argparse.Namespace, busy_before: float
) -> None:
    """Print the results table, the checks table and any target failures."""
    by_name = {t.name: t for t in results}
    nginx = by_name.get("nginx")
    direct = by_name.get("direct")
    table = Table(
        title=f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s --latency "
        f"(warm-up {args.warmup}s)"
    )
    table.add_column("target")
    for col in ("req/s", "p50 ms", "p99 ms"):
        table.add_column(col, justify="right")
    table.add_column("errors", justify="right")
    table.add_column("vs nginx", justify="right")
    table.add_column("added p99 vs direct", justify="right")
    table.add_column("other CPU", justify="right")
    for t in results:
        r = t.result
        if r is None:
            table.add_row(t.name, "[red]failed[/]", "", "", "", "", "", "")
            continue
        ratio = (
            f"{r.requests_per_sec / nginx.result.requests_per_sec:.2f}x"
            if nginx and nginx.result
            else "—"
        )
        added = (
            f"{r.p99_ms - direct.result.p99_ms:+.2f}"
            if direct and direct.result and t.name != "direct"
            else "—"
        )
        table.add_row(
            t.name,
            f"{r.requests_per_sec:,.0f}",
            f"{r.p50_ms:.2f}",
            f"{r.p99_ms:.2f}",
            _errors_text(r),
            ratio,
            added,
            _other_cpu_text(t.other_cpu_pct),
        )
    console.print(table)
    ct = Table(title="issue targets (no plugins)")
    ct.add_column("check")
    ct.add_column("measured", justify="right")
    ct.add_column("target", justify="right")
    ct.add_column("result")
    ct.add_column("note")
    colour = {"PASS": "green", "MISS": "red", "n/a": "yellow"}
    for c in checks:
        measured = "—" if c.measured is None else f"{c.measured:.2f} {c.unit}"
        target = f"{'≥' if c.higher_is_better else '≤'} {c.threshold:.2f} {c.unit}"
        ct.add_row(c.name, measured, target, f"[{colour[c.status]}]{c.status}[/]", c.note)
    console.print(ct)
    console.print(
        f"CPU busy before the run: {busy_before:.0f}%. 'other CPU': what processes outside "
        f"this benchmark used while wrk measured, in % of all cores; above "
        f"{OTHER_CPU_WARNING_PCT:.0f}% that target's numbers are skewed.",
        highlight=False,
    )
    for t in results:
        if t.error:
            console.print(f"[red]{t.name} failed:[/] {t.error}", highlight=False)


def _command_output(argv: list[str]) -> str:
    """First line a command prints on stdout or stderr (nginx -v and wrk -v use stderr)."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unavailable ({exc})"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0] if lines else ""


def environment(run: Run, nginx: str, busy_before: float) -> dict[str, object]:
    """Facts that make a result file interpretable later."""

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpu_busy_before_pct": busy_before,
        "loadavg_after": list(os.getloadavg()),
        "python": platform.python_version(),
        "nginx": _command_output([nginx, "-v"]),
        "wrk": _command_output([run.wrk, "-v"]),
        "granian": version("granian"),
        "aiohttp": version("aiohttp"),
        "httptools": version("httptools"),
        "git_commit": _command_output(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"]),
    }


def save(
    path: Path,
    args: argparse.Namespace,
    env: dict[str, object],
    results: list[TargetResult],
    checks: list[Check],
) -> None:
    """Write the run as JSON: parameters, environment, per-target numbers and raw wrk output."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "benchmark": "proxy",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "params": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "connections": args.connections,
            "threads": args.threads,
            "origin_body": ORIGIN_BODY,
            "route": args.route,
        },
        "environment": env,
        "targets": [
            {
                "name": t.name,
                "description": t.description,
                "error": t.error,
                **(
                    {
                        "requests_per_sec": t.result.requests_per_sec,
                        "requests": t.result.requests,
                        "duration_s": t.result.duration_s,
                        "latency_ms": t.result.latency_ms,
                        "socket_errors": t.result.socket_errors,
                        "non_2xx_3xx": t.result.non_2xx_3xx,
                    }
                    if t.result
                    else {}
                ),
                "other_cpu_pct": t.other_cpu_pct,
                "wrk_output": t.wrk_output,
            }
            for t in results
        ],
        "checks": [asdict(c) for c in checks],
    }
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Options; rejects combinations wrk would refuse."""
    p = argparse.ArgumentParser(
        prog="proxy_bench",
        description="Measure one upstream directly, through nginx and through Portcullis.",
    )
    p.add_argument("--duration", type=int, default=10, help="seconds per target [10]")
    p.add_argument("--connections", type=int, default=32, help="wrk connections [32]")
    p.add_argument("--threads", type=int, default=2, help="wrk threads [2]")
    p.add_argument("--warmup", type=int, default=2, help="warm-up seconds per target [2]")
    p.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help=f"comma-separated subset of {','.join(TARGETS)} [all]",
    )
    p.add_argument(
        "--startup-timeout", type=float, default=60.0, help="seconds to wait for a server [60]"
    )
    p.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help=f"before each target, wait up to this long for the CPUs to be under "
        f"{BUSY_WARNING_PCT:.0f}%% busy (for shared machines) [0: don't wait]",
    )
    p.add_argument(
        "--route",
        choices=ROUTES,
        default="plain",
        help="what Portcullis's catch-all route is: a plain route, or a deprecated API "
        "version's (lifecycle headers on every response) [plain]",
    )
    p.add_argument("--no-save", action="store_true", help="don't write the JSON result file")
    args = p.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown or not args.targets:
        p.error(f"--targets: unknown {unknown or 'empty list'}; choose from {', '.join(TARGETS)}")
    if args.duration < 1 or args.warmup < 0:
        p.error("--duration must be ≥ 1 and --warmup ≥ 0")
    if args.threads < 1 or args.connections < args.threads:
        p.error("--threads must be ≥ 1 and --connections ≥ --threads (wrk needs both)")
    return args


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when every selected target was measured, 1 otherwise."""
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop every server.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        nginx = find_executable("nginx", "/usr/sbin/nginx")
        wrk = find_executable("wrk", "/usr/bin/wrk")
    except StartupError as exc:
        err.print(f"[red]error:[/] {exc}")
        return 1
    # Other work on this 2-core machine skews every number: measure it, warn, record it.
    busy_before = psutil.cpu_percent(interval=1.0)
    if busy_before > BUSY_WARNING_PCT and not args.wait_idle:
        err.print(
            f"[yellow]warning: the CPUs were {busy_before:.0f}% busy before the run; "
            "other processes will skew these numbers[/]"
        )
    with tempfile.TemporaryDirectory(prefix="portcullis-bench-") as tmp_name:
        tmp = Path(tmp_name)
        origin_port = free_port()
        run = Run(tmp, wrk, sys.executable, origin_port, args.startup_timeout)
        origin = run.track(
            nginx_process(
                "nginx origin",
                tmp / "origin",
                nginx_origin_conf(tmp / "origin", origin_port, ORIGIN_BODY),
            )
        )
        try:
            origin.start()
            try:
                wait_until_ready(
                    origin,
                    origin_port,
                    timeout=args.startup_timeout,
                    expect_body=ORIGIN_BODY.encode(),
                )
            except StartupError as exc:
                err.print(f"[red]error: the origin did not start:[/] {exc}")
                return 1
            results = [measure(run, name, args) for name in args.targets]
        except KeyboardInterrupt:
            err.print("[yellow]interrupted: stopping servers[/]")
            return 130
        finally:
            # A second Ctrl-C must not cut the teardown short and leave servers behind.
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            for proc in reversed(run.started):
                proc.stop()
            signal.signal(signal.SIGINT, previous)
            signal.signal(signal.SIGTERM, _raise_interrupt)
        env = environment(run, nginx, busy_before)
    checks = evaluate({t.name: t for t in results}, args.connections)
    render(results, checks, args, busy_before)
    if not args.no_save:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        path = RESULTS_DIR / f"proxy-{stamp}.json"
        save(path, args, env, results, checks)
        console.print(f"results written to {path.relative_to(REPO_ROOT)}", highlight=False)
    return 0 if all(t.result is not None for t in results) else 1


if __name__ == "__main__":
    sys.exit(main())
