"""Every metric gradguard records, declared once: its name, its group, its unit and what it means.

The device buffer's rows, the store's columns, the report's columns and the diagnosis rules read
names from here; a metric name is never written as a string literal anywhere else.

A :class:`Metric` is a ``str`` (its name), so it works as a dict key, in SQL and in JSON as is:

>>> from gradguard.metrics import GRAD_NORM
>>> GRAD_NORM == "grad_norm", GRAD_NORM.group, GRAD_NORM.per_layer
(True, 'grad', True)
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "Metric",
    "Group",
    "GRAD_NORM",
    "GRAD_RMS",
    "GRAD_MAX",
    "WEIGHT_NORM",
    "NONFINITE",
    "UPDATE_RATIO",
    "ACT_MEAN",
    "ACT_STD",
    "ACT_ZERO_FRAC",
    "ACT_SAT_FRAC",
    "ACT_GRAD_NORM",
    "GRAD_NORM_TOTAL",
    "LR",
    "LOSS",
    "CLIP_NORM_BEFORE",
    "CLIP_NORM_AFTER",
    "HF_GRAD_NORM",
    "HF_LOSS",
    "LAYER_METRICS",
    "GRAD_METRICS",
    "ACT_METRICS",
    "by_name",
]

# grad: per layer, every recorded step; weight: per layer, detail steps and the first recorded step
# after each flush; update / act: per layer, detail steps only; scalar: one number per step
Group = Literal["grad", "weight", "update", "act", "scalar"]


class Metric(str):
    """A metric's name, with its group, unit and meaning attached."""

    group: Group
    unit: str
    doc: str

    def __new__(cls, name: str, group: Group, unit: str, doc: str) -> Metric:
        self = super().__new__(cls, name)
        self.group = group
        self.unit = unit
        self.doc = doc
        return self

    @property
    def name(self) -> str:
        return str(self)

    @property
    def per_layer(self) -> bool:
        return self.group != "scalar"

    def __reduce__(self) -> tuple[object, ...]:  # pickles (multiprocessing, DDP spawn) as itself
        return (Metric, (str(self), self.group, self.unit, self.doc))


GRAD_NORM = Metric("grad_norm", "grad", "", "L2 norm of the layer's gradient (all its parameters)")
GRAD_RMS = Metric("grad_rms", "grad", "", "grad_norm / sqrt(number of gradient elements)")
GRAD_MAX = Metric("grad_max", "grad", "", "largest |gradient element| of the layer")
WEIGHT_NORM = Metric("weight_norm", "weight", "", "L2 norm of the layer's parameters")
NONFINITE = Metric(
    "nonfinite", "grad", "tensors", "parameters or gradients of the layer holding NaN/Inf"
)
UPDATE_RATIO = Metric(
    "update_ratio", "update", "", "||w_after - w_before|| / ||w_before|| over one optimizer step"
)
ACT_MEAN = Metric("act_mean", "act", "", "mean of the layer's activation (after its nonlinearity)")
ACT_STD = Metric("act_std", "act", "", "standard deviation of the layer's activation")
ACT_ZERO_FRAC = Metric("act_zero_frac", "act", "fraction", "fraction of activation values == 0")
ACT_SAT_FRAC = Metric(
    "act_sat_frac", "act", "fraction", "fraction within 1% of a bounded activation's bounds"
)
ACT_GRAD_NORM = Metric(
    "act_grad_norm", "act", "", "L2 norm of dLoss/d(layer output): the backpropagated signal"
)
GRAD_NORM_TOTAL = Metric(
    "grad_norm_total", "scalar", "", "L2 norm of all gradients together (clip_grad_norm_'s)"
)
LR = Metric("lr", "scalar", "", "learning rate of the optimizer's first parameter group")
LOSS = Metric("loss", "scalar", "", "training loss, as passed to mon.log(loss=...)")
CLIP_NORM_BEFORE = Metric(
    "clip_norm_before", "scalar", "", "total gradient norm a gg.clip clipper saw (before clipping)"
)
CLIP_NORM_AFTER = Metric(
    "clip_norm_after", "scalar", "", "total gradient norm after a gg.clip clipper"
)
HF_GRAD_NORM = Metric(
    "hf_grad_norm", "scalar", "", "the Hugging Face Trainer's logged (pre-clip) total norm"
)
HF_LOSS = Metric(
    "hf_loss", "scalar", "", "the Hugging Face Trainer's logged loss (mean over logging_steps)"
)

# Per-layer metrics in the row order of the Monitor's device buffer.
LAYER_METRICS: tuple[Metric, ...] = (
    GRAD_NORM,
    GRAD_RMS,
    GRAD_MAX,
    WEIGHT_NORM,
    NONFINITE,
    UPDATE_RATIO,
    ACT_MEAN,
    ACT_STD,
    ACT_ZERO_FRAC,
    ACT_SAT_FRAC,
    ACT_GRAD_NORM,
)
GRAD_METRICS = tuple(m for m in LAYER_METRICS if m.group == "grad")
ACT_METRICS = tuple(m for m in LAYER_METRICS if m.group == "act")

_ALL = {
    m: m
    for m in (
        *LAYER_METRICS,
        GRAD_NORM_TOTAL,
        LR,
        LOSS,
        CLIP_NORM_BEFORE,
        CLIP_NORM_AFTER,
        HF_GRAD_NORM,
        HF_LOSS,
    )
}


def by_name(name: str) -> Metric | None:
    """The declared metric called ``name`` (None for a user's own logged scalar)."""
    return _ALL.get(name)  # type: ignore[call-overload,no-any-return]
