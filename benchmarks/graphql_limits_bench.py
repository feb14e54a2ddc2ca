"""Rejection time of hostile GraphQL documents (issue 16): the adversarial corpus of
tests/unit/graph/adversarial.py through the admission pipeline the GraphQL endpoint
runs before execution: `parse_within_limits` (size, token pre-count, graphql-core's
parser), `check_limits` (depth, aliases, cost on the fragment-expanded operation) and
graphql-core's validation for what the limits let through.

For every document it records the time of the whole pipeline and of each stage (this
thread's CPU time by default, `--clock wall` for elapsed time; the median of `--repeat`
runs of that document, to damp a shared machine's noise), and prints the count, the
crashes (any exception that is not a `LimitExceeded` or `GraphQLError`: must be 0), how
the documents were refused, and p50/p99/max per stage and per family. The same for the
benign documents (all admitted).

Run from the repository root:
    .venv/bin/python benchmarks/graphql_limits_bench.py
    .venv/bin/python benchmarks/graphql_limits_bench.py --max-tokens 1000 --repeat 5
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

from graphql import GraphQLError, validate

from portcullis.graph.limits import DocumentLimits, LimitExceeded, check_limits, parse_within_limits

ROOT = Path(__file__).resolve().parents[1]
# The CPU time of this thread by default: the work one rejection costs, which a shared
# machine's load does not inflate (`--clock wall` for the elapsed time).
CLOCK = time.thread_time_ns


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def summary(values: list[float]) -> str:
    return (
        f"p50 {percentile(values, 0.5):7.3f}  p99 {percentile(values, 0.99):7.3f}"
        f"  max {max(values):7.3f}"
    )


def run_once(case, graph, limits, rules) -> tuple[str, float, float, float]:  # type: ignore[no-untyped-def]
    """(outcome, parse ms, check ms, validate ms) of one pass of one document."""
    parsed: int | None = None
    start = CLOCK()
    try:
        document = parse_within_limits(case.source, limits)
        parsed = CLOCK()
        check_limits(
            document, graph, limits, operation_name=case.operation_name, variables=case.variables
        )
    except (LimitExceeded, GraphQLError) as error:
        end = CLOCK()
        outcome = error.limit if isinstance(error, LimitExceeded) else "syntax"
        if parsed is None:
            return outcome, (end - start) / 1e6, 0.0, 0.0
        return outcome, (parsed - start) / 1e6, (end - parsed) / 1e6, 0.0
    checked = CLOCK()
    errors = validate(graph, document, rules)
    end = CLOCK()
    outcome = "invalid" if errors else "admitted"
    return outcome, (parsed - start) / 1e6, (checked - parsed) / 1e6, (end - checked) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=16, help="corpus seed (the tests use 16)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per document (median)")
    parser.add_argument("--max-tokens", type=int, default=None, help="override max_tokens")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    arguments = parser.parse_args()
    global CLOCK
    CLOCK = time.thread_time_ns if arguments.clock == "cpu" else time.perf_counter_ns

    sys.path.insert(0, str(ROOT / "tests"))
    from unit.graph.adversarial import RULES, benign, corpus, schema

    graph = schema()
    limits = DocumentLimits()
    if arguments.max_tokens is not None:
        limits = replace(limits, max_tokens=arguments.max_tokens)
    cases = corpus(arguments.seed)
    print(f"limits: {limits}")
    print(
        f"corpus: {len(cases)} hostile documents (seed {arguments.seed}), repeat {arguments.repeat}"
    )

    for label, documents in (("hostile", cases), ("benign", benign())):
        totals: list[float] = []
        stages: dict[str, list[float]] = collections.defaultdict(list)
        families: dict[str, list[float]] = collections.defaultdict(list)
        outcomes: collections.Counter[str] = collections.Counter()
        crashes: list[str] = []
        for case in documents:
            runs = []
            try:
                for _ in range(arguments.repeat):
                    runs.append(run_once(case, graph, limits, RULES))
            except Exception as error:  # a crash: counted and printed
                crashes.append(
                    f"{case.family}: {type(error).__name__}: {error} :: {case.source[:80]!r}"
                )
                continue
            outcome = runs[0][0]
            outcomes[outcome] += 1
            parse_ms = statistics.median(run[1] for run in runs)
            check_ms = statistics.median(run[2] for run in runs)
            validate_ms = statistics.median(run[3] for run in runs)
            total = statistics.median(run[1] + run[2] + run[3] for run in runs)
            totals.append(total)
            stages["parse"].append(parse_ms)
            stages["check_limits"].append(check_ms)
            stages["validate"].append(validate_ms)
            families[case.family].append(total)
        print(f"\n== {label}: {len(documents)} documents, {len(crashes)} crashes")
        for crash in crashes:
            print(f"  CRASH {crash}")
        print(
            "  outcomes: " + ", ".join(f"{name} {count}" for name, count in outcomes.most_common())
        )
        for stage, values in (("total ms", totals), *stages.items()):
            print(f"  {stage:12} {summary(values)}")
        under = sum(total < 5.0 for total in totals) / len(totals)
        print(f"  under 5 ms: {under:.1%} of the documents")
        if label == "hostile":
            print("  per family (ms):")
            for family, values in sorted(families.items()):
                print(f"    {family:14} n={len(values):4}  {summary(values)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
