"""Run one benchmark against two source trees, alternating, in one invocation.

A change that must leave the hot path unchanged (the request inspector, decision 035)
is measured against its baseline on the same machine at the same time: the rounds
alternate between the trees (`PYTHONPATH=<tree>/src`, which comes before the venv's
editable install), so both see the same neighbours. The benchmark's own summary lines
(those not starting with a log timestamp) are printed per round, labelled.

Run from the repository root (the baseline is the main checkout):
    .venv/bin/python benchmarks/side_by_side.py --baseline /work/main --rounds 5 -- \\
        benchmarks/hot_path_bench.py --configs none -n 20000 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d ")


def run(tree: Path, command: list[str]) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    done = subprocess.run([sys.executable, *command], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: {' '.join(command)} failed:\n{done.stderr}")
    out = done.stdout
    return [line for line in out.splitlines() if line.strip() and not _LOG_LINE.match(line)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--baseline", type=Path, required=True, help="the other checkout's root")
    p.add_argument("--rounds", type=int, default=3, help="alternations [3]")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- benchmark script and args")
    args = p.parse_args(argv)
    command = [c for c in args.command if c != "--"]
    here = Path(__file__).resolve().parents[1]
    for round_ in range(1, args.rounds + 1):
        for label, tree in (("baseline", args.baseline), ("this tree", here)):
            for line in run(tree, command):
                print(f"round {round_}  {label:<9}  {line}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
