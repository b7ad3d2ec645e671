"""What the Monitor tells the remedies about the model: the optimizer and residual connections,
for in-memory runs (mon.run) as for stored ones."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import gradguard as gg
from gradguard.diagnosis import Finding, diagnose
from gradguard.metrics import GRAD_RMS
from gradguard.model.structure import residual_hint
from gradguard.record.batch import Layer
from gradguard.runs.run import Run


class ResBlock(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d, d)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.act(self.fc(x))


def plain_mlp(depth: int = 10, d: int = 8) -> nn.Module:
    mods: list[nn.Module] = []
    for _ in range(depth):
        mods += [nn.Linear(d, d), nn.ReLU()]
    return nn.Sequential(*mods)


def residual_mlp(depth: int = 10, d: int = 8) -> nn.Module:
    return nn.Sequential(*[ResBlock(d) for _ in range(depth)])


def in_memory_run(model: nn.Module, opt_cls: type[torch.optim.Optimizer], **watch) -> Run:
    """Train 200 steps with lr 0 on one fixed batch (the loss stays exactly flat)."""
    opt = opt_cls(model.parameters(), lr=0.0)
    x = torch.randn(16, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with gg.watch(model, opt, flush_every=200, **watch) as mon:
            for _ in range(200):
                loss = model(x).square().mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                mon.log(loss=loss)
    return mon.run


def remedy_keys(f: Finding) -> list[str]:
    from gradguard.diagnosis.knowledge import TECHNIQUES

    by_name = {t.name: t.key for t in TECHNIQUES.values()}
    return [by_name[r.name] for r in f.remedies]


def vanishing_with(config: dict, n: int = 10) -> Finding:
    """A synthetic vanishing ReLU run (x0.3 per layer) carrying ``config``."""
    v = 1e-2 * 0.3 ** np.arange(n - 1, -1, -1, dtype=np.float64) * np.ones((8, n))
    run = Run.from_arrays(
        layers=[Layer(i, f"fc{i}", "Linear", activation="ReLU") for i in range(n)],
        metrics={GRAD_RMS: (np.arange(8), v)},
        config=config,
    )
    return next(f for f in diagnose(run) if f.kind == "vanishing_gradients")


@pytest.mark.parametrize(("opt_cls", "told"), [(torch.optim.Adam, False), (torch.optim.SGD, True)])
def test_in_memory_run_carries_the_optimizer(opt_cls, told: bool) -> None:
    # regression: mon.run's config had only {"watch": ...}, so Adam users were told, online and
    # in gg.diagnose(mon.run), to try an adaptive optimizer
    torch.manual_seed(0)
    got: list[Finding] = []
    run = in_memory_run(plain_mlp(4), opt_cls, on_finding=got.append)
    assert run.config["optimizer"] == opt_cls.__name__
    assert run.config["model"] == "Sequential" and "watch" in run.config
    online = next(f for f in got if f.kind == "stalled_learning")
    offline = next(f for f in diagnose(run) if f.kind == "stalled_learning")
    for f in (online, offline):
        assert ("adaptive_optimizer" in remedy_keys(f)) is told


def test_in_memory_and_stored_runs_have_the_same_config(tmp_path) -> None:
    torch.manual_seed(0)
    db = tmp_path / "r.db"
    mem = in_memory_run(residual_mlp(3), torch.optim.Adam, store=str(db), run_config={"lr": 0})
    stored = gg.load(db)
    assert mem.config == stored.config
    assert mem.config["lr"] == 0 and mem.config["residual"] is True


def test_plain_mlp_is_not_residual_and_gets_residuals_first() -> None:
    run = in_memory_run(plain_mlp(), torch.optim.SGD, diagnose_online=False)
    assert run.config["residual"] is False and "residual_module" not in run.config
    assert remedy_keys(vanishing_with(run.config))[0] == "residual"


def test_residual_mlp_is_detected_and_not_told_to_add_residuals() -> None:
    run = in_memory_run(residual_mlp(), torch.optim.SGD, diagnose_online=False)
    assert run.config["residual"] is True and run.config["residual_module"] == "ResBlock"
    keys = remedy_keys(vanishing_with(run.config))
    assert keys and "residual" not in keys
    assert keys[0] == "he_init"


def test_run_config_overrides_the_heuristic() -> None:
    run = in_memory_run(plain_mlp(3), torch.optim.SGD, run_config={"residual": True})
    assert run.config["residual"] is True
    assert "residual" not in remedy_keys(vanishing_with(run.config))


@pytest.mark.parametrize(
    ("make", "hint"),
    [
        (lambda: plain_mlp(3), None),
        (lambda: residual_mlp(2), "ResBlock"),
        (lambda: nn.TransformerEncoderLayer(8, 2, batch_first=True), "TransformerEncoderLayer"),
        (lambda: nn.Sequential(nn.MultiheadAttention(8, 2)), None),  # attention alone: no block
        (lambda: nn.LSTM(4, 4), None),
        (lambda: nn.Sequential(nn.Linear(2, 2), nn.Unflatten(1, (1, 2))), None),
    ],
)
def test_residual_hint(make, hint: str | None) -> None:
    assert residual_hint(make()) == hint


def test_old_runs_without_the_key_are_not_residual() -> None:
    assert remedy_keys(vanishing_with({}))[0] == "residual"
    assert remedy_keys(vanishing_with({"residual": "yes"}))[0] == "residual"  # only True counts


class Stream(nn.Module):
    """Skip connections written inline, in a class with a neutral name: no name heuristic sees them."""

    def __init__(self, depth: int = 6, d: int = 8) -> None:
        super().__init__()
        self.fcs = nn.ModuleList(nn.Linear(d, d) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for fc in self.fcs:
            x = x + torch.relu(fc(x))
        return x


class TwoBranches(nn.Module):
    """Two independent inputs summed (token + position embeddings): not a skip connection."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.tok = nn.Embedding(10, d)
        self.pos = nn.Parameter(torch.randn(5, d))
        self.fc = nn.Linear(d, d)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.tok(idx) + self.pos))


def test_inline_skips_are_found_in_the_first_forward_graph_and_stored(tmp_path) -> None:
    assert residual_hint(Stream()) is None
    model = Stream()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    path = tmp_path / "skips.db"
    with gg.watch(model, opt, store=path, diagnose_online=False) as mon:
        for _ in range(3):
            opt.zero_grad()
            model(torch.randn(4, 8)).square().mean().backward()
            opt.step()
    for run in (mon.run, gg.load(path)):
        assert run.config["residual"] is True
        assert run.config["residual_module"].startswith("autograd graph")
    assert "residual" not in remedy_keys(vanishing_with(gg.load(path).config))


@pytest.mark.parametrize(
    "make", [plain_mlp, TwoBranches], ids=["plain", "summed-independent-branches"]
)
def test_no_skip_found_where_there_is_none(make) -> None:
    model = make()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randint(0, 10, (4, 5)) if make is TwoBranches else torch.randn(4, 8)
    with gg.watch(model, opt, diagnose_online=False) as mon:
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    assert mon.run.config["residual"] is False


def test_user_says_no_residual_and_the_graph_does_not_overrule() -> None:
    model = Stream()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with gg.watch(model, opt, diagnose_online=False, run_config={"residual": False}) as mon:
        opt.zero_grad()
        model(torch.randn(4, 8)).square().mean().backward()
        opt.step()
    assert mon.run.config["residual"] is False
