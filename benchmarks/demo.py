"""Time `gradguard demo` end to end, as a user runs it (a fresh process each time); budget: 60 s.

Run: .venv/bin/python benchmarks/demo.py [--repeats 3] [--threads N]
Each run is `python -m gradguard demo --out <fresh dir> --quiet` in a new interpreter (imports,
data loading, every quick preset, figures, report.html, runs.db). Prints each run's wall time,
its CPU time (children), the load average, and the median.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time


def one_run(threads: int | None) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one demo in a fresh interpreter."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "gradguard",
            "demo",
            "--out",
            os.path.join(tmp, "demo"),
            "--quiet",
        ]
        if threads:
            cmd += ["--threads", str(threads)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        for name in ("report.html", "runs.db"):
            if not os.path.exists(os.path.join(tmp, "demo", name)):
                raise SystemExit(f"demo did not write {name}")
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--threads", type=int, default=None, help="pass --threads to the demo (default: its own, 1)"
    )
    args = ap.parse_args()
    walls = []
    for i in range(args.repeats):
        load = os.getloadavg()[0]
        wall, cpu = one_run(args.threads)
        walls.append(wall)
        print(f"run {i + 1}: {wall:.1f} s wall, {cpu:.1f} s CPU, load average before {load:.2f}")
    print(f"median: {statistics.median(walls):.1f} s (budget 60 s); min {min(walls):.1f} s")
    print("wall >> CPU means other processes competed for the 2 cores")


if __name__ == "__main__":
    main()
