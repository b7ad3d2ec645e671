"""Robust numeric helpers shared by the rules. All of them accept NaN/Inf and empty input."""

from __future__ import annotations

import math
import warnings

import numpy as np

__all__ = [
    "nanmedian",
    "log_profile",
    "theil_sen",
    "spikes",
    "windows",
]


def nanmedian(a: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """np.nanmedian without the all-NaN warning (all-NaN gives NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if np.asarray(a).size == 0:
            return float("nan") if axis is None else np.full(np.asarray(a).shape[1 - axis], np.nan)
        return np.nanmedian(a, axis=axis)  # type: ignore[no-any-return]


def log_profile(values: np.ndarray) -> np.ndarray:
    """Per-column median over rows of log10(values); non-positive and non-finite values are ignored.

    Args:
        values: ``(steps, layers)``.

    Returns:
        ``(layers,)`` log10 medians, NaN where a column had no positive finite value.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] == 0:
        return np.full(v.shape[-1] if v.ndim == 2 else 0, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        lg = np.where(np.isfinite(v) & (v > 0), np.log10(np.where(v > 0, v, 1.0)), np.nan)
    return np.asarray(nanmedian(lg, axis=0), dtype=np.float64)


def theil_sen(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Robust line fit ``y ~ a + b x`` (median of pairwise slopes); ``(b, a)``, NaN if < 2 points."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 2:
        return float("nan"), float("nan")
    i, j = np.triu_indices(len(x), k=1)
    dx = x[j] - x[i]
    keep = dx != 0
    if not keep.any():
        return float("nan"), float("nan")
    b = float(np.median((y[j] - y[i])[keep] / dx[keep]))
    a = float(np.median(y - b * x))
    return b, a


def spikes(
    values: np.ndarray,
    *,
    window: int,
    ratio: float,
    z: float,
    min_points: int = 5,
    extreme: float = math.inf,
) -> np.ndarray:
    """Indices where ``values`` jump above their trailing median (log-scale robust z-score).

    A point i is a spike when ``values[i] >= ratio * median(prev)`` and
    ``(log v_i - median(log prev)) / (1.4826 * MAD(log prev)) >= z``, where ``prev`` are the up to
    ``window`` finite positive points before it (at least ``min_points`` needed; the rules pass
    ``DiagnosisConfig.spike_min_points``). Non-finite and non-positive
    points are skipped. Vectorised over sliding windows (in chunks), so it stays cheap online.
    A jump of >= ``extreme`` x the median of at least 2 points before it is a spike however few
    points there are (the first steps of a run: no noise estimate is needed for a 1000x jump).
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    ok = np.flatnonzero(np.isfinite(v) & (v > 0))
    if len(ok) < 3 or window < 1:
        return np.zeros(0, dtype=np.int64)
    x = np.log(v[ok])
    padded = np.concatenate([np.full(window, np.nan), x])
    hits: list[np.ndarray] = []
    chunk = 65536
    for a in range(0, len(x), chunk):
        b = min(len(x), a + chunk)
        prev = np.lib.stride_tricks.sliding_window_view(padded[a : b + window - 1], window)
        count = np.sum(np.isfinite(prev), axis=1)
        enough = count >= min_points
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(prev, axis=1)
            mad = 1.4826 * np.nanmedian(np.abs(prev - med[:, None]), axis=1)
        d = x[a:b] - med
        hit = enough & (d >= math.log(ratio)) & (d >= z * np.maximum(mad, 1e-12))
        hit |= (count >= 2) & (d >= math.log(extreme))
        hits.append(ok[a:b][hit])
    return np.concatenate(hits).astype(np.int64)


def windows(n: int, start: int, recent_fraction: float) -> tuple[slice, slice]:
    """Row slices of the first ``start`` rows and of the last ``recent_fraction`` (>= start rows)."""
    if n <= 0:
        return slice(0, 0), slice(0, 0)
    k = min(n, max(1, start))
    r = min(n, max(k, int(math.ceil(n * recent_fraction))))
    return slice(0, k), slice(n - r, n)
