"""Mean-field theory of signal propagation in deep random networks.

>>> import gradguard as gg
>>> mf = gg.theory.mean_field("tanh", sigma_w2=1.5, sigma_b2=0.05)
>>> mf.phase
'ordered'
>>> round(gg.theory.critical_sigma_w2("relu"), 6)
2.0
"""

from __future__ import annotations

from gradguard.theory.activations import ACTIVATION_NAMES, ActivationFn, resolve_activation
from gradguard.theory.meanfield import MeanField, chi1, critical_sigma_w2, mean_field, phase
from gradguard.theory.predict import LayerPrediction, layer_sigmas, predict_layers

__all__ = [
    "ACTIVATION_NAMES",
    "ActivationFn",
    "LayerPrediction",
    "MeanField",
    "chi1",
    "critical_sigma_w2",
    "layer_sigmas",
    "mean_field",
    "phase",
    "predict_layers",
    "resolve_activation",
]
