"""Exploding training: a run that diverges to NaN, and what each remedy does to it.

The baseline is a 6-layer ReLU MLP (He init) on digits with SGD, momentum 0.9 and a learning
rate of 0.5: a few steps in, one large gradient throws the weights far out, the loss overflows and
becomes NaN, and every later step is NaN. The variants change one thing: clip the gradient norm,
clip each gradient value, clip adaptively (AGC: per unit, relative to the weight norm; ZClip:
z-score of the norm against its running mean), lower the learning rate, add L2 weight decay, or
switch to Adam. Measured: the loss curve, the step of the first non-finite loss, test accuracy.

Run it: ``gradguard lab exploding_training --quick``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from gradguard.lab._common import deterministic, mlp, progress, train_classifier
from gradguard.lab.data import digits
from gradguard.report.experiment import ExperimentResult
from gradguard.report.plots import bar_plot, line_plot

__all__ = ["run", "PRESETS", "configs"]

PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"depth": 6, "width": 64, "steps": 120, "batch": 64, "lr": 0.5},
    "full": {"depth": 6, "width": 128, "steps": 1000, "batch": 128, "lr": 0.5},
}


def configs(lr: float) -> dict[str, Callable[[], dict[str, Any]]]:
    """label -> a function giving train_classifier options (clippers are made fresh per run)."""
    from gradguard.remedies import clip

    return {
        "baseline (diverges)": lambda: {},
        "norm clip 1.0": lambda: {"clip": clip.Norm(1.0)},
        "value clip 0.05": lambda: {"clip": clip.Value(0.05)},
        "AGC 0.01 (adaptive)": lambda: {"clip": clip.AGC(0.01)},
        "ZClip (adaptive, warmup 5)": lambda: {"clip": clip.ZClip(warmup=5)},
        f"lower lr {lr / 10:g}": lambda: {"lr": lr / 10},
        "L2 weight decay 5e-3": lambda: {"weight_decay": 5e-3},
        "Adam lr 1e-3": lambda: {"optimizer": "adam", "lr": 1e-3},
    }


def run(*, quick: bool = True, quiet: bool = False, **options: Any) -> ExperimentResult:
    """Train the diverging baseline and each remedy for the same budget.

    Args:
        quick: the small preset instead of the full one.
        quiet: no progress bar.
        **options: overrides: depth, width, steps, batch, lr.

    Returns:
        An ExperimentResult, one row per configuration (first_nan_step is None when it stayed finite).
    """
    p = {**PRESETS["quick" if quick else "full"], **options}
    t0 = time.perf_counter()
    data = digits()  # x: (1437, 64), y: (1437,)
    variants = configs(p["lr"])

    rows: list[dict[str, Any]] = []
    runs, curves = {}, {}
    with progress(len(variants), "exploding training", quiet) as bar:
        for label, make in variants.items():
            kw = {"lr": p["lr"], **make()}
            with deterministic(0):  # same init and batch order for every variant
                model = mlp(p["depth"], width=p["width"], activation="relu", init="he")
                out = train_classifier(
                    model, data, name=label, steps=p["steps"], batch_size=p["batch"], **kw
                )
            runs[label], curves[label] = out.run, out.losses
            finite = out.losses[np.isfinite(out.losses)]
            rows.append(
                {
                    "config": label,
                    "first_nan_step": out.first_nan,
                    "max_loss": float(finite.max()) if len(finite) else math.nan,
                    "final_loss": float(out.losses[-1]) if len(out.losses) else math.nan,
                    "test_acc": out.test_acc,
                }
            )
            bar.advance()

    figures = {
        "loss_curves": line_plot(
            {k: (np.arange(len(v)), v) for k, v in curves.items()},
            title="training loss (a curve that stops early hit NaN)",
            xlabel="step",
            ylabel="cross-entropy",
            logy=True,
        ),
        "accuracy": bar_plot(
            list(variants), [r["test_acc"] for r in rows], title="test accuracy", ylabel="accuracy"
        ),
    }
    return ExperimentResult(
        name="exploding_training",
        title="Exploding training: divergence to NaN and its remedies",
        columns=["config", "first_nan_step", "max_loss", "final_loss", "test_acc"],
        table=rows,
        figures=figures,
        reading=_reading(rows, p),
        runs=runs,
        params={**p, "quick": quick},
        elapsed_s=time.perf_counter() - t0,
    )


def _reading(rows: list[dict[str, Any]], p: dict[str, Any]) -> str:
    base = rows[0]
    saved = [r for r in rows[1:] if r["first_nan_step"] is None]
    trained = [f"{r['config']} ({r['test_acc']:.0%})" for r in saved if r["test_acc"] > 0.5]
    stuck = [r["config"] for r in saved if r["test_acc"] <= 0.5]
    still = [r["config"] for r in rows[1:] if r["first_nan_step"] is not None]
    if base["first_nan_step"] is not None:
        outcome = f"the baseline diverges: its loss becomes NaN at step {base['first_nan_step']}"
    else:
        outcome = (
            f"the baseline stays finite this time (largest loss {base['max_loss']:.3g}, "
            f"test accuracy {base['test_acc']:.0%}), so there is no divergence to remedy"
        )
    return (
        f"With SGD at lr {p['lr']} {outcome}. Stay finite and learn: "
        f"{', '.join(trained) or 'none'}. Stay finite but learn nothing in {p['steps']} steps: "
        f"{', '.join(stuck) or 'none'}. Still diverge: {', '.join(still) or 'none'}."
    )
