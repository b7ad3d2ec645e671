"""Which modules are "layers", and their depth order.

A layer is a module that owns parameters directly (Linear, Conv*, norms, Embedding, RNN/LSTM/GRU,
or any custom module with ``nn.Parameter`` attributes). Layers are named by qualified module name
and ordered by forward execution order once a forward pass has been observed (registration order
until then). A parameter shared by several modules (tied weights) belongs to the first layer that
registers it and is counted once. Frozen parameters are listed but get no gradient statistics.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from gradguard.errors import GradguardError

__all__ = [
    "LayerInfo",
    "discover_layers",
    "forward_order",
    "has_skip_connection",
    "ACTIVATION_BOUNDS",
    "activation_bounds",
]

ROOT_NAME = "(root)"


@dataclass(frozen=True)
class LayerInfo:
    """One layer of a watched model.

    Args:
        index: position in registration order (the order of ``model.named_modules()``).
        name: qualified module name; the root module is called ``"(root)"``.
        kind: the module's class name, e.g. ``"Linear"``.
        module: the module itself.
        params: ``(local_name, parameter)`` pairs it owns (tied parameters only at their first owner).
        numel: total elements of those parameters.
        trainable: whether at least one of them requires grad.
    """

    index: int
    name: str
    kind: str
    module: nn.Module = field(repr=False, compare=False)
    params: tuple[tuple[str, nn.Parameter], ...] = field(repr=False, compare=False)
    numel: int = 0
    trainable: bool = True

    @property
    def trainable_params(self) -> tuple[nn.Parameter, ...]:
        return tuple(p for _, p in self.params if p.requires_grad)


def discover_layers(model: nn.Module) -> list[LayerInfo]:
    """Find the layers of ``model`` in registration order.

    Args:
        model: any ``nn.Module``.

    Returns:
        One :class:`LayerInfo` per module that owns at least one parameter directly.

    Raises:
        GradguardError: if ``model`` is not an ``nn.Module`` or has no parameters.

    >>> [l.name for l in discover_layers(nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 1)))]
    ['0', '2']
    """
    if not isinstance(model, nn.Module):
        raise GradguardError(
            f"expected a torch.nn.Module, got {type(model).__name__}; pass the model itself "
            "(e.g. gg.watch(model, optimizer)), not its parameters or outputs"
        )
    seen: set[int] = set()
    layers: list[LayerInfo] = []
    for qualname, module in model.named_modules():
        own: list[tuple[str, nn.Parameter]] = []
        for local, p in module.named_parameters(recurse=False):
            if p is None or id(p) in seen:
                continue
            seen.add(id(p))
            own.append((local, p))
        if not own:
            continue
        layers.append(
            LayerInfo(
                index=len(layers),
                name=qualname or ROOT_NAME,
                kind=type(module).__name__,
                module=module,
                params=tuple(own),
                numel=sum(p.numel() for _, p in own),
                trainable=any(p.requires_grad for _, p in own),
            )
        )
    if not layers:
        raise GradguardError(
            f"model {type(model).__name__} has no parameters, so there are no gradients to watch; "
            "build the layers first (lazy modules: run one forward pass before watching)"
        )
    return layers


# Activations whose outputs are bounded, and their bounds: a unit is "saturated" when its output lies
# within 1% of a bound (relative to the bound's magnitude, or of the range when the bound is 0).
ACTIVATION_BOUNDS: dict[str, tuple[float, float]] = {
    "Tanh": (-1.0, 1.0),
    "Sigmoid": (0.0, 1.0),
    "Hardsigmoid": (0.0, 1.0),
    "Softsign": (-1.0, 1.0),
    "Hardtanh": (-1.0, 1.0),
    "ReLU6": (0.0, 6.0),
    "LogSigmoid": (float("-inf"), 0.0),
}

# Elementwise activation modules that may follow a layer; their output is where activation
# statistics (zero and saturated fractions) mean something.
ACTIVATION_KINDS = frozenset(
    {
        *ACTIVATION_BOUNDS,
        "ReLU",
        "LeakyReLU",
        "PReLU",
        "RReLU",
        "ELU",
        "CELU",
        "SELU",
        "GELU",
        "SiLU",
        "Mish",
        "Softplus",
        "Hardswish",
        "Tanhshrink",
        "Softshrink",
        "Hardshrink",
        "Threshold",
    }
)


def activation_bounds(module: nn.Module) -> tuple[float, float] | None:
    """The (low, high) bounds of a bounded activation module, else None."""
    kind = type(module).__name__
    if kind == "Hardtanh" or isinstance(module, nn.Hardtanh):
        return (float(module.min_val), float(module.max_val))  # type: ignore[attr-defined,arg-type]
    bounds = ACTIVATION_BOUNDS.get(kind)
    if bounds is None or not all(abs(b) < float("inf") for b in bounds):
        return None
    return bounds


def saturation_tolerance(bounds: tuple[float, float]) -> tuple[float, float]:
    """Thresholds (low + tol, high - tol) for 'within 1% of the bounds'."""
    lo, hi = bounds
    tol = 0.01 * max(abs(lo), abs(hi), 1e-12)
    return lo + tol, hi - tol


def forward_order(layers: list[LayerInfo], seen: list[int]) -> list[int]:
    """Layer indices in forward order, from the indices ``seen`` (first forward pass, pre-hook order).

    A layer whose module never ran as a module but whose parameters its parent uses directly
    (``nn.MultiheadAttention`` reads ``out_proj.weight`` without calling ``out_proj``) is placed
    right after that ancestor's part of the order: its nearest ancestor that is a layer and ran,
    after every seen layer inside that ancestor. A layer with no such ancestor goes last, in
    registration order.

    >>> forward_order(discover_layers(nn.MultiheadAttention(4, 2)), [0])
    [0, 1]
    """
    order = list(seen)
    name_of = {lay.index: lay.name for lay in layers}

    def inside(name: str, ancestor: str) -> bool:
        return ancestor == ROOT_NAME or name.startswith(ancestor + ".")

    tail = []
    for lay in layers:
        if lay.index in order:
            continue
        ancestors = [i for i in seen if name_of[i] != lay.name and inside(lay.name, name_of[i])]
        if not ancestors:
            tail.append(lay.index)
            continue
        anc = max(ancestors, key=lambda i: len(name_of[i]) if name_of[i] != ROOT_NAME else -1)
        # after the ancestor and every layer of its subtree already placed
        pos = max(k for k, i in enumerate(order) if i == anc or inside(name_of[i], name_of[anc]))
        order.insert(pos + 1, lay.index)
    return order + tail


def has_skip_connection(output: object, *, max_nodes: int = 50_000, reach: int = 512) -> bool:
    """Whether the autograd graph behind ``output`` adds a tensor to a function of itself.

    A skip connection ``h + f(h)`` is an add node one of whose inputs is reachable from the other
    (through ``f``'s graph). Parameters (graph leaves) do not count: ``w + g(w)`` is a
    reparametrisation, and two independent branches summed (token + position embeddings, a
    recurrent ``W x_t + U h_{t-1}``) share only leaves. Weighted skips (``a*h + f(h)``) are not
    seen. Reads the graph once (the first forward pass), at most ``max_nodes`` nodes and
    ``reach`` nodes per add; no graph (``no_grad``) gives False.

    >>> import torch
    >>> x = torch.randn(3, requires_grad=True)
    >>> h = torch.tanh(x)
    >>> has_skip_connection(h + torch.sin(h)), has_skip_connection(torch.sin(h) + torch.cos(x))
    (True, False)
    """
    root = getattr(output, "grad_fn", None)
    if root is None:
        return False
    for node in _walk(root, max_nodes):
        if type(node).__name__.startswith("AddBackward"):
            nexts = [f for f, _ in node.next_functions if f is not None]
            if len(nexts) == 2:
                a, b = nexts
                if _reaches(b, a, reach) or _reaches(a, b, reach):
                    return True
    return False


def _walk(start: Any, limit: int) -> Iterator[Any]:
    """The autograd nodes upstream of ``start`` (itself included), each once, at most ``limit``."""
    seen: set[object] = set()
    stack = [start]
    while stack and len(seen) < limit:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        yield node
        stack.extend(f for f, _ in node.next_functions if f is not None)


def _reaches(src: Any, dst: Any, limit: int) -> bool:
    """Whether autograd node ``dst`` (not a leaf) lies upstream of ``src`` within ``limit`` nodes."""
    if type(dst).__name__ == "AccumulateGrad":
        return False
    return any(node is dst for node in _walk(src, limit))
