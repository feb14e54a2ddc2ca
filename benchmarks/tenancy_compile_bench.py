"""Snapshot compile time with the tenant boundary: 5,000 routes of 50 organizations,
50,000 consumers, one global jwt-auth and acl (built once per consumer view).

Compare with the same script on a checkout before the boundary (one build per
instance, every route sharing it): the views should cost little next to the rest of
the compile.

Run: .venv/bin/python benchmarks/tenancy_compile_bench.py [--orgs N] [--runs R]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from typing import Any

from portcullis.model import GatewayConfig
from portcullis.runtime.snapshot import build_snapshot


def config(orgs: int, routes_per_org: int, consumers_per_org: int) -> dict[str, Any]:
    services, routes, consumers = [], [], []
    for o in range(orgs):
        org = f"org{o}"
        services.append({"name": f"svc{o}", "url": "http://127.0.0.1:9", "organization": org})
        routes += [
            {"name": f"r{o}-{r}", "service": f"svc{o}", "paths": [f"/{o}/{r}"], "organization": org}
            for r in range(routes_per_org)
        ]
        consumers += [
            {"username": f"c{o}-{c}", "organization": org, "groups": ["staff"]}
            for c in range(consumers_per_org)
        ]
    key = {"kid": "k", "algorithm": "HS256", "secret": "s" * 32}
    plugins = [
        {"name": "jwt-auth", "config": {"keys": [key], "gateway_tokens": False}},
        {"name": "acl", "config": {"allow": ["staff"]}},
    ]
    return {"services": services, "routes": routes, "consumers": consumers, "plugins": plugins}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orgs", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    data = config(args.orgs, 5000 // args.orgs, 50_000 // args.orgs)
    started = time.perf_counter()
    gateway = GatewayConfig.model_validate(data)
    print(f"validate        {time.perf_counter() - started:.2f} s")
    times = []
    for _ in range(args.runs):
        gc.collect()
        started = time.perf_counter()
        build_snapshot(gateway, 1)
        times.append(time.perf_counter() - started)
    runs = ", ".join(f"{t * 1000:.0f}" for t in times)
    print(f"build_snapshot  median {statistics.median(times) * 1000:.0f} ms (runs, ms: {runs})")


if __name__ == "__main__":
    main()
