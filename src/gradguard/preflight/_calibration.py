"""The trainability verdict's calibration: written by ``benchmarks/trainability.py --write``.

Fitted on the calibration half of the grid (124 configurations; budget steps=200,batch=64,width=32,channels=8;
trainable := best test accuracy over the learning-rate sweep >= 0.9). STATIC: one
pass with the default loss; PROBE: the real loss plus a short trial (probe_steps=
20). Weights, means and scales in the order of trainable.FEATURES / PROBE_FEATURES. Do not edit.
"""

from typing import Any

STATIC: dict[str, Any] = {
    "mean": (
        4.14782,
        1.62088,
        2.29999,
        2.58206,
        4.21418,
        0.736967,
        0.0741676,
        0.111391,
        10.3937,
        3.89892,
    ),
    "scale": (
        6.77596,
        3.82268,
        6.2469,
        5.73122,
        8.28143,
        0.179817,
        0.188834,
        0.212476,
        9.9271,
        1.17414,
    ),
    "weights": (
        -0.414398,
        -3.04911,
        -1.87299,
        0.323063,
        -1.99691,
        -0.643445,
        -0.648529,
        -0.491777,
        -3.78886,
        -1.42193,
    ),
    "bias": -7.88339,
    "threshold": 0.2583,
    "C": 3,
    "class_weight_untrainable": 4,
    "cv_score": 0.862903,
}
PROBE: dict[str, Any] = {
    "mean": (
        4.13395,
        1.64556,
        2.29999,
        2.58206,
        4.21418,
        0.736967,
        0.0741676,
        0.111391,
        10.3857,
        3.89892,
        -1.32918,
    ),
    "scale": (
        6.76942,
        3.87604,
        6.2469,
        5.73122,
        8.28143,
        0.179817,
        0.188834,
        0.212476,
        9.92786,
        1.17414,
        1.46034,
    ),
    "weights": (
        1.73951,
        -7.94664,
        -3.86443,
        0.706699,
        -0.558459,
        -0.204415,
        -0.848479,
        -0.530158,
        -5.93711,
        -1.54408,
        -2.29784,
    ),
    "bias": -9.85191,
    "threshold": 0.3027,
    "C": 10,
    "class_weight_untrainable": 4,
    "cv_score": 0.790323,
}
