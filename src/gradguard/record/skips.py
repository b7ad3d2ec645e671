"""Steps a GradScaler skips: its ``step`` does not call the optimizer's when the gradients hold
inf/NaN, so no optimizer hook fires; :class:`ScalerWatch` wraps the instance's ``scaler.step`` and
tells the Recorder (``mark_skipped``) when a call did not reach the optimizer.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ScalerWatch", "skip_step"]


class ScalerWatch:
    """Wraps ``scaler.step`` of one GradScaler instance: a call that did not run the optimizer's
    step (the scaler found inf/NaN gradients) is a skipped step. Removable like a hook handle."""

    def __init__(self, recorder: Any, scaler: Any) -> None:
        self.scaler: Any = scaler
        self._step = scaler.step  # the bound method (or an outer watch's wrapper)

        def step(optimizer: Any, *args: Any, **kwargs: Any) -> Any:
            before = recorder._post_calls
            out = self._step(optimizer, *args, **kwargs)
            if (
                optimizer is recorder.optimizer
                and recorder._post_calls == before
                and not recorder._closed
            ):
                recorder.mark_skipped(
                    "scaler_skip",
                    "GradScaler found inf/NaN gradients (fp16 overflow): the optimizer step was "
                    "not taken and the loss scale backs off",
                    data={"reason": "scaler_overflow", "scale": _scale_of(scaler)},
                )
            return out

        self.wrapper = step
        scaler.step = step

    def remove(self) -> None:
        if self.scaler.__dict__.get("step") is not self.wrapper:
            return  # wrapped again after us: our wrapper stays in the chain and passes through
        if getattr(self._step, "__self__", None) is self.scaler:
            delattr(self.scaler, "step")  # the class's own method again
        else:
            self.scaler.step = self._step


def _scale_of(scaler: Any) -> float | None:
    """The scale that overflowed (read before ``scaler.update()``; one read, skips are rare)."""
    try:
        return float(scaler.get_scale())
    except Exception:
        return None


def skip_step(recorder: Any, kind: str, message: str, **fields: Any) -> None:
    """Count the current step of ``recorder`` as skipped (see ``Recorder.mark_skipped``)."""
    r = recorder
    s = r.step_count
    r.buffer.discard(s)  # take_gradients_now() may have read the thrown-away gradients
    r._taken_early = None
    if r._act_step == s:  # the detail step's activations belong to a step not taken
        r.activations.disarm()
        r._act_step = None
    r._update_step = None
    r.event(kind, message, step=s, **fields)  # layer=, value=, data=
    r.step_count = s + 1
    r._just_stepped = True
    r.costs.end_step()
    r._prepare_step(r.step_count)
