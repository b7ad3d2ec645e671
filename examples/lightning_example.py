"""Watch a LightningModule with gradguard's callback.

python examples/lightning_example.py && gradguard show runs/lightning.db
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import gradguard as gg
from gradguard.integrations.lightning import GradguardCallback


class Regressor(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(16, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 1)
        )

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], i: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def main(store: str | Path = "runs/lightning.db", epochs: int = 5) -> gg.Run:
    torch.manual_seed(0)
    x = torch.randn(256, 16)
    loader = DataLoader(TensorDataset(x, x[:, :1].sin()), batch_size=32)
    callback = GradguardCallback(store=store, name="lightning-example", detail_every=10)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        accumulate_grad_batches=2,  # one gradguard record per optimizer step
        callbacks=[callback],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning suggests more dataloader workers
        trainer.fit(Regressor(), loader)
    return gg.load(store, name="lightning-example")


if __name__ == "__main__":
    main(*sys.argv[1:2])
