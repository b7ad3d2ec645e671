"""What the diagnosis rules see on the lab's runs: the numbers behind DiagnosisConfig's thresholds.

    python benchmarks/diagnosis_calibration.py            # the lab's quick presets (~15 s)
    python benchmarks/diagnosis_calibration.py --full     # the full presets (minutes)
    python benchmarks/diagnosis_calibration.py --only remedies   # one experiment

For every run an experiment recorded (the remedies, exploding_training and residual_depth
experiments train with gg.watch), prints the backward-signal depth fit at the first recorded step
(first/last-layer ratio and per-layer factor: what vanishing/exploding compare with depth_info /
depth_warning / depth_critical), the same fit over the recent window, the largest act_sat_frac and
act_zero_frac (saturation / dead_units), the loss's last/first ratio, and the findings gg.diagnose
gives with the default thresholds. A Markdown table, ready for docs/diagnosis.md.
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np

import gradguard as gg
from gradguard.diagnosis.config import DiagnosisConfig
from gradguard.diagnosis.view import RunView
from gradguard.format import number
from gradguard.lab import run_experiment
from gradguard.metrics import ACT_SAT_FRAC, ACT_ZERO_FRAC, LOSS, Metric

TRAINED = ("remedies", "exploding_training", "residual_depth")


def _max(run: gg.Run, metric: Metric) -> float:
    if not run.has_metric(metric):
        return math.nan
    v = run.metric(metric)[1]
    return float(np.nanmax(v)) if np.isfinite(v).any() else math.nan


def row(label: str, run: gg.Run) -> str:
    view = RunView(run, DiagnosisConfig())
    signal = view.backward_signal()
    start, recent = view.depth_fit(signal, "start"), view.depth_fit(signal, "recent")
    _, loss = run.scalar(LOSS) if LOSS in run.scalar_names else (None, np.array([]))
    finite = loss[np.isfinite(loss)] if loss.size else loss
    loss_ratio = float(finite[-1] / finite[0]) if finite.size >= 2 and finite[0] else math.nan
    found = [f for f in gg.diagnose(run) if f.kind != "healthy"]
    verdict = ", ".join(f"{f.kind} ({f.severity.value})" for f in found) or "healthy"
    cells = [
        label,
        signal,
        number(start.gain if start else None),
        f"x{number(start.per_layer)}" if start else number(None),
        number(recent.gain if recent else None),
        number(_max(run, ACT_SAT_FRAC)),
        number(_max(run, ACT_ZERO_FRAC)),
        number(loss_ratio),
        verdict,
    ]
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--full", action="store_true", help="the full presets instead of the quick ones"
    )
    ap.add_argument("--only", choices=TRAINED, action="append", help="just these experiments")
    ap.add_argument("--set", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                    help="an experiment option (Python literal), e.g. --set steps 20")  # fmt: skip
    args = ap.parse_args(argv)
    import ast

    options = {k: ast.literal_eval(v) for k, v in args.set}
    print(
        "| run | signal | start first/last | per layer | recent first/last | max sat | max zeros "
        "| loss last/first | findings (default thresholds) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for name in args.only or TRAINED:
        result = run_experiment(name, quick=not args.full, quiet=True, **options)
        for label, run in result.runs.items():
            if label.endswith("/init"):  # residual_depth's at-init gradient probes: no training
                continue
            print(row(f"{name}: {label}", run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
