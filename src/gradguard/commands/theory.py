"""``gradguard theory ACTIVATION --sigma-w2 W --sigma-b2 B``: mean-field numbers and phase diagram."""

from __future__ import annotations

import argparse
import json
from typing import Any

from gradguard.format import MISSING, number


def register(sub: Any) -> None:
    p = sub.add_parser(
        "theory",
        help="mean-field signal propagation: q*, chi_1, c*, depth scales, phase",
        description="Mean-field theory of a deep random network h = W phi(h) + b with "
        "W ~ N(0, sigma_w2/fan_in), b ~ N(0, sigma_b2): fixed points, chi_1, depth scales, phase "
        "and the critical sigma_w2; optionally the phase diagram as a PNG.",
    )
    p.add_argument(
        "activation",
        help="tanh, sigmoid, relu, leaky_relu, elu, gelu, selu, erf, hard_tanh or linear",
    )
    p.add_argument("--sigma-w2", type=float, default=1.0, help="fan_in * Var(W) (default 1)")
    p.add_argument("--sigma-b2", type=float, default=0.0, help="Var(b) (default 0)")
    p.add_argument(
        "--negative-slope", type=float, default=None, help="leaky_relu slope (default 0.01)"
    )
    p.add_argument("--alpha", type=float, default=None, help="elu alpha (default 1)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--plot", metavar="FILE.png", help="also draw the phase diagram to this file")
    p.set_defaults(func=run)


def _cell(v: Any) -> str:
    return number(v, digits=6) if isinstance(v, float) else str(v)


def run(args: argparse.Namespace) -> int:
    from gradguard.errors import GradguardError
    from gradguard.theory import critical_sigma_w2, mean_field, resolve_activation

    params = {}
    if args.negative_slope is not None:
        params["negative_slope"] = args.negative_slope
    if args.alpha is not None:
        params["alpha"] = args.alpha
    act = resolve_activation(args.activation, **params)
    mf = mean_field(act, args.sigma_w2, args.sigma_b2)
    try:
        crit: float | None = critical_sigma_w2(act, args.sigma_b2)
    except GradguardError:
        crit = None
    out = {**mf.to_dict(), "critical_sigma_w2": crit}
    if args.plot:
        from gradguard.theory.plot import phase_diagram

        out["plot"] = str(phase_diagram(act, args.plot, point=(args.sigma_w2, args.sigma_b2)))
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"mean field: {mf.activation}", title_justify="left", show_header=False)
    table.add_column("quantity", style="bold")
    table.add_column("value", justify="right")
    table.add_column("meaning", style="dim")
    meaning = {
        "sigma_w2": "fan_in * Var(W)",
        "sigma_b2": "Var(b)",
        "q_star": "fixed point of the pre-activation length q",
        "chi_1": "per-layer factor of squared gradient norms",
        "c_star": "fixed point of the correlation between two inputs",
        "chi_c": "slope of the correlation map at c*",
        "xi_q": "depth scale of q -> q*",
        "xi_c": "depth scale of c -> c* (trainable depth ~ 6 xi_c)",
        "phase": "ordered: vanishing | critical | chaotic: exploding",
        "critical_sigma_w2": f"sigma_w2 with chi_1 = 1 at sigma_b2 = {mf.sigma_b2:g}",
    }
    for key, text in meaning.items():
        value = crit if key == "critical_sigma_w2" else getattr(mf, key)
        table.add_row(key, _cell(value) if value is not None else MISSING, text)
    console = Console()
    console.print(table)
    if mf.note:
        console.print(f"note: {mf.note}")
    if args.plot:
        console.print(f"phase diagram written to {out['plot']}")
    return 0
