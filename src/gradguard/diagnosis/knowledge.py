"""The remedies knowledge base: which technique helps against which finding, ranked by evidence.

Every technique practitioners are taught against vanishing and exploding gradients is one
:class:`Technique` in :data:`TECHNIQUES` (a name and a one-line how-to in gradguard or torch).
:func:`remedies_for` turns a finding kind plus what is known about the model (activation,
saturation, learning rate, recurrence, normalisation, residuals, depth, optimizer, spikes) into a
ranked tuple of :class:`~gradguard.diagnosis.finding.Remedy`, best first, each with a *why* that
fits the evidence: a sigmoid net that saturates gets "change the activation" first; a spike at a
high learning rate gets clipping and a lower learning rate first; dead ReLUs get Leaky ReLU, a
lower learning rate and He init.

>>> [r.name for r in remedies_for("vanishing_gradients", activation="sigmoid", saturation=True)][:2]
['ReLU-family activation', 'residual (skip) connections']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gradguard.diagnosis.finding import Remedy
from gradguard.errors import ConfigError
from gradguard.model.activations import SATURATING, family, kind_of
from gradguard.model.schemes import Scheme

__all__ = [
    "Technique",
    "Context",
    "TECHNIQUES",
    "KERAS_HOW",
    "KINDS",
    "remedies_for",
    "activation_family",
]


@dataclass(frozen=True)
class Technique:
    """One remedy a practitioner can apply: a short name and a one-line how-to."""

    key: str
    name: str
    how: str


_T = Technique
TECHNIQUES: dict[str, Technique] = {
    t.key: t
    for t in (
        _T(
            "relu_family",
            "ReLU-family activation",
            "replace nn.Sigmoid()/nn.Tanh() by nn.ReLU(), nn.LeakyReLU(0.01), nn.ELU() or nn.GELU()",
        ),
        _T(
            "leaky_relu",
            "Leaky ReLU / ELU / GELU",
            "replace nn.ReLU() by nn.LeakyReLU(0.01) (or nn.ELU(), nn.GELU())",
        ),
        _T("he_init", "He (Kaiming) initialisation", f'gg.init_(model, "{Scheme.HE.value}")'),
        _T(
            "xavier_init",
            "Xavier (Glorot) initialisation",
            f'gg.init_(model, "{Scheme.XAVIER.value}")',
        ),
        _T(
            "orthogonal_init",
            "orthogonal initialisation",
            f'gg.init_(model, "{Scheme.ORTHOGONAL.value}")',
        ),
        _T(
            "lsuv_init",
            "LSUV initialisation",
            f'gg.init_(model, "{Scheme.LSUV.value}", data=batch)',
        ),
        _T(
            "batchnorm",
            "BatchNorm",
            "insert nn.BatchNorm1d(d) (nn.BatchNorm2d(c) for convs) between each layer and its activation",
        ),
        _T(
            "layernorm",
            "LayerNorm",
            "insert nn.LayerNorm(d) at the input of each block (pre-norm)",
        ),
        _T(
            "residual",
            "residual (skip) connections",
            "make each block compute x = x + block(x) (widths must match)",
        ),
        _T(
            "gated_rnn",
            "LSTM/GRU instead of a vanilla RNN",
            "nn.LSTM(input_size, hidden_size) or nn.GRU(input_size, hidden_size) in place of nn.RNN",
        ),
        _T(
            "clip_norm",
            "gradient norm clipping",
            "norm = gg.clip.Norm(1.0)(model.parameters()) between backward() and opt.step()",
        ),
        _T(
            "clip_value",
            "gradient value clipping",
            "gg.clip.Value(0.5)(model.parameters()) between backward() and opt.step()",
        ),
        _T(
            "clip_adaptive",
            "adaptive clipping (AutoClip / ZClip / AGC)",
            "gg.clip.AutoClip(), gg.clip.ZClip() or gg.clip.AGC() in place of a fixed threshold",
        ),
        _T(
            "lower_lr",
            "a lower learning rate",
            "divide lr by 3-10: for g in opt.param_groups: g['lr'] *= 0.1",
        ),
        _T(
            "lr_warmup",
            "learning-rate warm-up",
            "torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.01, total_iters=1000)",
        ),
        _T(
            "raise_lr",
            "a larger learning rate",
            "multiply lr by 3-10 (or run a learning-rate range test) while the loss still falls",
        ),
        _T(
            "adaptive_optimizer",
            "an adaptive optimizer (Adam, RMSprop, Adagrad)",
            "torch.optim.Adam(model.parameters(), lr=1e-3) (or RMSprop, Adagrad)",
        ),
        _T(
            "weight_decay",
            "L2 weight decay",
            "torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)",
        ),
        _T(
            "less_depth",
            "fewer layers",
            "drop layers until the gradient reaches the first one, then add them back with the fixes above",
        ),
        _T(
            "guard",
            "skip bad steps",
            "guard = gg.Guard(model, opt); call guard.step() instead of opt.step()",
        ),
        _T(
            "locate",
            "locate the first non-finite operation",
            "print(gg.locate_nonfinite(model, x, loss_fn, y)) on the failing batch",
        ),
        _T(
            "stable_numerics",
            "numerically stable operations",
            "use nn.BCEWithLogitsLoss / F.log_softmax, add eps to divisions, logs and sqrt; "
            "torch.amp.GradScaler under fp16",
        ),
    )
}

# The same techniques in Keras 3, for runs recorded from Keras (run config ``framework="keras"``,
# written by gradguard.keras). A technique missing here reads the same in both frameworks.
KERAS_HOW: dict[str, str] = {
    "relu_family": 'activation="relu" (or "elu", "gelu", keras.layers.LeakyReLU(negative_slope=0.01)) in place of "sigmoid"/"tanh"',
    "leaky_relu": 'keras.layers.LeakyReLU(negative_slope=0.01) (or activation="elu" / "gelu") in place of "relu"',
    "he_init": 'kernel_initializer="he_normal" on each Dense/Conv layer',
    "xavier_init": 'kernel_initializer="glorot_uniform" on each Dense/Conv layer',
    "orthogonal_init": 'recurrent_initializer="orthogonal" (and kernel_initializer="orthogonal")',
    "lsuv_init": "rescale each layer's kernel until its output variance is 1 on a real batch (LSUV; no Keras built-in)",
    "batchnorm": "insert keras.layers.BatchNormalization() between each layer and its activation",
    "layernorm": "insert keras.layers.LayerNormalization() at the input of each block (pre-norm)",
    "residual": "x = keras.layers.Add()([x, block(x)]) around each block (widths must match)",
    "gated_rnn": "keras.layers.LSTM(units) or keras.layers.GRU(units) in place of keras.layers.SimpleRNN",
    "clip_norm": "keras.optimizers.Adam(clipnorm=1.0) (every Keras optimizer takes clipnorm=)",
    "clip_value": "keras.optimizers.Adam(clipvalue=0.5) (every Keras optimizer takes clipvalue=)",
    "clip_adaptive": "no Keras built-in: keras.optimizers.Adam(global_clipnorm=...) at a threshold read off the run's own grad_norm_total",
    "lower_lr": "compile with a 3-10x smaller learning_rate: keras.optimizers.Adam(learning_rate=1e-4)",
    "lr_warmup": "keras.optimizers.schedules.CosineDecay(0.0, decay_steps, warmup_target=lr, warmup_steps=1000) as learning_rate",
    "raise_lr": "compile with a 3-10x larger learning_rate while the loss still falls",
    "adaptive_optimizer": "keras.optimizers.Adam(learning_rate=1e-3) (or RMSprop, Adagrad)",
    "weight_decay": "keras.optimizers.AdamW(learning_rate=1e-3, weight_decay=1e-2)",
    "guard": "callbacks=[keras.callbacks.TerminateOnNaN()] stops at the first NaN loss; skipping single bad steps needs a custom train_step",
    "locate": 'tf.debugging.enable_check_numerics() (TensorFlow) or jax.config.update("jax_debug_nans", True) (JAX), then rerun the failing batch',
    "stable_numerics": "keras.losses.CategoricalCrossentropy(from_logits=True) instead of a softmax before the loss; add epsilon to divisions, logs and sqrt; keras.mixed_precision.LossScaleOptimizer under float16",
}

# The technique that applies each init scheme.
_INIT_TECHNIQUE: dict[Scheme, str] = {
    Scheme.HE: "he_init",
    Scheme.XAVIER: "xavier_init",
    Scheme.ORTHOGONAL: "orthogonal_init",
    Scheme.LSUV: "lsuv_init",
}


def activation_family(activation: str | None) -> str | None:
    """``"saturating"``, ``"dying"`` (ReLU, ReLU6), ``"relu_like"`` or None (unknown / none),
    from the activation table (:func:`gradguard.model.activations.family`).

    >>> activation_family("nn.Sigmoid"), activation_family("LeakyReLU"), activation_family(None)
    ('saturating', 'relu_like', None)
    """
    return family(activation)


@dataclass(frozen=True)
class Context:
    """What is known about the model and the run (every field optional)."""

    activation: str | None = None  # activation class name after the layers, e.g. "sigmoid"
    saturation: bool = False  # tanh/sigmoid outputs found at their bounds
    high_lr: bool = False  # the learning rate is large for this model/optimizer
    recurrent: bool = False  # a vanilla RNN (or unrolled recurrence)
    has_norm: bool = False  # BatchNorm/LayerNorm present
    has_residual: bool = False  # skip connections present
    depth: int | None = None  # number of weight layers
    optimizer: str | None = None  # optimizer class name, e.g. "SGD", "Adam"
    spike: bool = False  # the gradient norm or loss jumped suddenly
    early: bool = False  # the blow-up began in the first steps (clipping/guards still warm up)
    framework: str | None = None  # "keras": how-to lines in Keras (KERAS_HOW); else torch

    @property
    def family(self) -> str | None:
        return activation_family(self.activation)

    @property
    def act_name(self) -> str:
        return str(self.activation).split(".")[-1] if self.activation else "the activation"

    @property
    def deep(self) -> bool:
        return self.depth is None or self.depth >= 8

    @property
    def adaptive_opt(self) -> bool:
        opt = (self.optimizer or "").lower()
        return any(
            k in opt for k in ("adam", "rmsprop", "adagrad", "adadelta", "lion", "adafactor")
        )

    def init_key(self) -> str:
        """The initialisation that matches the activation (the table's scheme for it; He when
        the activation is unknown)."""
        if self.recurrent:
            return _INIT_TECHNIQUE[Scheme.ORTHOGONAL]
        kind = kind_of(self.activation)
        return _INIT_TECHNIQUE[Scheme.HE if kind is None else kind.scheme]


_Ranked = list[tuple[str, str]]  # (technique key, why it helps here), best first


def _init_why(c: Context) -> str:
    if c.recurrent:
        return "an orthogonal recurrent matrix keeps every singular value at 1, so the signal neither shrinks nor grows over time steps"
    if c.family == SATURATING:
        return f"Var(W) = 2/(fan_in + fan_out) keeps the signal's variance through {c.act_name} layers, near their linear range"
    return "Var(W) = 2/fan_in keeps the signal's variance constant through ReLU layers, forward and backward"


def _norm_key(c: Context) -> str:
    return "layernorm" if c.recurrent else "batchnorm"


def _vanishing(c: Context) -> _Ranked:
    r: _Ranked = []
    if c.family == SATURATING or c.saturation:
        r.append(
            (
                "relu_family",
                f"{c.act_name}'s derivative is at most {'0.25' if 'sigmoid' in c.act_name.lower() else '1'} "
                "and near 0 where it saturates, so each layer multiplies the gradient by a small factor; "
                "ReLU passes gradient 1 through every active unit",
            )
        )
    if c.recurrent:
        r.append(
            (
                "gated_rnn",
                "the gated cell state carries gradient across time steps additively instead of through a product of Jacobians",
            )
        )
    if not c.has_residual and c.deep:
        r.append(
            (
                "residual",
                "the identity path hands the gradient to early layers unattenuated, whatever the blocks do",
            )
        )
    r.append((c.init_key(), _init_why(c)))
    if not c.has_norm:
        r.append(
            (
                _norm_key(c),
                "re-standardising pre-activations keeps each layer in its high-gradient range",
            )
        )
    r.append(
        (
            "lsuv_init",
            "rescales each layer on a real batch until its output variance is 1, whatever the architecture",
        )
    )
    if c.family is None and not c.saturation:
        r.append(
            (
                "relu_family",
                "saturating activations shrink the gradient at every layer; ReLU-family ones do not",
            )
        )
    if not c.adaptive_opt:
        r.append(
            (
                "adaptive_optimizer",
                "per-parameter step sizes let early layers move although their gradients are tiny (it hides, not cures, the decay)",
            )
        )
    if c.depth is not None and c.depth >= 10:
        r.append(("less_depth", f"{c.depth} layers multiply {c.depth} per-layer factors together"))
    return r


def _exploding(c: Context) -> _Ranked:
    r: _Ranked = []
    clip_why = "caps the update size when the gradient norm jumps, so one bad batch cannot wreck the weights"
    lr_why = "the step is lr x gradient: a smaller lr keeps the weights out of the region where the gradient blows up"
    if c.early:  # a blow-up in the first steps: clipping and adaptive clippers still warm up
        r.append(("lower_lr", lr_why + "; it acts from the first step, before any warm-up"))
        r.append(("clip_norm", clip_why))
    elif c.spike or c.high_lr or c.recurrent:
        r.append(("clip_norm", clip_why))
        r.append(("lower_lr", lr_why))
    if c.recurrent:
        r.append(
            (
                "gated_rnn",
                "gates bound the cell's Jacobian, so the product over time steps cannot grow without limit",
            )
        )
    r.append(
        (
            c.init_key(),
            _init_why(c) + "; the weights are too large for a stable signal"
            if not c.recurrent
            else _init_why(c),
        )
    )
    if not c.has_norm:
        r.append(
            (
                _norm_key(c),
                "normalisation divides out the growth of activation scale at each layer",
            )
        )
    if not (c.early or c.spike or c.high_lr or c.recurrent):
        r.append(("clip_norm", clip_why))
        r.append(("lower_lr", lr_why))
    r.append(
        (
            "clip_adaptive",
            "sets the clipping threshold from the run's own recent gradient norms (AGC: per unit, relative to the weights)",
        )
    )
    r.append(
        (
            "clip_value",
            "bounds every gradient entry (cruder than norm clipping: it changes the direction)",
        )
    )
    r.append(("lsuv_init", "rescales each layer on a real batch until its output variance is 1"))
    r.append(
        (
            "weight_decay",
            "pulls growing weights back, and with them the per-layer gain that multiplies the gradient",
        )
    )
    if not c.adaptive_opt:
        r.append(
            (
                "adaptive_optimizer",
                "divides each step by the gradient's running RMS, so a spike does not make a huge step",
            )
        )
    r.append(
        (
            "guard",
            "skips the optimizer step when the gradient is non-finite or an outlier, keeping the weights intact",
        )
    )
    if c.depth is not None and c.depth >= 10:
        r.append(("less_depth", f"{c.depth} layers multiply {c.depth} per-layer gains together"))
    return r


def _nonfinite(c: Context) -> _Ranked:
    r: _Ranked = [
        (
            "locate",
            "replays the batch and names the first module whose output or gradient is NaN/Inf",
        )
    ]
    first = [
        (
            "lower_lr",
            "overflow after a few large steps usually means the learning rate is too high",
        ),
        ("clip_norm", "stops one huge gradient from throwing the weights to Inf"),
    ]
    if c.high_lr or c.spike:
        r += first
    r.append(
        (
            "guard",
            "skips steps whose gradient is NaN/Inf so one bad batch does not poison the weights",
        )
    )
    r.append(
        (
            "stable_numerics",
            "log(0), x/0, exp overflow and fp16 overflow are the usual sources of NaN",
        )
    )
    if not (c.high_lr or c.spike):
        r += first
    r.append(
        (
            "clip_adaptive",
            "clips outliers relative to the run's own gradient history",
        )
    )
    return r


def _saturation(c: Context) -> _Ranked:
    r: _Ranked = [
        (
            "relu_family",
            f"saturated {c.act_name} units pass almost no gradient; ReLU-family units do not saturate for positive inputs",
        ),
        (
            c.init_key() if c.family == SATURATING else "xavier_init",
            "smaller initial weights keep pre-activations in the linear range of the activation",
        ),
    ]
    if not c.has_norm:
        r.append(
            (
                _norm_key(c),
                "normalising pre-activations keeps them near zero, away from the flat tails",
            )
        )
    r.append(
        (
            "lower_lr",
            "large steps push the weights, and with them the pre-activations, into the tails",
        )
    )
    if c.high_lr:
        r.insert(1, r.pop())
    r.append(("lsuv_init", "sets each layer's output variance to 1 on a real batch"))
    r.append(("weight_decay", "keeps the weights, and hence the pre-activations, small"))
    return r


def _dead_units(c: Context) -> _Ranked:
    lr = (
        "lower_lr",
        "a large step can push a unit's bias so negative that it never activates again",
    )
    r: _Ranked = [
        (
            "leaky_relu",
            "a small negative slope keeps a gradient flowing through inactive units, so they can recover",
        )
    ]
    if c.high_lr or c.spike:
        r.insert(0, lr)
    else:
        r.append(lr)
    r.append(
        (
            "he_init",
            "Var(W) = 2/fan_in starts every layer with half of its units active",
        )
    )
    if not c.has_norm:
        r.append(
            (
                "batchnorm",
                "centres pre-activations, so about half of the units are active on every batch",
            )
        )
    r.append(("clip_norm", "stops a single huge update from killing many units at once"))
    r.append(("lsuv_init", "sets each layer's output variance to 1 on a real batch"))
    return r


def _stalled(c: Context) -> _Ranked:
    r: _Ranked = []
    if c.high_lr:
        r.append(
            (
                "lower_lr",
                "a learning rate far too high can also make the loss bounce at a plateau",
            )
        )
    else:
        r.append(
            (
                "raise_lr",
                "the loss is flat: the steps may simply be too small to make progress",
            )
        )
    if not c.adaptive_opt:
        r.append(
            (
                "adaptive_optimizer",
                "per-parameter step sizes make progress where the gradient is small",
            )
        )
    if c.family == SATURATING or c.saturation:
        r.append(
            ("relu_family", f"saturated {c.act_name} units pass almost no gradient to learn from")
        )
    r.append((c.init_key(), _init_why(c)))
    if not c.has_norm:
        r.append(
            (_norm_key(c), "keeps every layer in its high-gradient range, so all of them learn")
        )
    if not c.has_residual and c.deep:
        r.append(("residual", "gives early layers a direct gradient path from the loss"))
    return r


def _divergence(c: Context) -> _Ranked:
    r: _Ranked = [
        (
            "lower_lr",
            "a rising or oscillating loss is the signature of steps that overshoot the minimum",
        ),
        ("clip_norm", "bounds the step when the gradient jumps"),
        (
            "lr_warmup",
            "small steps at first let the weights reach a region where large steps are stable",
        ),
    ]
    if c.spike and not c.early:
        r[0], r[1] = r[1], r[0]  # a lone jump mid-run: bound the step first
    r.append(("clip_adaptive", "clips relative to the run's own recent gradient norms"))
    r.append(("guard", "skips outlier steps so one bad batch does not undo the training"))
    r.append(("weight_decay", "keeps the weights from drifting to large norms"))
    if not c.has_norm:
        r.append(
            (
                _norm_key(c),
                "normalisation makes the loss surface smoother, so larger steps are stable",
            )
        )
    return r


_RANKERS: dict[str, Callable[[Context], _Ranked]] = {
    "vanishing_gradients": _vanishing,
    "exploding_gradients": _exploding,
    "nonfinite": _nonfinite,
    "saturation": _saturation,
    "dead_units": _dead_units,
    "stalled_learning": _stalled,
    "divergence": _divergence,
    "healthy": lambda c: [],
}
KINDS: tuple[str, ...] = tuple(_RANKERS)
_ALIASES = {
    "vanishing": "vanishing_gradients",
    "exploding": "exploding_gradients",
    "nan": "nonfinite",
    "non_finite": "nonfinite",
    "saturated": "saturation",
    "dead_relu": "dead_units",
    "dead": "dead_units",
    "stalled": "stalled_learning",
    "diverging": "divergence",
}


def remedies_for(kind: str, **context: Any) -> tuple[Remedy, ...]:
    """Ranked remedies for a finding kind, best first, each with a *why* that fits the context.

    Args:
        kind: a finding kind (one of :data:`KINDS`; "vanishing", "exploding", "nan", "dead",
            "stalled" and "diverging" are accepted as short forms).
        **context: what is known, every key optional: ``activation`` (str, e.g. "sigmoid",
            "Tanh", "nn.ReLU"), ``saturation`` (bool), ``high_lr`` (bool), ``recurrent``
            (bool), ``has_norm`` (bool), ``has_residual`` (bool), ``depth`` (int),
            ``optimizer`` (str, e.g. "SGD"), ``spike`` (bool), ``early`` (bool),
            ``framework`` (str: "keras" gives the Keras how-to lines of :data:`KERAS_HOW`;
            anything else, torch's).

    Returns:
        A tuple of :class:`~gradguard.diagnosis.finding.Remedy`, each technique at most once;
        empty for "healthy".

    Raises:
        ConfigError: an unknown kind or context key.

    >>> remedies_for("exploding", spike=True, high_lr=True)[0].how
    'norm = gg.clip.Norm(1.0)(model.parameters()) between backward() and opt.step()'
    """
    key = _ALIASES.get(str(kind), str(kind))
    if key not in _RANKERS:
        raise ConfigError(
            f"remedies_for: unknown finding kind {kind!r}; use one of {', '.join(KINDS)}"
        )
    known = Context.__dataclass_fields__
    unknown = sorted(set(context) - set(known))
    if unknown:
        raise ConfigError(
            f"remedies_for: unknown context key(s) {unknown}; known keys: {', '.join(known)}"
        )
    ctx = Context(
        activation=None if context.get("activation") is None else str(context["activation"]),
        saturation=bool(context.get("saturation")),
        high_lr=bool(context.get("high_lr")),
        recurrent=bool(context.get("recurrent")),
        has_norm=bool(context.get("has_norm")),
        has_residual=bool(context.get("has_residual")),
        depth=None if context.get("depth") is None else int(context["depth"]),
        optimizer=None if context.get("optimizer") is None else str(context["optimizer"]),
        spike=bool(context.get("spike")),
        early=bool(context.get("early")),
        framework=None if context.get("framework") is None else str(context["framework"]),
    )
    keras_how = ctx.framework == "keras"
    out: list[Remedy] = []
    seen: set[str] = set()
    for tech_key, why in _RANKERS[key](ctx):
        if tech_key in seen:
            continue
        seen.add(tech_key)
        t = TECHNIQUES[tech_key]
        how = KERAS_HOW.get(tech_key, t.how) if keras_how else t.how
        out.append(Remedy(name=t.name, why=why, how=how))
    return tuple(out)
