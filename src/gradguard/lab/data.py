"""Data for the lab: scikit-learn's digits (no download) and the adding problem.

>>> d = digits()
>>> d.x_train.shape, d.x_test.shape
(torch.Size([1437, 64]), torch.Size([360, 64]))
>>> x, y = adding_problem(4, length=10, seed=0)
>>> x.shape, y.shape
(torch.Size([4, 10, 2]), torch.Size([4, 1]))
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

__all__ = ["Digits", "digits", "adding_problem", "ADDING_BASELINE_MSE"]

# Predicting the mean (1.0) of the sum of two U(0, 1) numbers: MSE = Var = 2 * (1/12).
ADDING_BASELINE_MSE = 1.0 / 6.0


@dataclass(frozen=True)
class Digits:
    """The 1797 8x8 digit images, standardised per pixel, split once and for all.

    Attributes:
        x_train: (1437, 64) float32, zero mean / unit std per pixel (train statistics).
        y_train: (1437,) int64 labels 0..9.
        x_test: (360, 64) float32, standardised with the train statistics.
        y_test: (360,) int64.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_digits  # ships with scikit-learn: no download

    data = load_digits()
    x = data.data.astype(np.float64)  # (1797, 64), pixel values 0..16
    y = data.target.astype(np.int64)  # (1797,)
    order = np.random.RandomState(0).permutation(len(x))  # a fixed split, the same everywhere
    train, test = order[:1437], order[1437:]
    mean = x[train].mean(0)
    std = x[train].std(0)
    std[std == 0] = 1.0  # corner pixels are always 0: leave them at 0
    x = (x - mean) / std
    return x[train], y[train], x[test], y[test]


def digits(dtype: torch.dtype = torch.float32) -> Digits:
    """The digits data set as tensors (fresh copies: callers may modify them).

    Args:
        dtype: floating dtype of the images (float64 for measurements that span many decades).

    Returns:
        A :class:`Digits` with a fixed 1437/360 train/test split.
    """
    xtr, ytr, xte, yte = _digits_arrays()
    return Digits(
        torch.tensor(xtr, dtype=dtype),
        torch.tensor(ytr),
        torch.tensor(xte, dtype=dtype),
        torch.tensor(yte),
    )


def adding_problem(n: int, length: int, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The adding problem (Hochreiter & Schmidhuber 1997): add the two marked numbers of a sequence.

    Each step carries a random value in [0, 1) and a marker; exactly two steps are marked, one in
    the first half and one in the second half. The target is the sum of the two marked values, so
    a model must carry information across up to ``length`` steps. Predicting the mean (1.0) gives
    an MSE of 1/6 (~0.167): anything near that has learnt nothing.

    Args:
        n: number of sequences.
        length: sequence length T (>= 2).
        seed: seed of the generator (the same seed gives the same data).

    Returns:
        ``x`` of shape (n, T, 2) (value, marker) and ``y`` of shape (n, 1), float32.
    """
    if length < 2:
        from gradguard.errors import ConfigError

        raise ConfigError(f"adding problem length must be >= 2, got {length}; use e.g. 10, 50, 100")
    g = torch.Generator().manual_seed(seed)
    values = torch.rand(n, length, generator=g)  # (n, T)
    half = length // 2
    first = torch.randint(0, half, (n,), generator=g)  # a mark in the first half
    second = torch.randint(half, length, (n,), generator=g)  # and one in the second half
    marks = torch.zeros(n, length)
    rows = torch.arange(n)
    marks[rows, first] = 1.0
    marks[rows, second] = 1.0
    x = torch.stack([values, marks], dim=-1)  # (n, T, 2)
    y = (values[rows, first] + values[rows, second]).unsqueeze(1)  # (n, 1)
    return x, y
