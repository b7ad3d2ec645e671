"""dL/dh of the recorded layers: the gradient of the loss with respect to each layer's output.

One mechanism on every backend: while ``forward()`` runs, the ``call`` of each recorded layer adds
a zero tensor ``eps_c`` to the layer's output (``h + eps_c`` is ``h``, so the forward is
unchanged), and the gradient of the loss with respect to ``eps_c`` is dL/dh_c, every path from h_c
to the loss included (a residual ``Add`` too). Only how the gradient is taken differs:
``tf.GradientTape`` watching the shifts, ``torch.autograd.grad`` on them, ``jax.value_and_grad``
with the shifts as its argument (their shapes from ``jax.eval_shape`` of the same forward: no
extra pass at run time). The layers' ``call`` is patched for the forward only and restored in
``finally``; inside a compiled step that is at trace time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import keras
from keras import ops

from gradguard.errors import GradguardError

__all__ = ["shift_gradients", "norm"]

Shift = Callable[[int, Any], Any]  # (column, layer output) -> the output to hand on


def shift_gradients(
    units: dict[int, Any], forward: Callable[[], tuple[Any, Any]]
) -> tuple[Any, dict[int, Any]]:
    """Run ``forward() -> (loss, aux)`` with a zero shift added to each unit's output.

    Args:
        units: column -> the Keras layer whose output is h of that column.
        forward: the forward pass and the scalar loss; ``aux`` is handed back as it is.

    Returns:
        ``(aux, {column: dL/dh})``; a column the forward did not reach, whose output is not one
        floating tensor, or that the loss does not depend on is missing.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tensorflow(units, forward)
    if backend == "jax":
        return _jax(units, forward)
    if backend == "torch":
        return _torch(units, forward)
    raise GradguardError(
        f"dL/dh from Keras needs the tensorflow, jax or torch backend, not {backend!r}"
    )


def norm(g: Any) -> Any:
    """||g|| in float32, scaled by max |g| first: the sum of squares of a vanishing gradient
    (1e-20 a value) underflows float32, its norm does not."""
    g = ops.cast(g, "float32")
    top = ops.max(ops.abs(g))
    scale = ops.where(top > 0, top, ops.ones_like(top))
    return top * ops.sqrt(ops.sum(ops.square(g / scale)))


@contextmanager
def _shifted(units: dict[int, Any], shift: Shift) -> Iterator[None]:
    """Each unit's ``call`` hands on ``shift(column, output)`` while the block runs."""
    originals = {c: lay.__dict__.get("call") for c, lay in units.items()}
    try:
        for c, lay in units.items():
            lay.call = _shifting(lay.call, c, shift)
        yield
    finally:
        for c, lay in units.items():
            orig = originals[c]
            if orig is None:
                lay.__dict__.pop("call", None)
            else:
                lay.call = orig


def _shifting(call: Callable[..., Any], column: int, shift: Shift) -> Callable[..., Any]:
    def call_and_shift(*args: Any, **kwargs: Any) -> Any:
        out = call(*args, **kwargs)
        if _floating(out):
            out = shift(column, out)
        return out

    return call_and_shift


def _floating(out: Any) -> bool:
    if isinstance(out, (list, tuple, dict)) or not hasattr(out, "dtype"):
        return False
    return "float" in keras.backend.standardize_dtype(out.dtype)


def _tensorflow(units: dict[int, Any], forward: Callable[[], Any]) -> tuple[Any, dict[int, Any]]:
    import tensorflow as tf

    zs: dict[int, Any] = {}
    with tf.GradientTape(watch_accessed_variables=False) as tape:

        def shift(c: int, out: Any) -> Any:
            z = tf.zeros_like(out)
            tape.watch(z)
            zs[c] = z
            return out + z

        with _shifted(units, shift):
            loss, aux = forward()
    order = sorted(zs)
    grads = tape.gradient(loss, [zs[c] for c in order])
    return aux, {c: g for c, g in zip(order, grads) if g is not None}


def _torch(units: dict[int, Any], forward: Callable[[], Any]) -> tuple[Any, dict[int, Any]]:
    import torch

    zs: dict[int, Any] = {}

    def shift(c: int, out: Any) -> Any:
        z = torch.zeros_like(out, requires_grad=True)
        zs[c] = z
        return out + z

    with torch.enable_grad(), _shifted(units, shift):
        loss, aux = forward()
    order = sorted(zs)
    grads = torch.autograd.grad(loss, [zs[c] for c in order], allow_unused=True)
    aux = keras.tree.map_structure(lambda t: t.detach(), aux)
    return aux, {c: g for c, g in zip(order, grads) if g is not None}


def _jax(units: dict[int, Any], forward: Callable[[], Any]) -> tuple[Any, dict[int, Any]]:
    import jax

    shapes: dict[int, Any] = {}

    def capture(c: int, out: Any) -> Any:
        shapes[c] = jax.ShapeDtypeStruct(out.shape, out.dtype)
        return out

    with _shifted(units, capture):
        jax.eval_shape(forward)  # shapes only: traced, never run
    order = sorted(shapes)

    def shifted_loss(zs: list[Any]) -> tuple[Any, Any]:
        by_col = dict(zip(order, zs))
        with _shifted(units, lambda c, out: out + by_col[c] if c in by_col else out):
            return forward()  # type: ignore[no-any-return]

    zeros = [jax.numpy.zeros(shapes[c].shape, shapes[c].dtype) for c in order]
    (_, aux), grads = jax.value_and_grad(shifted_loss, has_aux=True)(zeros)
    return aux, dict(zip(order, grads))
