"""Small pieces every lab experiment shares: seeding, an MLP builder, a recorded train loop.

Experiments read like scripts; the plumbing they have in common lives here so that each
experiment file shows only its data, model, loop and what it measures.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from gradguard.errors import ConfigError
from gradguard.model.schemes import Scheme
from gradguard.runs.run import Run

__all__ = [
    "ACTIVATIONS",
    "INITS",
    "Block",
    "Trained",
    "accuracy",
    "check_choices",
    "deterministic",
    "diagnose_or_empty",
    "init_linear_",
    "linear_columns",
    "mlp",
    "progress",
    "progress_to",
    "record_gradients",
    "reinit_",
    "train_classifier",
    "watch_quietly",
]

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "linear": nn.Identity,
}

# Weight initialisations by name. "default" keeps PyTorch's nn.Linear init
# (kaiming_uniform with a=sqrt(5): std = 1/sqrt(3 * fan_in)), what a model gets out of the box;
# "small" and "unit" are the textbook failures; the others are gg.init_'s schemes, by their names.
INITS = ("default", "small", "unit", Scheme.XAVIER.value, Scheme.HE.value)


def init_linear_(layer: nn.Linear, init: str, *, sigma_w: float | None = None) -> None:
    """Initialise one Linear layer in place; biases become 0 (except for "default").

    Args:
        layer: the layer.
        init: "default" (PyTorch's), "small" (N(0, 0.01^2)), "unit" (N(0, 1)), "xavier"
            (normal, std sqrt(2 / (fan_in + fan_out))), "he" (normal, std sqrt(2 / fan_in)).
        sigma_w: if given, overrides ``init``: weights ~ N(0, sigma_w^2 / fan_in), the mean-field
            convention (sigma_w^2 is the variance of the weights times the fan-in).
    """
    w = layer.weight
    fan_in = w.shape[1]
    with torch.no_grad():
        if sigma_w is not None:
            w.normal_(0.0, sigma_w / math.sqrt(fan_in))
        elif init == "default":
            return
        elif init == "small":
            w.normal_(0.0, 0.01)
        elif init == "unit":
            w.normal_(0.0, 1.0)
        elif init == Scheme.XAVIER:
            nn.init.xavier_normal_(w)
        elif init == Scheme.HE:
            nn.init.kaiming_normal_(w, nonlinearity="relu")
        else:
            raise ConfigError(f"unknown init {init!r}; use one of {list(INITS)}")
        if layer.bias is not None:
            layer.bias.zero_()


class Block(nn.Module):
    """One hidden layer: ``act(norm(linear(x)))``, plus ``x`` when residual.

    Shapes: (batch, in_features) -> (batch, out_features); residual needs in == out.
    ``branch_scale`` multiplies the residual branch (1/sqrt(blocks) keeps very deep sums bounded).
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        activation: str,
        norm: str | None = None,
        residual: bool = False,
        branch_scale: float = 1.0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, n_out, dtype=dtype)
        if norm == "batch":
            self.norm: nn.Module = nn.BatchNorm1d(n_out, dtype=dtype)
        elif norm == "layer":
            self.norm = nn.LayerNorm(n_out, dtype=dtype)
        elif norm is None:
            self.norm = nn.Identity()
        else:
            raise ConfigError(f"unknown norm {norm!r}; use 'batch', 'layer' or None")
        self.act = ACTIVATIONS[activation]()
        self.residual = residual and n_in == n_out
        self.branch_scale = branch_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.norm(self.linear(x)))
        return x + self.branch_scale * h if self.residual else h


def mlp(
    depth: int,
    *,
    width: int = 64,
    activation: str = "relu",
    init: str = "default",
    sigma_w: float | None = None,
    norm: str | None = None,
    residual: bool = False,
    branch_scale: float = 1.0,
    n_in: int = 64,
    n_out: int = 10,
    dtype: torch.dtype = torch.float32,
) -> nn.Sequential:
    """A multilayer perceptron with ``depth`` hidden layers and a linear head.

    Layout: Block(n_in -> width), then depth - 1 Blocks(width -> width) (residual if asked:
    the first block changes the width and has no skip), then Linear(width -> n_out).

    Args:
        depth: number of hidden layers (>= 1).
        width: units per hidden layer.
        activation: a key of :data:`ACTIVATIONS`.
        init: a name of :data:`INITS` for every Linear (the head included).
        sigma_w: mean-field weight scale (overrides ``init``), see :func:`init_linear_`.
        norm: None, "batch" or "layer" (after each hidden Linear, before the activation).
        residual: skip connections around the hidden blocks.
        branch_scale: multiplier of each residual branch.
        n_in, n_out: input and output sizes.
        dtype: parameter dtype (float64 keeps 1e-40 and 1e+40 gradients finite).

    Returns:
        The model, (batch, n_in) -> (batch, n_out).
    """
    if depth < 1:
        raise ConfigError(f"depth must be >= 1, got {depth}")
    if activation not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {activation!r}; use one of {sorted(ACTIVATIONS)}")
    blocks: list[nn.Module] = [Block(n_in, width, activation, norm, dtype=dtype)]
    blocks += [
        Block(width, width, activation, norm, residual, branch_scale, dtype=dtype)
        for _ in range(depth - 1)
    ]
    model = nn.Sequential(*blocks, nn.Linear(width, n_out, dtype=dtype))
    reinit_(model, init, sigma_w=sigma_w)
    return model


def reinit_(model: nn.Module, init: str, *, sigma_w: float | None = None) -> nn.Module:
    """Re-draw every Linear layer of ``model`` with :func:`init_linear_` (in place); returns it."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            if init == "default" and sigma_w is None:
                m.reset_parameters()
            else:
                init_linear_(m, init, sigma_w=sigma_w)
    return model


@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seed torch and use deterministic kernels inside the block (restored on exit)."""
    was = torch.are_deterministic_algorithms_enabled()
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was)


def check_choices(option: str, values: Any, valid: Any) -> list[Any]:
    """``values`` as a list, every one of them in ``valid``, else a ConfigError naming the valid ones.

    >>> check_choices("activations", ["tanh"], ["tanh", "relu"])
    ['tanh']
    """
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ConfigError(f"{option} must be a list, got {values!r}; use a subset of {list(valid)}")
    values = list(values)
    bad = [v for v in values if v not in valid]
    if bad:
        raise ConfigError(
            f"unknown {option} {', '.join(map(repr, bad))}; use a subset of {list(valid)}"
        )
    if not values:
        raise ConfigError(f"{option} is empty; use a subset of {list(valid)}")
    return values


def watch_quietly(model: nn.Module, optimizer: Any = None, **kwargs: Any) -> Any:
    """``gg.watch`` for the lab: no online warnings (the lab diagnoses at the end)."""
    from gradguard.watching import watch

    kwargs.setdefault("config", "light")
    kwargs.setdefault("diagnose_online", False)
    return watch(model, optimizer, **kwargs)


def linear_columns(run: Run) -> list[int]:
    """Indices (metric columns) of the Linear layers of a run, in forward order."""
    return [i for i, lay in enumerate(run.layers) if lay.kind == "Linear"]


def record_gradients(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    name: str,
    *,
    seeds: int = 1,
    init: str | None = None,
    sigma_w: float | None = None,
    config: str = "light",
) -> Run:
    """Forward/backward of cross-entropy at init, recorded by gg.watch: one step per seed.

    Args:
        model: (batch, n_in) -> (batch, classes).
        x, y: one batch, (batch, n_in) and (batch,).
        name: run name.
        seeds: how many initialisations to measure; step ``s`` of the run is seed ``s``.
        init, sigma_w: re-draw the Linear weights this way before each measurement
            (see :func:`init_linear_`); None measures the model as it is (one step).
        config: gg.watch preset ("full" adds activations and dL/dz per layer: act_grad_norm).

    Returns:
        The run: ``run.metric("grad_norm")[1][s]`` holds each layer's ||dL/dW|| for seed ``s``.
    """
    mon = watch_quietly(model, None, name=name, config=config)
    try:
        for seed in range(seeds):
            if init is not None or sigma_w is not None:
                torch.manual_seed(seed)
                reinit_(model, init or "default", sigma_w=sigma_w)
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            mon.step()  # reads every .grad once: per-layer norms in forward order
            mon.log(loss=loss.detach())
            model.zero_grad(set_to_none=True)
    finally:
        mon.close()
    return mon.run


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of ``argmax(model(x)) == y`` (eval mode, no grad; the mode is restored)."""
    was = model.training
    model.eval()
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).double().mean().item()
    model.train(was)
    return float(acc)


@dataclass
class Trained:
    """What :func:`train_classifier` returns.

    Attributes:
        run: the recorded run (gg.watch, in memory).
        losses: (steps,) training loss per step (NaN/inf kept as they came).
        first_nan: first step whose loss was not finite, or None.
        test_acc: accuracy on the test split after training.
    """

    run: Run
    losses: np.ndarray
    first_nan: int | None
    test_acc: float

    @property
    def final_loss(self) -> float:
        """Mean training loss over the last 10 steps (less noisy than the last step's)."""
        return float(np.mean(self.losses[-10:]))


def train_classifier(
    model: nn.Module,
    data: Any,
    *,
    name: str,
    steps: int,
    lr: float,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    batch_size: int = 128,
    clip: Any = None,
    seed: int = 0,
    config: str = "light",
) -> Trained:
    """Train on digits with cross-entropy for a fixed number of steps, recording with gg.watch.

    Args:
        model: (batch, 64) -> (batch, 10).
        data: a :class:`~gradguard.lab.data.Digits`.
        name: run name.
        steps: optimizer steps (the budget).
        lr: learning rate.
        optimizer: "sgd" (with ``momentum``) or "adam".
        momentum: SGD momentum.
        weight_decay: L2 penalty (the optimizer's weight_decay).
        batch_size: examples per step, drawn with a seeded generator.
        clip: a gg.clip clipper applied after backward (recorded by the monitor), or None.
        seed: seed of the batch order.
        config: gg.watch preset.

    Returns:
        A :class:`Trained`. Training stops at the first non-finite loss (all later steps would be NaN).
    """
    params = list(model.parameters())
    opt: torch.optim.Optimizer
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    elif optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    else:
        raise ConfigError(f"unknown optimizer {optimizer!r}; use 'sgd' or 'adam'")
    dtype = next(iter(params)).dtype
    x, y = data.x_train.to(dtype), data.y_train
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    first_nan: int | None = None
    mon = watch_quietly(model, opt, name=name, config=config, clip=clip)
    try:
        model.train()
        for step in range(steps):
            idx = torch.randint(0, len(x), (batch_size,), generator=gen)  # (batch,)
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip is not None:
                clip(params)
            opt.step()
            mon.log(loss=loss.detach())
            # On CPU reading the loss is not a device sync; it lets a diverged run stop early.
            value = float(loss.detach())
            losses.append(value)
            if not math.isfinite(value):
                first_nan = step
                break
    finally:
        mon.close()
    acc = accuracy(model, data.x_test.to(dtype), data.y_test)
    return Trained(mon.run, np.asarray(losses, dtype=np.float64), first_nan, acc)


def train_preset(model: nn.Module, data: Any, name: str, p: dict[str, Any], **kw: Any) -> Trained:
    """:func:`train_classifier` with a preset's ``steps``, ``lr`` and ``batch``, from seed 0: every
    configuration of an experiment sees the same batch order. ``kw``: the other options."""
    with deterministic(0):
        return train_classifier(
            model, data, name=name, steps=p["steps"], lr=p["lr"], batch_size=p["batch"], **kw
        )


def loss_curves_plot(curves: dict[str, np.ndarray], title: str) -> Any:
    """One training-loss line per run: ``curves`` maps a run's label to its (steps,) losses."""
    from gradguard.report.plots import line_plot

    return line_plot(
        {k: (np.arange(len(v)), v) for k, v in curves.items()},
        title=title,
        xlabel="step",
        ylabel="cross-entropy",
    )


def diagnose_or_empty(run: Run) -> list[Any]:
    """``gg.diagnose(run)``, its warnings silenced (the lab prints its own reading)."""
    from gradguard.diagnosis import diagnose

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return list(diagnose(run))


# Where progress bars go (see progress_to); None: a rich Console on stderr, only on a terminal.
_PROGRESS_CONSOLE: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "gradguard_lab_progress_console", default=None
)


@contextlib.contextmanager
def progress_to(console: Any) -> Iterator[None]:
    """Send the lab's progress bars to ``console`` (a rich Console) inside the block.

    They are then shown whatever stderr is (still not with ``quiet=True``); the console decides
    how (a Console that is not a terminal renders the bar once it stops).

    >>> import io; from rich.console import Console
    >>> with progress_to(Console(file=io.StringIO(), force_terminal=True)):   # doctest: +SKIP
    ...     lab.run_experiment("weight_scale", quick=True)
    """
    token = _PROGRESS_CONSOLE.set(console)
    try:
        yield
    finally:
        _PROGRESS_CONSOLE.reset(token)


class _Progress:
    def __init__(self, total: int, description: str, quiet: bool) -> None:
        self._bar: Any = None
        self._task: Any = None
        console = _PROGRESS_CONSOLE.get()
        if quiet or (console is None and not sys.stderr.isatty()):
            return
        from rich.console import Console
        from rich.progress import Progress

        self._bar = Progress(console=console or Console(stderr=True), transient=True)
        self._bar.start()
        self._task = self._bar.add_task(description, total=total)

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


@contextlib.contextmanager
def progress(total: int, description: str, quiet: bool = False) -> Iterator[_Progress]:
    """A progress bar (rich): on stderr when it is a terminal, or on the console given to
    :func:`progress_to`; silent when quiet.

    >>> with progress(3, "configs", quiet=True) as bar:
    ...     for _ in range(3):
    ...         bar.advance()
    """
    bar = _Progress(total, description, quiet)
    try:
        yield bar
    finally:
        bar.close()
