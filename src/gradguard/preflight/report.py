"""What ``gg.check`` returns: one row per layer and the verdict, printable as a table that fits the
terminal (``print(report)``, ``rich.print(report)``) or as JSON (``report.to_dict()``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from gradguard.diagnosis.finding import Finding
from gradguard.format import MISSING, number, percent
from gradguard.metrics import ACT_STD, GRAD_RMS
from gradguard.preflight.jacobian import JacobianStats
from gradguard.preflight.trainable import Trainability

__all__ = ["CheckReport", "LayerRow"]

_NAN = math.nan


@dataclass(frozen=True)
class LayerRow:
    """Measurements of one layer (nan where not applicable).

    Args:
        index: position in forward execution order.
        name, kind: qualified module name and class name.
        activation: class name of the activation module applied to this layer's output, if any.
        calls: how many times the layer ran in the pass.
        act_std: std of the signal after the activation (or of the layer output without one).
        sat_frac: fraction of activation outputs within 1% of its bounds (bounded activations).
        zero_frac: fraction of exact zeros after the activation.
        dead_frac: fraction of units that are 0 for every example (needs >= 8 examples).
        q: mean square of the layer's output (the pre-activation second moment).
        grad_rms: rms of the gradients of the layer's trainable parameters.
        act_grad_norm: ||dL/d output||.
        gain: act_grad_norm[l-1] / act_grad_norm[l], the backward gain through this layer.
        pred_q, pred_gain: mean-field predictions of q and gain (Linear -> activation stacks).
    """

    index: int
    name: str
    kind: str
    activation: str | None
    calls: int
    act_std: float = _NAN
    sat_frac: float = _NAN
    zero_frac: float = _NAN
    dead_frac: float = _NAN
    q: float = _NAN
    grad_rms: float = _NAN
    act_grad_norm: float = _NAN
    gain: float = _NAN
    pred_q: float = _NAN
    pred_gain: float = _NAN

    def to_dict(self) -> dict[str, Any]:
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in self.__dict__.items()
        }


@dataclass(frozen=True)
class CheckReport:
    """Result of :func:`check`.

    Args:
        layers: one :class:`LayerRow` per layer, in forward execution order.
        jacobian: input-output Jacobian statistics, or None (non-float input / not requested).
        findings: most severe first; a single 'healthy' INFO finding when nothing is wrong.
        verdict: 'healthy', 'vanishing', 'exploding', 'saturating' or 'dead units'.
        loss: the loss of the pass.
        grad_ratio: act_grad_norm of the first layer / that of the last.
        backward_gain: exp(-slope) of log act_grad_norm fitted against depth: the average factor
            by which the gradient grows per layer going backwards.
        notes: what was skipped and why.
        trainability: will it train? the calibrated verdict, its confidence, reasons and numbers
            (:mod:`gradguard.preflight.trainable`); ``report.trainable`` is its yes/no.
    """

    layers: tuple[LayerRow, ...]
    jacobian: JacobianStats | None
    findings: tuple[Finding, ...]
    verdict: str
    loss: float
    grad_ratio: float
    backward_gain: float
    notes: tuple[str, ...] = field(default=())
    trainability: Trainability | None = None

    @property
    def trainable(self) -> bool | None:
        """True/False: will this network, as initialised, train (None: not assessed)."""
        return None if self.trainability is None else self.trainability.trainable

    @property
    def confidence(self) -> float:
        """How sure the trainability verdict is, 0.5..1 (nan: not assessed)."""
        return _NAN if self.trainability is None else self.trainability.confidence

    def to_dict(self) -> dict[str, Any]:
        def num(v: float) -> float | None:
            return v if math.isfinite(v) else None

        return {
            "verdict": self.verdict,
            "trainability": self.trainability.to_dict() if self.trainability else None,
            "loss": num(self.loss),
            "grad_ratio": num(self.grad_ratio),
            "backward_gain": num(self.backward_gain),
            "jacobian": self.jacobian.to_dict() if self.jacobian else None,
            "layers": [r.to_dict() for r in self.layers],
            "findings": [f.to_dict() for f in self.findings],
            "notes": list(self.notes),
        }

    def _summary(self) -> str:
        parts = [f"verdict: {self.verdict}"]
        if self.trainability is not None:
            parts.append(str(self.trainability))
        parts += [f"grad ratio first/last {number(self.grad_ratio)}"]
        parts.append(f"backward gain/layer {number(self.backward_gain)}")
        if self.jacobian is not None:
            parts.append(
                f"Jacobian mean sigma^2 {number(self.jacobian.mean_sq_singular_value)}, "
                f"max sigma {number(self.jacobian.max_singular_value)}"
            )
        return " | ".join(parts)

    def _reasons(self) -> list[str]:
        t = self.trainability
        if t is None:
            return []
        head = "why it should train" if t.trainable else "why it will not train"
        return [f"{head}:", *(f"  - {r}" for r in t.reasons)]

    def __str__(self) -> str:
        cols = _columns(self)
        widths = [max(len(h), *(len(c[i]) for c in cols[1])) for i, h in enumerate(cols[0])]
        line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
        out = [line(cols[0]), *(line(c) for c in cols[1]), "", self._summary(), *self._reasons()]
        out += [str(f) for f in self.findings]
        out += [f"note: {n}" for n in self.notes]
        return "\n".join(out)

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich.table import Table
        from rich.text import Text

        from gradguard.report.terminal import fit_columns

        head, body = _columns(self)
        needs = [
            max(len(h), *(len(c[i]) for c in body)) if body else len(h) for i, h in enumerate(head)
        ]
        # least useful first; '#', the layer, the backpropagated signal and the gain always stay
        order = [head.index(h) for h in _DROP_ORDER if h in head]
        kept = fit_columns(needs, options.max_width, drop_order=order, keep=[0, 1])
        shown = [i for i in range(len(head)) if i in kept]
        dropped = [head[i] for i in range(len(head)) if i not in kept]
        caption = f"wider terminal for: {', '.join(dropped)}" if dropped else None
        table = Table(
            title="gradguard check", title_justify="left", header_style="bold", caption=caption
        )
        for i in shown:
            table.add_column(head[i], justify="left" if i in (1, 2, 3) else "right")
        for cells in body:
            table.add_row(*(cells[i] for i in shown))
        color = "green" if self.verdict == "healthy" else "red"
        yield table
        yield Text(self._summary(), style=f"bold {color}")
        for r in self._reasons():
            yield Text(r)
        yield from self.findings
        for n in self.notes:
            yield Text(f"note: {n}", style="dim")


# columns of the check's table, the first to go when the terminal is narrow
_DROP_ORDER = (
    "kind",
    "pred_q",
    "dead",
    "zero",
    "sat",
    ACT_STD,
    "pred_gain",
    "q",
    "act",
    GRAD_RMS,
    "gain",
    "act_grad",
)


def _columns(report: CheckReport) -> tuple[list[str], list[list[str]]]:
    pred = any(math.isfinite(r.pred_q) for r in report.layers)
    head = ["#", "layer", "kind", "act", ACT_STD, "sat", "zero", "dead", "q", GRAD_RMS]
    head += ["act_grad", "gain"] + (["pred_q", "pred_gain"] if pred else [])
    rows = []
    for r in report.layers:
        cells = [str(r.index), r.name, r.kind, r.activation or MISSING, number(r.act_std)]
        cells += [percent(r.sat_frac), percent(r.zero_frac), percent(r.dead_frac), number(r.q)]
        cells += [number(r.grad_rms), number(r.act_grad_norm), number(r.gain)]
        if pred:
            cells += [number(r.pred_q), number(r.pred_gain)]
        rows.append(cells)
    return head, rows
