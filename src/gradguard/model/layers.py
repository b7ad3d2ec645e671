"""Which modules are "layers", and their depth order.

A layer is a module that owns parameters directly (Linear, Conv*, norms, Embedding, RNN/LSTM/GRU,
or any custom module with ``nn.Parameter`` attributes). Layers are named by qualified module name
and ordered by forward execution order once a forward pass has been observed (registration order
until then). A parameter shared by several modules (tied weights) belongs to the first layer that
registers it and is counted once. Frozen parameters are listed but get no gradient statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from gradguard.errors import GradguardError

__all__ = ["ROOT_NAME", "LayerInfo", "discover_layers", "forward_order"]

ROOT_NAME = "(root)"


@dataclass(frozen=True)
class LayerInfo:
    """One layer of a watched model.

    Args:
        column: its place in registration order (the order of ``model.named_modules()``): the
            column of its numbers in the Monitor's buffers. The stored :class:`~gradguard.record.batch.Layer`
            has ``index`` = its position in forward order instead.
        name: qualified module name; the root module is called ``"(root)"``.
        kind: the module's class name, e.g. ``"Linear"``.
        module: the module itself.
        params: ``(local_name, parameter)`` pairs it owns (tied parameters only at their first owner).
        numel: total elements of those parameters.
        trainable: whether at least one of them requires grad.
    """

    column: int
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
                column=len(layers),
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
    name_of = {lay.column: lay.name for lay in layers}

    def inside(name: str, ancestor: str) -> bool:
        return ancestor == ROOT_NAME or name.startswith(ancestor + ".")

    tail = []
    for lay in layers:
        if lay.column in order:
            continue
        ancestors = [i for i in seen if name_of[i] != lay.name and inside(lay.name, name_of[i])]
        if not ancestors:
            tail.append(lay.column)
            continue
        anc = max(ancestors, key=lambda i: len(name_of[i]) if name_of[i] != ROOT_NAME else -1)
        # after the ancestor and every layer of its subtree already placed
        pos = max(k for k, i in enumerate(order) if i == anc or inside(name_of[i], name_of[anc]))
        order.insert(pos + 1, lay.column)
    return order + tail
