"""The same overhead harness on two revisions of gradguard, alternated in one run (A B A B ...).

    python benchmarks/ab_revisions.py fabc0d7            # that revision against the working tree
    python benchmarks/ab_revisions.py fabc0d7 --pairs 3 --quick

Each run is a fresh process of this tree's ``benchmarks/overhead.py --steps-only`` with
``PYTHONPATH`` pointing at one revision's ``src`` (the other revision is checked out into a
temporary git worktree). Every run measures its own bare loop, so the overhead ratios compare across
runs even when the machine's speed drifts; the table gives the median of each ratio over the runs of
each revision.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_once(src: Path, out: Path, quick: bool, workloads: str) -> dict:
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "overhead.py"),
        "--steps-only",
        "--variants",
        "bare,bare2,watch,light",
        "--workloads",
        workloads,
        "--json",
        str(out),
    ]
    if quick:
        cmd.append("--quick")
    env = {**os.environ, "PYTHONPATH": str(src)}
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("baseline", help="git revision to compare the working tree with")
    ap.add_argument("--pairs", type=int, default=2, help="A/B pairs of runs (default 2)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks that it runs")
    ap.add_argument("--workloads", default="W1,W2", help="comma-separated subset of W1,W2")
    args = ap.parse_args(argv)
    results: dict[str, list[dict]] = {"baseline": [], "current": []}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "baseline"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.baseline],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for i in range(args.pairs):
                for label, src in (("baseline", base / "src"), ("current", ROOT / "src")):
                    out = Path(tmp) / f"{label}-{i}.json"
                    results[label].append(run_once(src, out, args.quick, args.workloads))
                    print(f"pair {i + 1}/{args.pairs}: {label} done", file=sys.stderr)
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False
            )
    print(f"\n# overhead, {args.baseline} (baseline) vs the working tree, {args.pairs} runs each\n")
    print("| workload | variant | baseline overhead | current overhead |")
    print("|---|---|---:|---:|")
    for name in results["current"][0]["workloads"]:
        for kind in ("bare2", "watch", "light"):
            med = {
                label: statistics.median(r["workloads"][name]["median_ratio"][kind] for r in runs)
                for label, runs in results.items()
            }
            print(
                f"| {name} | {kind} | {100 * (med['baseline'] - 1):+.1f}% | "
                f"{100 * (med['current'] - 1):+.1f}% |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
