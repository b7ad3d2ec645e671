"""Does ``gg.check``'s trainability verdict predict training? The grid harness (issue 14).

Grid (248 configurations, all on scikit-learn's digits, 1437 train / 360 test images):
- MLPs: activation (tanh, relu, sigmoid, gelu) x hidden layers (4, 12, 24, 48) x init (PyTorch
  default, Xavier, He, N(0, sigma^2 / fan_in) for sigma^2 = 0.25, 4, 16; biases 0 except default)
  x optimizer (SGD with momentum 0.9, Adam); width 32.
- a CNN family: (relu, tanh) x conv layers (4, 8) x init (default, he, sigma^2 0.25, 16) x
  optimizer; 3x3 convs with 8 channels on the 8x8 image, then a linear head.
- a residual family: (relu, tanh) x blocks (12, 32) x init (he, sigma^2 4, 16) x optimizer;
  ``x + act(W x)`` blocks of width 32.

Outcome: each configuration is trained from the same initialisation (seed 0) for a fixed budget
(``STEPS`` steps of batch ``BATCH``) at each of three learning rates (SGD 0.01, 0.03, 0.1; Adam
1e-4, 1e-3, 1e-2; middle rate first, stopping at the first rate that succeeds); it is *trainable*
when the best test accuracy reaches ``TARGET`` (0.9). The outcomes are cached in
``benchmarks/trainability_results.json`` (keyed by configuration and budget), so that calibrating
again costs only the checks.

Verdict: ``gg.check(model, first 64 training images)`` (default loss, Jacobian on) at the same
initialisation. Split: a configuration belongs to the calibration half when the first byte of
sha1(its key) is even, else to the held-out half. ``--write`` fits the logistic model on the
calibration half (sklearn, class weights that make a false "trainable" 4x as costly as a false
"untrainable", threshold chosen on the calibration half) and writes
``src/gradguard/preflight/_calibration.py``; the confusion tables of the shipped verdict on both
halves are printed either way.

Run: ``.venv/bin/python benchmarks/trainability.py [--write] [--fast] [--fix]``
(``--fast``: 8 configurations, no cache, what the test suite runs; ``--fix``: gg.fix on every
untrainable configuration, trained again).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import gradguard as gg
from gradguard.lab.data import digits

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "benchmarks" / "trainability_results.json"
CALIBRATION = ROOT / "src" / "gradguard" / "preflight" / "_calibration.py"
FIX_CACHE = ROOT / "benchmarks" / "trainability_fix.json"

STEPS, BATCH, TARGET, WIDTH, CHANNELS = 200, 64, 0.9, 32, 8
LRS = {"sgd": (0.03, 0.01, 0.1), "adam": (1e-3, 1e-4, 1e-2)}  # middle rate first
FALSE_TRAINABLE_COST = 4.0  # a false "trainable" counts as this many errors when choosing C
MAX_FALSE_TRAINABLE = 0.02  # the threshold keeps false "trainable" at or below this
PROBE_STEPS = 20
ACTS = {"tanh": nn.Tanh, "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}


@dataclass(frozen=True)
class Config:
    """One grid point. init: 'default', 'xavier', 'he' or 'sw2=<sigma^2>'."""

    family: str  # mlp, cnn, residual
    act: str
    depth: int
    init: str
    opt: str

    @property
    def key(self) -> str:
        return f"{self.family}/{self.act}/d{self.depth}/{self.init}/{self.opt}"

    @property
    def calibration(self) -> bool:
        return hashlib.sha1(self.key.encode()).digest()[0] % 2 == 0


def grid() -> list[Config]:
    out = []
    for act in ("tanh", "relu", "sigmoid", "gelu"):
        for depth in (4, 12, 24, 48):
            for init in ("default", "xavier", "he", "sw2=0.25", "sw2=4", "sw2=16"):
                out += [Config("mlp", act, depth, init, opt) for opt in ("sgd", "adam")]
    for act in ("relu", "tanh"):
        for depth in (4, 8):
            for init in ("default", "he", "sw2=0.25", "sw2=16"):
                out += [Config("cnn", act, depth, init, opt) for opt in ("sgd", "adam")]
        for depth in (12, 32):
            for init in ("he", "sw2=4", "sw2=16"):
                out += [Config("residual", act, depth, init, opt) for opt in ("sgd", "adam")]
    return out


FAST = [
    Config("mlp", "relu", 4, "he", "adam"),
    Config("mlp", "tanh", 4, "xavier", "sgd"),
    Config("mlp", "gelu", 12, "default", "adam"),
    Config("mlp", "sigmoid", 48, "default", "sgd"),
    Config("mlp", "relu", 24, "sw2=16", "adam"),
    Config("mlp", "tanh", 48, "sw2=16", "sgd"),
    Config("cnn", "relu", 4, "he", "adam"),
    Config("residual", "tanh", 12, "he", "sgd"),
]


class Residual(nn.Module):
    """x + act(linear(x)): (batch, width) -> (batch, width)."""

    def __init__(self, width: int, act: str) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.act = ACTS[act]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act(self.linear(x))


def _init(m: nn.Module, init: str, act: str) -> None:
    w = m.weight
    assert isinstance(w, torch.Tensor)
    if init == "default":
        return
    fan_in = w[0].numel()
    with torch.no_grad():
        if init == "xavier":
            nn.init.xavier_normal_(w)
        elif init == "he":
            nn.init.kaiming_normal_(w, nonlinearity="relu")
        else:
            w.normal_(0.0, math.sqrt(float(init.split("=")[1]) / fan_in))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def build(cfg: Config, seed: int = 0) -> nn.Module:
    """The configuration's model at its initialisation: (batch, 64) -> (batch, 10)."""
    torch.manual_seed(seed)
    mods: list[nn.Module] = []
    if cfg.family == "cnn":
        mods.append(nn.Unflatten(1, (1, 8, 8)))
        for i in range(cfg.depth):
            mods += [nn.Conv2d(1 if i == 0 else CHANNELS, CHANNELS, 3, padding=1), ACTS[cfg.act]()]
        mods += [nn.Flatten(), nn.Linear(CHANNELS * 64, 10)]
    elif cfg.family == "residual":
        mods += [nn.Linear(64, WIDTH), ACTS[cfg.act]()]
        mods += [Residual(WIDTH, cfg.act) for _ in range(cfg.depth)]
        mods.append(nn.Linear(WIDTH, 10))
    else:
        for i in range(cfg.depth):
            mods += [nn.Linear(64 if i == 0 else WIDTH, WIDTH), ACTS[cfg.act]()]
        mods.append(nn.Linear(WIDTH, 10))
    model = nn.Sequential(*mods)
    for m in model.modules():
        if isinstance(m, nn.Linear | nn.Conv2d):
            _init(m, cfg.init, cfg.act)
    return model


def train(model: nn.Module, data: Any, opt: str, lr: float, *, steps: int = STEPS) -> float:
    """Test accuracy after ``steps`` steps of cross-entropy (chance, 0.1, on a non-finite loss)."""
    gen = torch.Generator().manual_seed(0)
    params = list(model.parameters())
    optim: torch.optim.Optimizer = (
        torch.optim.Adam(params, lr=lr)
        if opt == "adam"
        else torch.optim.SGD(params, lr=lr, momentum=0.9)
    )
    model.train()
    x, y = data.x_train, data.y_train
    for _ in range(steps):
        idx = torch.randint(0, len(x), (BATCH,), generator=gen)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        if not torch.isfinite(loss):
            return 0.1
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
    model.eval()
    with torch.no_grad():
        out = model(data.x_test)
    if not torch.isfinite(out).all():
        return 0.1
    return float((out.argmax(1) == data.y_test).double().mean())


def outcome(model_of: Any, cfg: Config, data: Any) -> dict[str, Any]:
    """Best test accuracy over the learning-rate sweep (stops at the first rate that succeeds)."""
    accs: dict[str, float] = {}
    for lr in LRS[cfg.opt]:
        accs[f"{lr:g}"] = train(model_of(), data, cfg.opt, lr)
        if accs[f"{lr:g}"] >= TARGET:
            break
    best = max(accs.values())
    return {"accs": accs, "best": best, "trainable": best >= TARGET}


def _budget() -> str:
    return f"steps={STEPS},batch={BATCH},width={WIDTH},channels={CHANNELS}"


def outcomes(configs: list[Config], data: Any, *, cache: bool, quiet: bool) -> dict[str, Any]:
    stored: dict[str, Any] = {}
    if cache and CACHE.exists():
        blob = json.loads(CACHE.read_text())
        stored = blob["results"] if blob.get("budget") == _budget() else {}
    t0 = time.perf_counter()
    todo = [c for c in configs if c.key not in stored]
    for i, cfg in enumerate(todo):
        stored[cfg.key] = {**asdict(cfg), **outcome(lambda c=cfg: build(c), cfg, data)}
        if not quiet:
            r = stored[cfg.key]
            print(f"[{i + 1}/{len(todo)} {time.perf_counter() - t0:.0f}s] {cfg.key}: {r['best']:.3f}",
                  file=sys.stderr, flush=True)  # fmt: skip
        if cache and (i % 10 == 9 or i == len(todo) - 1):
            CACHE.write_text(json.dumps({"budget": _budget(), "results": stored}, indent=1))
    return stored


def check_reports(configs: list[Config], data: Any, *, probe: bool) -> dict[str, Any]:
    """The check's report for each configuration, at the training's initialisation: one pass with
    the default loss, or (probe) the real loss on the batch's labels plus the short trial."""
    x, y = data.x_train[:64], data.y_train[:64]
    kw: dict[str, Any] = {}
    if probe:
        kw = {"loss_fn": nn.functional.cross_entropy, "target": y, "probe_steps": PROBE_STEPS}
    return {cfg.key: gg.check(build(cfg), x, **kw) for cfg in configs}


def confusion(pairs: list[tuple[bool, bool]]) -> dict[str, int]:
    """Counts of (verdict, outcome) pairs."""
    return {
        "tt": sum(v and o for v, o in pairs),
        "tf": sum(v and not o for v, o in pairs),
        "ft": sum(not v and o for v, o in pairs),
        "ff": sum(not v and not o for v, o in pairs),
    }


def table(name: str, c: dict[str, int]) -> str:
    n = sum(c.values())
    agree = (c["tt"] + c["ff"]) / n if n else math.nan
    false_t = c["tf"] / n if n else math.nan
    return "\n".join(
        [
            f"{name}: {n} configurations, agreement {agree:.1%}, false 'trainable' {false_t:.1%}",
            "| verdict \\ outcome | trains | does not train |",
            "|---|---|---|",
            f"| trainable | {c['tt']} | {c['tf']} |",
            f"| not trainable | {c['ft']} | {c['ff']} |",
        ]
    )


def _standardise(features: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(features), (features - mean) / scale, 0.0)


def _logistic(features: np.ndarray, labels: np.ndarray, c: float, w: float) -> Any:
    from sklearn.linear_model import LogisticRegression

    mean = np.nanmean(features, axis=0)
    scale = np.nanstd(features, axis=0)
    scale[~(scale > 0)] = 1.0
    z = _standardise(features, mean, scale)
    clf = LogisticRegression(C=c, class_weight={True: 1.0, False: w}, max_iter=20000)
    clf.fit(z, labels)
    p = clf.predict_proba(z)[:, 1]
    best = (-1.0, 0.5)  # the threshold: best agreement with at most 2% false "trainable"
    for t in np.unique(np.round(p, 4)):
        pred = p >= t
        if np.mean(pred & ~labels) <= MAX_FALSE_TRAINABLE and np.mean(pred == labels) > best[0]:
            best = (float(np.mean(pred == labels)), float(t))
    return clf, mean, scale, best[1]


def fit(features: np.ndarray, labels: np.ndarray, names: tuple[str, ...]) -> dict[str, Any]:
    """Logistic model on standardised features (nan -> the mean), its regularisation C and class
    weight chosen by 4-fold cross-validation on the calibration half (score: agreement minus
    FALSE_TRAINABLE_COST - 1 times the false-"trainable" rate), threshold on the calibration half."""
    from sklearn.model_selection import StratifiedKFold

    folds = list(StratifiedKFold(4, shuffle=True, random_state=0).split(features, labels))
    scores = {}
    for c in (0.3, 1.0, 3.0, 10.0, 30.0):
        for w in (1.0, 2.0, 4.0):
            s = []
            for tr, te in folds:
                clf, mean, scale, t = _logistic(features[tr], labels[tr], c, w)
                pred = clf.predict_proba(_standardise(features[te], mean, scale))[:, 1] >= t
                agree, false_t = np.mean(pred == labels[te]), np.mean(pred & ~labels[te])
                s.append(agree - (FALSE_TRAINABLE_COST - 1.0) * false_t)
            scores[(c, w)] = float(np.mean(s))
    c, w = max(scores, key=lambda k: scores[k])
    clf, mean, scale, t = _logistic(features, labels, c, w)
    return {  # in the order of ``names`` (trainable.FEATURES / PROBE_FEATURES), not repeated here
        "mean": tuple(float(v) for v in mean),
        "scale": tuple(float(v) for v in scale),
        "weights": tuple(float(v) for v in clf.coef_[0]),
        "bias": float(clf.intercept_[0]),
        "threshold": t,
        "C": c,
        "class_weight_untrainable": w,
        "cv_score": scores[(c, w)],
    }


def _literal(v: Any) -> str:
    if isinstance(v, tuple):
        return "(" + ", ".join(_literal(x) for x in v) + ",)"
    if isinstance(v, str):
        return f'"{v}"'
    return f"{v:.6g}"


def write_calibration(models: dict[str, dict[str, Any]], n: int) -> None:
    lines = [
        '"""The trainability verdict\'s calibration: written by ``benchmarks/trainability.py '
        "--write``.",
        "",
        f"Fitted on the calibration half of the grid ({n} configurations; budget {_budget()};",
        f"trainable := best test accuracy over the learning-rate sweep >= {TARGET}). STATIC: one",
        "pass with the default loss; PROBE: the real loss plus a short trial (probe_steps=",
        f"{PROBE_STEPS}). Weights, means and scales in the order of trainable.FEATURES / "
        "PROBE_FEATURES. Do not edit.",
        '"""',
        "",
        "from typing import Any",
        "",
    ]
    for name, model in models.items():
        lines.append(f"{name}: dict[str, Any] = {{")
        for k, v in model.items():
            if isinstance(v, tuple):
                lines.append(f'    "{k}": (')
                lines += [f"        {_literal(x)}," for x in v]
                lines.append("    ),")
            else:
                lines.append(f'    "{k}": {_literal(v)},')
        lines.append("}")
    CALIBRATION.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="fit and write _calibration.py")
    ap.add_argument("--fast", action="store_true", help="8 configurations, no cache")
    ap.add_argument("--fix", action="store_true", help="gg.fix the untrainable configurations")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    data = digits()
    configs = FAST if args.fast else grid()
    t0 = time.perf_counter()
    results = outcomes(configs, data, cache=not args.fast, quiet=args.quiet)
    train_s = time.perf_counter() - t0
    from gradguard.preflight.trainable import FEATURES, PROBE_FEATURES

    labels = np.array([bool(results[c.key]["trainable"]) for c in configs])
    calib = np.array([c.calibration for c in configs])
    kinds = {"STATIC": (False, FEATURES), "PROBE": (True, PROBE_FEATURES)}
    reports = {name: check_reports(configs, data, probe=p) for name, (p, _) in kinds.items()}
    if args.write:
        models = {}
        for name, (_, names) in kinds.items():
            feats = np.array(
                [[reports[name][c.key].trainability.numbers[f] for f in names] for c in configs]
            )
            models[name] = fit(feats[calib], labels[calib], names)
        write_calibration(models, int(calib.sum()))
        print(f"wrote {CALIBRATION.relative_to(ROOT)}; run again to evaluate it", file=sys.stderr)
        return 0
    print(f"grid: {len(configs)} configurations, {int(labels.sum())} trainable "
          f"(best test accuracy >= {TARGET} in {STEPS} steps); training took {train_s:.0f} s")  # fmt: skip
    for name in kinds:
        what = "one pass, default loss" if name == "STATIC" else f"with probe_steps={PROBE_STEPS}"
        print(f"\n## verdict: {what}\n")
        verdicts = {c.key: reports[name][c.key].trainable for c in configs}
        for part, keep in (("calibration", calib), ("held-out", ~calib), ("all", calib | ~calib)):
            pairs = [
                (verdicts[c.key], bool(results[c.key]["trainable"]))
                for c, k in zip(configs, keep)
                if k
            ]
            print(table(f"{name.lower()} {part}" if name == "PROBE" else part, confusion(pairs)))  # fmt: skip
            print()
        for c in configs:
            if verdicts[c.key] != results[c.key]["trainable"]:
                r = reports[name][c.key].trainability
                print(f"miss: {c.key} ({'calib' if c.calibration else 'held-out'}): verdict "
                      f"{r.trainable} p={r.probability:.2f}, best acc {results[c.key]['best']:.3f}")  # fmt: skip
    if args.fix:
        fix_rate(configs, results, data)
    return 0


def fix_rate(configs: list[Config], results: dict[str, Any], data: Any) -> None:
    """gg.fix on each untrainable configuration, the result trained with the same sweep.

    Init-only first; "an init can fix it" := some init of the grid trains the same family,
    activation, depth and optimizer. Then gg.fix with allow_architecture_changes=True on those
    the init-only fix left untrainable. Held-out half first (the reported numbers), then the
    calibration half (the verdict was fitted there, the remedies were not). Results are cached
    in FIX_CACHE.
    """
    trains = {c.key: bool(results[c.key]["trainable"]) for c in configs}
    possible = {_arch_of(c) for c in configs if trains[c.key]}
    cache: dict[str, Any] = json.loads(FIX_CACHE.read_text()) if FIX_CACHE.exists() else {}
    if cache.get("budget") != _budget():
        cache = {"budget": _budget()}
    for half, calibration in (("held-out", False), ("calibration", True)):
        bad = [c for c in configs if not trains[c.key] and c.calibration == calibration]
        _fix_all(bad, results, data, cache)
        _fix_summary(half, bad, possible, cache)


def _arch_of(c: Config) -> tuple[str, str, int, str]:
    return (c.family, c.act, c.depth, c.opt)


def _fix_all(bad: list[Config], results: dict[str, Any], data: Any, cache: dict[str, Any]) -> None:
    """gg.fix init-only on every config of ``bad``, then with architecture changes on those it
    left untrainable; each result trained again; cached by "init:"/"arch:" + key."""
    x = data.x_train[:64]
    t0 = time.perf_counter()
    for arch in (False, True):
        todo = bad if not arch else [c for c in bad if not cache[f"init:{c.key}"]["trains"]]
        for i, cfg in enumerate(todo):
            key = f"{'arch' if arch else 'init'}:{cfg.key}"
            if key in cache:
                continue
            rep = gg.fix(build(cfg), x, allow_architecture_changes=arch)
            new = rep.model
            state = {k: v.clone() for k, v in new.state_dict().items()}

            def again(new: nn.Module = new, state: dict[str, Any] = state) -> nn.Module:
                new.load_state_dict(state)
                return new

            out = outcome(again, cfg, data) if rep.changed else results[cfg.key]
            cache[key] = {
                "changed": rep.changed,
                "judged": rep.fixed,
                "needs_arch": rep.needs_architecture_change,
                "best": out["best"],
                "trains": bool(out["trainable"]),
            }
            print(f"[{key} {i + 1}/{len(todo)} {time.perf_counter() - t0:.0f}s] "
                  f"{rep.changed or '-'}: {out['best']:.3f}", file=sys.stderr, flush=True)  # fmt: skip
            FIX_CACHE.write_text(json.dumps(cache, indent=1))


def _fix_summary(
    half: str, bad: list[Config], possible: set[tuple[str, str, int, str]], cache: dict[str, Any]
) -> None:
    init = {c.key: cache[f"init:{c.key}"] for c in bad}
    can = [c for c in bad if _arch_of(c) in possible]
    cannot = [c for c in bad if _arch_of(c) not in possible]
    fixed_can = sum(init[c.key]["trains"] for c in can)
    fixed_cannot = sum(init[c.key]["trains"] for c in cannot)
    flag_right = sum(init[c.key]["needs_arch"] == (_arch_of(c) not in possible) for c in bad)
    trains_after = {
        c.key: init[c.key]["trains"] or cache[f"arch:{c.key}"]["trains"] for c in bad
    }  # with allow_architecture_changes=True: the init-only fix when it works, else the change
    print(f"\n## gg.fix on the {len(bad)} untrainable configurations of the {half} half\n")
    print(f"init-only, where some init of the grid trains the same architecture: "
          f"{fixed_can}/{len(can)} train after gg.fix")  # fmt: skip
    print(f"init-only, where no init of the grid does: {fixed_cannot}/{len(cannot)} train")
    print(f"needs_architecture_change agrees with the grid on {flag_right}/{len(bad)}")
    print(f"allow_architecture_changes=True, where no init of the grid trains the architecture: "
          f"{sum(trains_after[c.key] for c in cannot)}/{len(cannot)} train")  # fmt: skip
    rest = [c for c in bad if not init[c.key]["trains"]]
    fixed_arch = sum(cache[f"arch:{c.key}"]["trains"] for c in rest)
    print(f"allow_architecture_changes=True, on the {len(rest)} the init-only fix left "
          f"untrainable: {fixed_arch}/{len(rest)} train")  # fmt: skip
    print(f"all together: {sum(trains_after.values())}/{len(bad)} train after gg.fix")
    for c in bad:
        i, a = init[c.key], cache.get(f"arch:{c.key}")
        print(f"  {c.key}: init {i['changed'] or '-'} -> {i['best']:.3f}"
              + (f"; arch {a['changed'] or '-'} -> {a['best']:.3f}" if a else ""))  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
