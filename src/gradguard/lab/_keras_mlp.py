"""The lab's MLP in Keras: the same layout, initialisations and loss as ``_common.mlp`` and
``record_gradients``, for ``gradguard lab depth_sweep --framework keras``.

Layout: Dense(n_in -> width) + activation, depth - 1 Dense(width -> width) + activation, then
Dense(width -> n_out), float64. Each measurement re-draws the weights with numpy (the torch
schemes' distributions: xavier and he are plain normals, "default" is torch's
U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases), takes one gradient of the mean
cross-entropy with the backend's autodiff and hands it to ``optimizer.apply`` under
:func:`gradguard.keras.watch` (learning rate 0: the weights stay), which records the per-layer
norms.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gradguard.errors import ConfigError
from gradguard.runs.run import Run

__all__ = ["keras_record_gradients"]


def _activation(name: str) -> Any:
    from keras import layers

    if name == "leaky_relu":
        return layers.LeakyReLU(negative_slope=0.01)  # torch's nn.LeakyReLU(0.01)
    if name == "linear":
        return layers.Activation("linear")
    return layers.Activation(name)  # sigmoid, tanh, relu, elu (alpha 1), gelu (exact): as torch


def _mlp(depth: int, width: int, activation: str, n_in: int, n_out: int) -> Any:
    import keras
    from keras import layers

    if depth < 1:
        raise ConfigError(f"depth must be >= 1, got {depth}")
    stack: list[Any] = [keras.Input((n_in,), dtype="float64")]
    for _ in range(depth):
        stack += [layers.Dense(width, dtype="float64"), _activation(activation)]
    stack.append(layers.Dense(n_out, dtype="float64"))
    return keras.Sequential(stack)


def _draw(shape: tuple[int, ...], init: str, rng: np.random.Generator) -> np.ndarray:
    """A (fan_in, fan_out) kernel drawn like ``_common.init_linear_`` draws a torch weight."""
    fan_in, fan_out = shape
    if init == "small":
        return rng.normal(0.0, 0.01, shape)
    if init == "unit":
        return rng.normal(0.0, 1.0, shape)
    if init == "xavier":
        return rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), shape)
    if init == "he":
        return rng.normal(0.0, math.sqrt(2.0 / fan_in), shape)
    raise ConfigError(f"unknown init {init!r} for the Keras sweep")


def _reinit(model: Any, init: str, rng: np.random.Generator) -> None:
    for layer in model.layers:
        if not layer.trainable_weights:
            continue
        kernel, bias = layer.kernel, layer.bias
        fan_in = int(kernel.shape[0])
        if init == "default":  # torch's nn.Linear: kaiming_uniform(a=sqrt(5)) and its bias rule
            bound = 1.0 / math.sqrt(fan_in)
            kernel.assign(rng.uniform(-bound, bound, tuple(kernel.shape)))
            bias.assign(rng.uniform(-bound, bound, tuple(bias.shape)))
        else:
            kernel.assign(_draw((fan_in, int(kernel.shape[1])), init, rng))
            bias.assign(np.zeros(tuple(bias.shape)))


def _grads(model: Any, x: np.ndarray, y: np.ndarray) -> list[Any]:
    """d(mean cross-entropy)/d(weights) with the backend's own autodiff."""
    import keras

    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    variables = model.trainable_variables
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x))
        return list(tape.gradient(loss, variables))
    if backend == "jax":
        import jax

        def f(ws: list[Any]) -> Any:
            out, _ = model.stateless_call(ws, [], x)
            return loss_fn(y, out)

        return list(jax.grad(f)([v.value for v in variables]))
    if backend == "torch":
        import torch

        loss = loss_fn(torch.as_tensor(y), model(torch.as_tensor(x)))
        return list(torch.autograd.grad(loss, [v.value for v in variables]))
    raise ConfigError(f"the Keras sweep supports tensorflow, jax and torch, not {backend!r}")


def keras_record_gradients(
    depth: int,
    *,
    width: int,
    activation: str,
    init: str,
    x: np.ndarray,
    y: np.ndarray,
    seeds: int,
    name: str,
) -> Run:
    """One gradient per seed of a fresh Keras MLP, recorded by gradguard.keras: step ``s`` of the
    run is seed ``s``; ``run.metric(GRAD_NORM)[1][s]`` holds each Dense layer's ||dL/dW||."""
    import keras

    from gradguard.keras import watch

    model = _mlp(depth, width, activation, x.shape[1], 10)
    opt = keras.optimizers.SGD(learning_rate=0.0)
    opt.build(model.trainable_variables)
    mon = watch(model, opt, name=name, flush_every=max(seeds, 1), detail_every=10**9)
    try:
        for seed in range(seeds):
            _reinit(model, init, np.random.default_rng(seed))
            opt.apply(_grads(model, x, y), model.trainable_variables)
    finally:
        mon.close()
    return mon.run
