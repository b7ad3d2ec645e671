"""Overhead of ``gradguard.keras.Watch`` on ``model.fit``, side by side in one process.

Two workloads on sklearn's digits: K1, a Keras MLP (8 x Dense(256), ReLU, batch 64); K2, a small
Keras transformer (the 8 rows of a digit as 8 tokens, Dense(64) embedding, 2 blocks of
MultiHeadAttention(4 heads) + LayerNorm + feed-forward 128, residual Adds, batch 64). Modes:

- ``bare``: ``fit`` alone;
- ``grads``: ``Watch(detail_every=10**9)``: gradient statistics every step, nothing else;
- ``watch``: ``Watch()`` defaults: also update ratio and activation statistics every 10 steps;
- ``tb-hist``: ``keras.callbacks.TensorBoard(histogram_freq=1)`` (weight histograms each epoch).

Each fit runs ``--epochs`` epochs of ``--steps`` steps. From the start of the second epoch to
the end of training, two numbers per fit: the mean time per step (epoch-end work included:
gradguard's flushes, TensorBoard's histograms) and the median time of one step (batch begin to
batch begin: what a step costs, without the epoch-end work and robust to bursts of other jobs).
Modes are interleaved ``--repeats`` times, fresh model each time; medians over the repeats.

``--paired N`` then measures the per-step cost at a finer grain: one model per mode (bare,
``grads``, ``watch``, ``detail``: ``detail_every=1``, every step a detail step, whose median is
the cost of a detail step) in the same process, built and compiled once, their compiled train steps
called in turn N times (the order reversed every round), each step's time kept (``--clock``: wall
or process CPU time): the modes share every burst of load. ``--instances K`` builds K models per
mode and averages their medians: two copies of the same bare model differ by up to 5% per step
(where their buffers land in memory), more than the effect measured. ``KERAS_BACKEND`` picks the
backend.

    KERAS_BACKEND=tensorflow python benchmarks/keras_overhead.py --paired 1000 --instances 3

``--no-fit`` skips the fit part; ``--workloads K1`` times the MLP alone.
"""

from __future__ import annotations

import argparse
import itertools
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

from gradguard.keras import KerasMonitor, Watch  # noqa: E402

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
    shared machine), from the start of epoch 1 (the second) to the end of training, and the
    time between consecutive batch begins within epochs 1.. (a batch-begin hook keeps Keras's
    asynchronous callback dispatch)."""

    def __init__(self, clock: Any) -> None:
        super().__init__()
        self.clock = clock
        self.steps: list[float] = []
        self.last: float | None = None

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.last = None
        if epoch == 1:
            self.t0 = self.clock()

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        now = self.clock()
        if self.last is not None and hasattr(self, "t0"):
            self.steps.append(now - self.last)
        self.last = now

    def on_train_end(self, logs: Any = None) -> None:
        self.elapsed = self.clock() - self.t0


def one(
    build: Any, mode: str, x: np.ndarray, y: np.ndarray, args: Any, logdir: str
) -> tuple[float, float]:
    """(mean time per step with epoch-end work, median time of one step) of one fit."""
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
    return clock.elapsed / ((args.epochs - 1) * args.steps), statistics.median(clock.steps)


class Stepper:
    """One model and its compiled train step, called one step at a time (``--paired``)."""

    def __init__(
        self, build: Any, mode: str, x: np.ndarray, y: np.ndarray, batch: int, clock: Any
    ) -> None:
        self.clock = clock
        keras.utils.set_random_seed(0)
        self.model = model = build()
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        model.fit(x[: 2 * batch], y[: 2 * batch], batch_size=batch, epochs=1, verbose=0)
        self.monitor = None
        if mode != "bare":  # what Watch(...) of that mode records, without fit's callbacks
            detail = {"grads": 10**9, "detail": 1}.get(mode, 10)
            self.monitor = KerasMonitor(model, flush_every=100, detail_every=detail)
        model.make_train_function()
        n = len(x) // batch
        batches = [
            (x[i * batch : (i + 1) * batch], y[i * batch : (i + 1) * batch]) for i in range(n)
        ]
        self.jax = keras.backend.backend() == "jax"
        if self.jax:
            self.it: Any = itertools.cycle(batches)
            self.state = model._get_jax_state(True, True, True, True, purge_model_variables=False)
        else:
            import tensorflow as tf

            data = tf.data.Dataset.from_tensor_slices((x[: n * batch], y[: n * batch]))
            self.it = iter(data.batch(batch).repeat())
        self.done = 0
        self.times: list[float] = []
        for _ in range(3):  # trace and compile
            self.step(keep=False)

    def step(self, keep: bool = True) -> None:
        t0 = self.clock()
        model = self.model
        if self.jax:
            _, self.state = model.train_function(self.state, self.it)
            names = ("trainable", "non_trainable", "optimizer", "metrics")
            model._jax_state = {f"{k}_variables": v for k, v in zip(names, self.state)}
            model._jax_state_synced = False
            self.state[0][0].block_until_ready()
        else:
            model.train_function(self.it)
        self.done += 1
        if self.monitor is not None and self.done % self.monitor.flush_every == 0:
            self.monitor.flush()  # under JAX: syncs the state into the variables first
            if self.jax:
                self.state = model._get_jax_state(True, True, True, True)
        if keep:
            self.times.append(self.clock() - t0)


PAIRED = ("bare", "grads", "watch", "detail")


def paired(build: Any, x: np.ndarray, y: np.ndarray, args: Any) -> dict[str, float]:
    """Median per-step time of bare / grads / watch / detail (mean over the instances), their
    steps called in turn."""
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    steppers = [
        (mode, Stepper(build, mode, x, y, args.batch, clock))
        for _ in range(args.instances)
        for mode in PAIRED
    ]
    for r in range(args.paired):
        for _, s in steppers if r % 2 == 0 else steppers[::-1]:
            s.step()
    return {
        m: statistics.mean(statistics.median(s.times) for mode, s in steppers if mode == m)
        for m in PAIRED
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", help="write the medians here")
    p.add_argument("--paired", type=int, default=0, help="rounds of the paired per-step run")
    p.add_argument(
        "--clock", choices=["wall", "cpu"], default="wall", help="wall time or process CPU time"
    )
    p.add_argument("--instances", type=int, default=1, help="models per mode in --paired")
    p.add_argument("--no-fit", action="store_true", help="the paired run only")
    p.add_argument("--workloads", default="K1,K2", help="comma-separated: K1 (MLP), K2")
    args = p.parse_args()
    d = load_digits()
    n = args.steps * args.batch
    idx = np.arange(n) % len(d.data)  # digits repeated to fill an epoch
    x = (d.data[idx] / 16.0).astype("float32")
    y = d.target[idx].astype("int32")
    result: dict[str, dict[str, Any]] = {}
    load = os.getloadavg()
    with tempfile.TemporaryDirectory() as logdir:
        for name, build in (("K1 MLP", mlp), ("K2 transformer", transformer)):
            if name.split()[0] not in args.workloads.split(","):
                continue
            result[name] = {}
            if args.paired:
                result[name]["paired"] = paired(build, x, y, args)
            if args.no_fit:
                continue
            samples: dict[str, list[tuple[float, float]]] = {m: [] for m in MODES}
            for _ in range(args.repeats):
                for mode in MODES:
                    samples[mode].append(one(build, mode, x, y, args, logdir))
            result[name].update({m: statistics.median(t for t, _ in v) for m, v in samples.items()})
            result[name]["step"] = {
                m: statistics.median(s for _, s in v) for m, v in samples.items()
            }
    print(
        f"backend {keras.backend.backend()}, keras {keras.__version__}, clock {args.clock}, "
        f"load {load[0]:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    print("| workload | mode | ms/step (mean) | vs bare | one step (median) | vs bare |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, med in result.items():
        if "step" not in med:
            continue
        step = med["step"]
        for mode in MODES:
            rel, srel = med[mode] / med["bare"] - 1, step[mode] / step["bare"] - 1
            print(
                f"| {name} | {mode} | {med[mode] * 1e3:.2f} | {rel:+.1%} "
                f"| {step[mode] * 1e3:.2f} | {srel:+.1%} |"
            )
    if args.paired:
        print(
            f"paired, {args.paired} rounds, {args.instances} instances, "
            f"median {args.clock} time of one step:"
        )
        print("| workload | bare | grads | watch | detail |")
        print("| --- | --- | --- | --- | --- |")
        for name, med in result.items():
            pm = med["paired"]
            cells = [f"{pm['bare'] * 1e3:.3f} ms"] + [
                f"{pm[m] * 1e3:.3f} ms ({pm[m] / pm['bare'] - 1:+.1%})" for m in PAIRED[1:]
            ]
            print(f"| {name} | " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
