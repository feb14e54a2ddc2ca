"""Origin TLS: what building a service's SSL context costs (once per setting, when a
snapshot compiles), what carrying an unchanged one to the next snapshot costs, and
the compile time of a config with many https services of distinct settings.

Run: .venv/bin/python benchmarks/upstream_tls_bench.py [--services N] [--runs R]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from portcullis.model import GatewayConfig  # noqa: E402
from portcullis.runtime.snapshot import build_snapshot  # noqa: E402
from portcullis.upstream.tls import TlsCache, TlsSettings, build_context  # noqa: E402
from support.tls_ca import TestCA  # noqa: E402


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:8.2f} ms"


def contexts(runs: int) -> None:
    ca = TestCA()
    leaf = ca.issue("gateway", client=True)
    cases = {
        "system store (no bundle, e.g. only a client cert)": TlsSettings(
            client_cert=leaf.cert, client_key=leaf.key
        ),
        "service CA bundle": TlsSettings(ca_certificates=(ca.cert_pem,)),
        "CA bundle + client certificate (memfd)": TlsSettings(
            ca_certificates=(ca.cert_pem,), client_cert=leaf.cert, client_key=leaf.key
        ),
    }
    print("context build, median of", runs)
    for name, settings in cases.items():
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            build_context(settings)
            times.append(time.perf_counter() - started)
        print(f"  {name:52} {_ms(statistics.median(times))}")
    previous = TlsCache()
    previous.get(cases["CA bundle + client certificate (memfd)"])
    started = time.perf_counter()
    for _ in range(1000):
        cache = TlsCache(previous)
        cache.get(cases["CA bundle + client certificate (memfd)"])
    print(f"  {'unchanged setting carried to the next snapshot':52} "
          f"{(time.perf_counter() - started) / 1000 * 1e6:8.2f} us")  # fmt: skip


def compile_time(services: int) -> None:
    ca = TestCA()
    certs, entries = [], []
    for i in range(services):
        leaf = ca.issue(f"client-{i}", client=True)
        certs.append({"name": f"c{i}", "cert": leaf.cert, "key": leaf.key})
        entries.append(
            {
                "name": f"s{i}",
                "url": f"https://origin-{i}.internal",
                "ca_certificates": [ca.cert_pem],
                "client_certificate": f"c{i}",
            }
        )
    doc: dict[str, Any] = {"services": entries, "certificates": certs}
    config = GatewayConfig.model_validate(doc)
    started = time.perf_counter()
    first = build_snapshot(config, 1)
    cold = time.perf_counter() - started
    started = time.perf_counter()
    build_snapshot(config, 2, first)
    warm = time.perf_counter() - started
    print(f"compile, {services} https services each with its own client certificate:")
    print(f"  first snapshot (every context built)               {_ms(cold)}")
    print(f"  next snapshot (every context carried over)         {_ms(warm)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    contexts(args.runs)
    compile_time(args.services)


if __name__ == "__main__":
    main()
