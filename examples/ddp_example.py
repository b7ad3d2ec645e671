"""gradguard under DistributedDataParallel: 2 CPU processes on gloo, one run in the store.

    python examples/ddp_example.py && gradguard show runs/ddp.db

gg.watch sees that torch.distributed is initialised and combines per-layer numbers across ranks
(gradguard.record.reduce.DistributedReducer): gradient norms are those of the all-reduced gradients,
activation statistics cover every rank's data, and only rank 0 writes the store. Scalars given to
``mon.log`` are not reduced (rank 0's are stored), so the loss is all-reduced here first: the stored
``loss`` is the mean over ranks, the loss of the global batch.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import gradguard as gg


def train(rank: int, store: str | Path, steps: int) -> list[float]:
    """One rank's training loop; the process group is already up. Returns this rank's local losses."""
    torch.manual_seed(0)  # same initial weights on every rank
    model = nn.Sequential(
        nn.Linear(16, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 1)
    )
    ddp = DDP(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
    data = torch.Generator().manual_seed(1 + rank)  # each rank its own data
    local: list[float] = []
    with gg.watch(model, opt, store=store, name="ddp-example", detail_every=5) as mon:
        for _ in range(steps):
            x = torch.randn(32, 16, generator=data)
            loss = nn.functional.mse_loss(ddp(x), x[:, :1].sin())
            opt.zero_grad()
            loss.backward()  # DDP all-reduces the gradients here
            opt.step()  # the Monitor reads them in the step pre-hook
            # the global batch's loss: the mean of the ranks' losses (gloo has no ReduceOp.AVG)
            mean = loss.detach().clone()
            dist.all_reduce(mean, op=dist.ReduceOp.SUM)
            mon.log(loss=mean / dist.get_world_size())
            local.append(float(loss))
    return local


def worker(rank: int, world_size: int, port: int, store: str, steps: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        train(rank, store, steps)
    finally:
        dist.destroy_process_group()


def main(store: str | Path = "runs/ddp.db", steps: int = 50, world_size: int = 2) -> gg.Run:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(world_size, port, str(store), steps), nprocs=world_size)
    return gg.load(store, name="ddp-example")


if __name__ == "__main__":
    run = main(*sys.argv[1:2])
    print(f"{run.name}: {len(run.metric('grad_norm')[0])} steps of {len(run.layers)} layers")
