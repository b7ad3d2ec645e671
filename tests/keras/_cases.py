"""Keras cases run in a fresh process per backend (Keras fixes its backend at import).

``python tests/keras/_cases.py OUT.json`` with ``KERAS_BACKEND`` set runs every case and writes
the numbers to ``OUT.json``; ``tests/keras/test_*.py`` start it and assert on them. Each case
records a run with :class:`gradguard.keras.Watch` and computes the same numbers independently
with the backend's own gradient (``tf.GradientTape`` / ``jax.grad`` / torch autograd).
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers
from sklearn.datasets import load_digits

import gradguard as gg
from gradguard.errors import GradguardError
from gradguard.keras import Watch
from gradguard.metrics import (
    ACT_GRAD_NORM,
    ACT_STD,
    ACT_ZERO_FRAC,
    GRAD_NORM,
    LOSS,
    UPDATE_RATIO,
    WEIGHT_NORM,
)

BACKEND = keras.backend.backend()


def digits(n: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's digits: (n, 64) pixels in [0, 1], one-hot labels (n, 10)."""
    d = load_digits()
    x = (d.data[:n] / 16.0).astype("float32")
    y = np.eye(10, dtype="float32")[d.target[:n]]
    return x, y


# ---------------------------------------------------------------- models
def dense() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((64,)),
            layers.Dense(32, activation="tanh"),
            layers.Dense(32),
            layers.Activation("relu"),
            layers.Dense(10),
        ]
    )


def cnn() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((64,)),
            layers.Reshape((8, 8, 1)),
            layers.Conv2D(8, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(8, 2, activation="relu"),
            layers.Flatten(),
            layers.Dense(10),
        ]
    )


def lstm() -> keras.Model:
    # the 8 rows of a digit as a sequence of 8 steps
    return keras.Sequential(
        [keras.Input((64,)), layers.Reshape((8, 8)), layers.LSTM(16), layers.Dense(10)]
    )


def residual() -> keras.Model:
    inp = keras.Input((64,))
    h = layers.Dense(32, activation="relu", name="stem")(inp)
    f = layers.Dense(32, activation="relu", name="block_a")(h)
    f = layers.Dense(32, name="block_b")(f)
    h = layers.Add()([h, f])
    out = layers.Dense(10, name="head")(h)
    return keras.Model(inp, out)


def batchnorm() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((64,)),
            layers.Dense(32),
            layers.BatchNormalization(),
            layers.Activation("relu"),
            layers.Dense(10),
        ]
    )


MODELS = {"dense": dense, "cnn": cnn, "lstm": lstm, "residual": residual, "batchnorm": batchnorm}


def loss_fn() -> keras.losses.Loss:
    return keras.losses.CategoricalCrossentropy(from_logits=True)


# ---------------------------------------------------------------- the independent reference
def reference(model: keras.Model, x: np.ndarray, y: np.ndarray) -> tuple[dict[str, float], float]:
    """Per-layer gradient norms (float64, summed over each layer's trainable_weights) and the
    loss of one forward/backward pass, with the backend's own autodiff."""
    variables = model.trainable_variables
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn()(y, model(x, training=True))
        grads = [np.asarray(g, dtype=np.float64) for g in tape.gradient(loss, variables)]
        value = float(loss)
    elif BACKEND == "jax":
        import jax

        trainable = [v.value for v in variables]
        frozen = [v.value for v in model.non_trainable_variables]

        def f(tv: list[Any]) -> Any:
            out, _ = model.stateless_call(tv, frozen, x, training=True)
            return loss_fn()(y, out)

        value_, g = jax.value_and_grad(f)(trainable)
        grads = [np.asarray(a, dtype=np.float64) for a in g]
        value = float(value_)
    else:
        import torch

        out = model(torch.as_tensor(x), training=True)
        loss = loss_fn()(torch.as_tensor(y), out)
        got = torch.autograd.grad(loss, [v.value for v in variables])
        grads = [a.detach().double().numpy() for a in got]
        value = float(loss.detach())
    by_var = {id(v): g for v, g in zip(variables, grads)}
    norms = {}
    for layer in model.layers:
        own = [by_var[id(v)] for v in layer.trainable_weights]
        if own:
            norms[layer.name] = float(np.sqrt(sum(np.sum(g * g) for g in own)))
    return norms, value


def reference_activations(model: keras.Model, x: np.ndarray) -> dict[str, list[float]]:
    """[std, zero fraction] of each weight layer's activation in inference mode (the layer's own
    output, or the Activation layer's right after it), from numpy on a one-output view."""
    out: dict[str, list[float]] = {}
    seq = model.layers
    for i, layer in enumerate(seq):
        if not layer.trainable_weights:
            continue
        act = layer
        if i + 1 < len(seq) and isinstance(seq[i + 1], layers.Activation):
            act = seq[i + 1]
        h = keras.ops.convert_to_numpy(keras.Model(model.inputs[0], act.output)(x, training=False))
        h = h.astype(np.float64)
        out[layer.name] = [float(h.std()), float(np.mean(h == 0))]
    return out


def grad_of(tail: Any, h0: Any, y: np.ndarray) -> float:
    """||d loss(y, tail(h)) / dh|| at h0 with the backend's own autodiff (float64 norm)."""
    lf = loss_fn()
    if BACKEND == "tensorflow":
        import tensorflow as tf

        h = tf.convert_to_tensor(h0)
        with tf.GradientTape() as tape:
            tape.watch(h)
            loss = lf(y, tail(h))
        g = tape.gradient(loss, h)
    elif BACKEND == "jax":
        import jax

        g = jax.grad(lambda h: lf(y, tail(h)))(h0)
    else:
        import torch

        h = h0.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(lf(torch.as_tensor(y), tail(h)), [h])
    return float(np.linalg.norm(np.asarray(keras.ops.convert_to_numpy(g), dtype=np.float64)))


def reference_act_grads(name: str, model: keras.Model, x: np.ndarray, y: np.ndarray) -> Any:
    """||dL/dh|| at each weight layer's own output (inference mode, the compiled loss), each from
    the backend's autodiff on the rest of the network written out by hand as a function of h:
    the Dense stack's later layers in turn; the residual net's skip path spelled out."""
    if name == "dense":
        out = {}
        seq = model.layers
        for i, layer in enumerate(seq):
            if not layer.trainable_weights:
                continue
            h0 = keras.Model(model.inputs[0], layer.output)(x, training=False)

            def tail(h: Any, rest: list[Any] = seq[i + 1 :]) -> Any:
                for later in rest:
                    h = later(h, training=False)
                return h

            out[layer.name] = grad_of(tail, h0, y)
        return out
    if name == "residual":
        stem, a, b, head = (model.get_layer(n) for n in ("stem", "block_a", "block_b", "head"))
        h0 = stem(keras.ops.convert_to_tensor(x))
        f1 = a(h0)
        tails = {
            "stem": (lambda h: head(h + b(a(h))), h0),
            "block_a": (lambda f: head(h0 + b(f)), f1),
            "block_b": (lambda f: head(h0 + f), b(f1)),
            "head": (lambda o: o, head(h0 + b(f1))),
        }
        return {n: grad_of(t, v, y) for n, (t, v) in tails.items()}
    return None


def weights(model: keras.Model) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(v.value).copy() for v in model.variables]


def restore(model: keras.Model, ws: list[np.ndarray]) -> None:
    for v, w in zip(model.variables, ws):
        v.assign(w)


# ---------------------------------------------------------------- cases
def case_gradients(jit: bool, models: tuple[str, ...] = tuple(MODELS)) -> dict[str, Any]:
    """Step-0 per-layer grad norms and loss of fit under the callback vs the reference, for each
    model, with an optimizer that clips (the callback records pre-clip gradients)."""
    x, y = digits(64)
    out: dict[str, Any] = {}
    for name in models:
        build = MODELS[name]
        keras.utils.set_random_seed(1)
        model = build()
        opt = keras.optimizers.Adam(1e-3, clipnorm=1e-3)
        model.compile(optimizer=opt, loss=loss_fn(), jit_compile=jit)
        w0 = weights(model)
        # activations first: the tape's training-mode pass moves BatchNorm's moving statistics
        ref_acts = reference_activations(model, x[:32])
        ref_agn = reference_act_grads(name, model, x[:32], y[:32])
        ref, ref_loss = reference(model, x[:32], y[:32])
        restore(model, w0)
        cb = Watch(flush_every=1, detail_every=1)
        model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0, callbacks=[cb])
        run = cb.run
        assert run is not None
        steps, vals = run.metric(GRAD_NORM)
        names = [lay.name for lay in run.layers]
        ls, lv = run.scalar(LOSS)
        a_steps, a_std = run.metric(ACT_STD)
        _, a_zero = run.metric(ACT_ZERO_FRAC)
        g_steps, agn = run.metric(ACT_GRAD_NORM)
        out[name] = {
            "agn_steps": g_steps.tolist(),
            "agn": {n: float(agn[0, i]) for i, n in enumerate(names)},
            "ref_agn": ref_agn,
            "act_steps": a_steps.tolist(),
            "act_std": {n: float(a_std[0, i]) for i, n in enumerate(names)},
            "act_zero": {n: float(a_zero[0, i]) for i, n in enumerate(names)},
            "ref_act": ref_acts,
            "steps": steps.tolist(),
            "got": {n: float(vals[0, i]) for i, n in enumerate(names)},
            "ref": ref,
            "loss": float(lv[0]),
            "ref_loss": ref_loss,
            "kinds": [lay.kind for lay in run.layers],
            "failures": dict(cb.monitor.failures) if cb.monitor else {},
            "optimizer_vars_restored": len(opt.variables) == len(weights_opt(opt)),
        }
    return out


def weights_opt(opt: keras.optimizers.Optimizer) -> list[Any]:
    return [v for v in opt.variables if not v.name.startswith("gradguard")]


def case_host_reads() -> dict[str, Any]:
    """Host reads of the callback for 4 and 32 steps in one epoch (one flush at the epoch end)."""
    x, y = digits(256)
    out = {}
    for batch in (64, 8):
        keras.utils.set_random_seed(2)
        model = dense()
        # compiled where that is cheap (XLA / jax.jit); torch.compile would dominate the run
        model.compile(optimizer="sgd", loss=loss_fn(), jit_compile=BACKEND != "torch")
        cb = Watch(flush_every=1000)
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0, callbacks=[cb])
        assert cb.monitor is not None and cb.run is not None
        out[str(256 // batch)] = {
            "reads": cb.monitor.host_reads,
            "steps": len(cb.run.metric(GRAD_NORM)[0]),
        }
    return out


def case_store(tmp: Path) -> dict[str, Any]:
    """Two epochs into a store, read back with gg.load; a second fit makes a second run."""
    x, y = digits(128)
    keras.utils.set_random_seed(3)
    model = dense()
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=loss_fn())
    path = tmp / "k.db"
    cb = Watch(store=path, flush_every=3, detail_every=2)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[cb])
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[cb])
    from gradguard.runs.store import list_runs

    run = gg.load(path)
    live = cb.run
    assert live is not None
    us, uv = run.metric(UPDATE_RATIO)
    return {
        "runs": [r[0] for r in list_runs(path)],
        "metrics": sorted(run.metric_names),
        "scalars": sorted(run.scalar_names),
        "steps": run.metric(GRAD_NORM)[0].tolist(),
        "update_steps": us.tolist(),
        "update_finite": bool(np.isfinite(uv).all()),
        "config": {k: run.config.get(k) for k in ("framework", "keras_backend", "optimizer")},
        "layers": [(lay.name, lay.kind, lay.numel, lay.activation) for lay in run.layers],
        "numel": [
            int(sum(np.prod(v.shape) for v in lyr.trainable_weights))
            for lyr in model.layers
            if lyr.trainable_weights
        ],
        "path": str(path),
    }


def case_detail() -> dict[str, Any]:
    """Weight norm and update ratio of the detail steps (detail_every=3: steps 0 and 3 of 4)
    against numpy on the weights at the epochs' ends (one step per epoch)."""
    x, y = digits(32)
    keras.utils.set_random_seed(6)
    model = dense()
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=loss_fn())
    per_step = [[np.asarray(v) for v in model.trainable_variables]]

    class Keep(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:  # JAX: state synced
            per_step.append([np.asarray(v) for v in model.trainable_variables])

    cb = Watch(flush_every=2, detail_every=3)
    model.fit(x, y, batch_size=32, epochs=4, verbose=0, callbacks=[Keep(), cb])
    run = cb.run
    assert run is not None
    ws, wv = run.metric(WEIGHT_NORM)
    us, uv = run.metric(UPDATE_RATIO)
    assert cb.monitor is not None
    cols = [cb.monitor.table.columns[id(v)] for v in model.trainable_variables]
    ref_w, ref_u = [], []
    for step in (0, 3):
        before, after = per_step[step], per_step[step + 1]
        w = np.zeros(len(run.layers))
        u = np.zeros(len(run.layers))
        for c, b, a in zip(cols, before, after):
            w[c] += float(np.sum(b.astype(np.float64) ** 2))
            u[c] += float(np.sum((a.astype(np.float64) - b) ** 2))
        ref_w.append(np.sqrt(w).tolist())
        ref_u.append((np.sqrt(u) / np.sqrt(w)).tolist())
    return {
        "steps": run.metric(GRAD_NORM)[0].tolist(),
        "weight_steps": ws.tolist(),
        "update_steps": us.tolist(),
        "weight_norm": wv.tolist(),
        "update_ratio": uv.tolist(),
        "ref_weight_norm": ref_w,
        "ref_update_ratio": ref_u,
    }


def stack(activation: str, init: Any, depth: int, width: int) -> keras.Model:
    hidden = [
        layers.Dense(width, activation=activation, kernel_initializer=init) for _ in range(depth)
    ]
    return keras.Sequential([keras.Input((64,)), *hidden, layers.Dense(10)])


def case_diagnosis(work: Path) -> dict[str, Any]:
    """The issue's three stacks, 32 Adam steps on digits each, diagnosed from the store (kinds
    and severities of the findings), plus `gradguard diagnose` on the same file."""
    import warnings

    from gradguard.cli import main as cli

    x, y = digits(1024)
    nets = {
        "sigmoid20": stack("sigmoid", "glorot_uniform", 20, 32),
        "normal1_relu": stack("relu", keras.initializers.RandomNormal(stddev=1.0), 20, 16),
        "he_relu": stack("relu", "he_normal", 20, 32),
    }
    out: dict[str, Any] = {}
    path = work / "diagnosis.db"
    for name, model in nets.items():
        keras.utils.set_random_seed(5)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss_fn())
        cb = Watch(store=path, name=name, flush_every=16, detail_every=4)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[cb])
        found = gg.diagnose(gg.load(path, name=name))
        assert cb.run is not None
        _, agn = cb.run.metric(ACT_GRAD_NORM)
        out[name] = {
            "agn_last": agn[-1].tolist() if agn.size else [],
            "signal": str(found[0].data.get("signal", "")),
            "findings": [(f.kind, f.severity.name.lower()) for f in found],
            "remedies": [r.how for f in found for r in f.remedies],
            # online diagnosis at the flushes (steps 16 and 32): events in the run, warnings
            "online": [(e.kind, e.step) for e in cb.run.events if e.kind.startswith("finding:")],
            "online_warnings": [str(w.message) for w in caught if "gradguard:" in str(w.message)],
        }
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = cli(["diagnose", str(path), "--name", "sigmoid20"])
    out["cli"] = {"code": code, "text": buf.getvalue()}
    return out


def dl_dh(model: keras.Model, x: np.ndarray, y: np.ndarray, at: int) -> float:
    """||dL/d(output of Sequential layer `at`)|| with the backend's autodiff on the tail of the
    stack (layers after `at` applied one by one), MSE loss, inference mode."""
    head = keras.Model(model.inputs[0], model.layers[at].output)
    h0 = head(x, training=False)

    def tail_loss(h: Any) -> Any:
        for layer in model.layers[at + 1 :]:
            h = layer(h, training=False)
        return keras.losses.MeanSquaredError()(y, h)

    if BACKEND == "tensorflow":
        import tensorflow as tf

        h = tf.convert_to_tensor(h0)
        with tf.GradientTape() as tape:
            tape.watch(h)
            loss = tail_loss(h)
        g = tape.gradient(loss, h)
    elif BACKEND == "jax":
        import jax

        g = jax.grad(tail_loss)(h0)
    else:
        import torch

        h = h0.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(tail_loss(h), [h])
    return float(np.linalg.norm(np.asarray(keras.ops.convert_to_numpy(g), dtype=np.float64)))


def case_check() -> dict[str, Any]:
    """gg.keras.check on the three stacks at init (projection loss), and its dL/dh of a small
    stack (MSE against targets) against the tail-of-the-stack reference."""
    x, y = digits(128)
    out: dict[str, Any] = {}
    for name, act, init, width in (
        ("sigmoid20", "sigmoid", "glorot_uniform", 32),
        ("normal1_relu", "relu", keras.initializers.RandomNormal(stddev=1.0), 16),
        ("he_relu", "relu", "he_normal", 64),
    ):
        keras.utils.set_random_seed(6)
        model = stack(act, init, 20, width)
        w0 = weights(model)
        report = gg.keras.check(model, x)
        out[name] = {
            "verdict": report.verdict,
            "grad_ratio": report.grad_ratio,
            "remedy": report.findings[0].remedies[0].how if report.findings[0].remedies else "",
            "unchanged": all(np.array_equal(a, b) for a, b in zip(w0, weights(model))),
            "table": str(report),
        }
    keras.utils.set_random_seed(7)
    model = stack("tanh", "glorot_uniform", 4, 16)
    report = gg.keras.check(model, x, y[:, :10], loss_fn=keras.losses.MeanSquaredError())
    out["dl_dh"] = {
        "got": [r.act_grad_norm for r in report.layers],
        "ref": [dl_dh(model, x, y[:, :10], i) for i in range(len(model.layers))],
    }
    return out


def case_lab() -> dict[str, Any]:
    """The lab's depth sweep in Keras and in torch (same nets, inits, batch; float64): per row the
    first layer's gradient (geometric mean over seeds) and its spread over seeds, in decades.
    The Keras half runs through `gradguard lab depth_sweep --framework keras`."""
    import contextlib
    import io

    from gradguard.cli import main as cli
    from gradguard.lab import run_experiment

    opts: dict[str, Any] = {
        "activations": ["sigmoid", "relu", "tanh"],
        "depths": [4, 10],
        "inits": ["xavier", "he", "unit", "small"],
        "seeds": 4,
        "width": 32,
        "batch": 64,
    }
    torch_rows = run_experiment("depth_sweep", quiet=True, **opts).table
    out = Path(sys.argv[1]).parent / "lab-keras"
    args = ["lab", "depth_sweep", "--framework", "keras", "--quiet", "--out", str(out)]
    args += [f"--set={k}={json.dumps(v)}" for k, v in opts.items()]
    with contextlib.redirect_stdout(io.StringIO()):
        code = cli(args)
    import csv

    with open(out / "depth_sweep" / "table.csv") as f:
        keras_rows = list(csv.DictReader(f))
    return {"code": code, "torch": torch_rows, "keras": keras_rows}


def case_custom_loop(work: Path) -> dict[str, Any]:
    """gg.keras.watch on a hand-written compiled train step (tf.function on TensorFlow, an eager
    step elsewhere): per-layer norms of step 0 vs the reference, the loss recorded inside the
    step, and the host reads of 12 steps with flush_every=5 (flushes at 5, 10 and close)."""
    x, y = digits(96)
    keras.utils.set_random_seed(8)
    model = residual()
    opt = keras.optimizers.SGD(0.05)
    opt.build(model.trainable_variables)
    w0 = weights(model)
    ref_agn = reference_act_grads("residual", model, x[:8], y[:8])
    ref, ref_loss = reference(model, x[:8], y[:8])
    restore(model, w0)
    lf = loss_fn()
    model.compile(optimizer=opt, loss=lf)  # the compiled loss: dL/dh from record_batch
    mon = gg.keras.watch(model, opt, store=work / "loop.db", flush_every=5, detail_every=1)

    def step(xb: Any, yb: Any) -> None:
        if BACKEND == "tensorflow":
            import tensorflow as tf

            with tf.GradientTape() as tape:
                loss = lf(yb, model(xb, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
        else:
            grads_ref = reference_grads(model, xb, yb)
            loss, grads = grads_ref
        mon.record_batch(xb, yb)  # before apply: the weights of the step's own forward
        opt.apply(grads, model.trainable_variables)
        mon.record_loss(loss)

    if BACKEND == "tensorflow":
        import tensorflow as tf

        step = tf.function(step)  # type: ignore[assignment]
    with mon:
        for i in range(12):
            step(x[8 * i : 8 * i + 8], y[8 * i : 8 * i + 8])
            mon.step()
        reads_before_close = mon.host_reads
    run = gg.load(work / "loop.db")
    # without a compiled loss (and without record_batch): no dL/dh, no activation statistics
    small = dense()
    plain = gg.keras.watch(small, keras.optimizers.SGD(), flush_every=2, diagnose_online=False)
    plain_config = plain.run_log.config[ACT_GRAD_NORM]
    for _ in range(2):  # two steps with zero gradients, eager
        zeros = [keras.ops.zeros(v.shape) for v in small.trainable_variables]
        plain.optimizer.apply(zeros, small.trainable_variables)
        plain.step()
    plain_metrics = sorted(plain.run.metric_names)
    plain.close()
    steps, vals = run.metric(GRAD_NORM)
    ls, lv = run.scalar(LOSS)
    names = [lay.name for lay in run.layers]
    return {
        "steps": steps.tolist(),
        "got": {n: float(vals[0, i]) for i, n in enumerate(names)},
        "ref": ref,
        "loss": float(lv[0]),
        "ref_loss": ref_loss,
        "reads_before_close": reads_before_close,
        "agn_steps": run.metric(ACT_GRAD_NORM)[0].tolist(),
        "agn": {n: float(run.metric(ACT_GRAD_NORM)[1][0, i]) for i, n in enumerate(names)},
        "ref_agn": ref_agn,
        "plain_config_agn": plain_config,
        "plain_metrics": plain_metrics,
        "failures": dict(mon.failures),
        "unwrapped": "apply" not in opt.__dict__,
    }


def reference_grads(model: keras.Model, x: np.ndarray, y: np.ndarray) -> tuple[Any, list[Any]]:
    """(loss, gradients) of one batch, eager, for the non-TensorFlow custom loop."""
    variables = model.trainable_variables
    if BACKEND == "jax":
        import jax

        frozen = [v.value for v in model.non_trainable_variables]

        def f(tv: list[Any]) -> Any:
            out, _ = model.stateless_call(tv, frozen, x, training=True)
            return loss_fn()(y, out)

        return jax.value_and_grad(f)([v.value for v in variables])
    import torch

    loss = loss_fn()(torch.as_tensor(y), model(torch.as_tensor(x), training=True))
    return loss, list(torch.autograd.grad(loss, [v.value for v in variables]))


def case_failure_isolated() -> dict[str, Any]:
    """A statistics kernel that raises: fit trains anyway (the weights move, the loss is finite),
    the part is reported once and switched off."""
    import warnings

    import gradguard.keras._recorder as recorder

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected failure")

    x, y = digits(64)
    keras.utils.set_random_seed(9)
    model = dense()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss_fn())
    w0 = weights(model)
    original = recorder.grad_rows
    recorder.grad_rows = broken
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cb = Watch(flush_every=2, diagnose_online=False)
            hist = model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[cb])
    finally:
        recorder.grad_rows = original
    assert cb.monitor is not None
    # dL/dh that raises: the activation statistics are taken without it
    import gradguard.keras._activations as activations

    original_shift = activations.shift_gradients
    activations.shift_gradients = broken
    try:
        with warnings.catch_warnings(record=True) as caught_agn:
            warnings.simplefilter("always")
            cb2 = Watch(flush_every=2, detail_every=1, diagnose_online=False)
            model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[cb2])
    finally:
        activations.shift_gradients = original_shift
    assert cb2.monitor is not None and cb2.run is not None
    return {
        "moved": not all(np.array_equal(a, b) for a, b in zip(w0, weights(model))),
        "loss": [float(v) for v in hist.history["loss"]],
        "failures": dict(cb.monitor.failures),
        "warnings": [str(w.message) for w in caught if "gradguard" in str(w.message)],
        "agn_failures": dict(cb2.monitor.failures),
        "agn_warnings": [str(w.message) for w in caught_agn if "gradguard" in str(w.message)],
        "agn_metrics": sorted(cb2.run.metric_names),
    }


def case_errors() -> dict[str, str]:
    """Bad input: the message of each GradguardError (or 'no error')."""
    out = {}
    keras.utils.set_random_seed(4)
    model = dense()

    def msg(fn: Any) -> str:
        try:
            fn()
        except GradguardError as e:
            return f"{type(e).__name__}: {e}"
        return "no error"

    out["not_compiled"] = msg(lambda: gg.keras.watch(model))
    out["not_a_model"] = msg(lambda: gg.keras.watch(object(), keras.optimizers.SGD()))
    out["flush_every"] = msg(lambda: Watch(flush_every=0))
    out["check_bad_batch"] = msg(lambda: gg.keras.check(model, np.zeros((4, 3), "float32")))
    out["check_loss_without_y"] = msg(
        lambda: gg.keras.check(model, np.zeros((4, 64), "float32"), loss_fn=loss_fn())
    )
    out["no_weights"] = msg(
        lambda: gg.keras.watch(keras.Sequential([layers.Dense(3)]), keras.optimizers.SGD())
    )
    return out


def case_branched_update() -> dict[str, Any]:
    """TensorFlow runs the update inside the detail-step conditional (``detail_every`` > 1). A
    hand-written ``tf.function`` step (plain and under XLA), SGD(0.1) not built before its first
    ``apply`` (it is built outside the branches), ``detail_every=2``: on the detail steps the
    update's norm (update_ratio x weight_norm) is 0.1 x the gradient norm exactly, and the weight
    norm of step 0 is the initial weights' norm."""
    return {"xla" if jit else "graph": _branched_run(jit) for jit in (False, True)}


def _branched_run(jit: bool) -> dict[str, Any]:
    import tensorflow as tf

    x, y = digits(32)
    lf = keras.losses.CategoricalCrossentropy(from_logits=True)
    keras.utils.set_random_seed(3)
    model = dense()
    opt = keras.optimizers.SGD(0.1)
    w0 = [np.asarray(v.numpy(), dtype=np.float64) for v in model.trainable_variables]
    mon = gg.keras.watch(model, opt, flush_every=2, detail_every=2, diagnose_online=False)

    @tf.function(jit_compile=jit)
    def step(xb: Any, yb: Any) -> None:
        with tf.GradientTape() as tape:
            loss = lf(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply(grads, model.trainable_variables)

    with mon:
        for i in range(4):
            step(x[8 * i : 8 * i + 8], y[8 * i : 8 * i + 8])
            mon.step()
    run = mon.run
    gs, gv = run.metric(GRAD_NORM)
    ws, wv = run.metric(WEIGHT_NORM)
    us, uv = run.metric(UPDATE_RATIO)
    ok = np.isfinite(wv).all(axis=1)
    return {
        "failures": dict(mon.failures),
        "weight_steps": ws[ok].tolist(),
        "update_norm": (uv[ok] * wv[ok]).tolist(),
        "lr_grad_norm": (0.1 * gv[np.isin(gs, ws[ok])]).tolist(),
        "weight_norm_0": wv[0].tolist(),
        "ref_weight_norm_0": [
            float(np.sqrt(sum((w**2).sum() for w in w0[2 * k : 2 * k + 2]))) for k in range(3)
        ],
    }


def main() -> None:
    result: dict[str, Any] = {"backend": BACKEND}
    cases = sys.argv[2:] or ["gradients", "gradients_jit", "host_reads", "store", "errors"]
    out = Path(sys.argv[1])
    work = out.parent / f"{BACKEND}-work"  # the test reads the store file after this exits
    work.mkdir(parents=True, exist_ok=True)
    for case in cases:
        try:
            if case == "gradients":
                # fit's default step: tf.function (no XLA) on TensorFlow, jax.jit on JAX
                result[case] = case_gradients(jit=BACKEND == "jax")
            elif case == "gradients_jit":
                # XLA on TensorFlow (jit_compile=True); JAX's "gradients" already is jitted
                result[case] = case_gradients(jit=True, models=("dense", "cnn", "residual"))
            elif case == "host_reads":
                result[case] = case_host_reads()
            elif case == "store":
                result[case] = case_store(work)
            elif case == "detail":
                result[case] = case_detail()
            elif case == "custom_loop":
                result[case] = case_custom_loop(work)
            elif case == "branched_update":
                result[case] = case_branched_update()
            elif case == "failure_isolated":
                result[case] = case_failure_isolated()
            elif case == "lab":
                result[case] = case_lab()
            elif case == "check":
                result[case] = case_check()
            elif case == "diagnosis":
                result[case] = case_diagnosis(work)
            elif case == "errors":
                result[case] = case_errors()
        except Exception:
            result[case] = {"error": traceback.format_exc()}
    out.write_text(json.dumps(result))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
