"""Soak: a long run at a fixed share of the measured maximum rate, watching for slow failures.

What a short benchmark cannot show: memory that grows a little per request, file
descriptors that leak, errors that only appear after minutes, request-log rows
that go missing under sustained load. This harness

1. starts an nginx origin and `portcullis serve --workers W` (request log and
   metrics on, the defaults) on a fresh SQLite store;
2. measures the gateway's maximum rate with `wrk -t2 -c32` for `--probe` seconds
   (on another path, so those requests are not counted below);
3. drives paced load (open loop, latency from the scheduled send time, see
   `request_log_bench.py`) at `--share` of that maximum for `--duration` seconds,
   in segments of `--segment` seconds, while a sampler records every gateway
   process's RSS and open file descriptors every `--sample-every` seconds;
4. stops the gateway gracefully (workers flush their request-log queues) and
   compares responses received with rows in `request_log`.

It reports, per process, RSS and descriptors at the start of the measured load
and at the end, the peak, and the least-squares slope of RSS after the warm-up
(MiB per 10 minutes), plus 5xx and client errors per segment and the p50/p99/
p99.9 latency of every segment.

    .venv/bin/python benchmarks/soak_bench.py                       # 30 min at 50 % of max
    .venv/bin/python benchmarks/soak_bench.py --duration 120 --segment 30   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
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
from benchmarks.request_log_bench import (
    ORIGIN_BODY,
    BenchError,
    LoadResult,
    count_rows,
    drive_load,
    gateway_config,
    percentile,
    queue_totals,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
PROBE_PATH = "/probe/max"
console = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True)


def role(proc: psutil.Process) -> str:
    """A stable name for a gateway process: supervisor, data/control plane main, worker."""
    try:
        cmd = " ".join(proc.cmdline())
        parent = proc.parent()
        parent_cmd = " ".join(parent.cmdline()) if parent is not None else ""
    except psutil.Error:
        return "gone"
    if "portcullis serve" in cmd:
        return "supervisor"
    plane = "data" if "proxy.server" in cmd else "control" if "admin.app" in cmd else "?"
    # A plane's main process runs granian (through portcullis.supervision.plane_process).
    launcher = ("granian", "plane_process")
    if any(w in cmd for w in launcher) and not any(w in parent_cmd for w in launcher):
        return f"{plane}-plane main"
    # granian workers are spawned by multiprocessing: their cmdline names no target.
    parent_plane = (
        "data"
        if "proxy.server" in parent_cmd
        else "control"
        if "admin.app" in parent_cmd
        else plane
    )
    return f"{parent_plane}-plane worker {proc.pid}"


@dataclass
class Sample:
    at: float
    rss_mib: dict[str, float]
    fds: dict[str, int]


@dataclass
class Sampler:
    """Samples RSS and descriptors of a process tree on a thread until stopped."""

    gateway: ManagedProcess
    every: float
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> Sample:
        rss: dict[str, float] = {}
        fds: dict[str, int] = {}
        for proc in self.gateway.processes():
            name = role(proc)
            try:
                rss[name] = proc.memory_info().rss / 2**20
                fds[name] = proc.num_fds()
            except psutil.Error:
                continue
        return Sample(time.monotonic(), rss, fds)

    def run(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append(self.sample())

    def start(self) -> threading.Thread:
        self.samples.append(self.sample())
        thread = threading.Thread(target=self.run, name="soak-sampler", daemon=True)
        thread.start()
        return thread

    def stop(self, thread: threading.Thread) -> None:
        self._stop.set()
        thread.join()
        self.samples.append(self.sample())


def slope_per_10min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) points, in MiB per 10 minutes."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    cov = sum((t - mx) * (v - my) for t, v in points)
    return cov / var * 600


def measure_max(port: int, seconds: int) -> float:
    """wrk -t2 -c32 for `seconds` on PROBE_PATH: requests per second."""
    wrk = find_executable("wrk", "/usr/bin/wrk")
    out = subprocess.run(
        [wrk, "-t2", "-c32", f"-d{seconds}s", f"http://127.0.0.1:{port}{PROBE_PATH}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if found is None:
        raise BenchError(f"wrk printed no rate:\n{out}")
    return float(found.group(1))


def segment_summary(load: LoadResult) -> dict[str, Any]:
    server_errors = sum(n for status, n in load.statuses.items() if status >= 500)
    return {
        "sent": load.sent,
        "responses": load.responses,
        "5xx": server_errors,
        "client_errors": load.errors,
        "p50_ms": round(percentile(load.latencies_ms, 50), 3),
        "p99_ms": round(percentile(load.latencies_ms, 99), 3),
        "p999_ms": round(percentile(load.latencies_ms, 99.9), 3),
    }


def memory_report(samples: list[Sample], warmup_until: float) -> list[dict[str, Any]]:
    names = sorted({name for s in samples for name in s.rss_mib})
    rows = []
    for name in names:
        series = [(s.at, s.rss_mib[name], s.fds.get(name, 0)) for s in samples if name in s.rss_mib]
        steady = [(t, rss) for t, rss, _ in series if t >= warmup_until] or [
            (t, rss) for t, rss, _ in series
        ]
        rows.append(
            {
                "process": name,
                "rss_start_mib": round(series[0][1], 1),
                "rss_after_warmup_mib": round(steady[0][1], 1),
                "rss_end_mib": round(series[-1][1], 1),
                "rss_peak_mib": round(max(rss for _, rss, _ in series), 1),
                "rss_slope_mib_per_10min": round(slope_per_10min(steady), 2),
                "fds_start": series[0][2],
                "fds_end": series[-1][2],
                "fds_peak": max(f for _, _, f in series),
                "samples": len(series),
            }
        )
    return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="portcullis-soak-") as name:
        tmp = Path(name)
        origin_port = free_port()
        origin = nginx_process(
            "nginx origin",
            tmp / "origin",
            nginx_origin_conf(tmp / "origin", origin_port, ORIGIN_BODY),
        )
        config = tmp / "gateway.yaml"
        config.write_text(gateway_config(origin_port))
        database_url = f"sqlite+aiosqlite:///{tmp / 'soak.db'}"
        proxy_port, admin_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PORTCULLIS_")}
        env |= {
            "PORTCULLIS_DATABASE_URL": database_url,
            "PORTCULLIS_LOG_LEVEL": "info",
            "PORTCULLIS_SECRET_KEY_FILE": str(tmp / "secret"),
            "PORTCULLIS_SHUTDOWN_GRACE": "30",
        }
        argv = [sys.executable, "-m", "portcullis", "serve", "--config", str(config)]
        argv += ["--proxy-port", str(proxy_port), "--admin-port", str(admin_port)]
        argv += ["--workers", str(args.workers)]
        gateway = ManagedProcess("portcullis", argv, log_path=tmp / "serve.log", env=env, cwd=tmp)
        origin.start()
        try:
            wait_until_ready(origin, origin_port, timeout=30, expect_body=ORIGIN_BODY.encode())
            gateway.start()
            wait_until_ready(gateway, proxy_port, timeout=90, expect_body=ORIGIN_BODY.encode())
            gateway.remember_tree()
            maximum = measure_max(proxy_port, args.probe)
            rate = args.rate or maximum * args.share
            console.print(
                f"maximum {maximum:,.0f} req/s (wrk -t2 -c32, {args.probe} s); "
                f"soaking at {rate:,.0f} req/s for {args.duration:.0f} s"
            )
            sampler = Sampler(gateway, args.sample_every)
            thread = sampler.start()
            started = time.monotonic()
            segments: list[dict[str, Any]] = []
            total = LoadResult()
            with Progress(
                TextColumn("soak"),
                BarColumn(),
                TextColumn("{task.completed:.0f}/{task.total:.0f} s  {task.fields[status]}"),
                TimeElapsedColumn(),
                console=err,
            ) as progress:
                task = progress.add_task("soak", total=args.duration, status="")
                while (elapsed := time.monotonic() - started) < args.duration:
                    seconds = min(args.segment, args.duration - elapsed)
                    load = drive_load(
                        proxy_port,
                        rate=rate,
                        duration=seconds,
                        procs=args.procs,
                        connections=args.connections,
                    )
                    summary = segment_summary(load)
                    segments.append(summary)
                    total.sent += load.sent
                    total.responses += load.responses
                    total.errors += load.errors
                    for status, n in load.statuses.items():
                        total.statuses[status] = total.statuses.get(status, 0) + n
                    progress.update(
                        task,
                        completed=time.monotonic() - started,
                        status=f"p99 {summary['p99_ms']} ms, 5xx {summary['5xx']}",
                    )
            sampler.stop(thread)
            gateway.remember_tree()
        finally:
            gateway.stop(grace=60)
            origin.stop()
        log_text = gateway.log_path.read_text(errors="replace")
        written, dropped, lost, closed = queue_totals(log_text)
        _all_rows, rows = count_rows(database_url)
        warmup_until = started + min(args.warmup, args.duration / 2)
        return {
            "maximum_rps": round(maximum, 1),
            "rate": round(rate, 1),
            "duration_s": args.duration,
            "workers": args.workers,
            "sent": total.sent,
            "responses": total.responses,
            "statuses": {str(k): v for k, v in sorted(total.statuses.items())},
            "5xx": sum(n for s, n in total.statuses.items() if s >= 500),
            "client_errors": total.errors,
            "request_log_rows": rows,
            "rows_equal_responses": rows == total.responses,
            "queue_written": written,
            "queue_dropped": dropped,
            "queue_lost": lost,
            "workers_closed": closed,
            "segments": segments,
            "processes": memory_report(sampler.samples, warmup_until),
        }


def render(result: dict[str, Any]) -> None:
    table = Table(title=f"soak: {result['duration_s']:.0f} s at {result['rate']:,.0f} req/s")
    for col in ("process", "RSS start", "after warm-up", "end", "peak", "slope /10min", "fds"):
        table.add_column(col, justify="left" if col == "process" else "right")
    for p in result["processes"]:
        table.add_row(
            p["process"],
            f"{p['rss_start_mib']:.1f}",
            f"{p['rss_after_warmup_mib']:.1f}",
            f"{p['rss_end_mib']:.1f}",
            f"{p['rss_peak_mib']:.1f}",
            f"{p['rss_slope_mib_per_10min']:+.2f}",
            f"{p['fds_start']} → {p['fds_end']} (peak {p['fds_peak']})",
        )
    console.print(table)
    seg = result["segments"]
    worst = max(seg, key=lambda s: s["p99_ms"]) if seg else {}
    console.print(
        f"sent {result['sent']:,}  responses {result['responses']:,}  5xx {result['5xx']}  "
        f"client errors {result['client_errors']}\n"
        f"request_log rows {result['request_log_rows']:,} "
        f"({'== responses' if result['rows_equal_responses'] else '!= responses'}); "
        f"queues: written {result['queue_written']:,}, dropped {result['queue_dropped']}, "
        f"lost {result['queue_lost']}, {result['workers_closed']} workers closed\n"
        f"segment p99: median {percentile([s['p99_ms'] for s in seg], 50):.2f} ms, "
        f"worst {worst.get('p99_ms', float('nan'))} ms; "
        f"worst p99.9 {max((s['p999_ms'] for s in seg), default=float('nan'))} ms"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="soak_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=1800, help="seconds of load [1800]")
    p.add_argument("--share", type=float, default=0.5, help="share of the measured max [0.5]")
    p.add_argument("--rate", type=float, default=0, help="fixed rate instead of --share")
    p.add_argument("--probe", type=int, default=10, help="seconds of wrk to find the max [10]")
    p.add_argument("--segment", type=float, default=60, help="seconds per load segment [60]")
    p.add_argument("--sample-every", type=float, default=10, help="RSS/fd sampling, s [10]")
    p.add_argument("--warmup", type=float, default=120, help="s excluded from the slope [120]")
    p.add_argument("--workers", type=int, default=2, help="gateway workers [2]")
    p.add_argument("--procs", type=int, default=1, help="load processes [1]")
    p.add_argument("--connections", type=int, default=32, help="per load process [32]")
    p.add_argument("--no-save", action="store_true", help="don't write a JSON result file")
    args = p.parse_args(argv)
    if args.duration <= 0 or not 0 < args.share <= 1 or args.segment <= 0:
        p.error("--duration and --segment must be > 0 and --share in (0, 1]")
    return args


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        result = run(args)
    except (StartupError, BenchError, subprocess.CalledProcessError) as exc:
        err.print(f"[red]error:[/] {exc}")
        return 1
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        return 130
    render(result)
    if not args.no_save:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        path = RESULTS_DIR / f"soak-{stamp}.json"
        options = vars(args)
        path.write_text(
            json.dumps({"options": options, "cpus": os.cpu_count(), **result}, indent=2)
        )
        console.print(f"saved {path.relative_to(REPO_ROOT)}")
    return 0 if result["rows_equal_responses"] and result["5xx"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
