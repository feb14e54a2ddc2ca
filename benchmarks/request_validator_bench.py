"""The request-validator's cost per request: the same POST with a typical JSON body on a
route without the plugin and on one with it, in one run, driven in-process.

Like hot_path_bench.py, `ProxyApp` is driven from one event loop with an upstream that
answers at once, with the observers a default worker has, and the CPU time
(`time.process_time`) per request is reported; configurations alternate round by
round so both see the same machine. The description is the items API of the tests
(tests/support/openapi_docs.py, OpenAPI 3.1): `POST /items` with a body of a name,
a price, tags and a nullable note (about 120 bytes), and `GET /items?limit=&tags=`
with a required header, for the parameter path.

`--libraries` also times one body validation with each JSON Schema library that is
installed (jsonschema-rs, which the gateway uses; jsonschema; fastjsonschema, which
has no draft 2020-12 and so cannot take OpenAPI 3.1 as it is), per call, on the
same converted schema and body.

Run from the repository root:
    .venv/bin/python benchmarks/request_validator_bench.py [-n 20000] [--rounds 5] [--libraries]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import timeit
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import uvloop

from benchmarks.hot_path_bench import InstantUpstream, _discard_rows
from portcullis.analytics.log_queue import RequestLogQueue
from portcullis.analytics.metrics import MetricsObserver, RequestMetrics
from portcullis.asgi import Message
from portcullis.contract.schema import DIALECT, convert
from portcullis.model.config import GatewayConfig
from portcullis.proxy.app import ProxyApp
from portcullis.runtime.holder import SnapshotHolder
from portcullis.runtime.snapshot import build_snapshot
from portcullis.settings import Settings
from support.openapi_docs import items_api

BODY = json.dumps(
    {"name": "desk lamp", "price": 49.5, "tags": ["office", "light", "led"], "note": None}
).encode()


def _config() -> dict[str, Any]:
    routes = [{"name": n, "service": "origin", "paths": [f"/{n}"]} for n in ("plain", "checked")]
    return {
        "services": [{"name": "origin", "url": "http://127.0.0.1:9/shop"}],
        "routes": routes,
        "plugins": [{"name": "request-validator", "route": "checked", "config": {}}],
        "apis": [
            {
                "name": "shop",
                "versions": [
                    {"name": "v0", "routes": ["plain"]},
                    {"name": "v1", "routes": ["checked"], "openapi": items_api("3.1.0")},
                ],
            }
        ],
    }


def _app() -> tuple[ProxyApp, RequestLogQueue]:
    snapshot = build_snapshot(GatewayConfig.model_validate(_config()), 1)
    log = RequestLogQueue(
        _discard_rows("bench"), capacity=1_000_000, batch_size=1000, flush_interval=1.0
    )
    metrics = MetricsObserver(RequestMetrics(registry=None))
    return ProxyApp(
        Settings(), SnapshotHolder(snapshot), InstantUpstream(), observers=[log, metrics]
    ), log


def _scope(route: str, method: str) -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench"), (b"x-trace", b"beef")]
    if method == "POST":
        path, query = f"/{route}/items", b""
        headers += [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(BODY)).encode()),
        ]
    else:
        path, query = f"/{route}/items", b"limit=20&tags=a,b"
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "scheme": "http",
        "root_path": "",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 40000),
        "headers": headers,
    }


async def _run(route: str, method: str, n: int) -> float:
    import time

    app, log = _app()
    statuses: list[int] = []
    body = BODY if method == "POST" else b""

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    log.start()
    try:
        started = time.process_time()
        for _ in range(n):
            await app(_scope(route, method), receive, send)
        await log.aclose(timeout=5.0)
        spent = time.process_time() - started
    finally:
        await log.aclose(timeout=5.0)
    if set(statuses) != {200}:
        raise SystemExit(f"{route} {method}: unexpected statuses {sorted(set(statuses))}")
    return spent * 1e6 / n


def libraries(n: int) -> None:
    schema = items_api("3.1.0")["components"]["schemas"]["ItemIn"]
    converted = {"$schema": DIALECT, **convert(schema, False, "request")}
    document = json.loads(BODY)
    candidates: dict[str, Any] = {}
    import jsonschema_rs

    candidates["jsonschema-rs"] = jsonschema_rs.validator_for(converted).is_valid
    try:
        import jsonschema

        candidates["jsonschema"] = jsonschema.Draft202012Validator(converted).is_valid
    except ImportError:
        print("jsonschema: not installed")
    try:
        import fastjsonschema  # type: ignore[import-not-found]

        # No 2020-12 support: the same schema as draft 7 (it has no 3.1-only keyword).
        draft7 = {**converted, "$schema": "http://json-schema.org/draft-07/schema#"}
        check = fastjsonschema.compile(draft7)

        def valid(doc: Any) -> bool:
            try:
                check(doc)
            except fastjsonschema.JsonSchemaException:
                return False
            return True

        candidates["fastjsonschema"] = valid
    except ImportError:
        print("fastjsonschema: not installed")
    for name, is_valid in candidates.items():
        assert is_valid(document), name
        per = min(timeit.repeat(lambda f=is_valid: f(document), number=n, repeat=5)) / n
        parsed = min(timeit.repeat(lambda f=is_valid: f(json.loads(BODY)), number=n, repeat=5)) / n
        print(
            f"{name:16} validate {per * 1e6:6.2f} us   json.loads + validate {parsed * 1e6:6.2f} us"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=20_000, help="requests per round [20000]")
    p.add_argument("--rounds", type=int, default=5, help="rounds per configuration [5]")
    p.add_argument("--libraries", action="store_true", help="also time the schema libraries")
    args = p.parse_args(argv)
    for method in ("POST", "GET"):
        plain: list[float] = []
        checked: list[float] = []
        for _ in range(args.rounds):
            plain.append(uvloop.run(_run("plain", method, args.n)))
            checked.append(uvloop.run(_run("checked", method, args.n)))
        a, b = statistics.median(plain), statistics.median(checked)
        print(
            f"{method:4} /items  without plugin: median {a:6.1f} us/req (best {min(plain):6.1f});"
            f" with request-validator: median {b:6.1f} (best {min(checked):6.1f});"
            f" validation {b - a:+5.1f} us, ratio {b / a:.3f}  ({args.rounds} x {args.n} each)"
        )
    if args.libraries:
        libraries(args.n)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
