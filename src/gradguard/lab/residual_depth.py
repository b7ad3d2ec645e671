"""Plain vs residual MLPs as depth grows: gradient at the first layer, and trainability.

Both nets use tanh and PyTorch's default init (std = 1/sqrt(3 fan_in), so chi_1 ~ 1/3 per plain
layer: the plain net's gradient shrinks ~sqrt(3) per layer toward the input). The residual net
computes x + tanh(W x + b) in every hidden block: the identity path adds a 1 to each layer's
Jacobian, so the gradient reaching layer 1 no longer decays with depth. Measured at depths
{10, 30, 100}: ||dL/dW_1|| at init (gg.watch, geometric mean over seeds) and test accuracy on
digits after the same SGD budget.

Run it: ``gradguard lab residual_depth --quick``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from gradguard.lab._common import (
    deterministic,
    linear_columns,
    mlp,
    progress,
    record_gradients,
    train_classifier,
)
from gradguard.lab.data import digits
from gradguard.metrics import GRAD_NORM
from gradguard.report.experiment import ExperimentResult
from gradguard.report.plots import line_plot

__all__ = ["run", "PRESETS"]

PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        "depths": [10, 30, 100],
        "width": 32,
        "steps": 100,
        "batch": 64,
        "lr": 0.02,
        "seeds": 2,
    },
    "full": {
        "depths": [10, 30, 100],
        "width": 128,
        "steps": 1500,
        "batch": 128,
        "lr": 0.02,
        "seeds": 5,
    },
}


def run(*, quick: bool = True, quiet: bool = False, **options: Any) -> ExperimentResult:
    """Compare plain and residual tanh MLPs at several depths.

    Args:
        quick: the small preset instead of the full one.
        quiet: no progress bar.
        **options: overrides: depths, width, steps, batch, lr, seeds.

    Returns:
        An ExperimentResult, one row per (architecture, depth).
    """
    p = {**PRESETS["quick" if quick else "full"], **options}
    t0 = time.perf_counter()
    data = digits()  # x: (1437, 64), y: (1437,)
    x, y = data.x_train[: p["batch"]], data.y_train[: p["batch"]]

    rows: list[dict[str, Any]] = []
    runs = {}
    with progress(2 * len(p["depths"]), "residual depth", quiet) as bar:
        for arch in ("plain", "residual"):
            for depth in p["depths"]:
                label = f"{arch}/depth{depth}"
                with deterministic(0):
                    # float64 for the measurement: the plain depth-100 gradient (~1e-25) underflows float32
                    probe = mlp(
                        depth,
                        width=p["width"],
                        activation="tanh",
                        residual=arch == "residual",
                        dtype=torch.float64,
                    )
                    init = record_gradients(
                        probe, x.double(), y, f"{label}/init", seeds=p["seeds"], init="default"
                    )
                    torch.manual_seed(0)
                    model = mlp(
                        depth, width=p["width"], activation="tanh", residual=arch == "residual"
                    )
                    out = train_classifier(
                        model, data, name=label, steps=p["steps"], lr=p["lr"], batch_size=p["batch"]
                    )
                runs[f"{label}/init"], runs[label] = init, out.run
                g = init.metric(GRAD_NORM)[1][:, linear_columns(init)]  # (seeds, depth + 1)
                rows.append(
                    {
                        "arch": arch,
                        "depth": depth,
                        "grad_first_init": float(np.exp(np.mean(np.log(g[:, 0])))),
                        # the last hidden layer (-1 is the linear head), as in depth_sweep
                        "grad_last_hidden_init": float(np.exp(np.mean(np.log(g[:, -2])))),
                        "test_acc": out.test_acc,
                        "final_loss": float(np.mean(out.losses[-10:])),
                    }
                )
                bar.advance()

    def series(key: str) -> dict[str, tuple[Any, Any]]:
        return {
            a: (p["depths"], [r[key] for r in rows if r["arch"] == a])
            for a in ("plain", "residual")
        }

    figures = {
        "first_layer_grad_vs_depth": line_plot(
            series("grad_first_init"),
            title="gradient reaching layer 1 at init",
            xlabel="depth",
            ylabel="||dL/dW_1||",
            logx=True,
            logy=True,
        ),
        "accuracy_vs_depth": line_plot(
            series("test_acc"),
            title=f"test accuracy after {p['steps']} SGD steps",
            xlabel="depth",
            ylabel="accuracy",
            logx=True,
        ),
    }
    return ExperimentResult(
        name="residual_depth",
        title="Plain vs residual networks as depth grows",
        columns=[
            "arch",
            "depth",
            "grad_first_init",
            "grad_last_hidden_init",
            "test_acc",
            "final_loss",
        ],
        table=rows,
        figures=figures,
        reading=_reading(rows, p),
        runs=runs,
        params={**p, "quick": quick},
        elapsed_s=time.perf_counter() - t0,
    )


def _reading(rows: list[dict[str, Any]], p: dict[str, Any]) -> str:
    deep = max(p["depths"])
    plain = next(r for r in rows if r["arch"] == "plain" and r["depth"] == deep)
    res = next(r for r in rows if r["arch"] == "residual" and r["depth"] == deep)
    return (
        f"At depth {deep} the plain tanh net's first layer gets {plain['grad_first_init']:.1e} at init "
        f"against {res['grad_first_init']:.1e} for the residual net; after {p['steps']} SGD steps they reach "
        f"{plain['test_acc']:.0%} and {res['test_acc']:.0%} test accuracy. "
        + ", ".join(
            f"depth {r['depth']}: plain {r['test_acc']:.0%}"
            + f" / residual {next(s['test_acc'] for s in rows if s['arch'] == 'residual' and s['depth'] == r['depth']):.0%}"
            for r in rows
            if r["arch"] == "plain"
        )
        + "."
    )
