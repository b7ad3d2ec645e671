"""Overhead of ``gradguard.keras.Watch`` on ``model.fit``, side by side in one process.

Two workloads on sklearn's digits: K1, a Keras MLP (8 x Dense(256), ReLU, batch 64); K2, a small
Keras transformer (the 8 rows of a digit as 8 tokens, Dense(64) embedding, 2 blocks of
MultiHeadAttention(4 heads) + LayerNorm + feed-forward 128, residual Adds, batch 64). Modes:

- ``bare``: ``fit`` alone;
- ``grads``: ``Watch(detail_every=10**9)``: gradient statistics every step, nothing else;
- ``watch``: ``Watch()`` defaults: also update ratio and activation statistics every 10 steps;
- ``tb-hist``: ``keras.callbacks.TensorBoard(histogram_freq=1)`` (weight histograms each epoch).

Each fit runs ``--epochs`` epochs of ``--steps`` steps; the time from the start of the second
epoch to the end of training (epoch-end work included: gradguard's flush, TensorBoard's
histograms) divided by the steps is one sample; modes are interleaved ``--repeats`` times, fresh
model each time, and the median is reported. ``KERAS_BACKEND`` picks the backend.

    KERAS_BACKEND=tensorflow python benchmarks/keras_overhead.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from gradguard.keras import Watch  # noqa: E402

MODES = ("bare", "grads", "watch", "tb-hist")


def mlp() -> keras.Model:
    hidden = [layers.Dense(256, activation="relu") for _ in range(8)]
    return keras.Sequential([keras.Input((64,)), *hidden, layers.Dense(10)])


def transformer() -> keras.Model:
    inp = keras.Input((64,))
    h = layers.Dense(64)(layers.Reshape((8, 8))(inp))  # (batch, 8 tokens, 64)
    for _ in range(2):
        a = layers.MultiHeadAttention(num_heads=4, key_dim=16)(h, h)
        h = layers.LayerNormalization()(layers.Add()([h, a]))
        f = layers.Dense(64)(layers.Dense(128, activation="relu")(h))
        h = layers.LayerNormalization()(layers.Add()([h, f]))
    out = layers.Dense(10)(layers.GlobalAveragePooling1D()(h))
    return keras.Model(inp, out)


class Clock(keras.callbacks.Callback):
    """Wall time, or CPU time of the process (all threads: less sensitive to other jobs on a
    shared machine), from the start of epoch 1 (the second) to the end of training."""

    def __init__(self, clock: Any) -> None:
        super().__init__()
        self.clock = clock

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        if epoch == 1:
            self.t0 = self.clock()

    def on_train_end(self, logs: Any = None) -> None:
        self.elapsed = self.clock() - self.t0


def one(build: Any, mode: str, x: np.ndarray, y: np.ndarray, args: Any, logdir: str) -> float:
    keras.utils.set_random_seed(0)
    model = build()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    clock = Clock(time.process_time if args.clock == "cpu" else time.perf_counter)
    extra: list[Any] = []
    if mode == "grads":
        extra = [Watch(detail_every=10**9)]
    elif mode == "watch":
        extra = [Watch()]
    elif mode == "tb-hist":
        extra = [keras.callbacks.TensorBoard(logdir, histogram_freq=1)]
    model.fit(
        x,
        y,
        batch_size=args.batch,
        epochs=args.epochs,
        steps_per_epoch=args.steps,
        verbose=0,
        callbacks=[clock, *extra],
    )
    return clock.elapsed / ((args.epochs - 1) * args.steps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", help="write the medians here")
    p.add_argument(
        "--clock", choices=["wall", "cpu"], default="wall", help="wall time or process CPU time"
    )
    args = p.parse_args()
    d = load_digits()
    n = args.steps * args.batch
    idx = np.arange(n) % len(d.data)  # digits repeated to fill an epoch
    x = (d.data[idx] / 16.0).astype("float32")
    y = d.target[idx].astype("int32")
    result: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as logdir:
        for name, build in (("K1 MLP", mlp), ("K2 transformer", transformer)):
            samples: dict[str, list[float]] = {m: [] for m in MODES}
            for _ in range(args.repeats):
                for mode in MODES:
                    samples[mode].append(one(build, mode, x, y, args, logdir))
            result[name] = {m: statistics.median(v) for m, v in samples.items()}
    print(f"backend {keras.backend.backend()}, keras {keras.__version__}, clock {args.clock}")
    print("| workload | mode | ms/step | vs bare |")
    print("| --- | --- | --- | --- |")
    for name, med in result.items():
        for mode in MODES:
            rel = med[mode] / med["bare"] - 1
            print(f"| {name} | {mode} | {med[mode] * 1e3:.2f} | {rel:+.1%} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
