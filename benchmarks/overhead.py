"""Overhead of watching a training loop, against a bare loop and the logging people use today.

    python benchmarks/overhead.py            # full: W1 and W2, a few minutes on 2 cores
    python benchmarks/overhead.py --quick    # tiny sizes, a smoke run

Workloads:
  W1  24 x Linear(512, 512) + tanh, batch 256, SGD
  W2  6-layer GPT-style transformer, d_model 384, 6 heads, seq 128, batch 16, vocab 512, AdamW
Variants (rounds interleaved, order shuffled per round):
  bare        the loop alone (bare2: a second copy of it, to show the noise)
  watch       gg.watch exactly as a user calls it: default schedule (grad stats every step, update
              ratio and activations every 10), a store on disk (flush every 100 steps on the writer
              thread), online diagnosis at each flush
  grad-only   gg.watch(config="light") with a store: gradient statistics every step, nothing else
  item        per-parameter p.grad.norm().item() every step (a common hand-rolled logger)
  histc       per-parameter torch.histc + .cpu() every step (what wandb.watch(log_freq=1) does)
A variant's time is its mean step time over a round (so the 1-in-10 detail steps and the flushes
count in full), median over rounds. Also timed alone on fresh gradients: the Monitor's per-step
gradient statistics, and the physical floor: one read of all gradient bytes at this machine's
measured bandwidth, by a copy (one read + one write, counted as a read: the issue's definition)
and by a pure read (a dot product of a 256 MiB vector with itself).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import gradguard as gg


class Block(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, vocab: int, d: int, heads: int, layers: int, seq: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(seq, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.register_buffer("mask", torch.triu(torch.full((seq, seq), float("-inf")), 1))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for b in self.blocks:
            x = b(x, self.mask)
        return self.head(self.ln(x))


def workload(
    name: str, quick: bool
) -> tuple[nn.Module, Callable[[nn.Module], torch.optim.Optimizer], Callable[[], tuple]]:
    g = torch.Generator().manual_seed(0)
    if name == "W1":
        depth, width, batch = (4, 64, 32) if quick else (24, 512, 256)
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Linear(width, width), nn.Tanh()]
        model = nn.Sequential(*layers)
        x, y = torch.randn(batch, width, generator=g), torch.randn(batch, width, generator=g)
        return model, lambda m: torch.optim.SGD(m.parameters(), lr=1e-3), lambda: (x, y)
    vocab, d, heads, n_layers, seq, batch = (
        (64, 32, 2, 2, 16, 4) if quick else (512, 384, 6, 6, 128, 16)
    )
    model = GPT(vocab, d, heads, n_layers, seq)
    idx = torch.randint(0, vocab, (batch, seq + 1), generator=g)
    return (
        model,
        lambda m: torch.optim.AdamW(m.parameters(), lr=3e-4),
        lambda: (idx[:, :-1], idx[:, 1:]),
    )


def loss_of(name: str, model: nn.Module, batch: tuple) -> torch.Tensor:
    x, y = batch
    out = model(x)
    if name == "W1":
        return nn.functional.mse_loss(out, y)
    return nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


class Variant:
    """Sets up one way of logging around the same model and optimizer."""

    def __init__(
        self, kind: str, model: nn.Module, opt: torch.optim.Optimizer, store_dir: Path
    ) -> None:
        self.kind, self.model, self.opt = kind, model, opt
        self.mon = None
        if kind == "watch":  # everything at its default, as a user calls it
            self.mon = gg.watch(model, opt, store=store_dir / "watch.db")
        elif kind == "grad-only":
            self.mon = gg.watch(model, opt, config="light", store=store_dir / "light.db")
        self.sink: list[object] = []

    def after_backward(self) -> None:
        if self.kind == "item":
            for p in self.model.parameters():
                self.sink.append(p.grad.norm().item())
        elif self.kind == "histc":
            for p in self.model.parameters():
                self.sink.append(torch.histc(p.grad.float(), bins=64).cpu())

    def after_step(self, loss: torch.Tensor) -> None:
        if self.mon is not None:
            self.mon.log(loss=loss)
        if len(self.sink) > 10_000:
            self.sink.clear()

    def close(self) -> None:
        if self.mon is not None:
            self.mon.close()


def time_steps(name: str, variant: Variant, batch: Callable[[], tuple], steps: int) -> float:
    """Mean seconds per step over ``steps`` consecutive steps (detail steps and flushes included)."""
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = loss_of(name, variant.model, batch())
        variant.opt.zero_grad(set_to_none=True)
        loss.backward()
        variant.after_backward()
        variant.opt.step()
        variant.after_step(loss)
    return (time.perf_counter() - t0) / steps


def bandwidths() -> tuple[float, float]:
    """Bytes per second of (a copy: one read + one write, counted once, as a read; a pure read)."""
    src = torch.empty(64 * 2**20, dtype=torch.float32).normal_()
    dst = torch.empty_like(src)

    def median_time(fn: Callable[[], object]) -> float:
        for _ in range(3):
            fn()
        ts = []
        for _ in range(15):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    nbytes = src.numel() * 4
    return (
        nbytes / median_time(lambda: dst.copy_(src)),
        nbytes / median_time(lambda: torch.linalg.vecdot(src, src)),
    )


def grad_stats_alone(name: str, quick: bool, reps: int) -> tuple[float, float]:
    """Median seconds of the Monitor's per-step gradient statistics, and of one foreach norm, on fresh grads."""
    torch.manual_seed(0)
    model, make_opt, batch = workload(name, quick)
    opt = make_opt(model)
    loss_of(name, model, batch()).backward()
    mon = gg.watch(model, opt, config="light", diagnose_online=False, flush_every=reps + 5)
    grads = [p.grad for p in model.parameters()]
    ts, tn = [], []
    for i in range(reps):
        t0 = time.perf_counter()
        mon.grads.take(mon.buffer, mon.buffer.slot(i))  # the probe alone, as each step runs it
        ts.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        torch.stack(torch._foreach_norm(grads))
        tn.append(time.perf_counter() - t0)
    mon.close()
    return statistics.median(ts), statistics.median(tn)


def bench(name: str, quick: bool, rounds: int, steps: int, warmup: int, store_dir: Path) -> dict:
    variants = ["bare", "watch", "grad-only", "item", "histc"]
    torch.manual_seed(0)
    base, make_opt, batch = workload(name, quick)
    state = {k: v.clone() for k, v in base.state_dict().items()}
    setups = {}
    for kind in variants + ["bare2"]:
        model, _, _ = workload(name, quick)
        model.load_state_dict(state)
        sub = store_dir / f"{name}-{kind}"
        sub.mkdir(parents=True, exist_ok=True)
        setups[kind] = Variant("bare" if kind == "bare2" else kind, model, make_opt(model), sub)
    per_round: dict[str, list[float]] = {k: [] for k in setups}
    rng = random.Random(0)
    for v in setups.values():
        time_steps(name, v, batch, warmup)
    for r in range(rounds):
        order = list(setups)
        rng.shuffle(order)
        for kind in order:
            per_round[kind].append(time_steps(name, setups[kind], batch, steps))
        print(f"  {name} round {r + 1}/{rounds}", file=sys.stderr)
    for v in setups.values():
        v.close()
    grad_bytes = sum(p.numel() * p.element_size() for p in base.parameters())
    med = {k: statistics.median(v) for k, v in per_round.items()}
    # per-round ratio to the bare loop of the same round: robust to load drifting between rounds
    ratio = {
        k: statistics.median(a / b for a, b in zip(v, per_round["bare"]))
        for k, v in per_round.items()
    }
    return {
        "median_s": med,
        "median_ratio": ratio,
        "grad_bytes": grad_bytes,
        "steps_per_round": steps,
        "rounds": rounds,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick", action="store_true", help="tiny sizes: checks that the benchmark runs"
    )
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    ap.add_argument("--rounds", type=int, default=None, help="rounds per workload (default 7 / 3)")
    ap.add_argument(
        "--workloads", default="W1,W2", help="comma-separated subset of W1,W2 (default both)"
    )
    ap.add_argument(
        "--steps-only",
        action="store_true",
        help="time the training steps only (skip the statistics-alone and floor measurements)",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    copy_bw, read_bw = bandwidths()
    results: dict = {
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "copy_bandwidth_GBps": copy_bw / 1e9,
        "read_bandwidth_GBps": read_bw / 1e9,
        "load_average_before": os.getloadavg()[0],
        "workloads": {},
    }
    # (rounds, steps per round, warm-up steps): W1 rounds of 50 steps hold 5 detail steps, W2's 10
    # hold one; flushes (every 100 steps) land in W1's rounds 2, 4, ... and once in W2's run
    plan = (
        {"W1": (7, 50, 10), "W2": (3, 10, 3)}
        if not args.quick
        else {"W1": (2, 10, 1), "W2": (2, 10, 1)}
    )
    plan = {k: v for k, v in plan.items() if k in args.workloads.split(",")}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (rounds, steps, warmup) in plan.items():
            res = bench(name, args.quick, args.rounds or rounds, steps, warmup, Path(tmp))
            if args.steps_only:
                results["workloads"][name] = res
                continue
            alone, norm_alone = grad_stats_alone(name, args.quick, 30 if not args.quick else 3)
            res["grad_stats_alone_s"] = alone
            res["foreach_norm_alone_s"] = norm_alone
            res["floor_s"] = res["grad_bytes"] / copy_bw
            res["read_floor_s"] = res["grad_bytes"] / read_bw
            results["workloads"][name] = res
    results["load_average_after"] = os.getloadavg()[0]

    print(
        f"\n# overhead ({results['date']}, {results['machine']}, torch {results['torch']}, "
        f"copy bandwidth {copy_bw / 1e9:.1f} GB/s, read bandwidth {read_bw / 1e9:.1f} GB/s, "
        f"load average {results['load_average_before']:.2f} -> {results['load_average_after']:.2f})\n"
    )
    print(
        "| workload | variant | mean step (ms), median of rounds | overhead vs bare (median of per-round ratios) |"
    )
    print("|---|---|---:|---:|")
    for name, res in results["workloads"].items():
        med, ratio = res["median_s"], res["median_ratio"]
        for kind in ("bare", "bare2", "watch", "grad-only", "item", "histc"):
            print(f"| {name} | {kind} | {1e3 * med[kind]:.2f} | {100 * (ratio[kind] - 1):+.1f}% |")
        if args.steps_only:
            continue
        step = med["bare"]
        mib = res["grad_bytes"] / 2**20
        print(
            f"| {name} | floor: one copy-speed read of {mib:.1f} MiB of grads | "
            f"{1e3 * res['floor_s']:.2f} | {100 * res['floor_s'] / step:.1f}% |"
        )
        print(
            f"| {name} | floor: one pure read of {mib:.1f} MiB of grads | "
            f"{1e3 * res['read_floor_s']:.2f} | {100 * res['read_floor_s'] / step:.1f}% |"
        )
        print(
            f"| {name} | grad statistics alone (fresh grads) | {1e3 * res['grad_stats_alone_s']:.2f} | "
            f"{100 * res['grad_stats_alone_s'] / step:.1f}% ({res['grad_stats_alone_s'] / res['floor_s']:.1f}x copy floor, "
            f"{res['grad_stats_alone_s'] / res['read_floor_s']:.1f}x read floor) |"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                results,
                indent=2,
                default=lambda x: None if isinstance(x, float) and math.isnan(x) else x,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
