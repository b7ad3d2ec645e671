"""Weight scale: vanishing turns into exploding as the weights grow, where mean-field theory says.

Depth-10 tanh, linear and ReLU nets whose weights are drawn N(0, sigma_w^2 / fan_in) (the
mean-field convention: sigma_w = 1 is LeCun/Xavier-like, sqrt(2) is He), biases 0, for sigma_w
from 0.01 to 3. For each net ONE forward/backward on digits, recorded by gg.watch with
activations on, gives per layer:
- ||dL/dW_l||, the weight gradient (layer 1 = input side);
- ||dL/dz_l||, the backpropagated signal at each pre-activation (metric act_grad_norm).
Its per-layer growth factor, squared, is the empirical chi_1; mean-field theory predicts it:
chi_1 = sigma_w^2 E[phi'(z)^2] at the fixed point (gradguard.theory.chi1). chi_1 < 1 vanishes,
chi_1 > 1 explodes.

Run it: ``gradguard lab weight_scale --quick``.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from gradguard.lab._common import (
    ACTIVATIONS,
    check_choices,
    deterministic,
    linear_columns,
    mlp,
    progress,
    record_gradients,
)
from gradguard.lab.data import digits
from gradguard.metrics import ACT_GRAD_NORM, GRAD_NORM
from gradguard.report.experiment import ExperimentResult
from gradguard.report.plots import line_plot

__all__ = ["run", "PRESETS", "theory_chi1"]

PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        "activations": ["tanh", "linear", "relu"],
        "scales": [0.01, 0.03, 0.1, 0.3, 0.7, 0.9, 1.1, 1.3, 1.5, 2.0, 3.0],
        "depth": 10,
        "width": 64,
        "batch": 64,
        "seeds": 2,
    },
    "full": {
        "activations": ["tanh", "linear", "relu"],
        "scales": sorted({*np.round(np.geomspace(0.01, 3.0, 25), 4).tolist(), 1.0, 1.4142}),
        "depth": 10,
        "width": 256,
        "batch": 256,
        "seeds": 5,
    },
}


def theory_chi1(activation: str, sigma_w: float) -> float:
    """Mean-field chi_1 (biases 0), or NaN when gradguard.theory is not available."""
    try:
        from gradguard.theory import chi1
    except ImportError:
        return math.nan
    return float(chi1(activation, sigma_w**2, 0.0))


def _growth(signal: np.ndarray) -> float:
    """Per-layer factor of a (layers,) signal, fitted in log space (least squares), squared."""
    ok = np.isfinite(signal) & (signal > 0)
    if ok.sum() < 2:
        return math.nan
    layer = np.arange(len(signal))[ok]
    slope = np.polyfit(layer, np.log(signal[ok]), 1)[0]  # log ||dL/dz_l|| ~ slope * l
    # backprop runs from the last layer to the first: growth toward the input is exp(-slope)
    return float(np.exp(-2.0 * slope))


def run(*, quick: bool = True, quiet: bool = False, **options: Any) -> ExperimentResult:
    """Sweep the weight scale of depth-10 nets; compare the measured chi_1 with theory.

    Args:
        quick: the small preset instead of the full one.
        quiet: no progress bar.
        **options: overrides: activations, scales (sigma_w values), depth, width, batch, seeds.

    Returns:
        An ExperimentResult, one row per (activation, sigma_w).
    """
    p = {**PRESETS["quick" if quick else "full"], **options}
    p["activations"] = check_choices("activations", p["activations"], ACTIVATIONS)
    t0 = time.perf_counter()
    d = digits(torch.float64)  # float64: at sigma_w = 0.01, 10 layers reach 1e-20
    x, y = d.x_train[: p["batch"]], d.y_train[: p["batch"]]  # (batch, 64), (batch,)
    scales = np.asarray(p["scales"], dtype=np.float64)  # sigma_w values

    rows: list[dict[str, Any]] = []
    runs = {}
    with progress(len(p["activations"]) * len(scales), "weight scale", quiet) as bar:
        for act in p["activations"]:
            with deterministic(0):
                model = mlp(p["depth"], width=p["width"], activation=act, dtype=torch.float64)
            for sw in scales:
                label = f"{act}/sigma_w={sw:g}"
                with deterministic(0):
                    rec = record_gradients(
                        model, x, y, label, seeds=p["seeds"], sigma_w=float(sw), config="full"
                    )
                runs[label] = rec
                cols = linear_columns(rec)
                grads = rec.metric(GRAD_NORM)[1][:, cols]  # (seeds, depth + 1)
                first = float(np.exp(np.mean(np.log(grads[:, 0]))))
                chi = float("nan")
                if rec.has_metric(ACT_GRAD_NORM):
                    sig = rec.metric(ACT_GRAD_NORM)[1][:, cols[1:-1]]  # (seeds, hidden 2..depth)
                    chi = float(np.nanmean([_growth(s) for s in sig]))
                rows.append(
                    {
                        "activation": act,
                        "sigma_w": float(sw),
                        "grad_first": first,
                        "chi1_measured": chi,
                        "chi1_theory": theory_chi1(act, float(sw)),
                    }
                )
                bar.advance()

    figures = {
        "first_layer_grad_vs_scale": line_plot(
            {
                a: (scales, [r["grad_first"] for r in rows if r["activation"] == a])
                for a in p["activations"]
            },
            title=f"gradient reaching layer 1, depth {p['depth']}",
            xlabel="sigma_w (weights ~ N(0, sigma_w² / fan_in))",
            ylabel="||dL/dW_1||",
            logx=True,
            logy=True,
        ),
    }
    series: dict[str, tuple[Any, Any]] = {}
    for a in p["activations"]:
        mine = [r for r in rows if r["activation"] == a]
        series[f"{a} measured"] = (scales, [r["chi1_measured"] for r in mine])
        if any(math.isfinite(r["chi1_theory"]) for r in mine):
            series[f"{a} theory"] = (scales, [r["chi1_theory"] for r in mine])
    figures["chi1_measured_vs_theory"] = line_plot(
        series,
        title="per-layer gradient growth chi_1: measured vs mean-field",
        xlabel="sigma_w",
        ylabel="chi_1",
        logx=True,
        logy=True,
        hline=1.0,
    )
    return ExperimentResult(
        name="weight_scale",
        title="Weight scale: from vanishing to exploding (with mean-field chi_1)",
        columns=["activation", "sigma_w", "grad_first", "chi1_measured", "chi1_theory"],
        table=rows,
        figures=figures,
        reading=_reading(rows, p["depth"]),
        runs=runs,
        params={**p, "quick": quick, "sigma_w_values": [float(s) for s in scales]},
        elapsed_s=time.perf_counter() - t0,
    )


def _crossing(rows: list[dict[str, Any]], act: str) -> float:
    """Smallest sigma_w whose measured chi_1 exceeds 1."""
    for r in rows:
        if r["activation"] == act and r["chi1_measured"] > 1:
            return float(r["sigma_w"])
    return math.nan


def _reading(rows: list[dict[str, Any]], depth: int) -> str:
    parts = []
    for act in sorted({r["activation"] for r in rows}):
        mine = [r for r in rows if r["activation"] == act]
        lo, hi = mine[0], mine[-1]
        parts.append(
            f"{act}: ||dL/dW_1|| goes from {lo['grad_first']:.1e} at sigma_w={lo['sigma_w']:g} to "
            f"{hi['grad_first']:.1e} at sigma_w={hi['sigma_w']:g}; measured chi_1 first exceeds 1 at "
            f"sigma_w={_crossing(rows, act):g}"
        )
    errs = [
        abs(math.log(r["chi1_measured"] / r["chi1_theory"]))
        for r in rows
        if r["chi1_measured"] > 0 and r["chi1_theory"] > 0 and math.isfinite(r["chi1_theory"])
    ]
    theory = (
        f" The measured chi_1 is within a factor {math.exp(float(np.median(errs))):.2f} (median) of the "
        "mean-field prediction; critical points are sigma_w = 1 for tanh and linear, sqrt(2) for ReLU."
        if errs
        else ""
    )
    return f"Depth-{depth} nets. " + "; ".join(parts) + "." + theory
