"""What auth and rate limiting cost: the same proxy run with and without plugins, side by side.

One invocation starts an nginx origin (answers `{"ok":true}`) and, when a Redis
target is selected, a private redis-server on a free loopback port; then it
measures with wrk, one target after the other:

- `nginx`              wrk → nginx proxy_pass → origin (the reference proxy)
- `none`               wrk → `portcullis serve --workers 1`, no plugins
- `key-auth`           the same with a global key-auth plugin; wrk sends a real API key
- `key-auth+rl-memory` key-auth + rate-limit on the in-process memory backend
- `key-auth+rl-redis`  key-auth + rate-limit on Redis (`PORTCULLIS_REDIS_URL`)

The key is created through the CLI (`portcullis keys create`) in each gateway's own
store; the limit (per consumer, 10^9 per second) never refuses. Every answer must be
200: a 401 or 429 would show up as wrk's non-2xx count and is reported as an error.

It prints req/s, p50/p99, the ratios against `none` and `nginx`, and the added
cost per request: `1e6/rps(target) - 1e6/rps(none)` µs, which is the extra CPU
time per request while the single gateway worker is saturated. Then, with no
gateway running, the decision cost of each algorithm in microseconds
(`limits_bench.run`: function, memory and Redis backends, the whole plugin).

Results go to `benchmarks/results/plugins-<UTC timestamp>.json`.

Run from the repository root:
    .venv/bin/python benchmarks/plugins_bench.py
    .venv/bin/python benchmarks/plugins_bench.py --duration 3 --warmup 1 --decision-samples 2000
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import io
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

if __package__ in (None, ""):
    # Run as a script (`python benchmarks/plugins_bench.py`): make the package importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
import yaml
from rich.console import Console
from rich.table import Table

from benchmarks import limits_bench
from benchmarks._procs import (
    LOOPBACK,
    ManagedProcess,
    StartupError,
    find_executable,
    free_port,
    nginx_origin_conf,
    nginx_process,
    port_open,
)
from benchmarks.proxy_bench import (
    BUSY_WARNING_PCT,
    ORIGIN_BODY,
    OTHER_CPU_WARNING_PCT,
    BenchError,
    OtherCpuMeter,
    Run,
    TargetResult,
    WrkResult,
    environment,
    parse_wrk,
    serve_nginx,
    wait_for_idle_cpu,
)
from portcullis.limits import Algorithm

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
TARGETS = ("nginx", "none", "key-auth", "key-auth+rl-memory", "key-auth+rl-redis")
DESCRIPTIONS = {
    "nginx": "nginx proxy_pass, 1 worker, upstream keepalive 64",
    "none": "portcullis serve --workers 1, no plugins",
    "key-auth": "+ key-auth (X-API-Key)",
    "key-auth+rl-memory": "+ key-auth + rate-limit (memory backend)",
    "key-auth+rl-redis": "+ key-auth + rate-limit (Redis backend, local redis-server)",
}
CONSUMER = "bench"
KEY_HEADER = "x-api-key"
LIMIT = 10**9  # per second and consumer: never refuses

console = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True)


# --------------------------------------------------------------------------- gateway


def gateway_config(origin_port: int, target: str, algorithm: str) -> dict[str, Any]:
    """One service and a catch-all route; plugins by target (all global)."""
    plugins: list[dict[str, Any]] = []
    if target != "none":
        plugins.append({"name": "key-auth", "config": {}})
    if target.startswith("key-auth+rl"):
        limit = {"limit": LIMIT, "period": "1s", "algorithm": algorithm, "key": "consumer"}
        plugins.append(
            {"name": "rate-limit", "config": {"policy_name": "bench", "limits": [limit]}}
        )
    return {
        "format_version": "1",
        "services": [{"name": "bench-origin", "url": f"http://{LOOPBACK}:{origin_port}"}],
        "routes": [{"name": "bench-all", "service": "bench-origin", "paths": ["/"]}],
        "consumers": [{"username": CONSUMER}],
        "plugins": plugins,
    }


def get(port: int, headers: dict[str, str]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=2.0)
    try:
        conn.request("GET", "/", headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_ready(proc: ManagedProcess, port: int, headers: dict[str, str], timeout: float) -> None:
    """Until GET / with `headers` returns 200 and the origin's body (or StartupError)."""
    deadline = time.monotonic() + timeout
    last = "nothing listening"
    while time.monotonic() < deadline:
        if not proc.alive():
            raise StartupError(f"{proc.name} exited before it was ready\n{proc.log_tail()}")
        if port_open(port):
            try:
                status, body = get(port, headers)
            except (OSError, http.client.HTTPException) as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if status == 200 and body == ORIGIN_BODY.encode():
                    return
                last = f"GET / returned {status}: {body[:200]!r}"
        time.sleep(0.1)
    raise StartupError(f"{proc.name} not ready after {timeout:.0f}s ({last})\n{proc.log_tail()}")


def create_key(env: dict[str, str], python: str) -> str:
    """A real API key for the bench consumer, made by the CLI in the gateway's store."""
    argv = [python, "-m", "portcullis", "keys", "create", CONSUMER, "--name", "bench", "--json"]
    done = subprocess.run(
        argv, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise StartupError(f"portcullis keys create failed:\n{done.stderr}")
    key: str = json.loads(done.stdout)["key"]
    return key


@dataclass(slots=True)
class Bench:
    """The run's shared state, plus what the plugin targets need."""

    run: Run
    redis_url: str | None
    algorithm: str


@contextlib.contextmanager
def serve_portcullis(bench: Bench, target: str) -> Iterator[tuple[int, dict[str, str]]]:
    """`portcullis serve --workers 1` configured for `target`; yields (port, wrk headers)."""
    run = bench.run
    work = run.tmp / f"portcullis-{target}"
    work.mkdir(parents=True, exist_ok=True)
    config = work / "gateway.yaml"
    config.write_text(yaml.safe_dump(gateway_config(run.origin_port, target, bench.algorithm)))
    proxy_port, admin_port = free_port(), free_port()
    # Inherited PORTCULLIS_* settings would make runs incomparable: start from none.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTCULLIS_")}
    env |= {
        "PORTCULLIS_DATABASE_URL": f"sqlite+aiosqlite:///{work / 'bench.db'}",
        "PORTCULLIS_SECRET_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "PORTCULLIS_LOG_LEVEL": "warning",
        "PORTCULLIS_SHUTDOWN_GRACE": "2",
    }
    if target == "key-auth+rl-redis":
        if bench.redis_url is None:
            raise StartupError("no redis-server for the Redis target")
        env["PORTCULLIS_REDIS_URL"] = bench.redis_url
    argv = [run.python, "-m", "portcullis", "serve", "--config", str(config)]
    argv += ["--proxy-port", str(proxy_port), "--admin-port", str(admin_port), "--workers", "1"]
    proc = run.track(
        ManagedProcess(
            f"portcullis ({target})", argv, log_path=work / "serve.log", env=env, cwd=REPO_ROOT
        )
    )
    proc.start()
    try:
        headers: dict[str, str] = {}
        if target != "none":
            deadline = time.monotonic() + run.startup_timeout
            while not port_open(admin_port):
                if not proc.alive() or time.monotonic() > deadline:
                    raise StartupError(f"{proc.name} did not start\n{proc.log_tail()}")
                time.sleep(0.1)
            headers[KEY_HEADER] = create_key(env, run.python)
        wait_ready(proc, proxy_port, headers, run.startup_timeout)
        proc.remember_tree()
        yield proxy_port, headers
    finally:
        proc.stop()


@contextlib.contextmanager
def serve(bench: Bench, target: str) -> Iterator[tuple[int, dict[str, str]]]:
    if target == "nginx":
        with serve_nginx(bench.run) as port:
            yield port, {}
    else:
        with serve_portcullis(bench, target) as served:
            yield served


# --------------------------------------------------------------------------- wrk


def run_wrk(
    wrk: str, port: int, headers: dict[str, str], args: argparse.Namespace, duration: int
) -> str:
    """wrk -t -c -d --latency with `headers` on every request; killed if we are interrupted."""
    argv = [wrk, "-t", str(args.threads), "-c", str(args.connections), "-d", f"{duration}s"]
    argv.append("--latency")
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    argv.append(f"http://{LOOPBACK}:{port}/")
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


def measure(bench: Bench, name: str, args: argparse.Namespace) -> TargetResult:
    """Start `name`, warm it up, measure it with wrk, stop it."""
    run = bench.run
    out = TargetResult(name, DESCRIPTIONS[name])
    if args.wait_idle > 0:
        wait_for_idle_cpu(name, args.wait_idle)
    err.print(f"[bold]{name}[/]: starting …")
    try:
        with serve(bench, name) as (port, headers):
            if args.warmup > 0:
                run_wrk(run.wrk, port, headers, args, args.warmup)
            err.print(f"[bold]{name}[/]: measuring {args.duration}s")
            meter = OtherCpuMeter([p for proc in run.started for p in proc.processes()])
            text = run_wrk(run.wrk, port, headers, args, args.duration)
            out.other_cpu_pct = meter.percent()
            out.wrk_output = text
            out.result = parse_wrk(text)
    except (BenchError, StartupError, OSError, subprocess.SubprocessError) as exc:
        out.error = f"{type(exc).__name__}: {exc}"
        err.print(f"[red]{name}: {out.error}[/]")
    return out


# --------------------------------------------------------------------------- decisions


def decision_costs(samples: int, redis_samples: int, redis_url: str | None) -> list[dict[str, Any]]:
    """Per-algorithm decision cost (µs), from limits_bench, as rows of numbers."""
    import uvloop

    ns = argparse.Namespace(samples=samples, redis_samples=redis_samples)
    # limits_bench prints each row as it goes; the table here prints them once, at the end.
    with contextlib.redirect_stdout(io.StringIO()):
        rows = uvloop.run(limits_bench.run(ns, redis_url))
    out = []
    for algorithm, path, text in rows:
        figures = [float(x) for x in text.split()]
        out.append(
            {
                "algorithm": algorithm,
                "path": path,
                "median_us": figures[0],
                "p99_us": figures[1] if len(figures) > 1 else None,
            }
        )
    return out


# --------------------------------------------------------------------------- report


def ratios(results: list[TargetResult]) -> dict[str, dict[str, float | None]]:
    """Per target: req/s vs none and vs nginx, added p50/p99 ms and added µs per request."""
    by = {t.name: t.result for t in results}
    base, nginx = by.get("none"), by.get("nginx")
    out: dict[str, dict[str, float | None]] = {}
    for t in results:
        r = t.result
        if r is None:
            continue
        row: dict[str, float | None] = {
            "vs_none": r.requests_per_sec / base.requests_per_sec if base else None,
            "vs_nginx": r.requests_per_sec / nginx.requests_per_sec if nginx else None,
            "added_p50_ms": r.p50_ms - base.p50_ms if base else None,
            "added_p99_ms": r.p99_ms - base.p99_ms if base else None,
            "added_us_per_request": (
                1e6 / r.requests_per_sec - 1e6 / base.requests_per_sec
                if base and t.name != "nginx"
                else None
            ),
        }
        out[t.name] = row
    return out


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "—" if value is None else format(value, spec) + suffix


def _errors(r: WrkResult) -> str:
    parts = [f"{k} {v}" for k, v in r.socket_errors.items() if v]
    if r.non_2xx_3xx:
        parts.insert(0, f"non-2xx {r.non_2xx_3xx}")
    return ", ".join(parts) or "0"


def render(
    results: list[TargetResult], decisions: list[dict[str, Any]], args: argparse.Namespace
) -> None:
    rel = ratios(results)
    table = Table(
        title=f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s --latency "
        f"(warm-up {args.warmup}s), rate-limit algorithm {args.algorithm}"
    )
    table.add_column("target")
    for col in ("req/s", "p50 ms", "p99 ms", "errors", "vs none", "vs nginx"):
        table.add_column(col, justify="right")
    for col in ("+p50 ms", "+p99 ms", "+µs/req", "other CPU"):
        table.add_column(col, justify="right")
    for t in results:
        r = t.result
        if r is None:
            table.add_row(t.name, "[red]failed[/]", *[""] * 9)
            continue
        x = rel[t.name]
        cpu = _fmt(t.other_cpu_pct, ".0f", "%")
        if t.other_cpu_pct is not None and t.other_cpu_pct > OTHER_CPU_WARNING_PCT:
            cpu = f"[yellow]{cpu}[/]"
        table.add_row(
            t.name,
            f"{r.requests_per_sec:,.0f}",
            f"{r.p50_ms:.2f}",
            f"{r.p99_ms:.2f}",
            _errors(r),
            _fmt(x["vs_none"], ".2f", "x"),
            _fmt(x["vs_nginx"], ".2f", "x"),
            _fmt(x["added_p50_ms"], "+.2f"),
            _fmt(x["added_p99_ms"], "+.2f"),
            _fmt(x["added_us_per_request"], "+.1f"),
            cpu,
        )
    console.print(table)
    console.print(
        "+µs/req = 1e6/rps(target) - 1e6/rps(none): extra time per request of the saturated "
        "worker. 'other CPU': processes outside this benchmark during the measurement "
        f"(above {OTHER_CPU_WARNING_PCT:.0f}% the row is skewed).",
        highlight=False,
    )
    if decisions:
        dt = Table(title="rate-limit decision cost (µs per decision; limits_bench)")
        dt.add_column("algorithm")
        dt.add_column("path")
        dt.add_column("median µs", justify="right")
        dt.add_column("p99 µs", justify="right")
        for d in decisions:
            dt.add_row(d["algorithm"], d["path"], f"{d['median_us']:.2f}", _fmt(d["p99_us"], ".2f"))
        console.print(dt)
    for t in results:
        if t.error:
            console.print(f"[red]{t.name} failed:[/] {t.error}", highlight=False)


def save(
    path: Path,
    args: argparse.Namespace,
    env: dict[str, object],
    results: list[TargetResult],
    decisions: list[dict[str, Any]],
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rel = ratios(results)
    data = {
        "benchmark": "plugins",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "params": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "connections": args.connections,
            "threads": args.threads,
            "algorithm": args.algorithm,
            "decision_samples": args.decision_samples,
            "redis_decision_samples": args.redis_decision_samples,
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
                        "latency_ms": t.result.latency_ms,
                        "socket_errors": t.result.socket_errors,
                        "non_2xx_3xx": t.result.non_2xx_3xx,
                        **rel.get(t.name, {}),
                    }
                    if t.result
                    else {}
                ),
                "other_cpu_pct": t.other_cpu_pct,
                "wrk_output": t.wrk_output,
            }
            for t in results
        ],
        "decisions": decisions,
    }
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="plugins_bench",
        description="The added cost of key-auth and rate-limit (memory, Redis) vs no plugins.",
    )
    p.add_argument("--duration", type=int, default=10, help="seconds per target [10]")
    p.add_argument("--connections", type=int, default=32, help="wrk connections [32]")
    p.add_argument("--threads", type=int, default=2, help="wrk threads [2]")
    p.add_argument("--warmup", type=int, default=2, help="warm-up seconds per target [2]")
    p.add_argument(
        "--targets", default=",".join(TARGETS), help=f"subset of {','.join(TARGETS)} [all]"
    )
    p.add_argument(
        "--algorithm",
        default="gcra",
        choices=[a.value for a in Algorithm],
        help="rate-limit algorithm of the gateway targets [gcra]",
    )
    p.add_argument(
        "--decision-samples", type=int, default=20_000, help="in-process decision samples"
    )
    p.add_argument(
        "--redis-decision-samples", type=int, default=3_000, help="Redis decision samples"
    )
    p.add_argument("--no-decisions", action="store_true", help="skip the decision-cost part")
    p.add_argument("--startup-timeout", type=float, default=60.0, help="seconds per server [60]")
    p.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help=f"before each target wait up to this long for CPUs < {BUSY_WARNING_PCT:.0f}%% busy",
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
        p.error("--threads must be ≥ 1 and --connections ≥ --threads")
    return args


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """0 when every selected target was measured, 1 otherwise."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        nginx = find_executable("nginx", "/usr/sbin/nginx")
        wrk = find_executable("wrk", "/usr/bin/wrk")
    except StartupError as exc:
        err.print(f"[red]error:[/] {exc}")
        return 1
    busy_before = psutil.cpu_percent(interval=1.0)
    if busy_before > BUSY_WARNING_PCT:
        err.print(f"[yellow]warning: CPUs {busy_before:.0f}% busy before the run[/]")
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from support.redis import running_redis

    need_redis = "key-auth+rl-redis" in args.targets or not args.no_decisions
    decisions: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory(prefix="pc-bench-") as tmp:
        redis_url = stack.enter_context(running_redis()).url if need_redis else None
        run = Run(Path(tmp), wrk, sys.executable, free_port(), args.startup_timeout)
        bench = Bench(run, redis_url, args.algorithm)
        origin = run.track(
            nginx_process(
                "nginx origin",
                run.tmp / "origin",
                nginx_origin_conf(run.tmp / "origin", run.origin_port, ORIGIN_BODY),
            )
        )
        try:
            origin.start()
            wait_ready(origin, run.origin_port, {}, args.startup_timeout)
            results = [measure(bench, name, args) for name in args.targets]
        except KeyboardInterrupt:
            err.print("[yellow]interrupted: stopping servers[/]")
            return 130
        except StartupError as exc:
            err.print(f"[red]error: the origin did not start:[/] {exc}")
            return 1
        finally:
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            for proc in reversed(run.started):
                proc.stop()
            signal.signal(signal.SIGINT, previous)
            signal.signal(signal.SIGTERM, _raise_interrupt)
        env = environment(run, nginx, busy_before)
        if not args.no_decisions:
            err.print("[bold]decision cost[/]: per algorithm (no gateway running)")
            decisions = decision_costs(
                args.decision_samples, args.redis_decision_samples, redis_url
            )
    render(results, decisions, args)
    if not args.no_save:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        path = RESULTS_DIR / f"plugins-{stamp}.json"
        save(path, args, env, results, decisions)
        console.print(f"results written to {path.relative_to(REPO_ROOT)}", highlight=False)
    return 0 if all(t.result is not None for t in results) else 1


if __name__ == "__main__":
    sys.exit(main())
