"""``gradguard check FILE.py:factory --input-shape 64,784``: preflight a model before training."""

from __future__ import annotations

import argparse
import json
from typing import Any

from gradguard.commands._args import SEED, WIDTH


def register(sub: Any) -> None:
    p = sub.add_parser(
        "check",
        help="preflight a model at init: per-layer signals and gradients, Jacobian, verdict",
        description="Load a model from a Python file (FILE.py:factory, where factory() returns a "
        "model or a (model, example_input) pair), run one forward and one backward pass at its "
        "current weights and print the per-layer table and the verdict. Exit code 0 whatever the "
        "verdict; 2 for bad input.",
    )
    p.add_argument("target", metavar="FILE.py:factory", help="file and zero-argument factory")
    p.add_argument(
        "--input-shape",
        metavar="N,D,...",
        help="shape of a random N(0, 1) example input, batch first (needed when the factory "
        "returns only a model)",
    )
    p.add_argument("--seed", type=SEED, default=0, help="seed of the random input (default 0)")
    p.add_argument("--no-jacobian", action="store_true", help="skip the Jacobian estimate")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--width", type=WIDTH, default=None, help="console width")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gradguard.commands._factory import model_and_input
    from gradguard.preflight import check

    made, example = model_and_input(args.target, args.input_shape, args.seed)
    report = check(made, example, jacobian=not args.no_jacobian)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    from rich.console import Console

    Console(width=args.width).print(report)
    return 0
