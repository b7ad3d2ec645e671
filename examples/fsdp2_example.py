"""gradguard under FSDP2 (``fully_shard``): 2 CPU processes on gloo, one run in the store.

    python examples/fsdp2_example.py && gradguard show runs/fsdp2.db

Each Linear and the root are sharded with ``fully_shard``: parameters and gradients are DTensors and
every rank holds one shard. gg.watch picks gradguard.record.reduce.DistributedReducer by itself; each
layer's norm is that of the full tensor (the shards' squared norms are summed across ranks), and
only rank 0 writes the store. The loss is all-reduced before it is logged (``mon.log`` stores rank 0's
values as they are), so the stored ``loss`` is the mean over ranks.
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
from torch.distributed.fsdp import fully_shard

import gradguard as gg


def train(rank: int, store: str | Path, steps: int) -> list[float]:
    """One rank's training loop; the process group is already up. Returns this rank's local losses."""
    torch.manual_seed(0)  # same initial weights on every rank (fully_shard keeps each rank's shard)
    model = nn.Sequential(
        nn.Linear(16, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 1)
    )
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer)
    fully_shard(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)  # built after fully_shard: DTensor params
    data = torch.Generator().manual_seed(1 + rank)  # each rank its own data
    local: list[float] = []
    with gg.watch(model, opt, store=store, name="fsdp2-example", detail_every=5) as mon:
        for _ in range(steps):
            x = torch.randn(32, 16, generator=data)
            loss = nn.functional.mse_loss(model(x), x[:, :1].sin())
            opt.zero_grad()
            loss.backward()  # FSDP2 reduce-scatters (averages) the gradients here
            opt.step()  # the Monitor reads each rank's gradient shards in the step pre-hook
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


def main(store: str | Path = "runs/fsdp2.db", steps: int = 50, world_size: int = 2) -> gg.Run:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(world_size, port, str(store), steps), nprocs=world_size)
    return gg.load(store, name="fsdp2-example")


if __name__ == "__main__":
    run = main(*sys.argv[1:2])
    print(f"{run.name}: {len(run.metric('grad_norm')[0])} steps of {len(run.layers)} layers")
