"""``gradguard fix FILE.py:factory --input-shape 64,784 [--save W.pt] [--html R.html]``: make a
model trainable at init with the least change that works (``gg.fix``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gradguard.commands._args import SEED


def register(sub: Any) -> None:
    p = sub.add_parser(
        "fix",
        help="make an untrainable model trainable at init: try remedies, keep the best",
        description="Load a model from a Python file (FILE.py:factory, where factory() returns a "
        "model or a (model, example_input) pair), check it, try the remedies its diagnosis calls "
        "for on copies, keep the one the trainability verdict likes best and print the before/"
        "after report. Exit code 0 when the result is judged trainable, 1 when nothing helped, "
        "2 for bad input.",
    )
    p.add_argument("target", metavar="FILE.py:factory", help="file and zero-argument factory")
    p.add_argument(
        "--input-shape",
        metavar="N,D,...",
        help="shape of a random N(0, 1) example input, batch first (needed when the factory "
        "returns only a model; a real batch from the factory is better: LSUV scales on it)",
    )
    p.add_argument("--seed", type=SEED, default=0, help="seed of the input and the new weights")
    p.add_argument(
        "--allow-architecture-changes",
        action="store_true",
        help="also try activation swaps and inserted normalisation (on a copy)",
    )
    p.add_argument("--save", metavar="PATH", help="write the fixed model's state_dict here")
    p.add_argument("--html", metavar="PATH", help="write the before/after report as HTML here")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from gradguard.commands._factory import model_and_input
    from gradguard.errors import GradguardError
    from gradguard.remedies.fix import fix

    made, example = model_and_input(args.target, args.input_shape, args.seed)
    for opt, path in (("--save", args.save), ("--html", args.html)):
        if path and not Path(path).parent.is_dir():
            raise GradguardError(f"{opt} {path}: no such directory; create it or pick another path")
    report = fix(
        made, example, allow_architecture_changes=args.allow_architecture_changes, seed=args.seed
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report)
    if args.html:
        Path(args.html).write_text(report.to_html(), encoding="utf-8")
        print(f"wrote {args.html}", file=sys.stderr)
    if args.save:
        torch.save(report.model.state_dict(), args.save)
        state = "fixed" if report.fixed else "unchanged"
        print(f"wrote {args.save} (state_dict of the {state} model)", file=sys.stderr)
    return 0 if report.fixed else 1
