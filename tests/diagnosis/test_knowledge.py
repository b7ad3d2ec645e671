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

    doc = (Path(__file__).parents[2] / "docs" / "diagnosis.md").read_text()
    for t in TECHNIQUES.values():
        assert f"| {t.name} | `{t.how}` |" in doc, t.key


def _api_problems(how: str) -> list[str]:
    """What in a how-to names a gradguard API that does not exist, or calls it with arguments
    its signature does not take: ``gg.X.Y(args)``, a call on its result (``gg.clip.Norm(1.0)(
    params)``), ``v = gg.X(...); v.method()``, and WatchConfig fields as ``gg.watch`` keywords."""
    import inspect
    import re

    import gradguard as gg
    from gradguard.record.config import WatchConfig

    problems: list[str] = []

    def bind(fn: object, args: str, what: str, *, extra_kw: frozenset[str] = frozenset()) -> None:
        parts = [a.strip() for a in args.split(",") if a.strip()]
        kws = {p.split("=", 1)[0].strip() for p in parts if re.match(r"^\w+\s*=", p)}
        npos = len(parts) - len(kws)
        try:
            sig = inspect.signature(fn)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            problems.append(f"{what}: no signature")
            return
        if extra_kw:  # gg.watch(**options): the options are WatchConfig fields
            named = set(sig.parameters)
            problems.extend(f"{what}: no option {k!r}" for k in sorted(kws - named - extra_kw))
            kws &= named
        try:
            sig.bind(*([None] * npos), **dict.fromkeys(kws))
        except TypeError as e:
            problems.append(f"{what}({args}): {e}")

    call = r"\(((?:[^()]|\([^()]*\))*)\)"  # (args), one level of nested calls allowed
    for m in re.finditer(rf"\bgg\.([A-Za-z_][\w.]*)(?:{call})?(?:{call})?", how):
        dotted, args, then = m.group(1), m.group(2), m.group(3)
        obj: object = gg
        for part in dotted.split("."):
            if not hasattr(obj, part):
                problems.append(f"gg.{dotted}: no attribute {part!r}")
                break
            obj = getattr(obj, part)
        else:
            if args is not None:
                extra = frozenset(WatchConfig.__dataclass_fields__ if obj is gg.watch else ())
                bind(obj, args, f"gg.{dotted}", extra_kw=extra)
            if then is not None and isinstance(obj, type):
                bind(obj.__call__, f"self, {then}", f"gg.{dotted}(...)")
            var = re.search(rf"(\w+)\s*=\s*gg\.{re.escape(dotted)}\(", how)
            if var and isinstance(obj, type):
                for meth in re.findall(rf"\b{var.group(1)}\.(\w+)\(", how):
                    if not hasattr(obj, meth):
                        problems.append(f"gg.{dotted} has no method {meth!r}")
    return problems


def test_remedy_hows_name_real_gradguard_apis() -> None:
    hows = {t.key: t.how for t in TECHNIQUES.values()}
    named = {k: h for k, h in hows.items() if "gg." in h}
    # the how-tos that name gradguard: init_, clip.*, Guard, locate_nonfinite
    assert {
        "he_init",
        "lsuv_init",
        "clip_norm",
        "clip_value",
        "clip_adaptive",
        "guard",
        "locate",
    } <= set(named)
    for key, how in named.items():
        assert _api_problems(how) == [], key


def test_api_checker_catches_what_does_not_exist() -> None:
    assert _api_problems("gg.clip.Nrm(1.0)(model.parameters())")
    assert _api_problems('gg.init_(model, "he", dta=batch)')
    assert _api_problems("gg.locate_nonfinite()")  # model and inputs are required
    assert _api_problems("g = gg.Guard(model, opt); g.stepp()")
    assert _api_problems("gg.watch(model, opt, detail_evry=5)")
    assert _api_problems("gg.watch(model, opt, detail_every=5, store='x.db')") == []
    assert _api_problems("gg.clip.Norm(1.0)(model.parameters())") == []
    assert _api_problems("gg.clip.Norm(1.0)(model.parameters(), 3, 4)")  # the call is checked too


def test_init_hows_use_real_schemes() -> None:
    import torch
    from torch import nn

    import gradguard as gg

    torch.manual_seed(0)
    for t in TECHNIQUES.values():
        if t.how.startswith("gg.init_("):
            model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
            eval(t.how, {"gg": gg}, {"model": model, "batch": torch.randn(16, 4)})  # noqa: S307


def test_an_early_blow_up_ranks_a_lower_learning_rate_before_clipping() -> None:
    from gradguard.diagnosis.knowledge import remedies_for

    for kind in ("exploding_gradients", "divergence"):
        late = [r.name for r in remedies_for(kind, spike=True)]
        early = [r.name for r in remedies_for(kind, spike=True, early=True)]
        assert late[0] == "gradient norm clipping", (kind, late)
        assert early[0] == "a lower learning rate", (kind, early)
