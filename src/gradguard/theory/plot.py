"""Phase diagram: sigma_w^2 x sigma_b^2 with the order-to-chaos line and chi_1 contours.

matplotlib (Agg backend) is imported here, lazily, only when a figure is drawn.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from gradguard.errors import GradguardError
from gradguard.theory.activations import ActivationLike, resolve_activation
from gradguard.theory.meanfield import chi1, critical_sigma_w2

__all__ = ["phase_diagram"]


def phase_diagram(
    activation: ActivationLike,
    path: str | Path,
    *,
    point: tuple[float, float] | None = None,
    sigma_w2_max: float | None = None,
    sigma_b2_max: float = 0.5,
    resolution: int = 30,
) -> Path:
    """Draw chi_1 over (sigma_w^2, sigma_b^2) with the critical line chi_1 = 1 and save a PNG.

    Args:
        activation: as for :func:`gradguard.theory.mean_field`.
        path: where to write the figure.
        point: an optional (sigma_w2, sigma_b2) to mark.
        sigma_w2_max: right edge (default: 2.5 x the critical sigma_w^2 at sigma_b^2 = 0, >= 4).
        sigma_b2_max: top edge.
        resolution: grid points per axis for the contours.

    Returns:
        The path written.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - matplotlib is in the `report` extra
        raise GradguardError(
            "drawing the phase diagram needs matplotlib; pip install 'gradguard[report]'"
        ) from e
    out = Path(path)
    try:  # checked before the work: the directory is made, as for a store
        out.resolve().parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GradguardError(
            f"cannot write the phase diagram to {str(out)!r} ({e}); pass a path in a writable "
            "directory"
        ) from e
    act = resolve_activation(activation)
    crit0 = critical_sigma_w2(act, 0.0)
    w_max = sigma_w2_max or max(4.0, 2.5 * crit0)
    sw = np.linspace(w_max / resolution, w_max, resolution)
    sb = np.linspace(0.0, sigma_b2_max, resolution)
    chi = np.array([[chi1(act, w, b) for w in sw] for b in sb])  # (sigma_b2, sigma_w2)
    line_b = np.linspace(0.0, sigma_b2_max, 25)
    line_w = []
    for b in line_b:
        try:
            line_w.append(critical_sigma_w2(act, float(b)))
        except GradguardError:
            line_w.append(math.nan)

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    with np.errstate(divide="ignore"):
        log_chi = np.log10(np.clip(chi, 1e-6, 1e6))
    mesh = ax.pcolormesh(sw, sb, log_chi, cmap="coolwarm", vmin=-0.5, vmax=0.5, shading="auto")
    fig.colorbar(mesh, ax=ax, label="log10 chi_1  (<0 ordered: vanishing, >0 chaotic: exploding)")
    levels = [0.25, 0.5, 0.75, 0.9, 1.1, 1.5, 2.0]
    cs = ax.contour(sw, sb, chi, levels=levels, colors="k", linewidths=0.6, alpha=0.6)
    ax.clabel(cs, fmt="%.2g", fontsize=7)
    ax.plot(line_w, line_b, color="black", linewidth=2.2, label="critical line chi_1 = 1")
    if point is not None:
        ax.plot([point[0]], [point[1]], marker="*", color="gold", markersize=14,
                markeredgecolor="black", linestyle="none", label="your point")  # fmt: skip
    ax.set_xlim(0.0, w_max)
    ax.set_ylim(0.0, sigma_b2_max)
    ax.set_xlabel("sigma_w^2  (fan_in * Var(W))")
    ax.set_ylabel("sigma_b^2  (Var(b))")
    ax.set_title(f"mean-field phase diagram: {act.name}")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(out)
    except (OSError, ValueError) as e:  # a directory, a read-only file, an unknown extension
        raise GradguardError(
            f"cannot write the phase diagram to {str(out)!r} ({e}); pass a writable .png path"
        ) from e
    finally:
        plt.close(fig)
    return out
