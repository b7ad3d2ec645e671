"""``gradguard check FILE.py:factory --input-shape 64,784``: preflight a model before training."""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
from pathlib import Path
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


def _parse_shape(text: str) -> tuple[int, ...]:
    from gradguard.errors import GradguardError

    try:
        shape = tuple(int(s) for s in re.split(r"[,x]", text.strip()))
    except ValueError:
        shape = ()
    if not shape or any(s <= 0 for s in shape):
        raise GradguardError(
            f"--input-shape {text!r} is not a list of positive integers; write it batch first, "
            "e.g. --input-shape 64,784"
        )
    return shape


def _random_input(model: Any, shape: tuple[int, ...], seed: int) -> Any:
    """An N(0, 1) input of ``shape`` on the model's device and dtype; a clear error, not a
    traceback (or the OOM killer), when it cannot fit in memory."""
    import math
    import os

    import torch

    from gradguard.errors import GradguardError

    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    need = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    try:
        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        ram = 2**62
    # the check keeps the input, activations and gradients: several times the input's size
    if need > ram // 8:
        raise GradguardError(
            f"--input-shape {','.join(map(str, shape))} needs {need / 2**30:.3g} GiB for the input "
            f"alone (this machine has {ram / 2**30:.3g} GiB); pass a smaller batch, e.g. "
            f"--input-shape 64,{','.join(map(str, shape[1:])) or '1'}"
        )
    try:
        gen = torch.Generator().manual_seed(seed)
        example = torch.randn(shape, generator=gen)
        return example.to(device=param.device, dtype=dtype) if param is not None else example
    except (RuntimeError, MemoryError) as e:
        raise GradguardError(
            f"cannot allocate an input of shape {shape} ({str(e).splitlines()[0][:120]}); "
            "pass a smaller --input-shape"
        ) from e


def load_factory(target: str) -> Any:
    """Import FILE.py and return its factory attribute."""
    from gradguard.errors import GradguardError

    path_text, sep, name = target.rpartition(":")
    if not sep or not path_text or not name:
        raise GradguardError(
            f"{target!r} is not FILE.py:factory; name the file and the function that builds "
            "the model, e.g. models.py:build"
        )
    path = Path(path_text)
    if not path.is_file():
        raise GradguardError(f"no such file: {path}; give the path of a Python file")
    module_name = f"_gradguard_check_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise GradguardError(f"cannot import {path}; is it a .py file?")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(module_name, None)
        raise GradguardError(f"importing {path} failed: {type(e).__name__}: {e}") from e
    factory = getattr(module, name, None)
    if not callable(factory):
        raise GradguardError(
            f"{path} has no callable {name!r}; define def {name}(): return model "
            "(or (model, example_input))"
        )
    return factory


def run(args: argparse.Namespace) -> int:
    from torch import nn

    from gradguard.errors import GradguardError
    from gradguard.preflight import check

    factory = load_factory(args.target)
    try:
        made = factory()
    except Exception as e:
        raise GradguardError(
            f"{args.target}() raised {type(e).__name__}: {e}; fix the factory so it builds the model"
        ) from e
    example = None
    if isinstance(made, tuple) and len(made) == 2:
        made, example = made
    if not isinstance(made, nn.Module):
        raise GradguardError(
            f"{args.target}() returned {type(made).__name__}; it must return an nn.Module or a "
            "(model, example_input) pair"
        )
    if args.input_shape:
        example = _random_input(made, _parse_shape(args.input_shape), args.seed)
    if example is None:
        raise GradguardError(
            f"{args.target}() returned only a model; pass --input-shape N,D,... (batch first) "
            "or return (model, example_input)"
        )
    report = check(made, example, jacobian=not args.no_jacobian)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    from rich.console import Console

    Console(width=args.width).print(report)
    return 0
