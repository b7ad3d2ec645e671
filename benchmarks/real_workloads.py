"""Real-workload calibration of the diagnosis: gradguard's verdicts against an independent oracle.

    python benchmarks/real_workloads.py                 # every run (a few minutes on 2 cores)
    python benchmarks/real_workloads.py --split held-out
    python benchmarks/real_workloads.py --only gpt --markdown docs-table.md

Workloads (each small enough for a CPU): a GPT decoder written here (nanoGPT's layout, sized
down), an LSTM and a tanh-RNN language model, all character-level on real text that is on every
machine (the Python standard library's own source), a CNN and deep MLPs on scikit-learn's digits,
a tiny GPT-2 built from a config under the Hugging Face Trainer, and an LSTM LightningModule under
the Lightning Trainer. Each has healthy runs (several seeds, clipping on and off) and induced
failures: learning rate x10..x1000 (with and without reaching NaN), init scale up and down,
residual adds removed, deep sigmoid/tanh stacks, dead ReLUs (large negative bias), fp16 overflow,
a mid-run loss spike, an explosion in the first 5 steps.

**The oracle** labels every run from raw numbers the harness records itself, not from gradguard:
the loss of every step (``float(loss)``), the gradient of every parameter read after backward in
float64 (total norm, non-finite elements), the backpropagated signal dL/dh of every main
layer's output at step 0 (``retain_grad``, read after backward), and exact zeros after each ReLU from its own forward hooks. Its definitions are the
textbook ones (see :func:`oracle`). gradguard watches the same run (``gg.watch`` /
its Lightning and Hugging Face callbacks) with online diagnosis on; the final verdict is
``gg.diagnose`` on the recorded run.

A run is **right** when every oracle label is found at warning or worse by the final diagnosis,
no warning-or-worse finding falls outside the labels and their accepted consequences, online and
final diagnosis report the same kinds, and no two findings contradict each other. Runs are split
by seed: seed 0 is the calibration set (the DiagnosisConfig defaults were tuned on it), seeds 1
and 2 are held out.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import gradguard as gg
from gradguard.diagnosis import Finding, Severity

WARN = Severity.WARNING
ONLINE_LOG: list[tuple[int, Finding]] = []  # every online finding of this process: (step, finding)

# --------------------------------------------------------------------------- data
_TEXT_MODULES = ("textwrap", "argparse", "difflib", "inspect", "string", "fractions")


def corpus() -> str:
    """Characters of a few standard-library modules' source (present on every Python install)."""
    import importlib

    parts = []
    for name in _TEXT_MODULES:
        path = importlib.import_module(name).__file__
        if path and path.endswith(".py"):
            parts.append(Path(path).read_text(encoding="utf-8"))
    return "\n".join(parts)


class CharData:
    """Character-level language-model batches from :func:`corpus`."""

    def __init__(self) -> None:
        text = corpus()
        chars = sorted(set(text))
        self.vocab = len(chars)
        index = {c: i for i, c in enumerate(chars)}
        self.ids = torch.tensor([index[c] for c in text], dtype=torch.long)

    def batches(
        self, seed: int, batch: int = 16, seq: int = 32
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(1000 + seed)
        n = len(self.ids) - seq - 1
        while True:
            at = torch.randint(0, n, (batch,), generator=g)
            x = torch.stack([self.ids[i : i + seq] for i in at.tolist()])
            y = torch.stack([self.ids[i + 1 : i + seq + 1] for i in at.tolist()])
            yield x, y


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    return x, torch.tensor(d.target, dtype=torch.long)


def digit_batches(
    seed: int, batch: int = 64, image: bool = False
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    x, y = digits()
    if image:
        x = x.view(-1, 1, 8, 8)
    g = torch.Generator().manual_seed(2000 + seed)
    while True:
        at = torch.randint(0, len(x), (batch,), generator=g)
        yield x[at], y[at]


# --------------------------------------------------------------------------- models
class Block(nn.Module):
    def __init__(self, d: int, heads: int, residual: bool) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.heads, self.residual = heads, residual

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.attend(self.ln1(x))
        x = x + a if self.residual else a
        m = self.out(F.gelu(self.fc(self.ln2(x))))
        return x + m if self.residual else m


class GPT(nn.Module):
    """A decoder-only transformer in nanoGPT's layout (pre-LayerNorm blocks, tied embedding)."""

    def __init__(
        self,
        vocab: int,
        *,
        layers: int = 2,
        d: int = 48,
        heads: int = 4,
        seq: int = 32,
        residual: bool = True,
        init_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(seq, d)
        self.blocks = nn.ModuleList(Block(d, heads, residual) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.tok.weight
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, 0.0, 0.02 * init_scale)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.tok(x) + self.pos(torch.arange(x.shape[1]))
        for blk in self.blocks:
            h = blk(h)
        return self.head(self.ln(h))


class RecurrentLM(nn.Module):
    """Embedding -> LSTM or tanh RNN -> linear, the word_language_model layout at character level."""

    def __init__(
        self, vocab: int, kind: str, *, d: int = 64, layers: int = 1, init_scale: float = 1.0
    ) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        cls = nn.LSTM if kind == "lstm" else nn.RNN
        self.rnn = cls(d, d, layers, batch_first=True)
        self.head = nn.Linear(d, vocab)
        if init_scale != 1.0:
            with torch.no_grad():
                for p in self.rnn.parameters():
                    p.mul_(init_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(self.emb(x))[0])


def mlp(
    depth: int,
    act: type[nn.Module],
    *,
    width: int = 64,
    std: float | None = None,
    init: str = "default",
) -> nn.Sequential:
    mods: list[nn.Module] = []
    d = 64
    for i in range(depth):
        out = 10 if i == depth - 1 else width
        lin = nn.Linear(d, out)
        if std is not None:
            nn.init.normal_(lin.weight, 0.0, std)
            nn.init.zeros_(lin.bias)
        elif init == "he":
            nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
            nn.init.zeros_(lin.bias)
        elif init == "xavier":  # Keras's default (glorot_uniform, zero bias)
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)
        mods.append(lin)
        if i < depth - 1:
            mods.append(act())
        d = out
    return nn.Sequential(*mods)


def cnn(*, dead_bias: float | None = None) -> nn.Sequential:
    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 16, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )
    if dead_bias is not None:
        with torch.no_grad():
            for m in list(net)[:-1]:  # every layer before a ReLU
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    m.bias.fill_(dead_bias)
    return net


# --------------------------------------------------------------------------- the oracle
@dataclass
class Trace:
    """Raw numbers the harness records itself at every optimizer step (float64)."""

    loss: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)  # total, float64, before clipping
    grad_nonfinite: list[bool] = field(default_factory=list)
    signal: list[float] = field(default_factory=list)  # |dL/dh| per example, main modules, step 0
    signal_end: list[float] = field(default_factory=list)  # the same at the last step
    dead: dict[str, list[float]] = field(default_factory=dict)  # ReLU name -> zero frac per step
    saturated: dict[str, list[float]] = field(
        default_factory=dict
    )  # tanh/sigmoid -> frac at bounds

    def record_grads(self, params: list[nn.Parameter]) -> None:
        gs = [p.grad.detach().double() for p in params if p.grad is not None]
        bad = any(not bool(torch.isfinite(g).all()) for g in gs)
        with torch.no_grad():
            finite = [torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0) for g in gs]
            norm = math.sqrt(sum(float((g * g).sum()) for g in finite))
        self.grad_nonfinite.append(bad)
        self.grad_norm.append(norm)


class SignalProbe:
    """dL/dh of every main module's output at one step, by autograd (``retain_grad``)."""

    def __init__(self, modules: list[nn.Module]) -> None:
        self.outputs: list[torch.Tensor] = []
        self.handles = [m.register_forward_hook(self._keep) for m in modules]

    def _keep(self, _m: nn.Module, _i: object, out: object) -> None:
        t = out[0] if isinstance(out, tuple) else out
        if isinstance(t, torch.Tensor) and t.requires_grad:
            t.retain_grad()
            self.outputs.append(t)

    def read(self) -> list[float]:
        for h in self.handles:
            h.remove()
        return [
            float(t.grad.double().norm() / math.sqrt(t.shape[0])) if t.grad is not None else 0.0
            for t in self.outputs
        ]


def unit_probe(model: nn.Module, trace: Trace) -> list[torch.utils.hooks.RemovableHandle]:
    """The harness's own forward hooks: exact zeros after every ReLU, outputs within 1% of the
    bounds after every tanh/sigmoid."""
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, nn.ReLU):

            def dead(_m: nn.Module, _i: object, out: torch.Tensor, name: str = name) -> None:
                trace.dead.setdefault(name, []).append(float((out.detach() == 0).float().mean()))

            handles.append(m.register_forward_hook(dead))
        elif isinstance(m, (nn.Tanh, nn.Sigmoid)):
            lo = -1.0 if isinstance(m, nn.Tanh) else 0.0

            def sat(
                _m: nn.Module, _i: object, out: torch.Tensor, name: str = name, lo: float = lo
            ) -> None:
                o = out.detach().float()
                near = (o >= 1.0 - 0.01 * (1.0 - lo)) | (o <= lo + 0.01 * (1.0 - lo))
                trace.saturated.setdefault(name, []).append(float(near.float().mean()))

            handles.append(m.register_forward_hook(sat))
    return handles


# What each kind may bring along (a consequence, not a false finding) when the oracle labels it.
# A label that is a consequence of another label gradguard found is not required on its own.
CONSEQUENCES: dict[str, set[str]] = {
    "nonfinite": {"divergence", "exploding_gradients", "dead_units", "saturation"},
    "divergence": {"exploding_gradients", "dead_units", "saturation"},
    "exploding_gradients": {"divergence", "saturation", "dead_units"},
    "vanishing_gradients": {"stalled_learning", "saturation"},
    "dead_units": {"stalled_learning", "vanishing_gradients"},
    "saturation": {"stalled_learning", "vanishing_gradients"},
    "stalled_learning": {"vanishing_gradients", "saturation", "dead_units"},
}


def oracle(t: Trace) -> set[str]:
    """Ground truth from the raw numbers, by the textbook definitions.

    - nonfinite: a loss or a gradient element is NaN/Inf (the values, in float64 -- not a
      statistic that overflowed).
    - divergence: over the finite losses, the mean of the last tenth (>= 5 steps) or a 10-step
      moving average at any time is above the loss at initialisation (the first loss, or the
      mean of the first 3 if lower) by > 10% (worse than at initialisation), or a 10-step moving average rises to >= 2x its minimum before it by more
      than a third of the descent to that minimum, or one loss is >= 10x the median of the 10
      before it and above the loss at initialisation (a hard mini-batch near zero loss is not).
    - exploding_gradients: the float64 total gradient norm reaches >= 100x the median of the
      first 3 steps and either the loss broke (divergence, nonfinite) or the peak is also >= 100x
      the run's median norm (over time; not a net escaping a tiny initial gradient), or the first main layer's |dL/dh| is >= 100x
      the last one's (over depth; |dL/dh| of the main layers' outputs at the first or the last
      step).
    - vanishing_gradients: at the first or the last step the first main layer's |dL/dh| is
      <= 1/100 of the last one's (or exactly zero).
    Runs under the Hugging Face and Lightning trainers get no depth measurement (the harness does
    not reach into their forward): a depth finding there is neither right nor wrong.
    - dead_units: some ReLU's outputs are >= 90% exact zeros on average over the run.
    - saturation: some tanh/sigmoid's outputs lie >= 40% within 1% of their bounds on average.
    - stalled_learning: none of the above about the loss, and the last tenth's mean fell < 2%
      from the first 3's.
    """
    labels: set[str] = set()
    loss = np.asarray(t.loss, dtype=np.float64)
    if not np.all(np.isfinite(loss)) or any(t.grad_nonfinite):
        labels.add("nonfinite")
    fl = loss[np.isfinite(loss)]
    if len(fl) >= 20:
        k = max(5, len(fl) // 10)
        first, last = min(float(fl[0]), float(np.mean(fl[:3]))), float(np.mean(fl[-k:]))
        ma = np.convolve(fl, np.ones(10) / 10, mode="valid")
        runmin = np.minimum.accumulate(ma)
        descent = np.maximum(first - runmin, 0.0)
        rose = np.any((ma >= 2 * runmin) & (ma - runmin > descent / 3) & (runmin > 0))
        med10 = np.array([np.median(fl[max(0, i - 10) : i]) for i in range(10, len(fl))])
        spiked = np.any((fl[10:] >= 10 * np.abs(med10)) & (fl[10:] > first))
        above = bool(np.any(ma > first * 1.1))  # worse than at initialisation, at any time
        if last > first * 1.1 or above or rose or spiked:
            labels.add("divergence")
        elif last > first * 0.98:
            labels.add("stalled_learning")
    g = np.asarray(t.grad_norm, dtype=np.float64)
    g = g[np.isfinite(g) & (g > 0)]
    # growth from the first steps counts when it is not a net escaping a tiny initial gradient:
    # the loss broke, or the peak is far above the run's typical norm too
    if (
        len(g) >= 4
        and g.max() >= 100 * np.median(g[:3])
        and (labels & {"nonfinite", "divergence"} or g.max() >= 100 * np.median(g))
    ):
        labels.add("exploding_gradients")
    for prof in (t.signal, t.signal_end):  # at initialisation and at the end of the run
        d = np.asarray(prof, dtype=np.float64)
        if len(d) >= 4 and np.isfinite(d[[0, -1]]).all() and d[-1] > 0:
            ratio = d[0] / d[-1]
            if ratio <= 1e-2:
                labels.add("vanishing_gradients")
            elif ratio >= 1e2:
                labels.add("exploding_gradients")
    if t.dead and max(float(np.mean(v)) for v in t.dead.values()) >= 0.9:
        labels.add("dead_units")
    if t.saturated and max(float(np.mean(v)) for v in t.saturated.values()) >= 0.4:
        labels.add("saturation")
    if labels & {"vanishing_gradients", "dead_units", "nonfinite"}:
        labels.discard("stalled_learning")  # the cause is named; a stall is its consequence
    return labels


def contradictions(kinds: set[str], findings: list[Finding]) -> list[str]:
    """Pairs of findings that cannot both be true of one run."""
    out = []
    depth_explode = any(
        f.kind == "exploding_gradients" and f.layers for f in findings if f.severity >= WARN
    )
    if "vanishing_gradients" in kinds and depth_explode:
        out.append("vanishing and exploding over the same depth axis")
    if "stalled_learning" in kinds and "divergence" in kinds:
        out.append("stalled and diverging")
    if "healthy" in {f.kind for f in findings} and kinds:
        out.append("healthy next to a warning")
    return out


# --------------------------------------------------------------------------- one run
@dataclass
class Result:
    name: str
    family: str
    seed: int
    labels: set[str]
    final: set[str]
    online: set[str]
    findings: list[Finding]
    online_steps: dict[str, int]
    onset: int | None
    seconds: float
    trace: Trace | None = None
    run: gg.Run | None = None

    @property
    def split(self) -> str:
        return "calibration" if self.seed == 0 else "held-out"

    @property
    def problems(self) -> list[str]:
        out = []
        explained = set().union(*(CONSEQUENCES.get(k, set()) for k in self.labels & self.final))
        missing = {k for k in self.labels if k not in self.final} - explained
        if missing:
            out.append("missed " + ", ".join(sorted(missing)))
        allowed = set(self.labels).union(*(CONSEQUENCES.get(k, set()) for k in self.labels))
        extra = self.final - allowed
        if self.trace is not None and not self.trace.signal:  # no depth oracle for this run
            depth = {f.kind for f in self.findings if f.layers and f.severity >= WARN}
            extra -= depth & {"vanishing_gradients", "exploding_gradients"}
        if extra:
            out.append("false " + ", ".join(sorted(extra)))
        if self.online != self.final:
            out.append(f"online {sorted(self.online)} != final {sorted(self.final)}")
        out.extend(contradictions(self.final, self.findings))
        return out

    @property
    def right(self) -> bool:
        return not self.problems


Step = Callable[[int], None]


def watched_loop(
    model: nn.Module,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    *,
    steps: int,
    lr: float,
    optimizer: str = "adam",
    clip: float | None = None,
    main: list[nn.Module] | None = None,
    lr_at: Callable[[int], float] | None = None,
    loss_scale_at: Callable[[int], float] | None = None,
    autocast: torch.dtype | None = None,
    input_scale: float = 1.0,
) -> tuple[Trace, gg.Run, dict[str, int]]:
    """Train under gg.watch (online diagnosis on) and record the oracle's raw numbers."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt: torch.optim.Optimizer = (
        torch.optim.Adam(params, lr=lr)
        if optimizer == "adam"
        else torch.optim.SGD(params, lr=lr, momentum=0.9)
    )
    trace, online = Trace(), {}
    handles = unit_probe(model, trace)
    step = 0

    def seen(f: Finding) -> None:
        online.setdefault(f.kind, step)
        ONLINE_LOG.append((step, f))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with gg.watch(model, opt, on_finding=seen, flush_every=10 if steps <= 200 else 100) as mon:
            for step in range(steps):
                x, y = next(batches)
                if input_scale != 1.0:
                    x = x * input_scale
                if lr_at is not None:
                    for group in opt.param_groups:
                        group["lr"] = lr_at(step)
                ctx = (
                    torch.autocast("cpu", dtype=autocast)
                    if autocast
                    else torch.autocast("cpu", enabled=False)
                )
                probe = SignalProbe(main) if step in (0, steps - 1) and main else None
                with ctx:
                    out = model(x)
                    loss = F.cross_entropy(out.float().reshape(-1, out.shape[-1]), y.reshape(-1))
                if loss_scale_at is not None:
                    loss = loss * loss_scale_at(step)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                trace.loss.append(float(loss.detach()))
                trace.record_grads(params)
                if probe is not None:
                    if step == 0:
                        trace.signal = probe.read()
                    else:
                        trace.signal_end = probe.read()
                if clip is not None:
                    mon.take_gradients_now()
                    torch.nn.utils.clip_grad_norm_(params, clip)
                opt.step()
                mon.log(loss=loss)
            run = mon.run
    for h in handles:
        h.remove()
    return trace, run, online


def finish(
    name: str, family: str, seed: int, trace: Trace, run: gg.Run, online: dict[str, int], t0: float
) -> Result:
    findings = gg.diagnose(run)
    final = {f.kind for f in findings if f.severity >= WARN}
    onset = None
    for f in findings:
        if f.kind == "divergence" and f.data.get("onset_step") is not None:
            onset = int(f.data["onset_step"])
    return Result(
        name,
        family,
        seed,
        oracle(trace),
        final,
        set(online),
        findings,
        online,
        onset,
        time.perf_counter() - t0,
        trace,
        run,
    )


# --------------------------------------------------------------------------- the workloads
_CHARS: CharData | None = None


def chars() -> CharData:
    global _CHARS
    if _CHARS is None:
        _CHARS = CharData()
    return _CHARS


def torch_case(
    build: Callable[[int], tuple[nn.Module, Iterator, list[nn.Module]]], **loop: object
) -> Callable[[str, str, int, int], Result]:
    def run(name: str, family: str, seed: int, steps: int) -> Result:
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        model, batches, main = build(seed)
        trace, rec, online = watched_loop(model, batches, steps=steps, main=main, **loop)  # type: ignore[arg-type]
        return finish(name, family, seed, trace, rec, online, t0)

    return run


def gpt(
    batch: int = 16, **kw: object
) -> Callable[[int], tuple[nn.Module, Iterator, list[nn.Module]]]:
    def build(seed: int) -> tuple[nn.Module, Iterator, list[nn.Module]]:
        m = GPT(chars().vocab, **kw)  # type: ignore[arg-type]
        return m, chars().batches(seed, batch=batch), list(m.blocks)

    return build


def rnn(
    kind: str, batch: int = 16, seq: int = 32, **kw: object
) -> Callable[[int], tuple[nn.Module, Iterator, list[nn.Module]]]:
    def build(seed: int) -> tuple[nn.Module, Iterator, list[nn.Module]]:
        m = RecurrentLM(chars().vocab, kind, **kw)  # type: ignore[arg-type]
        return m, chars().batches(seed, batch=batch, seq=seq), []

    return build


def digits_mlp(
    depth: int, act: type[nn.Module], batch: int = 64, **kw: object
) -> Callable[[int], tuple[nn.Module, Iterator, list[nn.Module]]]:
    def build(seed: int) -> tuple[nn.Module, Iterator, list[nn.Module]]:
        m = mlp(depth, act, **kw)  # type: ignore[arg-type]
        return m, digit_batches(seed, batch=batch), [x for x in m if isinstance(x, nn.Linear)]

    return build


def digits_cnn(**kw: object) -> Callable[[int], tuple[nn.Module, Iterator, list[nn.Module]]]:
    def build(seed: int) -> tuple[nn.Module, Iterator, list[nn.Module]]:
        m = cnn(**kw)  # type: ignore[arg-type]
        return (
            m,
            digit_batches(seed, image=True),
            [x for x in m if isinstance(x, (nn.Conv2d, nn.Linear))],
        )

    return build


def hf_case(lr: float, clip: float) -> Callable[[str, str, int, int], Result]:
    """A tiny GPT-2 from a config under the Hugging Face Trainer with gradguard's callback."""

    def run(name: str, family: str, seed: int, steps: int) -> Result:
        from transformers import (
            GPT2Config,
            GPT2LMHeadModel,
            PrinterCallback,
            Trainer,
            TrainerCallback,
            TrainingArguments,
        )
        from transformers.utils import logging as hf_logging

        from gradguard.integrations.transformers import GradguardCallback

        hf_logging.set_verbosity_error()
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        data = chars()
        it = data.batches(seed, batch=1)
        rows = [next(it)[0][0] for _ in range(16 * steps)]
        dataset = [{"input_ids": r, "labels": r} for r in rows]
        model = GPT2LMHeadModel(
            GPT2Config(vocab_size=data.vocab, n_positions=32, n_embd=32, n_layer=2, n_head=2)
        )
        trace, online = Trace(), {}
        params = [p for p in model.parameters() if p.requires_grad]

        class Grads(TrainerCallback):  # type: ignore[misc]
            def on_pre_optimizer_step(
                self, args: object, state: object, control: object, **kw: object
            ) -> None:
                trace.record_grads(params)

        class Recording(Trainer):  # type: ignore[misc]
            def compute_loss(
                self, model: nn.Module, inputs: dict, return_outputs: bool = False, **kw: object
            ):  # type: ignore[no-untyped-def]
                out = super().compute_loss(model, inputs, return_outputs=return_outputs, **kw)
                loss = out[0] if return_outputs else out
                trace.loss.append(float(loss.detach()))
                return out

        def seen(f: Finding) -> None:
            online.setdefault(f.kind, len(trace.loss))
            ONLINE_LOG.append((len(trace.loss), f))

        cb = GradguardCallback(show_findings=False, on_finding=seen, flush_every=10)
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            args = TrainingArguments(
                output_dir=tmp,
                max_steps=steps,
                per_device_train_batch_size=16,
                learning_rate=lr,
                max_grad_norm=clip,
                logging_steps=10,
                report_to=[],
                save_strategy="no",
                use_cpu=True,
                seed=seed,
                disable_tqdm=True,
                lr_scheduler_type="constant",
            )
            trainer = Recording(
                model=model, args=args, train_dataset=dataset, callbacks=[cb, Grads()]
            )
            trainer.remove_callback(PrinterCallback)  # no dict per logging step on stdout
            trainer.train()
        assert cb.monitor is not None
        return finish(name, family, seed, trace, cb.monitor.run, online, t0)

    return run


def lightning_case(lr: float) -> Callable[[str, str, int, int], Result]:
    """An LSTM language model as a LightningModule under the Lightning Trainer."""

    def run(name: str, family: str, seed: int, steps: int) -> Result:
        import lightning as L

        from gradguard.integrations.lightning import GradguardCallback

        t0 = time.perf_counter()
        torch.manual_seed(seed)
        data = chars()
        trace, online = Trace(), {}

        class LM(L.LightningModule):
            def __init__(self) -> None:
                super().__init__()
                self.net = RecurrentLM(data.vocab, "lstm")

            def training_step(
                self, batch: tuple[torch.Tensor, torch.Tensor], _i: int
            ) -> torch.Tensor:
                x, y = batch
                out = self.net(x)
                loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
                trace.loss.append(float(loss.detach()))
                return loss

            def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
                trace.record_grads(list(self.parameters()))

            def configure_optimizers(self) -> torch.optim.Optimizer:
                return torch.optim.Adam(self.parameters(), lr=lr)

        it = data.batches(seed)
        loader = [next(it) for _ in range(steps)]

        def seen(f: Finding) -> None:
            online.setdefault(f.kind, len(trace.loss))
            ONLINE_LOG.append((len(trace.loss), f))

        cb = GradguardCallback(
            show_findings=False, log_to_logger=False, on_finding=seen, flush_every=10
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer = L.Trainer(
                max_steps=steps,
                accelerator="cpu",
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                callbacks=[cb],
            )
            trainer.fit(
                LM(), train_dataloaders=torch.utils.data.DataLoader(loader, batch_size=None)
            )
        assert cb.monitor is not None
        return finish(name, family, seed, trace, cb.monitor.run, online, t0)

    return run


def _early_lr(base: float, factor: float, until: int = 5) -> Callable[[int], float]:
    return lambda step: base * factor if step < until else base


def _spike_at(step_k: int, scale: float) -> Callable[[int], float]:
    return lambda step: scale if step == step_k else 1.0


@dataclass(frozen=True)
class Case:
    name: str
    family: str
    run: Callable[[str, str, int, int], Result]
    steps: int = 150


CASES: tuple[Case, ...] = (
    # GPT decoder, character-level on the stdlib's source
    Case("gpt healthy, clip 1", "gpt", torch_case(gpt(), lr=3e-3, clip=1.0)),
    Case("gpt healthy, no clip", "gpt", torch_case(gpt(), lr=3e-3)),
    Case("gpt lr x100 (0.3)", "gpt", torch_case(gpt(), lr=0.3)),
    Case("gpt lr x1000 sgd (30)", "gpt", torch_case(gpt(), lr=30.0, optimizer="sgd")),
    Case(
        "gpt 8 blocks, no residual, init x0.1",
        "gpt",
        torch_case(gpt(layers=8, residual=False, init_scale=0.1), lr=3e-3),
    ),
    # recurrent language models
    Case("lstm healthy, clip 1", "lstm", torch_case(rnn("lstm"), lr=3e-3, clip=1.0)),
    Case("lstm healthy, no clip", "lstm", torch_case(rnn("lstm"), lr=3e-3)),
    Case("lstm lr x1000 (3)", "lstm", torch_case(rnn("lstm"), lr=3.0)),
    Case("rnn healthy, clip 1", "rnn", torch_case(rnn("rnn"), lr=2e-3, clip=1.0)),
    Case(
        "rnn sgd lr 20, clip 0.25",
        "rnn",
        torch_case(rnn("rnn"), lr=20.0, optimizer="sgd", clip=0.25),
    ),
    Case(
        "rnn explodes in its first 5 steps",
        "rnn",
        torch_case(rnn("rnn"), lr=2e-3, lr_at=_early_lr(2e-3, 1000.0)),
    ),
    Case("rnn init x4", "rnn", torch_case(rnn("rnn", init_scale=4.0), lr=2e-3)),
    # digits: CNN and deep MLPs
    Case("cnn healthy adam", "cnn", torch_case(digits_cnn(), lr=1e-3)),
    Case("cnn healthy sgd", "cnn", torch_case(digits_cnn(), lr=0.05, optimizer="sgd")),
    Case("cnn dead relus (bias -5)", "cnn", torch_case(digits_cnn(dead_bias=-5.0), lr=1e-3)),
    Case(
        "cnn loss spike x1e6 at step 60",
        "cnn",
        torch_case(digits_cnn(), lr=0.05, optimizer="sgd", loss_scale_at=_spike_at(60, 1e6)),
    ),
    Case("mlp 20 sigmoid", "mlp", torch_case(digits_mlp(20, nn.Sigmoid), lr=1e-3)),
    Case("mlp 20 relu he", "mlp", torch_case(digits_mlp(20, nn.ReLU, init="he"), lr=1e-3)),
    Case("mlp 12 tanh std 1", "mlp", torch_case(digits_mlp(12, nn.Tanh, std=1.0), lr=1e-3)),
    Case("mlp 8 relu std 1", "mlp", torch_case(digits_mlp(8, nn.ReLU, std=1.0), lr=1e-3)),
    Case(
        "mlp 6 relu std 0.5, fp16 autocast overflow",
        "mlp",
        torch_case(
            digits_mlp(6, nn.ReLU, std=0.5), lr=1e-3, autocast=torch.float16, input_scale=1e3
        ),
    ),
    Case(
        "mlp 4 relu sgd lr x100 (5)",
        "mlp",
        torch_case(digits_mlp(4, nn.ReLU), lr=5.0, optimizer="sgd"),
    ),
    # the frameworks users run
    Case("hf gpt2 healthy", "hf", hf_case(1e-3, 1.0), steps=60),
    Case("hf gpt2 lr 0.5, no clip", "hf", hf_case(0.5, 0.0), steps=60),
    Case("lightning lstm healthy", "lightning", lightning_case(3e-3), steps=80),
    Case("lightning lstm lr x1000", "lightning", lightning_case(3.0), steps=80),
)


def warmup_cosine(base: float, warm: int, total: int) -> Callable[[int], float]:
    """Linear warm-up over ``warm`` steps, then cosine decay to 0 at ``total``."""

    def lr(step: int) -> float:
        if step < warm:
            return base * (step + 1) / warm
        return base * 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    return lr


# The healthy-run corpus: no warning-or-worse finding may fire on any of these, online or final.
# 25, 1,000 and 20,000 steps; SGD and Adam; noisy mini-batches (batch 4-8); warm-up + cosine.
HEALTHY: tuple[Case, ...] = (
    Case("mlp 3 relu adam", "mlp", torch_case(digits_mlp(3, nn.ReLU), lr=1e-3), steps=25),
    Case(
        "mlp 3 relu sgd",
        "mlp",
        torch_case(digits_mlp(3, nn.ReLU), lr=0.05, optimizer="sgd"),
        steps=25,
    ),
    Case("cnn adam", "cnn", torch_case(digits_cnn(), lr=1e-3), steps=25),
    # deep and wide: trained to a loss ~100x below ln 10, dL/dh grows ~1.4x per layer toward
    # the input (a mild depth gain learned, not an explosion at init)
    Case(
        "mlp 9 relu he, width 256, adam",
        "mlp",
        torch_case(digits_mlp(9, nn.ReLU, width=256, init="he"), lr=1e-3),
        steps=300,
    ),
    Case(
        "mlp 9 relu xavier, width 256, adam",
        "mlp",
        torch_case(digits_mlp(9, nn.ReLU, width=256, init="xavier"), lr=1e-3),
        steps=300,
    ),
    Case("lstm adam", "lstm", torch_case(rnn("lstm"), lr=3e-3), steps=25),
    Case("gpt adam", "gpt", torch_case(gpt(), lr=3e-3), steps=25),
    Case(
        "mlp 3 relu adam, batch 4, warm-up + cosine",
        "mlp",
        torch_case(digits_mlp(3, nn.ReLU, batch=4), lr=1e-3, lr_at=warmup_cosine(1e-3, 100, 1000)),
        steps=1000,
    ),
    Case(
        "mlp 4 tanh sgd, batch 8",
        "mlp",
        torch_case(digits_mlp(4, nn.Tanh, batch=8), lr=0.02, optimizer="sgd"),
        steps=1000,
    ),
    Case("cnn sgd", "cnn", torch_case(digits_cnn(), lr=0.02, optimizer="sgd"), steps=1000),
    Case(
        "lstm sgd, clip 1",
        "lstm",
        torch_case(rnn("lstm", batch=8, seq=16, d=32), lr=0.5, optimizer="sgd", clip=1.0),
        steps=1000,
    ),
    Case(
        "gpt adam, warm-up + cosine",
        "gpt",
        torch_case(gpt(batch=8, d=32), lr=3e-3, clip=1.0, lr_at=warmup_cosine(3e-3, 100, 1000)),
        steps=1000,
    ),
    Case(
        "mlp 2 relu adam, batch 16, cosine",
        "mlp",
        torch_case(
            digits_mlp(2, nn.ReLU, batch=16, width=16),
            lr=3e-3,
            lr_at=warmup_cosine(3e-3, 200, 20000),
        ),
        steps=20000,
    ),
    Case(
        "lstm adam, tiny",
        "lstm",
        torch_case(rnn("lstm", batch=4, seq=8, d=16), lr=3e-3),
        steps=20000,
    ),
)
SEEDS = (0, 1, 2)
FAST = (
    "gpt healthy, clip 1",
    "rnn explodes in its first 5 steps",
    "cnn dead relus (bias -5)",
    "mlp 20 sigmoid",
)


def run_all(cases: tuple[Case, ...], seeds: tuple[int, ...], progress: bool = True) -> list[Result]:
    out = []
    jobs = [(c, s) for c in cases for s in seeds]
    for i, (c, s) in enumerate(jobs, 1):
        r = c.run(c.name, c.family, s, c.steps)
        out.append(r)
        if progress:
            mark = "ok " if r.right else "BAD"
            print(
                f"[{i}/{len(jobs)}] {mark} {c.name} seed {s} ({r.seconds:.1f} s) "
                f"oracle={sorted(r.labels) or ['healthy']} final={sorted(r.final) or ['healthy']}"
                + ("" if r.right else f"  <- {'; '.join(r.problems)}"),
                file=sys.stderr,
                flush=True,
            )
    return out


def markdown(results: list[Result]) -> str:
    lines = [
        "| run | seed | split | oracle | online | final | right |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lab = ", ".join(sorted(r.labels)) or "healthy"
        onl = ", ".join(f"{k}@{v}" for k, v in sorted(r.online_steps.items())) or "—"
        fin = ", ".join(sorted(r.final)) or "healthy"
        ok = "yes" if r.right else "**no**: " + "; ".join(r.problems)
        lines.append(f"| {r.name} | {r.seed} | {r.split} | {lab} | {onl} | {fin} | {ok} |")
    lines.append("")
    for split in ("calibration", "held-out"):
        rs = [r for r in results if r.split == split]
        if not rs:
            continue
        healthy = [r for r in rs if not r.labels]
        false_alarms = sum(bool(r.final or r.online) for r in healthy)
        failures = [r for r in rs if r.labels]
        detected = sum(not any(p.startswith("missed") for p in r.problems) for r in failures)
        lines.append(
            f"- **{split}**: {sum(r.right for r in rs)}/{len(rs)} runs right; "
            f"{detected}/{len(failures)} induced failures detected with the right kind; "
            f"{false_alarms}/{len(healthy)} healthy runs with a warning-or-worse finding; "
            f"online = final on {sum(r.online == r.final for r in rs)}/{len(rs)}"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", choices=("all", "calibration", "held-out"), default="all")
    ap.add_argument("--only", help="run the cases whose name or family contains this text")
    ap.add_argument("--fast", action="store_true", help="the test suite's subset, seed 0")
    ap.add_argument(
        "--healthy", action="store_true", help="the healthy-run corpus instead (seeds as --split)"
    )
    ap.add_argument("--steps", type=int, help="override every case's step count")
    ap.add_argument(
        "--seeds", help="comma-separated seeds instead of --split's (e.g. 3,4: never looked at)"
    )
    ap.add_argument("--markdown", type=Path, help="also write the table to this file")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    cases = HEALTHY if a.healthy else CASES
    if a.fast:
        cases = tuple(c for c in CASES if c.name in FAST)
    if a.only:
        cases = tuple(c for c in cases if a.only in c.name or a.only == c.family)
    if a.steps:
        cases = tuple(Case(c.name, c.family, c.run, a.steps) for c in cases)
    seeds = {"all": SEEDS, "calibration": (0,), "held-out": SEEDS[1:]}[a.split]
    if a.seeds:
        seeds = tuple(int(x) for x in a.seeds.split(","))
    if a.fast:
        seeds = (0,)
    table = markdown(run_all(cases, seeds))
    print(table)
    if a.markdown:
        a.markdown.write_text(table)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
