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
from gradguard.record.reduce import LocalReducer

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
    mon = gg.watch(model, opt, config="full", diagnose_online=False, reducer=LocalReducer())
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


class Clipped(Auto):
    """Records each layer's gradient norm right before Lightning clips (its own hook, not gradguard's)."""

    def __init__(self) -> None:
        super().__init__()
        self.pre_clip: list[dict[str, float]] = []
        self.post_clip_total: list[float] = []

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ):  # type: ignore[no-untyped-def]
        row = {}
        for name, module in self.named_modules():
            grads = [
                p.grad.flatten() for p in module.parameters(recurse=False) if p.grad is not None
            ]
            if grads:
                row[name] = torch.linalg.vector_norm(torch.cat(grads).double()).item()
        self.pre_clip.append(row)
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
        grads = [p.grad.flatten() for p in self.parameters() if p.grad is not None]
        self.post_clip_total.append(torch.linalg.vector_norm(torch.cat(grads)).item())


def test_gradient_clipping_records_pre_clip_norms() -> None:
    module = Clipped()
    cb = GradguardCallback(config="light", diagnose_online=False, show_findings=False)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        gradient_clip_val=1e-3,  # far below the gradients: every step is clipped
        callbacks=[cb],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, DataLoader(data(), batch_size=4))
    assert cb.monitor is not None
    run = cb.monitor.run
    steps, values = run.metric("grad_norm")
    assert steps.tolist() == list(range(N_BATCHES)) and len(module.pre_clip) == N_BATCHES
    np.testing.assert_allclose(module.post_clip_total, 1e-3, rtol=1e-3)  # clipping did happen
    names = [lay.name for lay in run.layers]
    for s, row in enumerate(module.pre_clip):
        np.testing.assert_allclose(values[s], [row[n] for n in names], rtol=1e-6)
    total = run.scalar("grad_norm_total")[1]
    assert np.all(total > 10 * 1e-3)  # the pre-clip norm, not the clipped 1e-3


class GAN(L.LightningModule):
    """Two optimizers, manual optimization: the generator's step, then the discriminator's."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.generator = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 6))
        self.discriminator = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1))
        self.automatic_optimization = False
        self.reference: dict[str, list[float]] = {"generator": [], "discriminator": []}

    def _norms(self, part: str) -> None:
        grads = [p.grad.flatten() for p in getattr(self, part).parameters()]
        self.reference[part].append(torch.linalg.vector_norm(torch.cat(grads)).item())

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], i: int) -> torch.Tensor:
        opt_g, opt_d = self.optimizers()
        real, _ = batch
        z = torch.randn(real.shape[0], 3)
        g_loss = -self.discriminator(self.generator(z)).mean()
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        self._norms("generator")
        opt_g.step()
        d_loss = (
            self.discriminator(self.generator(z).detach()).mean() - self.discriminator(real).mean()
        )
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        self._norms("discriminator")
        opt_d.step()
        if i % 2:  # the critic steps twice every other batch
            opt_d.step()
        return d_loss

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return (
            torch.optim.SGD(self.generator.parameters(), lr=0.01),
            torch.optim.SGD(self.discriminator.parameters(), lr=0.01),
        )


def test_two_optimizers_get_a_monitor_each(tmp_path: Path) -> None:
    module = GAN()
    cb = GradguardCallback(
        store=tmp_path / "gan.db", name="gan", config="light", show_findings=False
    )
    fit(module, cb, epochs=1)
    assert len(cb.monitors) == 2
    g = gg.load(tmp_path / "gan.db", name="gan.generator")
    d = gg.load(tmp_path / "gan.db", name="gan.discriminator")
    assert [lay.name for lay in g.layers] == ["0", "2"] and [lay.name for lay in d.layers] == [
        "0",
        "2",
    ]
    # each Monitor counts its own optimizer's steps: 4 generator steps, 4 + 2 critic steps
    assert g.metric("grad_norm")[0].tolist() == [0, 1, 2, 3]
    assert d.metric("grad_norm")[0].tolist() == list(range(6))
    np.testing.assert_allclose(
        g.scalar("grad_norm_total")[1], module.reference["generator"], rtol=1e-6
    )
    ref_d = module.reference["discriminator"]
    d_total = d.scalar("grad_norm_total")[1]
    # the second critic step of a batch sees the same gradients as the first
    expected = [ref_d[0], ref_d[1], ref_d[1], ref_d[2], ref_d[3], ref_d[3]]
    np.testing.assert_allclose(d_total, expected, rtol=1e-6)


def test_two_optimizers_on_mixed_parameters_is_a_clear_error() -> None:
    class Mixed(GAN):
        def configure_optimizers(self):  # type: ignore[no-untyped-def]
            params = list(self.parameters())
            return torch.optim.SGD(params[:3], lr=0.01), torch.optim.SGD(params[3:], lr=0.01)

    cb = GradguardCallback(config="light", show_findings=False)
    with pytest.raises(gg.GradguardError, match="optimizer_index=k"):
        fit(Mixed(), cb, epochs=1)
    # optimizer_index picks one: the whole module, steps of that optimizer
    cb = GradguardCallback(config="light", show_findings=False, optimizer_index=1)
    fit(Mixed(), cb, epochs=1)
    assert cb.monitor is not None and len(cb.monitors) == 1
    assert len(cb.monitor.run.layers) == 4
