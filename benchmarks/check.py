"""Time gg.check on a 100-layer, width-512 tanh MLP (batch 64); budget: 5 s on a 2-core CPU.

Run: .venv/bin/python benchmarks/check.py [--repeats 5] [--depth 100] [--width 512] [--batch 64]
Prints each run's wall time and the median; the check includes the Jacobian estimate.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from torch import nn

import gradguard as gg


def build(depth: int, width: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(depth):
        lin = nn.Linear(width, width)
        nn.init.normal_(lin.weight, 0.0, math.sqrt(1.0 / width))  # Xavier-like, tanh
        nn.init.zeros_(lin.bias)
        layers += [lin, nn.Tanh()]
    return nn.Sequential(*layers[:-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build(args.depth, args.width)
    x = torch.randn(args.batch, args.width)
    gg.check(model, x)  # warm-up (imports, allocator)
    times, cpu = [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        report = gg.check(model, x)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    no_jac = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        gg.check(model, x, jacobian=False)
        no_jac.append(time.perf_counter() - t0)
    print(f"model: {args.depth} x Linear({args.width}, {args.width}) + tanh, batch {args.batch}, "
          f"torch threads {torch.get_num_threads()}")  # fmt: skip
    print("check runs (s):", " ".join(f"{t:.3f}" for t in times))
    print(f"median check: {statistics.median(times):.3f} s, min {min(times):.3f} s (budget 5 s)")
    print(f"median CPU time (all threads): {statistics.median(cpu):.3f} s "
          "(wall >> CPU / threads means other processes compete for the cores)")  # fmt: skip
    print(f"median check without Jacobian: {statistics.median(no_jac):.3f} s")
    print(
        f"verdict: {report.verdict}; power iterations: {report.jacobian.iterations if report.jacobian else '-'}"
    )


if __name__ == "__main__":
    main()
