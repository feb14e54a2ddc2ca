"""The webhook chaos run at full size (issue 15): 2,000 events to 20 endpoints whose
receivers answer 200, 500, hang past the timeout, or 429 with Retry-After at random,
while the delivering control plane is SIGKILLed three times and restarted.

    .venv/bin/python -m benchmarks.webhook_chaos                      # SQLite, one process
    .venv/bin/python -m benchmarks.webhook_chaos --store postgresql   # two processes
    .venv/bin/python -m benchmarks.webhook_chaos --events 200 --endpoints 10
    .venv/bin/python -m benchmarks.webhook_chaos --entry delivery   # python -m portcullis.webhooks

The test (tests/integration/webhooks/test_webhook_chaos.py) runs the same harness
(tests/support/webhook_chaos.py) at a smaller size. Results: printed, and saved to
benchmarks/results/webhook-chaos-<store>-<UTC timestamp>.json. Exit status 1 if a
promise was broken (a pair never delivered, two webhook-ids for one pair, a bad
signature, an orphaned lease never retried).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def _store(kind: str, workdir: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{workdir / 'store.db'}"
        return
    from support.postgres import running_postgres

    with running_postgres() as server:
        yield server.create_database("webhook_chaos")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--endpoints", type=int, default=20)
    parser.add_argument("--processes", type=int, help="default: 1 on SQLite, 2 on PostgreSQL")
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--deadline", type=float, default=900.0)
    parser.add_argument(
        "--entry",
        choices=["control-plane", "delivery"],
        default="control-plane",
        help="what delivers: the control plane (granian + admin app) or python -m "
        "portcullis.webhooks",
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests"))
    os.environ.setdefault("PORTCULLIS_SECRET_KEY", base64.b64encode(os.urandom(32)).decode())
    from support.webhook_chaos import ChaosPlan, ChaosRun

    processes = args.processes or (1 if args.store == "sqlite" else 2)
    plan = ChaosPlan(
        events=args.events,
        endpoints=args.endpoints,
        processes=processes,
        kills=args.kills,
        deadline=args.deadline,
        entry=args.entry,
    )
    workdir = Path(tempfile.mkdtemp(prefix="portcullis-webhook-chaos-"))
    with _store(args.store, workdir) as url:
        result = asyncio.run(ChaosRun(plan, url, workdir).run())
    summary = result.summary()
    summary["problems"] = result.check()
    summary["when"] = datetime.now(UTC).isoformat()
    summary["logs"] = str(workdir)
    print(json.dumps(summary, indent=2))
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (out / f"webhook-chaos-{args.store}-{stamp}.json").write_text(json.dumps(summary, indent=2))
    return 1 if summary["problems"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
