"""gg.fix on untrainable nets: the check's verdict, the remedy it picks, training before and after.

Three digits MLPs that do not train as initialised: a deep sigmoid net at PyTorch's default init
(ordered phase: every input maps to nearly the same output), a ReLU net and a tanh net with weights
N(0, 16 / fan_in) (the forward signal grows x8 per layer / the chaotic phase). For each: gg.check
says whether it will train, gg.fix picks a remedy (an init when one suffices, else an activation
swap or inserted normalisation on a copy), and the net is trained
from both initialisations with the same data order, optimizer and budget.
Measured: the verdict and its confidence before and after, the remedy, test accuracy and the loss
curves.

Run it: ``gradguard lab fix_untrainable --quick``.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from gradguard.lab._common import (
    check_choices,
    deterministic,
    loss_curves_plot,
    mlp,
    progress,
    train_preset,
)
from gradguard.lab.data import digits
from gradguard.preflight import check
from gradguard.remedies.fix import fix
from gradguard.report.experiment import ExperimentResult
from gradguard.report.plots import bar_plot

__all__ = ["run", "PRESETS", "CONFIGS", "EXTRA_OPTIONS"]

EXTRA_OPTIONS = ("configs",)  # a subset of CONFIGS' labels

# label -> mlp() options of an untrainable configuration
CONFIGS: dict[str, dict[str, Any]] = {
    "sigmoid, default init": {"activation": "sigmoid"},
    "relu, sigma_w^2 = 16": {"activation": "relu", "sigma_w": 4.0},
    "tanh, sigma_w^2 = 16": {"activation": "tanh", "sigma_w": 4.0},
}

PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"depth": 12, "width": 32, "steps": 200, "batch": 64, "lr": 1e-3},
    "full": {"depth": 24, "width": 64, "steps": 1000, "batch": 128, "lr": 1e-3},
}


def run(*, quick: bool = True, quiet: bool = False, **options: Any) -> ExperimentResult:
    """Check, fix and train each untrainable configuration; compare before and after.

    Args:
        quick: the small preset instead of the full one.
        quiet: no progress bar.
        **options: overrides: depth, width, steps, batch, lr (Adam), configs (list of labels).

    Returns:
        An ExperimentResult, one row per configuration.
    """
    p = {**PRESETS["quick" if quick else "full"], **options}
    labels = check_choices("configs", p.pop("configs", None) or list(CONFIGS), CONFIGS)
    t0 = time.perf_counter()
    data = digits()  # x: (1437, 64) standardised pixels, y: (1437,) digits 0..9
    batch = data.x_train[: p["batch"]]  # the batch gg.check and gg.fix look at

    rows: list[dict[str, Any]] = []
    runs, curves = {}, {}
    with progress(2 * len(labels), "fix untrainable", quiet) as bar:
        for label in labels:
            with deterministic(0):
                model = mlp(p["depth"], width=p["width"], **CONFIGS[label])
            before = check(model, batch)
            # init-only remedies first (in place on a copy); activation swaps / normalisation only
            # when no init makes the net trainable (then report.model is a new model)
            report = fix(copy.deepcopy(model), batch, allow_architecture_changes=True)
            for when, net in (("before", model), ("after", report.model)):
                out = train_preset(net, data, f"{label} ({when})", p, optimizer="adam")
                runs[f"{label} ({when})"] = out.run
                curves[f"{label} ({when})"] = out.losses
                rows.append(
                    {
                        "config": label,
                        "when": when,
                        "remedy": report.changed if when == "after" else "-",
                        "trainable": (before if when == "before" else report.after).trainable,
                        "confidence": (before if when == "before" else report.after).confidence,
                        "test_acc": out.test_acc,
                        "final_loss": out.final_loss,
                    }
                )
                bar.advance()

    figures = {
        "loss_curves": loss_curves_plot(
            curves, f"training loss before and after gg.fix, {p['depth']}-layer MLPs on digits"
        ),
        "accuracy": bar_plot(
            labels,
            {w: [r["test_acc"] for r in rows if r["when"] == w] for w in ("before", "after")},
            title="test accuracy before / after gg.fix",
            ylabel="accuracy",
        ),
    }
    return ExperimentResult(
        name="fix_untrainable",
        title=f"gg.fix on untrainable {p['depth']}-layer MLPs",
        columns=["config", "when", "remedy", "trainable", "confidence", "test_acc", "final_loss"],
        table=rows,
        figures=figures,
        reading=_reading(rows, p),
        runs=runs,
        params={**p, "configs": labels, "quick": quick},
        elapsed_s=time.perf_counter() - t0,
    )


def _reading(rows: list[dict[str, Any]], p: dict[str, Any]) -> str:
    parts = []
    for b, a in zip(rows[::2], rows[1::2]):
        parts.append(
            f"{b['config']}: verdict {'trainable' if b['trainable'] else 'untrainable'} "
            f"({b['confidence']:.0%}), test accuracy {b['test_acc']:.2f}; gg.fix chose "
            f"{a['remedy'] or 'nothing'} -> {'trainable' if a['trainable'] else 'untrainable'} "
            f"({a['confidence']:.0%}), test accuracy {a['test_acc']:.2f}"
        )
    return (
        f"{p['depth']}-layer MLPs, Adam lr {p['lr']:g}, {p['steps']} steps, the same data order "
        "before and after. " + "; ".join(parts) + "."
    )
