"""Per-layer gradient statistics in TensorBoard.

    python examples/tensorboard_example.py && tensorboard --logdir runs/tb

Scalars tab: one section per metric (grad_norm, grad_rms, ...), a chart per layer.
Custom Scalars tab: one chart per metric with a series per layer.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

import gradguard as gg
from gradguard.sinks.tensorboard import TensorBoardSink


def main(log_dir: str | Path = "runs/tb", steps: int = 200) -> Path:
    torch.manual_seed(0)
    # a deep tanh MLP with a small init: its gradients shrink layer after layer
    model = nn.Sequential(*[m for _ in range(6) for m in (nn.Linear(32, 32), nn.Tanh())])
    model.append(nn.Linear(32, 1))
    for m in model:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.5 / 32**0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sink = TensorBoardSink(log_dir, histograms_every=max(steps // 4, 1))
    with gg.watch(model, opt, sinks=[sink], flush_every=50, diagnose_online=False) as mon:
        for _ in range(steps):
            x = torch.randn(64, 32)
            loss = (model(x) - x[:, :1].sin()).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            mon.log(loss=loss)
    print(f"wrote {sink.log_dir}; run: tensorboard --logdir {sink.log_dir}")
    return Path(sink.log_dir)


if __name__ == "__main__":
    main(*sys.argv[1:2])
