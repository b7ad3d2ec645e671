"""Gradient clippers: ``clipper(parameters) -> total norm before clipping``.

All of them work on the device without reading a value on the host, keep their state in
preallocated device tensors, and ignore non-finite norms when updating that state.

>>> import gradguard as gg
>>> clipper = gg.clip.ZClip()            # or Norm(1.0), Value(0.5), AutoClip(10), AGC(0.01)
>>> # loss.backward(); norm = clipper(model.parameters()); optimizer.step()
"""

from __future__ import annotations

from gradguard.remedies._agc import AGC, unit_norms
from gradguard.remedies._autoclip import AutoClip
from gradguard.remedies._clipper import Clipper
from gradguard.remedies._norm_value import Norm, Value
from gradguard.remedies._zclip import ZClip

__all__ = ["Clipper", "Norm", "Value", "AutoClip", "AGC", "ZClip", "unit_norms"]
