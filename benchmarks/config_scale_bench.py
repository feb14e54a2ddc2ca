"""Config at scale: validate, apply, admin reads and edits, history size, request pauses, RSS.

One run generates a declarative config of (at `--scale 1`) 5,000 routes, 50,000
consumers and 500 plugins (plus 500 services and 100 upstreams pointing at an
nginx origin), then measures, on a fresh store (SQLite, or PostgreSQL with
`--postgres`):

1. `portcullis config validate FILE` and `portcullis config apply FILE` (wall time
   of the CLI process; the import-only start-up of the CLI is printed beside it);
2. starts `portcullis serve --workers W` on that store, signs in as an owner;
3. admin reads: a first page (`limit=50`) and a deep page (via `cursor`) of
   consumers and routes, one consumer and one route by id; each `--reads` times,
   median and max reported;
4. single-entity edits: `--edits` PATCHes (one consumer's metadata field each),
   one after the other, while `--load-threads` client threads send GETs through
   the data plane to routes of the config (closed loop, keep-alive); reports the
   edit latency (median, max) and the data plane's p50/p99/max latency during the
   edits next to a quiet period of the same length before them;
5. the store's config history: versions, bytes stored in `config_versions`
   (all text columns) and the database file size, before and after the edits;
6. a rollback (admin API) to the version before the edits, timed, and checked by
   reading the edited consumer back;
7. RSS of every gateway process after start-up and at the end.

Results go to `benchmarks/results/config-scale-<UTC timestamp>.json`.

Run from the repository root (a `--scale 0.2` run takes about a minute):
    .venv/bin/python benchmarks/config_scale_bench.py --scale 0.2
    .venv/bin/python benchmarks/config_scale_bench.py            # the issue's scale
    .venv/bin/python benchmarks/config_scale_bench.py --postgres --edits 50
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import quote

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
import yaml
from rich.console import Console
from rich.table import Table

from benchmarks._procs import (
    LOOPBACK,
    ManagedProcess,
    StartupError,
    free_port,
    nginx_origin_conf,
    nginx_process,
    wait_until_ready,
)
from benchmarks.request_log_bench import database
from benchmarks.soak_bench import role

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
ORIGIN_BODY = '{"ok":true}'
PASSWORD = "benchmark password, not a secret"
console = Console(width=None if sys.stdout.isatty() else 120)


class BenchError(RuntimeError):
    """The benchmark could not measure what it set out to (a failed step, a wrong answer)."""


# --------------------------------------------------------------------------- the config


def sizes(scale: float) -> dict[str, int]:
    routes = max(10, int(5000 * scale))
    services = max(1, routes // 10)
    return {
        "routes": routes,
        "consumers": max(10, int(50_000 * scale)),
        "plugins": max(3, int(500 * scale)),
        "services": services,
        "upstreams": max(1, services // 5),
    }


def generate_config(scale: float, origin_port: int) -> dict[str, Any]:
    """The benchmark's config: every route reachable through the origin, plugins that pass."""
    n = sizes(scale)
    upstreams = [
        {"name": f"up-{i}", "targets": [{"target": f"{LOOPBACK}:{origin_port}"}]}
        for i in range(n["upstreams"])
    ]
    services = [
        {"name": f"svc-{i}", "upstream": f"up-{i % n['upstreams']}", "path": "/"}
        for i in range(n["services"])
    ]
    routes = [
        {
            "name": f"route-{i}",
            "service": f"svc-{i % n['services']}",
            "paths": [f"/r{i}"],
            "strip_path": True,
            "tags": ["bench", f"shard-{i % 16}"],
        }
        for i in range(n["routes"])
    ]
    consumers = [
        {
            "username": f"user-{i:06d}",
            "custom_id": f"c{i}",
            "groups": ["readers"],
            "metadata": {"tier": "gold" if i % 7 == 0 else "silver", "n": i},
            "tags": ["bench"],
        }
        for i in range(n["consumers"])
    ]
    kinds: list[tuple[str, dict[str, Any]]] = [
        ("request-size-limit", {"max_bytes": 1_048_576}),
        ("cors", {"origins": ["https://example.com"]}),
        ("ip-restriction", {"allow": ["127.0.0.0/8"]}),
    ]
    plugins = [
        {"name": kinds[i % 3][0], "route": f"route-{i}", "config": kinds[i % 3][1]}
        for i in range(n["plugins"])
    ]
    return {
        "format_version": "1",
        "upstreams": upstreams,
        "services": services,
        "routes": routes,
        "consumers": consumers,
        "plugins": plugins,
    }


# --------------------------------------------------------------------------- helpers


def load_note() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f}/{five:.2f} on {os.cpu_count()} CPUs"


def timed_cli(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise BenchError(
            f"{' '.join(argv[2:])} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    return elapsed


class Admin:
    """A keep-alive HTTP client for the admin API with a bearer token."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection(LOOPBACK, port, timeout=120)
        self.token: str | None = None

    def call(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> tuple[int, Any, float]:
        headers = {"Content-Type": content_type} if body is not None else {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        started = time.perf_counter()
        try:
            self.conn.request(method, path, body=data, headers=headers)
            resp = self.conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=120)
            raise
        elapsed = time.perf_counter() - started
        return resp.status, json.loads(raw) if raw else None, elapsed

    def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[Any, float]:
        status, payload, elapsed = self.call(method, path, body, **kw)
        if status >= 300:
            raise BenchError(f"{method} {path} answered {status}: {str(payload)[:500]}")
        return payload, elapsed


class DataPlaneLoad:
    """Closed-loop GETs through the data plane from a few threads, each with a timestamp."""

    def __init__(self, port: int, paths: list[str], threads: int) -> None:
        self.port = port
        self.paths = paths
        self.threads = threads
        self.samples: list[tuple[float, float]] = []  # (start time, latency s)
        self.errors = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []

    def _run(self, offset: int) -> None:
        conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=30)
        i = offset
        local: list[tuple[float, float]] = []
        errors = 0
        while not self._stop.is_set():
            path = self.paths[i % len(self.paths)]
            i += self.threads
            started = time.perf_counter()
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    errors += 1
            except (OSError, http.client.HTTPException):
                errors += 1
                conn.close()
                conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=30)
            local.append((started, time.perf_counter() - started))
        conn.close()
        with self._lock:
            self.samples.extend(local)
            self.errors += errors

    def start(self) -> None:
        for t in range(self.threads):
            thread = threading.Thread(target=self._run, args=(t,), daemon=True)
            thread.start()
            self._workers.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._workers:
            thread.join(timeout=60)

    def window(self, start: float, end: float) -> dict[str, Any]:
        lat = sorted(ms for t, ms in self.samples if start <= t < end)
        if not lat:
            return {"requests": 0}

        def pct(q: float) -> float:
            return round(1000 * lat[min(len(lat) - 1, int(q * len(lat)))], 2)

        return {
            "requests": len(lat),
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "max_ms": round(1000 * lat[-1], 2),
        }


def rss_by_role(gateway: ManagedProcess) -> dict[str, float]:
    out: dict[str, float] = {}
    for proc in gateway.processes():
        with contextlib.suppress(psutil.Error):
            name = role(proc)
            if name.startswith("data-plane worker"):
                name = "data-plane worker"
            elif name.startswith("control-plane worker"):
                name = "control-plane worker"
            rss = proc.memory_info().rss / 2**20
            out[name] = round(max(out.get(name, 0.0), rss), 1)
    return out


def history_size(database_url: str) -> dict[str, Any]:
    """Rows and stored bytes of the config history, and the database's size on disk."""
    if database_url.startswith("sqlite"):
        path = database_url.split("///", 1)[1]
        with contextlib.closing(sqlite3.connect(path)) as db:
            cols = [r[1] for r in db.execute("PRAGMA table_info(config_versions)")]
            text_cols = [c for c in cols if c in ("document", "delta", "comment", "checksum")]
            total = " + ".join(f"coalesce(length({c}), 0)" for c in text_cols)
            versions, stored = db.execute(
                f"SELECT count(*), sum({total}) FROM config_versions"
            ).fetchone()
            extra = 0
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "config_entities" in tables:
                extra = db.execute(
                    "SELECT coalesce(sum(length(document)), 0) FROM config_entities"
                ).fetchone()[0]
        size = sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))
        return {
            "versions": versions,
            "history_bytes": int(stored or 0) + int(extra),
            "db_file_bytes": size,
        }
    return asyncio.run(_postgres_history_size(database_url))


async def _postgres_history_size(database_url: str) -> dict[str, Any]:
    from sqlalchemy import text

    from portcullis.store.engine import create_engine

    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            versions = await conn.scalar(text("SELECT count(*) FROM config_versions"))
            stored = await conn.scalar(
                text(
                    "SELECT coalesce(sum(coalesce(length(document), 0)"
                    " + coalesce(length(delta), 0)), 0) FROM config_versions"
                )
            )
            db_size = await conn.scalar(text("SELECT pg_database_size(current_database())"))
    finally:
        await engine.dispose()
    return {"versions": versions, "history_bytes": stored, "db_file_bytes": db_size}


def summary(values: list[float]) -> dict[str, float]:
    ms = [1000 * v for v in values]
    return {
        "n": len(ms),
        "median_ms": round(statistics.median(ms), 1),
        "max_ms": round(max(ms), 1),
    }


# --------------------------------------------------------------------------- the run


def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "scale": args.scale,
        "sizes": sizes(args.scale),
        "store": "postgresql" if args.postgres else "sqlite",
        "workers": args.workers,
        "load_at_start": load_note(),
    }
    with (
        tempfile.TemporaryDirectory(prefix="portcullis-scale-") as name,
        database(args, Path(name), "scale") as database_url,
    ):
        tmp = Path(name)
        origin_port = free_port()
        origin = nginx_process(
            "nginx origin",
            tmp / "origin",
            nginx_origin_conf(tmp / "origin", origin_port, ORIGIN_BODY),
        )
        document = generate_config(args.scale, origin_port)
        config_file = tmp / "gateway.yaml"
        config_file.write_text(yaml.safe_dump(document, sort_keys=False))
        result["file_bytes"] = config_file.stat().st_size
        env = {k: v for k, v in os.environ.items() if not k.startswith("PORTCULLIS_")}
        env |= {
            "PORTCULLIS_DATABASE_URL": database_url,
            "PORTCULLIS_LOG_LEVEL": "warning",
            "PORTCULLIS_SECRET_KEY_FILE": str(tmp / "secret"),
        }
        cli = [sys.executable, "-m", "portcullis"]
        console.print(f"config: {result['sizes']} ({result['file_bytes'] / 2**20:.1f} MiB YAML)")
        result["cli_startup_s"] = round(timed_cli([*cli, "config", "--help"], env, tmp), 2)
        result["validate_s"] = round(
            timed_cli([*cli, "config", "validate", str(config_file)], env, tmp), 2
        )
        result["validate_load"] = load_note()
        console.print(f"validate {result['validate_s']} s ({result['validate_load']})")
        result["apply_s"] = round(
            timed_cli([*cli, "config", "apply", str(config_file)], env, tmp), 2
        )
        result["apply_load"] = load_note()
        console.print(f"apply {result['apply_s']} s ({result['apply_load']})")
        created = subprocess.run(
            [
                *cli,
                "admin",
                "create",
                "--email",
                "bench@example.com",
                "--role",
                "owner",
                "--password-stdin",
            ],
            input=PASSWORD + "\n",
            env=env,
            cwd=tmp,
            capture_output=True,
            text=True,
            check=False,
        )
        if created.returncode != 0:
            raise BenchError(f"admin create failed: {created.stdout}{created.stderr}")
        proxy_port, admin_port = free_port(), free_port()
        argv = [*cli, "serve", "--proxy-port", str(proxy_port), "--admin-port", str(admin_port)]
        argv += ["--workers", str(args.workers)]
        gateway = ManagedProcess("portcullis", argv, log_path=tmp / "serve.log", env=env, cwd=tmp)
        origin.start()
        try:
            wait_until_ready(origin, origin_port, timeout=30, expect_body=ORIGIN_BODY.encode())
            gateway.start()
            _wait_route(gateway, proxy_port, "/r0/", timeout=args.startup_timeout)
            admin = Admin(admin_port)
            login = _sign_in(admin, gateway, timeout=args.startup_timeout)
            gateway.remember_tree()
            result["rss_after_start_mib"] = rss_by_role(gateway)
            admin.token = login["access_token"]
            result["reads"] = measure_reads(admin, args)
            result["reads_load"] = load_note()
            result["history_before_edits"] = history_size(database_url)
            result["edits"] = measure_edits(admin, proxy_port, args, document)
            result["edits_load"] = load_note()
            result["history_after_edits"] = history_size(database_url)
            result["rollback"] = measure_rollback(admin, result["edits"])
            gateway.remember_tree()
            result["rss_at_end_mib"] = rss_by_role(gateway)
        finally:
            gateway.stop(grace=20)
            origin.stop()
    result["load_at_end"] = load_note()
    return result


def _sign_in(admin: Admin, gateway: ManagedProcess, *, timeout: float) -> Any:
    """Log in as the benchmark's owner once the control plane answers."""
    deadline = time.monotonic() + timeout
    while True:
        if not gateway.alive():
            raise StartupError(f"gateway exited\n{gateway.log_tail()}")
        try:
            login, _ = admin.ok(
                "POST", "/admin/v1/auth/login", {"email": "bench@example.com", "password": PASSWORD}
            )
            return login
        except (OSError, http.client.HTTPException):
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def _wait_route(gateway: ManagedProcess, port: int, path: str, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not gateway.alive():
            raise StartupError(f"gateway exited\n{gateway.log_tail()}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn = http.client.HTTPConnection(LOOPBACK, port, timeout=5)
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            conn.close()
            if resp.status == 200 and body == ORIGIN_BODY.encode():
                return
        time.sleep(0.2)
    raise StartupError(f"the data plane never served {path}\n{gateway.log_tail()}")


def measure_reads(admin: Admin, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    first, _ = admin.ok("GET", "/admin/v1/consumers?limit=50")
    cursor = first["next"].split("cursor=", 1)[1].split("&", 1)[0] if first.get("next") else ""
    cases = {
        "list consumers (first page, limit 50)": "/admin/v1/consumers?limit=50",
        "list consumers (second page)": f"/admin/v1/consumers?limit=50&cursor={cursor}",
        "list consumers (limit 1)": "/admin/v1/consumers?limit=1",
        "list routes (limit 50, tag filter)": "/admin/v1/routes?limit=50&tags=shard-3",
        "get consumer": "/admin/v1/consumers/user-000042",
        "get route": "/admin/v1/routes/route-42",
        "get config version list": "/admin/v1/config/versions?limit=10",
    }
    for label, path in cases.items():
        times = [admin.ok("GET", path)[1] for _ in range(args.reads)]
        out[label] = summary(times)
    return out


def measure_edits(
    admin: Admin, proxy_port: int, args: argparse.Namespace, document: dict[str, Any]
) -> dict[str, Any]:
    versions, _ = admin.ok("GET", "/admin/v1/config/versions?limit=1")
    before_version = versions["items"][0]["version"] if versions.get("items") else None
    routes = len(document["routes"])
    paths = [f"/r{(i * 7919) % routes}/" for i in range(997)]
    load = DataPlaneLoad(proxy_port, paths, args.load_threads)
    load.start()
    try:
        time.sleep(1.0)  # warm the connections
        quiet_start = time.perf_counter()
        time.sleep(args.quiet)
        edits_start = time.perf_counter()
        times: list[float] = []
        for i in range(args.edits):
            patch = {"metadata": {"tier": "gold", "n": i, "edited": True}}
            _, elapsed = admin.ok(
                "PATCH",
                "/admin/v1/consumers/user-000042",
                patch,
                content_type="application/merge-patch+json",
            )
            times.append(elapsed)
        # Let the data plane pick up the last version under load, too.
        time.sleep(args.settle)
        edits_end = time.perf_counter()
    finally:
        load.stop()
    return {
        "before_version": before_version,
        "edit": summary(times),
        "data_plane_quiet": load.window(quiet_start, edits_start),
        "data_plane_during_edits": load.window(edits_start, edits_end),
        "data_plane_errors": load.errors,
    }


def measure_rollback(admin: Admin, edits: dict[str, Any]) -> dict[str, Any]:
    target = edits["before_version"]
    if target is None:
        return {}
    _, elapsed = admin.ok("POST", "/admin/v1/config/rollback", {"version": target})
    consumer, _ = admin.ok("GET", "/admin/v1/consumers/" + quote("user-000042"))
    restored = consumer["metadata"] == {"tier": "gold", "n": 42}
    if not restored:
        raise BenchError(f"rollback to {target} did not restore the consumer: {consumer}")
    return {"to_version": target, "seconds": round(elapsed, 3), "restored": restored}


# --------------------------------------------------------------------------- output


def render(result: dict[str, Any]) -> None:
    table = Table(
        title=f"config at scale ({result['store']}, scale {result['scale']}: {result['sizes']})"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("CLI start-up (config --help)", f"{result['cli_startup_s']} s")
    table.add_row("config validate FILE", f"{result['validate_s']} s  ({result['validate_load']})")
    table.add_row("config apply FILE", f"{result['apply_s']} s  ({result['apply_load']})")
    for label, s in result["reads"].items():
        table.add_row(f"GET: {label}", f"median {s['median_ms']} ms, max {s['max_ms']} ms")
    edits = result["edits"]
    table.add_row(
        f"PATCH one consumer x{edits['edit']['n']}",
        f"median {edits['edit']['median_ms']} ms, max {edits['edit']['max_ms']} ms",
    )
    for key in ("data_plane_quiet", "data_plane_during_edits"):
        w = edits[key]
        table.add_row(
            f"data plane {key.removeprefix('data_plane_').replace('_', ' ')}",
            f"{w.get('requests', 0)} req, p50 {w.get('p50_ms')} ms, p99 {w.get('p99_ms')} ms, "
            f"max {w.get('max_ms')} ms",
        )
    table.add_row("data plane errors", str(edits["data_plane_errors"]))
    for key in ("history_before_edits", "history_after_edits"):
        h = result[key]
        table.add_row(
            key.replace("_", " "),
            f"{h['versions']} versions, {h['history_bytes'] / 1024:,.1f} KiB stored, "
            f"db {h['db_file_bytes'] / 2**20:,.1f} MiB",
        )
    rb = result.get("rollback") or {}
    if rb:
        table.add_row(
            f"rollback to v{rb['to_version']}", f"{rb['seconds']} s, restored={rb['restored']}"
        )
    for key in ("rss_after_start_mib", "rss_at_end_mib"):
        table.add_row(
            key.replace("_", " "),
            ", ".join(f"{k} {v:.0f}" for k, v in sorted(result[key].items())),
        )
    table.add_row("load (start → end)", f"{result['load_at_start']} → {result['load_at_end']}")
    console.print(table)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--scale", type=float, default=1.0, help="1.0 = 5k routes, 50k consumers, 500 plugins"
    )
    p.add_argument("--edits", type=int, default=50, help="single-entity PATCHes")
    p.add_argument("--reads", type=int, default=10, help="repetitions of each admin GET")
    p.add_argument("--workers", type=int, default=1, help="data-plane workers")
    p.add_argument("--load-threads", type=int, default=2, help="data-plane client threads")
    p.add_argument(
        "--quiet", type=float, default=5.0, help="seconds of load measured before the edits"
    )
    p.add_argument(
        "--settle", type=float, default=3.0, help="seconds of load measured after the edits"
    )
    p.add_argument("--startup-timeout", type=float, default=300.0)
    p.add_argument("--postgres", action="store_true", help="a throw-away PostgreSQL store")
    p.add_argument("--no-save", action="store_true", help="don't write the JSON file")
    return p.parse_args(argv)


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        result = run(args)
    except (BenchError, StartupError) as exc:
        console.print(f"[red]error:[/] {exc}")
        return 1
    render(result)
    if not args.no_save:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        out = RESULTS_DIR / f"config-scale-{stamp}.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
        console.print(f"saved {out.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
