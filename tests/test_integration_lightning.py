"""Lightning callback with a real Trainer on CPU, against a plain torch loop on the same batches."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import gradguard as gg
from gradguard.integrations.lightning import GradguardCallback
from gradguard.monitor import Reducer

N_BATCHES = 4  # per epoch, batch size 4


def data() -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    return TensorDataset(
        torch.randn(4 * N_BATCHES, 6, generator=g), torch.randn(4 * N_BATCHES, 1, generator=g)
    )


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 1))


class Auto(L.LightningModule):
    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.net = net()
        self.fail_at = fail_at

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], i: int) -> torch.Tensor:
        if self.fail_at is not None and self.global_step == self.fail_at:
            raise RuntimeError("boom")
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Manual(Auto):
    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], i: int) -> torch.Tensor:
        opt = self.optimizers()
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        return loss


def reference(epochs: int, accumulate: int) -> gg.Run:
    """The same training in a plain loop with gg.watch."""
    model = nn.Module()
    model.net = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(data(), batch_size=4)
    mon = gg.watch(model, opt, config="full", diagnose_online=False, reducer=Reducer())
    for _ in range(epochs):
        losses = []
        for i, (x, y) in enumerate(loader):
            loss = nn.functional.mse_loss(model.net(x), y) / accumulate
            loss.backward()
            losses.append(loss.detach())
            if (i + 1) % accumulate == 0:
                opt.step()
                opt.zero_grad()
                mon.log(loss=sum(losses))
                losses = []
    mon.close()
    return mon.run


def fit(
    module: L.LightningModule, cb: GradguardCallback, epochs: int, accumulate: int = 1, logger=False
):
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        accumulate_grad_batches=accumulate,
        callbacks=[cb],
        logger=logger,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice about workers on tiny loaders
        trainer.fit(module, DataLoader(data(), batch_size=4))
    return trainer


def assert_same(run: gg.Run, ref: gg.Run, metrics: tuple[str, ...]) -> None:
    assert [lay.name for lay in run.layers] == [lay.name for lay in ref.layers]
    for m in metrics:
        s, v = run.metric(m)
        rs, rv = ref.metric(m)
        assert s.tolist() == rs.tolist(), m
        np.testing.assert_allclose(v, rv, rtol=1e-6, err_msg=m)


def test_automatic_optimization_with_accumulation(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    cb = GradguardCallback(
        store=tmp_path / "pl.db", name="pl", config="full", diagnose_online=False
    )
    fit(Auto(), cb, epochs=2, accumulate=2)
    run = gg.load(tmp_path / "pl.db", name="pl")
    ref = reference(epochs=2, accumulate=2)
    # 2 epochs x 4 batches / 2 = 4 optimizer steps, gradients read after the closure's backward
    assert run.metric("grad_norm")[0].tolist() == [0, 1, 2, 3]
    assert_same(run, ref, ("grad_norm", "grad_max", "weight_norm", "update_ratio", "act_std"))
    s, loss = run.scalar("loss")
    rs, rloss = ref.scalar("loss")
    assert s.tolist() == rs.tolist()
    np.testing.assert_allclose(loss, rloss, rtol=1e-6)
    assert run.config["accumulate_grad_batches"] == 2
    assert "gradguard:" in capsys.readouterr().out  # findings (or "no findings") printed at the end
    assert cb.monitor is not None and not cb.monitor.model._forward_pre_hooks  # hooks removed


def test_manual_optimization(tmp_path: Path) -> None:
    cb = GradguardCallback(config="full", diagnose_online=False, show_findings=False)
    fit(Manual(), cb, epochs=1)
    assert cb.monitor is not None
    assert_same(cb.monitor.run, reference(epochs=1, accumulate=1), ("grad_norm", "update_ratio"))


def test_key_scalars_reach_the_trainer_logger(tmp_path: Path) -> None:
    cb = GradguardCallback(config="light", flush_every=3, show_findings=False)
    trainer = fit(Auto(), cb, epochs=1, logger=CSVLogger(tmp_path, name="csv"))
    assert cb.monitor is not None
    steps, total = cb.monitor.run.scalar("grad_norm_total")
    with open(Path(trainer.logger.log_dir) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    got = {
        int(r["step"]): float(r["gradguard/grad_norm_total"])
        for r in rows
        if r.get("gradguard/grad_norm_total")
    }
    assert sorted(got) == steps.tolist()
    np.testing.assert_allclose([got[s] for s in steps.tolist()], total, rtol=1e-6)
    _, per_layer = cb.monitor.run.metric("grad_norm")
    got_max = {
        int(r["step"]): float(r["gradguard/grad_norm_max"])
        for r in rows
        if r.get("gradguard/grad_norm_max")
    }
    np.testing.assert_allclose(
        [got_max[s] for s in steps.tolist()], per_layer.max(axis=1), rtol=1e-6
    )


def test_exception_closes_the_monitor_and_keeps_what_was_recorded(tmp_path: Path) -> None:
    cb = GradguardCallback(store=tmp_path / "x.db", name="x", config="light", show_findings=False)
    module = Auto(fail_at=2)
    with pytest.raises(RuntimeError, match="boom"):
        fit(module, cb, epochs=1)
    run = gg.load(tmp_path / "x.db", name="x")
    assert run.metric("grad_norm")[0].tolist() == [0, 1]
    assert any(e.kind == "exception" and "boom" in e.message for e in run.events)
    assert not module._forward_pre_hooks and not module._forward_hooks
    opt = cb.monitor.optimizer if cb.monitor is not None else None
    assert (
        opt is not None and not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks
    )


def test_lightning_example_runs(tmp_path: Path) -> None:
    from examples.lightning_example import main

    run = main(tmp_path / "ex.db", epochs=1)
    assert run.metric("grad_norm")[1].shape[1] == 3
