"""On a CUDA machine: no host sync on the training path, and the overhead there.

    python benchmarks/gpu_check.py               # sync check + overhead on W1 and W2 (~2 min on one GPU)
    python benchmarks/gpu_check.py --sync-only   # only the sync check (seconds)

1. Sync check: a few training steps of W1 and W2 with ``gg.watch`` (every probe on every step:
   ``detail_every=1``, flush far away) and each gg.clip clipper, inside
   ``torch.cuda.set_sync_debug_mode("error")``: any operation that makes the host wait for the
   device (``.item()``, a pageable host-to-device copy, ``nonzero``...) raises there. The flush,
   which reads the buffer once by design, runs after the checked steps.
2. Overhead: the same protocol as benchmarks/overhead.py (bare loop vs watch defaults vs
   grad-only, per-round mean step time, median over rounds), timed with CUDA events.

On a machine without CUDA it says so and exits with 2.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

import gradguard as gg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import loss_of, workload  # noqa: E402  (the same W1 / W2)


def _steps(name: str, model, opt, batch: Callable[[], tuple], n: int, after=None) -> None:
    for _ in range(n):
        loss = loss_of(name, model, batch())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if after is not None:
            after(model)
        opt.step()


def on_cuda(name: str) -> tuple[torch.nn.Module, torch.optim.Optimizer, Callable[[], tuple]]:
    model, make_opt, batch = workload(name, quick=False)
    model = model.cuda()
    host = batch()
    dev = tuple(t.cuda() for t in host)
    return model, make_opt(model), lambda: dev


def sync_check() -> list[str]:
    problems = []
    for name in ("W1", "W2"):
        model, opt, batch = on_cuda(name)
        _steps(name, model, opt, batch, 2)  # warm-up: lazy init outside the checked region
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:  # the bare loop first: a sync of the workload itself is not ours
            _steps(name, model, opt, batch, 1)
        except RuntimeError as e:
            problems.append(f"{name} bare loop syncs by itself, nothing to attribute: {e}")
            continue
        finally:
            torch.cuda.set_sync_debug_mode("default")
        mon = gg.watch(model, opt, detail_every=1, flush_every=1000, diagnose_online=False)
        _steps(name, model, opt, batch, 1)  # first forward: layer order learned, hooks settle
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            _steps(name, model, opt, batch, 3)
        except RuntimeError as e:
            problems.append(f"{name} watch: {e}")
        finally:
            torch.cuda.set_sync_debug_mode("default")
        mon.close()
        if mon.failures.parts:
            problems.append(f"{name} watch disabled parts: {sorted(mon.failures.parts)}")
        for clipper in (
            gg.clip.Norm(1.0),
            gg.clip.Value(0.1),
            gg.clip.AutoClip(),
            gg.clip.AGC(),
            gg.clip.ZClip(),
        ):
            label = type(clipper).__name__
            _steps(name, model, opt, batch, 1, after=lambda m, c=clipper: c(m.parameters()))
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
            try:
                _steps(name, model, opt, batch, 2, after=lambda m, c=clipper: c(m.parameters()))
            except RuntimeError as e:
                problems.append(f"{name} {label}: {e}")
            finally:
                torch.cuda.set_sync_debug_mode("default")
        print(f"{name}: sync check done", file=sys.stderr)
    return problems


def overhead(rounds: int = 5) -> None:
    print("| workload | variant | mean step (ms) | overhead vs bare |")
    print("|---|---|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, steps in (("W1", 100), ("W2", 20)):
            per_round: dict[str, list[float]] = {"bare": [], "watch": [], "grad-only": []}
            setups = {}
            for kind in per_round:
                model, opt, batch = on_cuda(name)
                mon = None
                if kind == "watch":
                    mon = gg.watch(model, opt, store=f"{tmp}/{name}-w.db")
                elif kind == "grad-only":
                    mon = gg.watch(model, opt, config="light", store=f"{tmp}/{name}-l.db")
                setups[kind] = (model, opt, batch, mon)
                _steps(name, model, opt, batch, 5)
            for _ in range(rounds):
                for kind, (model, opt, batch, _mon) in setups.items():
                    start, end = (
                        torch.cuda.Event(enable_timing=True),
                        torch.cuda.Event(enable_timing=True),
                    )
                    torch.cuda.synchronize()
                    start.record()
                    _steps(name, model, opt, batch, steps)
                    end.record()
                    torch.cuda.synchronize()
                    per_round[kind].append(start.elapsed_time(end) / steps)
            for _model, _opt, _batch, mon in setups.values():
                if mon is not None:
                    mon.close()
            bare = statistics.median(per_round["bare"])
            for kind, times in per_round.items():
                med = statistics.median(times)
                print(f"| {name} | {kind} | {med:.2f} | {100 * (med / bare - 1):+.1f}% |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sync-only", action="store_true", help="only the sync check")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check needs a CUDA device (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    problems = sync_check()
    for p in problems:
        print(f"SYNC: {p}")
    print("sync check:", "FAILED" if problems else "no host sync on the training path")
    if not args.sync_only:
        overhead()
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
