"""The lab: small experiments that reproduce the textbook vanishing/exploding-gradient phenomena.

Each experiment is one readable file with a ``run(quick=..., quiet=..., **options)`` function that
returns an :class:`~gradguard.report.experiment.ExperimentResult` (table, figures, recorded runs, reading).

>>> from gradguard import lab
>>> lab.list_experiments()[0]
('depth_sweep', 'Depth x activation x initialisation: the gradient reaching the first layer at init')
>>> result = lab.run_experiment("weight_scale", quick=True, quiet=True)   # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import torch

from gradguard.errors import ConfigError
from gradguard.lab._common import progress_to
from gradguard.report.experiment import ExperimentResult

__all__ = [
    "EXPERIMENTS",
    "ExperimentResult",
    "list_experiments",
    "progress_to",
    "run_experiment",
    "save_result",
    "save_runs",
]

# name -> one-line description; the module gradguard.lab.<name> holds run().
EXPERIMENTS: dict[str, str] = {
    "depth_sweep": "Depth x activation x initialisation: the gradient reaching the first layer at init",
    "weight_scale": "Weight scale from 0.01 to 3: vanishing turns into exploding, with mean-field chi_1",
    "remedies": "A 20-layer sigmoid MLP on digits vs ReLU, Xavier/He, BatchNorm, LayerNorm, residual",
    "exploding_training": "A run that diverges to NaN vs clipping, lower LR, weight decay, Adam",
    "recurrent": "Adding problem: gradient through time of RNN vs LSTM vs GRU; exploding RNN + clipping",
    "residual_depth": "Plain vs residual MLPs at depths 10, 30, 100: gradient at init and trainability",
    "fix_untrainable": "Untrainable MLPs: gg.check's verdict, gg.fix's remedy, training before/after",
}


def list_experiments() -> list[tuple[str, str]]:
    """``(name, description)`` of every experiment, in the order the demo runs them."""
    return list(EXPERIMENTS.items())


def run_experiment(
    name: str, quick: bool = True, out: str | os.PathLike[str] | None = None, **options: Any
) -> ExperimentResult:
    """Run one experiment.

    Args:
        name: a key of :data:`EXPERIMENTS`.
        quick: the quick preset (seconds; used by the demo and the tests) or the full one.
        out: a directory to write the results to (table.csv, reading.txt, figures as PNG,
            runs.db, report.html); None writes nothing.
        **options: passed to the experiment's ``run`` (``quiet=True`` hides the progress bar, which
            goes to stderr on a terminal, or wherever :func:`progress_to` says;
            preset overrides such as ``depths=[5, 10]``), and ``threads`` (torch CPU threads while
            it runs, default 1).

    Returns:
        The experiment's :class:`ExperimentResult`.
    """
    if name not in EXPERIMENTS:
        raise ConfigError(
            f"unknown experiment {name!r}; use one of {sorted(EXPERIMENTS)} (see `gradguard lab list`)"
        )
    module = importlib.import_module(f"gradguard.lab.{name}")
    allowed = {"quiet", "threads", *module.PRESETS["quick"], *getattr(module, "EXTRA_OPTIONS", ())}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(
            f"bad option for experiment {name!r}: {', '.join(unknown)}; "
            f"use one of {sorted(allowed)}"
        )
    # The lab's models are tiny: one thread is fastest (two threads' hand-offs cost more than the
    # matmuls, badly so on a busy 2-core machine) and gives the same numbers on every run.
    threads = options.pop("threads", None) or 1
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        result: ExperimentResult = module.run(quick=quick, **options)
    finally:
        torch.set_num_threads(before)
    if out is not None:
        from gradguard.lab.output import save_result

        save_result(result, out)
    return result


def __getattr__(attr: str) -> Any:
    if attr in ("save_result", "save_runs", "write_lab_report"):
        from gradguard.lab import output

        return getattr(output, attr)
    raise AttributeError(f"module 'gradguard.lab' has no attribute {attr!r}")
