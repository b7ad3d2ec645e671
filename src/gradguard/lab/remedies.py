"""Remedies for vanishing gradients, side by side on a deep sigmoid MLP trained on digits.

The baseline is the textbook failure: 20 sigmoid layers, PyTorch's default init, plain SGD with
momentum. Its first layer gets ~1e-16 of the gradient its last hidden layer gets, so only the top of
the net learns. Each variant changes one thing (ReLU, Xavier/He init, BatchNorm, LayerNorm,
residual connections) and one combines them (ReLU + He + BatchNorm + residual branches
scaled by 1/sqrt(depth)); every run gets the same data order and step budget.
Measured per configuration: test accuracy, the loss curve, the first/last layer gradient ratio
(median over training, from gg.watch), and gg.diagnose's findings.

Run it: ``gradguard lab remedies --quick``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from gradguard.lab._common import (
    check_choices,
    deterministic,
    diagnose_or_empty,
    linear_columns,
    loss_curves_plot,
    mlp,
    progress,
    train_preset,
)
from gradguard.lab.data import digits
from gradguard.metrics import GRAD_NORM
from gradguard.report.experiment import ExperimentResult
from gradguard.report.plots import bar_plot

__all__ = ["run", "PRESETS", "CONFIGS", "EXTRA_OPTIONS"]

EXTRA_OPTIONS = ("configs",)  # a subset of CONFIGS' labels

# label -> mlp() options; the baseline is the first.
CONFIGS: dict[str, dict[str, Any]] = {
    "baseline (sigmoid)": {"activation": "sigmoid"},
    "relu": {"activation": "relu"},
    "sigmoid + xavier": {"activation": "sigmoid", "init": "xavier"},
    "relu + he": {"activation": "relu", "init": "he"},
    "sigmoid + batchnorm": {"activation": "sigmoid", "norm": "batch"},
    "sigmoid + layernorm": {"activation": "sigmoid", "norm": "layer"},
    "sigmoid + residual": {"activation": "sigmoid", "residual": True},
    # residual branches scaled by 1/sqrt(depth) ("scaled"), so the sum of 20 branches stays O(1)
    "all combined": {
        "activation": "relu",
        "init": "he",
        "norm": "batch",
        "residual": True,
        "scaled": True,
    },
}

PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"depth": 20, "width": 64, "steps": 150, "batch": 64, "lr": 0.05},
    "full": {"depth": 30, "width": 128, "steps": 1500, "batch": 128, "lr": 0.05},
}


def run(*, quick: bool = True, quiet: bool = False, **options: Any) -> ExperimentResult:
    """Train the baseline and each remedy for the same budget; compare.

    Args:
        quick: the small preset instead of the full one.
        quiet: no progress bar.
        **options: overrides: depth, width, steps, batch, lr, configs (list of labels).

    Returns:
        An ExperimentResult, one row per configuration.
    """
    p = {**PRESETS["quick" if quick else "full"], **options}
    labels = check_choices("configs", p.pop("configs", None) or list(CONFIGS), CONFIGS)
    t0 = time.perf_counter()
    data = digits()  # x: (1437, 64) standardised pixels, y: (1437,) digits 0..9

    rows: list[dict[str, Any]] = []
    runs, findings, curves = {}, {}, {}
    with progress(len(labels), "remedies", quiet) as bar:
        for label in labels:
            with deterministic(0):  # same init draw for every configuration
                opts = dict(CONFIGS[label])
                if opts.pop("scaled", False):
                    opts["branch_scale"] = p["depth"] ** -0.5
                model = mlp(p["depth"], width=p["width"], **opts)
            out = train_preset(model, data, label, p, config="default")  # same batch order
            grads = out.run.metric(GRAD_NORM)[1][:, linear_columns(out.run)]  # (steps, depth + 1)
            with np.errstate(divide="ignore", invalid="ignore"):  # a dead layer has gradient 0
                ratio = float(np.nanmedian(grads[:, 0] / grads[:, -2]))  # first / last hidden layer
            found = diagnose_or_empty(out.run)
            runs[label], findings[label], curves[label] = out.run, found, out.losses
            rows.append(
                {
                    "config": label,
                    "test_acc": out.test_acc,
                    "final_loss": out.final_loss,
                    "grad_first_over_last": ratio,
                    "diagnosis": ", ".join(sorted({f.kind for f in found})) or "-",
                }
            )
            bar.advance()

    figures = {
        "loss_curves": loss_curves_plot(curves, f"training loss, {p['depth']}-layer MLP on digits"),
        "accuracy": bar_plot(
            labels, [r["test_acc"] for r in rows], title="test accuracy", ylabel="accuracy"
        ),
        "grad_ratio": bar_plot(
            labels,
            [r["grad_first_over_last"] for r in rows],
            title="gradient at layer 1 / gradient at the last hidden layer",
            ylabel="ratio (log)",
            logy=True,
        ),
    }
    return ExperimentResult(
        name="remedies",
        title=f"Remedies for a {p['depth']}-layer sigmoid MLP",
        columns=["config", "test_acc", "final_loss", "grad_first_over_last", "diagnosis"],
        table=rows,
        figures=figures,
        reading=_reading(rows, p),
        runs=runs,
        findings=findings,
        params={**p, "configs": labels, "quick": quick},
        elapsed_s=time.perf_counter() - t0,
    )


BASELINE = next(iter(CONFIGS))


def _reading(rows: list[dict[str, Any]], p: dict[str, Any]) -> str:
    best = max(rows, key=lambda r: r["test_acc"])
    tail = (
        f"best: {best['config']} at {best['test_acc']:.0%}. "
        "Remedies that keep the gradient ratio near 1 are the ones that train."
    )
    base = next((r for r in rows if r["config"] == BASELINE), None)
    if base is None:  # a subset without the baseline: nothing to compare against
        return (
            f"After {p['steps']} SGD steps on a {p['depth']}-layer MLP (the {BASELINE} baseline was "
            "not in this run): "
            + ", ".join(
                f"{r['config']} {r['test_acc']:.0%} (gradient ratio {r['grad_first_over_last']:.1e})"
                for r in rows
            )
            + "; "
            + tail
        )
    good = [r["config"] for r in rows if r is not base and r["test_acc"] > base["test_acc"] + 0.3]
    return (
        f"After {p['steps']} SGD steps the {p['depth']}-layer sigmoid baseline reaches "
        f"{base['test_acc']:.0%} test accuracy (chance is 10%): its first layer gets "
        f"{base['grad_first_over_last']:.1e} of the last hidden layer's gradient. "
        f"Clearly better (> +30 points): {', '.join(good) or 'none'}; " + tail
    )
