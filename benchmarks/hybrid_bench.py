"""Hybrid mode: config propagation from a control-plane commit to a data-plane node.

Starts, as real processes on loopback: a demo origin (granian), `portcullis serve
--role control-plane` on a SQLite store loaded with the `config_scale_bench` config at
`--scale`, and one `portcullis serve --role data-plane` node (`--workers`, no
database). Then `--edits` times: one route is added by a write to the store from this
process (as `portcullis config apply` would), and the time until the node serves it on
10 consecutive fresh connections (so every worker has it) is measured. Prints p50 /
p90 / max, the bytes the control plane sent per edit (delta messages), the node's
connections to the control plane and the RSS of its processes, and the time a node
restarted with the control plane down takes to serve from last-known-good.

    .venv/bin/python benchmarks/hybrid_bench.py --edits 20 --scale 0.01
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import httpx
import psutil
import yaml

from benchmarks.config_scale_bench import generate_config
from portcullis.model.loader import load_config_data
from portcullis.store.config_repository import ConfigRepository
from portcullis.store.engine import create_engine
from support.hybrid import Node, cluster_control_plane, data_plane_node, served, wait_served
from support.servers import granian_app

DEMO = "portcullis.demo.upstream:create_demo_app"


def metric(cp: Node, name: str) -> float:
    text = httpx.get(f"{cp.admin_url}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def everywhere(url: str, timeout: float = 60.0) -> float:
    """Seconds until `url` answered 200 on the first of 10 fresh connections in a row
    (each connection may go to any worker: the streak shows every worker has it)."""
    start = time.monotonic()
    streak, since = 0, start
    while streak < 10:
        probe = time.monotonic()
        if served(url):
            streak, since = streak + 1, since if streak else probe
        else:
            streak = 0
        if probe - start > timeout:
            raise TimeoutError(url)
    return since - start


def tree_rss(pid: int) -> dict[str, float]:
    out: dict[str, float] = {}
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        line = " ".join(proc.cmdline())
        role = (
            "node agent"
            if "node_agent" in line
            else "data-plane worker"
            if "granian" in line or "plane_process" in line
            else "supervisor"
        )
        out[role] = out.get(role, 0.0) + proc.memory_info().rss / 2**20
    return out


def cp_connections(node: Node, cp_port: int) -> int:
    root = psutil.Process(node.process.pid)
    return sum(
        1
        for proc in [root, *root.children(recursive=True)]
        for c in proc.net_connections(kind="tcp")
        if c.raddr and c.raddr.port == cp_port and c.status == psutil.CONN_ESTABLISHED
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="hybrid-bench-"))
    result: dict[str, Any] = {}
    with granian_app(DEMO) as origin:
        document = generate_config(args.scale, origin)
        document["services"].append({"name": "demo", "url": f"http://127.0.0.1:{origin}"})
        first = tmp / "config.yaml"
        first.write_text(yaml.safe_dump(document))
        started = time.monotonic()
        with cluster_control_plane(tmp, first) as cp:
            result["control_plane_start_s"] = time.monotonic() - started
            lkg = tmp / "lkg"
            started = time.monotonic()
            with data_plane_node(tmp, cp.admin_url, lkg, workers=args.workers) as node:
                wait_served(f"{node.url}/r0/health", timeout=300)
                result["node_first_config_s"] = time.monotonic() - started
                engine = create_engine(cp.env["PORTCULLIS_DATABASE_URL"])
                repo = ConfigRepository(engine)
                times = []
                sent_before = metric(cp, 'portcullis_cluster_config_bytes_total{kind="delta"}')
                for i in range(args.edits):
                    document["routes"].append(
                        {"name": f"edit-{i}", "service": "demo", "paths": [f"/edit-{i}"]}
                    )
                    config = load_config_data(document)
                    asyncio.run(repo.apply(config, author="bench", comment=None))
                    times.append(everywhere(f"{node.url}/edit-{i}/health"))
                asyncio.run(engine.dispose())
                sent = metric(cp, 'portcullis_cluster_config_bytes_total{kind="delta"}')
                result["propagation_ms"] = {
                    "p50": statistics.median(times) * 1000,
                    "p90": statistics.quantiles(times, n=10, method="inclusive")[-1] * 1000
                    if len(times) > 1
                    else 0,
                    "max": max(times) * 1000,
                    "n": len(times),
                }
                result["delta_bytes_per_edit"] = (sent - sent_before) / max(1, args.edits)
                result["snapshot_bytes"] = metric(
                    cp, 'portcullis_cluster_config_bytes_total{kind="snapshot"}'
                )
                result["node_connections_to_control_plane"] = cp_connections(node, cp.admin_port)
                result["node_rss_mib"] = tree_rss(node.process.pid)
        # The control plane is gone: a node restarted now serves from last-known-good.
        started = time.monotonic()
        with data_plane_node(tmp, "http://127.0.0.1:9", lkg, workers=args.workers) as node:
            listening = time.monotonic() - started
            wait_served(f"{node.url}/r0/health", timeout=300)
            result["lkg_cold_start_s"] = {
                "ports_listening": listening,
                "first_request_served": time.monotonic() - started,
            }
    return result


def node_costs(scale: float, edits: int) -> dict[str, Any]:
    """In one process, no servers: what one edit costs the node agent (apply the delta,
    canonical text, checksum, write and fsync the snapshot) and a worker (the header
    deltas, then revalidate + compile), medians of `edits` edits at `scale`."""
    from portcullis.hybrid.lkg import LkgStore
    from portcullis.hybrid.source import LkgSource
    from portcullis.model.canonical_text import canonical_text, checksum_of
    from portcullis.model.delta import apply_delta, compute_delta, revalidate
    from portcullis.runtime.snapshot import build_snapshot

    document = load_config_data(generate_config(scale, 9)).canonical()
    config = load_config_data(document)
    tmp = Path(tempfile.mkdtemp(prefix="hybrid-costs-"))
    store = LkgStore(tmp)
    text = canonical_text(document)
    store.save(1, text.encode())
    source = LkgSource(store)
    asyncio.run(source.current_version())
    snapshot = build_snapshot(config, 1, None, None)
    agent, worker, compile_ = [], [], []
    checksum = checksum_of(text)
    for i in range(edits):
        route = {"name": f"edit-{i}", "service": "svc-0", "paths": [f"/edit-{i}"]}
        edited = {**document, "routes": [*document["routes"], route]}
        delta = compute_delta(document, edited)
        assert delta is not None
        started = time.process_time()
        new = apply_delta(document, delta)
        text = canonical_text(new)
        new_checksum = checksum_of(text)
        store.save(i + 2, text.encode(), (i + 1, checksum, [delta]))
        agent.append(time.process_time() - started)
        started = time.process_time()
        version = asyncio.run(source.current_version())
        assert version == i + 2
        worker.append(time.process_time() - started)
        started = time.process_time()
        base = snapshot.config
        done = revalidate(base, document, asyncio.run(source.document(version)))
        assert done is not None
        snapshot = build_snapshot(done[0], version, snapshot, None)
        compile_.append(time.process_time() - started)
        document, checksum = new, new_checksum
    return {
        "scale": scale,
        "snapshot_bytes": len(text),
        "agent_apply_and_write_cpu_ms": statistics.median(agent) * 1000,
        "worker_read_step_cpu_ms": statistics.median(worker) * 1000,
        "worker_revalidate_and_compile_cpu_ms": statistics.median(compile_) * 1000,
        "source_loads": source.loads,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edits", type=int, default=20)
    parser.add_argument("--scale", type=float, default=0.01)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--node-costs",
        action="store_true",
        help="no servers: CPU per edit of the node agent and of a worker, in one process",
    )
    args = parser.parse_args()
    result = node_costs(args.scale, args.edits) if args.node_costs else run(args)
    print(yaml.safe_dump(result, sort_keys=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
