"""Config at scale, in one process: the parts of `config_scale_bench.py` that need no gateway.

On a loaded machine the full benchmark may not start at scale 1 (the supervisor
gives each plane 30 s to listen). This script measures, at any `--scale`, the
same control-plane paths without HTTP and without a server:

1. `portcullis config validate FILE` and `config apply FILE` of the JSON and the
   YAML file (wall time of the CLI process, as the full benchmark does);
2. through the service layer (`EntityService`, as the admin API calls it) on that
   store: a first page of consumers (`limit=50`), one consumer, and `--edits`
   merge-patches of one consumer's `metadata` one after another; median and max; then
   a first page read right after each of 10 more edits (the new version's first read);
3. the data plane's work per edit: rebuilding the new snapshot from the one
   served (`runtime.watcher` path: deltas, `revalidate`, `compile_snapshot`);
4. RSS of this process (the control plane's config state plus one snapshot).

`--profile` prints the top functions (cProfile, cumulative) of the edits.

    .venv/bin/python benchmarks/config_scale_inproc.py --scale 0.1
    .venv/bin/python benchmarks/config_scale_inproc.py              # the issue's scale
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
import yaml

from benchmarks.config_scale_bench import generate_config, load_note
from portcullis.identity.secrets import ServerSecret
from portcullis.model.delta import revalidate
from portcullis.model.loader import load_config_data
from portcullis.runtime.snapshot import build_snapshot
from portcullis.services.audit import AuditLog
from portcullis.services.config_editor import ConfigEditor
from portcullis.services.context import Operation, RequestFacts
from portcullis.services.entities import EntityCollection, EntityQuery, EntityService
from portcullis.services.entity_kinds import CONSUMERS
from portcullis.services.rbac import ROLE_PERMISSIONS, Caller, Role
from portcullis.store.config_repository import ConfigRepository
from portcullis.store.engine import create_engine

REPO_ROOT = Path(__file__).resolve().parents[1]


def cli(args: list[str], env: dict[str, str]) -> str:
    """Wall and CPU seconds of one CLI run (CPU: user + system of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "portcullis", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{args} failed: {done.stdout[-1000:]}{done.stderr[-1000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return f"wall {elapsed:6.2f} s   cpu {cpu:6.2f} s   peak RSS {after.ru_maxrss / 1024:.0f} MiB"


async def timed(work: Callable[[], Awaitable[Any]], n: int) -> list[tuple[float, float]]:
    """Wall and CPU (this process, all threads) milliseconds of each of `n` calls."""
    out = []
    for _ in range(n):
        started, cpu = time.perf_counter(), time.process_time()
        await work()
        out.append(((time.perf_counter() - started) * 1000, (time.process_time() - cpu) * 1000))
    return out


def stats(ms: list[tuple[float, float]]) -> str:
    wall, cpu = [w for w, _ in ms], [c for _, c in ms]
    return (
        f"wall median {statistics.median(wall):7.1f} max {max(wall):7.1f} ms   "
        f"cpu median {statistics.median(cpu):7.1f} max {max(cpu):7.1f} ms   (n={len(ms)})"
    )


def rss_mib() -> float:
    return float(psutil.Process().memory_info().rss) / 2**20


async def service_layer(url: str, edits: int, reads: int, profile: bool) -> dict[str, Any]:
    engine = create_engine(url)
    editor = ConfigEditor(ConfigRepository(engine))
    consumers = EntityService(
        EntityCollection(CONSUMERS), editor, engine, ServerSecret.from_secret(b"s" * 32)
    )
    caller = Caller(
        actor="user:bench@example.com",
        role=Role.OWNER,
        permissions=ROLE_PERMISSIONS[Role.OWNER],
        organization_id=None,
        user_id=None,
    )
    op = Operation.for_caller(caller, RequestFacts("bench", None), AuditLog(engine))
    out: dict[str, Any] = {"rss_before_first_read_mib": rss_mib()}
    started = time.perf_counter()
    await editor.state()
    out["first_state_s"] = time.perf_counter() - started
    out["rss_after_first_read_mib"] = rss_mib()
    query = EntityQuery(limit=50)
    out["get_page_ms"] = await timed(lambda: consumers.list(op, query), reads)
    out["get_one_ms"] = await timed(lambda: consumers.get(op, "user-000123"), reads)
    counter = iter(range(10**9))

    async def edit() -> None:
        await consumers.patch(op, "user-000123", {"metadata": {"n": next(counter)}})

    profiler = cProfile.Profile() if profile else None
    if profiler is not None:
        profiler.enable()
    out["patch_ms"] = await timed(edit, edits)
    if profiler is not None:
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(35)
        out["profile"] = text.getvalue()
    out["rss_after_edits_mib"] = rss_mib()
    # A list page right after an edit: its sorted view is the new version's.
    after_edit: list[tuple[float, float]] = []
    for _ in range(min(edits, 10)):
        await edit()
        after_edit += await timed(lambda: consumers.list(op, query), 1)
    out["get_page_after_edit_ms"] = after_edit
    out["worker_compile_ms"] = await data_plane(editor.repository, edits)
    await engine.dispose()
    return out


async def data_plane(repository: ConfigRepository, edits: int) -> list[tuple[float, float]]:
    """What a data-plane worker does per edit (runtime/watcher.py `_compile`): the new
    version's document from the deltas, `revalidate` of what changed, `build_snapshot`."""
    head = await repository.current_version()
    first = head - edits
    base = await repository.document(first)
    snapshot = build_snapshot(load_config_data(base, source="bench"), first)
    out = []
    for version in range(first + 1, head + 1):
        started, cpu = time.perf_counter(), time.process_time()
        document = await repository.document(version)
        done = revalidate(snapshot.config, base, document)
        assert done is not None
        snapshot = build_snapshot(done[0], version, snapshot)
        base = done[1]
        out.append(((time.perf_counter() - started) * 1000, (time.process_time() - cpu) * 1000))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--edits", type=int, default=50)
    parser.add_argument("--reads", type=int, default=50)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--skip-cli", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {"scale": args.scale, "load_start": load_note()}
    with tempfile.TemporaryDirectory(prefix="config-scale-inproc-") as tmp:
        directory = Path(tmp)
        document = generate_config(args.scale, 9)
        json_file = directory / "gateway.json"
        yaml_file = directory / "gateway.yaml"
        json_file.write_text(json.dumps(document), encoding="utf-8")
        yaml_file.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        url = f"sqlite+aiosqlite:///{directory / 'store.db'}"
        env = {**os.environ, "PORTCULLIS_DATABASE_URL": url}
        if not args.skip_cli:
            for name, file in (("json", json_file), ("yaml", yaml_file)):
                results[f"validate_{name}"] = cli(["config", "validate", str(file)], env)
            results["apply_yaml"] = cli(["config", "apply", str(yaml_file)], env)
            # Re-applying the same content from JSON stores nothing but does all the work.
            results["apply_json_same"] = cli(["config", "apply", str(json_file)], env)
            results["cli_start"] = cli(["config", "--help"], env)
        else:
            cli(["config", "apply", str(json_file)], env)
        results.update(asyncio.run(service_layer(url, args.edits, args.reads, args.profile)))
    results["load_end"] = load_note()
    profile = results.pop("profile", None)
    for key, value in results.items():
        if isinstance(value, list):
            print(f"{key:28} {stats(value)}")
        elif isinstance(value, float):
            print(f"{key:28} {value:8.2f}")
        else:
            print(f"{key:28} {value}")
    if profile:
        print(profile)


if __name__ == "__main__":
    main()
