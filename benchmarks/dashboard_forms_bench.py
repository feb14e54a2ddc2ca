"""The dashboard's schema-generated forms (decision 036): what compiling every plugin and
entity form costs once, what building, rendering and parsing one form costs per request,
and how large each plugin form's HTML is.

Run: .venv/bin/python benchmarks/dashboard_forms_bench.py [--runs R]
"""

from __future__ import annotations

import argparse
import statistics
import time

from portcullis.model.plugins.registry import SCHEMAS
from portcullis.services.entity_kinds import KINDS
from portcullis.web.dashboard import forms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()

    start = time.perf_counter()
    nodes = {name: forms.plugin_node(name) for name in SCHEMAS}
    for kind in KINDS:
        plugin = kind.example.get("name") if kind.collection == "plugins" else None
        forms.entity_node(kind.collection, plugin)
    compiled = time.perf_counter() - start
    print(f"compile every plugin and entity form once (schemas included): {compiled * 1e3:.0f} ms")

    print(f"{'plugin':22} {'HTML bytes':>10} {'build+render µs':>16} {'parse µs':>9}")
    for name, node in sorted(nodes.items()):
        html = forms.render_fields(forms.build_form(node))
        data = {"x": ["1"]}  # nothing the form has: every field as left blank
        renders, parses = [], []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            forms.render_fields(forms.build_form(node))
            t1 = time.perf_counter()
            forms.parse_form(node, data)
            t2 = time.perf_counter()
            renders.append(t1 - t0)
            parses.append(t2 - t1)
        print(
            f"{name:22} {len(html):>10} {statistics.median(renders) * 1e6:>16.0f}"
            f" {statistics.median(parses) * 1e6:>9.0f}"
        )


if __name__ == "__main__":
    main()
