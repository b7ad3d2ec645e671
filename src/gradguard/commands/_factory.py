"""``FILE.py:factory`` plus ``--input-shape``: the model and example input that ``gradguard check``
and ``gradguard fix`` work on, or one clear error (exit 2)."""

from __future__ import annotations

import importlib.util
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

from gradguard.errors import GradguardError

__all__ = ["load_factory", "model_and_input", "parse_shape", "random_input"]


def parse_shape(text: str) -> tuple[int, ...]:
    """``"64,784"`` or ``"64x784"`` -> ``(64, 784)``."""
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


def random_input(model: Any, shape: tuple[int, ...], seed: int) -> Any:
    """An N(0, 1) input of ``shape`` on the model's device and dtype; a clear error, not a
    traceback (or the OOM killer), when it cannot fit in memory."""
    import torch

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


def model_and_input(target: str, input_shape: str | None, seed: int) -> tuple[Any, Any]:
    """Call the factory of ``target``; the example input is an N(0, 1) batch of ``input_shape``
    when given (drawn under ``seed``), else the one the factory returned with the model."""
    from torch import nn

    factory = load_factory(target)
    try:
        made = factory()
    except Exception as e:
        raise GradguardError(
            f"{target}() raised {type(e).__name__}: {e}; fix the factory so it builds the model"
        ) from e
    example = None
    if isinstance(made, tuple) and len(made) == 2:
        made, example = made
    if not isinstance(made, nn.Module):
        raise GradguardError(
            f"{target}() returned {type(made).__name__}; it must return an nn.Module or a "
            "(model, example_input) pair"
        )
    if input_shape:
        example = random_input(made, parse_shape(input_shape), seed)
    if example is None:
        raise GradguardError(
            f"{target}() returned only a model; pass --input-shape N,D,... (batch first) "
            "or return (model, example_input)"
        )
    return made, example
