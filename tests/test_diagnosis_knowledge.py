"""The remedies knowledge base: coverage of techniques and evidence-driven ranking."""

from __future__ import annotations

import pytest

from gradguard.diagnosis import Remedy, remedies_for
from gradguard.diagnosis.knowledge import KINDS, TECHNIQUES, activation_family
from gradguard.errors import ConfigError, GradguardError


def names(kind: str, **ctx: object) -> list[str]:
    return [r.name for r in remedies_for(kind, **ctx)]


def keys(kind: str, **ctx: object) -> list[str]:
    by_name = {t.name: t.key for t in TECHNIQUES.values()}
    return [by_name[n] for n in names(kind, **ctx)]


@pytest.mark.parametrize(
    ("kind", "ctx", "first"),
    [
        # sigmoid + saturation -> change the activation first
        ("vanishing_gradients", {"activation": "sigmoid", "saturation": True}, ["relu_family"]),
        ("vanishing_gradients", {"activation": "nn.Tanh"}, ["relu_family"]),
        # recurrent vanishing -> gated cells near the top
        ("vanishing_gradients", {"activation": "relu", "recurrent": True}, ["gated_rnn"]),
        # ReLU net without residuals: skip connections, then He init
        ("vanishing_gradients", {"activation": "ReLU", "depth": 20}, ["residual", "he_init"]),
        # spike at high LR -> clipping and LR first
        ("exploding_gradients", {"spike": True, "high_lr": True}, ["clip_norm", "lower_lr"]),
        ("exploding_gradients", {"recurrent": True}, ["clip_norm", "lower_lr", "gated_rnn"]),
        # no spike: fix the initialisation first
        ("exploding_gradients", {"activation": "relu"}, ["he_init"]),
        ("exploding_gradients", {"activation": "tanh"}, ["xavier_init"]),
        # dead ReLUs -> Leaky ReLU, lower LR, He init
        ("dead_units", {"activation": "relu"}, ["leaky_relu", "lower_lr", "he_init"]),
        ("dead_units", {"activation": "relu", "high_lr": True}, ["lower_lr", "leaky_relu"]),
        ("nonfinite", {}, ["locate", "guard"]),
        ("nonfinite", {"high_lr": True}, ["locate", "lower_lr", "clip_norm"]),
        ("saturation", {"activation": "sigmoid"}, ["relu_family", "xavier_init"]),
        ("saturation", {"activation": "sigmoid", "high_lr": True}, ["relu_family", "lower_lr"]),
        ("stalled_learning", {"optimizer": "SGD"}, ["raise_lr", "adaptive_optimizer"]),
        ("stalled_learning", {"optimizer": "Adam", "high_lr": True}, ["lower_lr"]),
        ("divergence", {}, ["lower_lr", "clip_norm", "lr_warmup"]),
        ("divergence", {"spike": True}, ["clip_norm", "lower_lr"]),
    ],
)
def test_ranking_follows_evidence(kind: str, ctx: dict[str, object], first: list[str]) -> None:
    assert keys(kind, **ctx)[: len(first)] == first


def test_context_removes_what_is_already_there() -> None:
    plain = keys("vanishing_gradients", activation="relu", depth=20)
    assert {"batchnorm", "residual", "adaptive_optimizer", "relu_family"} & set(plain) == {
        "batchnorm",
        "residual",
        "adaptive_optimizer",
    }
    equipped = keys(
        "vanishing_gradients",
        activation="relu",
        depth=20,
        has_norm=True,
        has_residual=True,
        optimizer="AdamW",
    )
    assert not {"batchnorm", "layernorm", "residual", "adaptive_optimizer"} & set(equipped)
    assert "less_depth" in equipped and "less_depth" not in keys("vanishing", depth=4)


def test_every_technique_is_linked_to_some_finding() -> None:
    contexts = [
        {},
        {"activation": "sigmoid", "saturation": True},
        {"activation": "relu", "high_lr": True, "spike": True, "depth": 30},
        {"recurrent": True},
    ]
    used = {k for kind in KINDS for ctx in contexts for k in keys(kind, **ctx)}
    assert used == set(TECHNIQUES)


def test_how_names_gradguard_apis() -> None:
    hows = {t.key: t.how for t in TECHNIQUES.values()}
    assert hows["he_init"] == 'gg.init_(model, "he")'
    assert hows["lsuv_init"] == 'gg.init_(model, "lsuv", data=batch)'
    assert "gg.clip.Norm(1.0)" in hows["clip_norm"]
    assert all(api in hows["clip_adaptive"] for api in ("AutoClip()", "ZClip()", "AGC()"))
    assert "gg.Guard(model, opt)" in hows["guard"]
    assert "gg.locate_nonfinite(model, x, loss_fn, y)" in hows["locate"]
    assert "nn.LeakyReLU(0.01)" in hows["leaky_relu"]
    assert "nn.LayerNorm(d)" in hows["layernorm"]
    assert "weight_decay=1e-2" in hows["weight_decay"]


@pytest.mark.parametrize("kind", KINDS)
def test_results_are_unique_remedies(kind: str) -> None:
    rs = remedies_for(kind, activation="tanh", depth=12)
    assert all(isinstance(r, Remedy) and r.name and r.how for r in rs)
    assert len({r.name for r in rs}) == len(rs)
    assert (len(rs) == 0) == (kind == "healthy")


def test_why_mentions_the_activation() -> None:
    top = remedies_for("vanishing_gradients", activation="Sigmoid", saturation=True)[0]
    assert "Sigmoid" in top.why and "0.25" in top.why


@pytest.mark.parametrize(
    ("act", "family"),
    [
        ("sigmoid", "saturating"),
        ("nn.Tanh", "saturating"),
        ("Hardtanh", "saturating"),
        ("ReLU", "dying"),
        ("relu6", "dying"),
        ("LeakyReLU", "relu_like"),
        ("leaky_relu", "relu_like"),
        ("GELU", "relu_like"),
        ("Identity", None),
        (None, None),
        ("", None),
    ],
)
def test_activation_family(act: str | None, family: str | None) -> None:
    assert activation_family(act) == family


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="unknown finding kind 'vanishin'.*vanishing_gradients"):
        remedies_for("vanishin")
    with pytest.raises(GradguardError, match=r"unknown context key\(s\) \['lr'\]"):
        remedies_for("exploding", lr=1.0)


def test_docs_table_lists_every_technique() -> None:
    from pathlib import Path

    doc = (Path(__file__).parents[1] / "docs" / "diagnosis.md").read_text()
    for t in TECHNIQUES.values():
        assert f"| {t.name} | `{t.how}` |" in doc, t.key
