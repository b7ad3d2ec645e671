"""The layer table of a Keras model: which variable belongs to which recorded layer.

A recorded layer is a layer of the model that owns trainable variables (its sublayers' too: an
``LSTM``'s cell belongs to the ``LSTM``), in the model's layer order, which for ``Sequential`` and
functional models is forward order. A nested ``keras.Model`` is opened up into its own layers.
Layers without weights (``Activation``, ``Add``, ``Dropout``) are not columns; an ``Activation``
layer names the activation of the weight layer before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras

from gradguard.model.activations import kind_of
from gradguard.record.batch import Layer

__all__ = ["KerasLayers", "discover"]

_ROOT = "(model)"  # column of variables the model itself owns (a subclassed model's add_weight)


@dataclass(frozen=True)
class KerasLayers:
    """Columns of the recorded layers and, per trainable variable, its column."""

    layers: list[Layer]  # forward order; Layer.index == column
    columns: dict[int, int]  # id(variable) -> column
    residual: bool  # an Add layer is present (a skip connection)
    # per column, the Keras layer whose output is its activation: the layer itself, or the
    # Activation layer right after it that takes its output (None: the model's own column)
    outputs: list[Any]
    # per column, the layer that owns its weights (None: the model's own column): dL/dh is taken
    # at its output, as gg.watch takes it at the output of the module that owns the weights
    units: list[Any]


def _activation_name(layer: Any) -> str | None:
    """The activation a layer applies (``Dense(activation="relu")``, ``Activation("tanh")``),
    as the activation table's class name when it knows it (``"ReLU"``), else Keras's name."""
    act = getattr(layer, "activation", None)
    if act is None:
        return None
    name = act if isinstance(act, str) else getattr(act, "__name__", type(act).__name__)
    if name in ("linear", "identity"):
        return None
    kind = kind_of(name)
    return kind.name if kind is not None else name


def _units(model: Any) -> list[Any]:
    out: list[Any] = []
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.Model):
            out.extend(_units(layer))
        else:
            out.append(layer)
    return out


def discover(model: Any) -> KerasLayers:
    """The recorded layers of ``model`` and the column of each of its trainable variables."""
    layers: list[Layer] = []
    columns: dict[int, int] = {}
    outputs: list[Any] = []
    units: list[Any] = []
    residual = False
    for unit in _units(model):
        kind = type(unit).__name__
        residual = residual or isinstance(unit, keras.layers.Add)
        own = [v for v in unit.trainable_weights if id(v) not in columns]
        if not own:
            if isinstance(unit, keras.layers.Activation) and layers:
                # Dense(...) then Activation("sigmoid"): the activation follows the last weight layer
                last = layers[-1]
                layers[-1] = Layer(
                    last.index,
                    last.name,
                    last.kind,
                    last.numel,
                    last.trainable,
                    _activation_name(unit) or last.activation,
                )
                if _takes_output_of(unit, outputs[-1]):
                    outputs[-1] = unit
            continue
        col = len(layers)
        for v in own:
            columns[id(v)] = col
        numel = sum(int(_size(v)) for v in own)
        layers.append(Layer(col, unit.name, kind, numel, True, _activation_name(unit)))
        outputs.append(unit)
        units.append(unit)
    rest = [v for v in model.trainable_weights if id(v) not in columns]
    if rest:
        col = len(layers)
        for v in rest:
            columns[id(v)] = col
        layers.append(Layer(col, _ROOT, type(model).__name__, sum(_size(v) for v in rest)))
        outputs.append(None)
        units.append(None)
    return KerasLayers(layers, columns, residual, outputs, units)


def _takes_output_of(layer: Any, before: Any) -> bool:
    """``layer`` is applied to ``before``'s output (a Sequential step or a functional edge)."""
    try:
        return layer.input is before.output
    except (AttributeError, ValueError):  # a layer never called symbolically (subclassed model)
        return False


def _size(v: Any) -> int:
    n = 1
    for d in v.shape:
        n *= int(d)
    return n
