"""The knowledge base speaks Keras for runs recorded from Keras (no Keras import needed here)."""

from __future__ import annotations

import pytest

from gradguard.diagnosis.knowledge import KERAS_HOW, KINDS, TECHNIQUES, remedies_for


def test_every_keras_line_belongs_to_a_technique_and_names_keras() -> None:
    assert set(KERAS_HOW) <= set(TECHNIQUES)
    for key, how in KERAS_HOW.items():
        assert "nn." not in how and "torch" not in how, key
        assert how != TECHNIQUES[key].how, key


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "healthy"])
def test_keras_runs_get_keras_how_to_lines(kind: str) -> None:
    torch_fix = remedies_for(kind, activation="sigmoid", depth=20)
    keras_fix = remedies_for(kind, activation="sigmoid", depth=20, framework="keras")
    # the same techniques, in the same order, with the same reasons; only the how-to differs
    assert [(r.name, r.why) for r in keras_fix] == [(r.name, r.why) for r in torch_fix]
    for k, t in zip(keras_fix, torch_fix):
        key = next(key for key, tech in TECHNIQUES.items() if tech.name == k.name)
        assert k.how == KERAS_HOW.get(key, t.how)


def test_the_issue_s_keras_remedies() -> None:
    hows = {r.how for kind in KINDS for r in remedies_for(kind, framework="keras", depth=20)}
    text = " ".join(hows)
    for expected in (
        "keras.layers.BatchNormalization()",
        "keras.optimizers.Adam(clipnorm=1.0)",
        'kernel_initializer="he_normal"',
        "keras.layers.Add()",
    ):
        assert expected in text, expected
    # torch runs (no framework in the run's config) keep the torch lines
    assert "nn.BatchNorm1d" in remedies_for("vanishing", activation="sigmoid")[3].how
