"""An overhead budget: the Recorder measures what it costs and spaces its own work to fit.

``gg.watch(..., budget=0.02)`` asks that watching cost at most 2% of the training step. The
Recorder times its own work per step (the gradient statistics, the detail probes, the flushes)
and the whole step, and every :data:`ADJUST_EVERY` steps the :class:`Budget` picks the periods of
the recorded steps and of the detail steps that keep the predicted overhead within the budget:

    overhead(r, d) = (c_rec / r + c_detail / d + c_flush / (flush_every * r)) / bare step time

with ``c_rec`` the cost of a recorded step, ``c_detail`` what a detail step adds to it and
``c_flush`` the cost of a flush on the training thread. Detail steps are spaced first (they are
10-100x dearer); recorded steps are thinned only when every-step gradient statistics alone exceed
the budget. The target is corrected by what was spent so far, so the overhead over the run
converges to the budget, not only the steady state.

What online diagnosis needs is never given up: a recorded step at least every
:data:`MAX_RECORD_PERIOD` steps, a detail step (activations, update ratio, weight norms) at least
once per flush. When even that exceeds the budget, the schedule stays at that floor and an event
says so. Every schedule chosen is an event (``schedule``) in the store, with the measured and the
predicted overhead.

Timing: the Recorder's work is timed with ``time.perf_counter`` around it, and the step from one
optimizer step to the next; no host sync is added. On CPU the work is synchronous, so that is its
cost. On an accelerator it is the time to launch the kernels, not their run time: the budget then
undercounts (not yet measured on a GPU; docs/monitor.md says so).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gradguard.errors import ConfigError
from gradguard.record.reduce import LocalReducer

__all__ = [
    "Budget",
    "Adaptive",
    "check_budget",
    "ADJUST_EVERY",
    "MAX_RECORD_PERIOD",
    "SCHEDULE",
    "describe",
    "BudgetHooks",
    "distributed_agree",
]

SCHEDULE = "schedule"  # the event kind of a schedule the budget chose

ADJUST_EVERY = 10  # steps between adjustments (one process; ranks re-plan together at each flush)
MAX_RECORD_PERIOD = 4  # the rules' floor: at least one recorded step in this many
_EMA = 0.3  # weight of the newest window in the running cost estimates
_HORIZON = 200  # steps over which the spending so far is paid back (or made up)


def check_budget(value: object) -> float | None:
    """The budget as a float in (0, 1), or None; anything else is a ConfigError."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ConfigError(
            f"budget must be a fraction of the step time in (0, 1), e.g. budget=0.02 for 2%, "
            f"or None; got {value!r}"
        )
    return float(value)


@dataclass
class Adaptive:
    """A schedule whose period the budget changes: true on ``anchor, anchor + period, ...``."""

    period: int = 1
    anchor: int = 0

    def __call__(self, step: int) -> bool:
        return step >= self.anchor and (step - self.anchor) % self.period == 0

    def set(self, period: int, from_step: int) -> None:
        """Use ``period`` from ``from_step`` on (which is then the first step it selects)."""
        if period != self.period:
            self.period, self.anchor = period, from_step

    def __repr__(self) -> str:  # stored in the run config
        return f"budget-adaptive(period={self.period})"


@dataclass
class _Window:
    """Costs summed since the last adjustment."""

    rec_cost: float = 0.0
    rec_n: int = 0
    det_cost: float = 0.0
    det_n: int = 0
    flush_cost: float = 0.0
    flush_n: int = 0
    bare: list[float] = field(default_factory=list)  # each step's wall time less our work in it


@dataclass
class Budget:
    """Chooses the record and detail periods that keep watching within ``fraction`` of a step.

    Args:
        fraction: the budget, e.g. 0.02.
        flush_every: recorded steps per flush.
        default_detail: the detail period before anything is measured.
        max_detail: the longest detail period (one detail step per flush by default).
        clock: seconds, for tests (default ``time.perf_counter``).
    """

    fraction: float
    flush_every: int
    default_detail: int = 10
    max_detail: int | None = None
    clock: Callable[[], float] = time.perf_counter
    # under torch.distributed: the mean of each rank's estimates (a collective), so that every rank
    # picks the same schedule; None for one process
    agree: Callable[[list[float]], list[float]] | None = None
    record: Adaptive = field(default_factory=Adaptive)
    detail: Adaptive = field(default_factory=Adaptive)
    # running estimates (seconds): a recorded step, what a detail step adds, a flush, a bare step
    c_rec: float = math.nan
    c_detail: float = math.nan
    c_flush: float = 0.0
    bare: float = math.nan
    spent: float = 0.0  # all our work so far
    bare_total: float = 0.0  # all bare step time so far
    floor_hit: bool = False
    _win: _Window = field(default_factory=_Window)
    _step_cost: float = 0.0
    _step_flush: float = 0.0
    _step_detail: bool = False
    _step_recorded: bool = False
    _last_end: float | None = None

    def __post_init__(self) -> None:
        self.detail.period = self.default_detail

    @staticmethod
    def schedules_of(budget: Budget | None, config: Any) -> tuple[Any, Any]:
        """The (record, detail) schedules in force: the budget's, or the config's."""
        if budget is not None:
            return budget.record, budget.detail
        return config.record_every, config.detail_every

    @classmethod
    def of(cls, config: Any, reducer: Any = None) -> Budget | None:
        """The budget a WatchConfig asks for (None: no budget); it starts from the config's
        detail period when that is ``every(n)``; ranks agree through ``reducer``."""
        if config.budget is None:
            return None
        start = getattr(config.detail_every, "n", 10)
        agree = None if reducer is None else distributed_agree(reducer)
        return cls(config.budget, config.flush_every, default_detail=start, agree=agree)

    # ------------------------------------------------------------------ measuring
    def span(self) -> _Span:
        """A context manager adding the time inside it to the current step's cost."""
        return _Span(self)

    def add(self, seconds: float) -> None:
        self._step_cost += seconds

    def mark(self, *, recorded: bool, detail: bool) -> None:
        self._step_recorded |= recorded
        self._step_detail |= detail

    def add_flush(self, seconds: float) -> None:
        self._win.flush_cost += seconds
        self._win.flush_n += 1
        self._step_flush += seconds

    def end_step(self, next_step: int, *, at_flush: bool = False) -> dict[str, Any] | None:
        """The optimizer step is done: book its cost and wall time; every ``ADJUST_EVERY`` steps
        re-plan from ``next_step`` on. Returns the new schedule when it changed.

        Under torch.distributed (``agree`` set) the ranks must record the same steps (each
        recorded step is a collective), so they re-plan together: only at an automatic flush
        (``at_flush``: the buffer filled up, at the same step on every rank, as long as the
        schedules agree), from the mean of their estimates."""
        self._book()
        if self.agree is None:
            return self.adjust(next_step) if self.ready() else None
        if not at_flush:
            return None
        self.settle()
        shared = self.agree(
            [self.c_rec, self.c_detail, self.c_flush, self.bare, self.spent, self.bare_total]
        )
        self.c_rec, self.c_detail, self.c_flush, self.bare, self.spent, self.bare_total = shared
        return self.adjust(next_step)

    def final(self) -> dict[str, Any] | None:
        """The schedule and the overhead over the whole run, once anything was measured."""
        self.settle()
        return self.state() if self.ready_to_report() else None

    def _book(self) -> None:
        now = self.clock()
        w = self._win
        if self._last_end is not None:
            w.bare.append(now - self._last_end - self._step_cost - self._step_flush)
        self._last_end = now
        if self._step_detail:
            w.det_cost += self._step_cost
            w.det_n += 1
        elif self._step_recorded:
            w.rec_cost += self._step_cost
            w.rec_n += 1
        self._step_cost, self._step_flush = 0.0, 0.0
        self._step_detail, self._step_recorded = False, False

    # ------------------------------------------------------------------ choosing
    def ready(self) -> bool:
        return len(self._win.bare) >= ADJUST_EVERY

    def adjust(self, next_step: int) -> dict[str, Any] | None:
        """Update the estimates from the last window and choose the periods from ``next_step``
        on; returns the new schedule (for a ``schedule`` event) when it changed, else None."""
        self.settle()
        if math.isnan(self.c_rec) or math.isnan(self.c_detail):
            return None  # keep the default schedule until both kinds of step were measured
        before = (self.record.period, self.detail.period)
        r, d = self._choose()
        self.record.set(r, next_step)
        self.detail.set(d, next_step)
        if (r, d) == before:
            return None
        return self.state()

    def settle(self) -> None:
        """Fold the costs of the steps since the last call into the running estimates."""
        w, self._win = self._win, _Window()
        if not w.bare:
            return
        ours = w.rec_cost + w.det_cost + w.flush_cost
        # the median step: a pause between steps (evaluation, a checkpoint, another job on the
        # machine) is not training time, and must not make our work look cheap
        bare = max(statistics.median(w.bare), 1e-9)
        self.bare = _ema(self.bare, bare)
        self.bare_total += bare * len(w.bare)
        self.spent += ours
        if w.rec_n:
            self.c_rec = _ema(self.c_rec, w.rec_cost / w.rec_n)
        if w.det_n:
            # what a detail step adds to a recorded one
            per = w.det_cost / w.det_n - (0.0 if math.isnan(self.c_rec) else self.c_rec)
            self.c_detail = _ema(self.c_detail, max(per, 0.0))
        if w.flush_n:
            self.c_flush = _ema(self.c_flush, w.flush_cost / w.flush_n)

    def ready_to_report(self) -> bool:
        """Whether anything was measured (a final ``schedule`` event has numbers to give)."""
        return self.bare_total > 0 and not math.isnan(self.c_rec)

    def state(self) -> dict[str, Any]:
        return {
            "record_every": self.record.period,
            "detail_every": self.detail.period,
            "budget": self.fraction,
            "overhead_so_far": self.overhead(),
            "overhead_predicted": self.predict(self.record.period, self.detail.period),
            "floor": self.floor_hit,
        }

    def overhead(self) -> float:
        """Our work so far over the bare step time so far (NaN before the first window)."""
        return self.spent / self.bare_total if self.bare_total > 0 else math.nan

    def predict(self, r: int, d: int) -> float:
        c_det = 0.0 if math.isnan(self.c_detail) else self.c_detail
        cost = self.c_rec / r + c_det / d + self.c_flush / (self.flush_every * r)
        return cost / self.bare

    def _target(self) -> float:
        """The budget, corrected by what was over- or underspent so far (paid back over
        ``_HORIZON`` steps), within [budget / 4, 2 x budget]."""
        debt = self.spent - self.fraction * self.bare_total  # seconds over the budget so far
        t = self.fraction - debt / (_HORIZON * self.bare)
        return min(max(t, self.fraction / 4), 2 * self.fraction)

    def _choose(self) -> tuple[int, int]:
        """The periods for the corrected target; the cheapest schedule the rules allow when even
        that misses it (paying back earlier spending). ``floor_hit`` says whether the budget
        itself, uncorrected, is out of reach."""
        self.floor_hit = self._plan(self.fraction) is None
        plan = self._plan(self._target())
        if plan is None:
            r = MAX_RECORD_PERIOD
            return r, self.max_detail or self.flush_every * r
        return plan

    def _plan(self, target: float) -> tuple[int, int] | None:
        """The densest schedule predicted within ``target``: every step recorded if possible, the
        detail steps as close as the rest allows; None if none is."""
        for r in range(1, MAX_RECORD_PERIOD + 1):
            d_max = self.max_detail or self.flush_every * r
            room = target * self.bare - self.c_rec / r - self.c_flush / (self.flush_every * r)
            if room <= 0:
                continue
            d = max(r, math.ceil(self.c_detail / room)) if self.c_detail > 0 else r
            d = r * math.ceil(d / r)  # detail steps are recorded steps
            if d <= d_max:
                return r, d
        return None


def describe(state: dict[str, Any], *, final: bool = False) -> str:
    """The message of a ``schedule`` event."""
    floor = " (the rules' floor: the budget cannot be met)" if state["floor"] else ""
    return (
        f"overhead budget {100 * state['budget']:.1f}%: "
        + ("over the run " if final else "")
        + f"{100 * state['overhead_so_far']:.1f}% measured; record every "
        f"{state['record_every']} step(s), detail every {state['detail_every']}{floor}"
    )


def distributed_agree(reducer: Any) -> Callable[[list[float]], list[float]] | None:
    """How the ranks agree on the budget's estimates: the reducer's ``agree`` (a collective) when
    it combines across processes, None for one process (``LocalReducer``)."""
    if isinstance(reducer, LocalReducer):
        return None
    agree = getattr(reducer, "agree", None)
    if agree is None:
        raise ConfigError(
            f"budget= with the reducer {type(reducer).__name__}, which has no agree(values) "
            "method: under torch.distributed every rank must choose the same schedule; add "
            "agree() (the mean over the ranks) to the reducer or leave budget=None"
        )
    return agree  # type: ignore[no-any-return]


class _Span:
    __slots__ = ("budget", "t0")

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.t0 = 0.0

    def __enter__(self) -> None:
        self.t0 = self.budget.clock()

    def __exit__(self, *exc: Any) -> None:
        self.budget.add(self.budget.clock() - self.t0)


def _ema(old: float, new: float) -> float:
    return new if math.isnan(old) else (1 - _EMA) * old + _EMA * new


class BudgetHooks:
    """What a Recorder calls to feed its budget (all no-ops without one): the time of its work,
    the end of each step, and the overhead over the run at close, as ``schedule`` events."""

    def __init__(self, recorder: Any) -> None:
        self.rec = recorder

    def book(self, t0: float, flushes_before: float) -> None:
        """Book the time since ``t0`` and what the activation hooks spent to the step's cost
        (flushes since ``flushes_before`` seconds are booked on their own)."""
        r = self.rec
        if r.budget is not None:
            hooks, r.activations.seconds = r.activations.seconds, 0.0
            flushes = r._flush_seconds - flushes_before
            r.budget.add(time.perf_counter() - t0 - flushes + hooks)

    def end_step(self, *, at_flush: bool = False) -> None:
        """The budget books the step and may re-plan from the next step on (call it before the
        next step's probes are armed); a new plan is an event. ``at_flush``: the step ended with
        an automatic flush (ranks re-plan together there)."""
        r = self.rec
        if r.budget is not None:
            self._event(r.budget.end_step(next_step=r.step_count, at_flush=at_flush), final=False)

    def close(self) -> None:
        if self.rec.budget is not None:
            self._event(self.rec.budget.final(), final=True)

    def _event(self, state: dict[str, Any] | None, *, final: bool) -> None:
        if state is not None:
            step = max(self.rec.step_count - 1, 0)
            self.rec.event(SCHEDULE, describe(state, final=final), step=step, data=state)
