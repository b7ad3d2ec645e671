"""Per-layer statistics under DDP and FSDP2 (2 processes on gloo) against a one-process run on the same global batch.

One spawn of two ranks runs every scenario (spawning costs seconds); each rank saves what its Monitor
recorded, and the test compares with a single-process Monitor fed the whole batch.
"""

from __future__ import annotations

import datetime
import math
import os
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import gradguard as gg
from gradguard.record.reduce import DistributedReducer, LocalReducer, replication_factor

WORLD = 2
STEPS = 3
COMPARED = ("grad_norm", "grad_rms", "grad_max", "weight_norm", "nonfinite", "update_ratio")
ACT = ("act_mean", "act_std", "act_zero_frac", "act_sat_frac")


def make_model() -> nn.Module:
    torch.manual_seed(0)
    # Linear(4, 1) splits [1, 4] and [1] unevenly over 2 ranks under FSDP2: rank 1 holds empty shards.
    return nn.Sequential(
        nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 6), nn.ReLU(), nn.Linear(6, 4), nn.Linear(4, 1)
    )


def global_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(16, 8, generator=g), torch.randn(16, 1, generator=g)


def part(t: torch.Tensor, rank: int, parts: int) -> torch.Tensor:
    n = t.shape[0] // parts
    return t[rank * n : (rank + 1) * n]


def record(mon: gg.Monitor) -> dict[str, np.ndarray]:
    mon.flush()
    run = mon.run
    out = {m: run.metric(m)[1] for m in COMPARED + ACT + ("act_grad_norm",)}
    out["steps"] = run.metric("grad_norm")[0]
    return out


def train_single(accumulate: int = 1) -> dict[str, np.ndarray]:
    """The reference: one process, the whole global batch (split into micro-batches when accumulating)."""
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = gg.watch(model, opt, config="full", diagnose_online=False, reducer=LocalReducer())
    for s in range(STEPS):
        x, y = global_batch(s)
        opt.zero_grad()
        for i in range(accumulate):
            xi, yi = part(x, i, accumulate), part(y, i, accumulate)
            (nn.functional.mse_loss(model(xi), yi) / accumulate).backward()
        opt.step()
    out = record(mon)
    mon.close()
    return out


# ---------------------------------------------------------------- the two ranks
class _CountingSink:
    """Counts the grad_norm steps it is fed; the count is written to a file at close."""

    def __init__(self, path: Path) -> None:
        self.path, self.steps = path, 0

    def write(self, batch, layers) -> None:  # type: ignore[no-untyped-def]
        if "grad_norm" in batch.metrics:
            self.steps += len(batch.metrics["grad_norm"][0])

    def close(self) -> None:
        self.path.write_text(str(self.steps))


def _ddp(rank: int, out: Path, store: Path) -> None:
    from torch.nn.parallel import DistributedDataParallel as DDP

    model = make_model()
    ddp = DDP(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    sink = _CountingSink(out / f"sink-{rank}.txt")
    mon = gg.watch(
        model, opt, config="full", diagnose_online=False, store=store, name="ddp", sinks=[sink]
    )
    assert isinstance(mon.reducer, DistributedReducer)  # picked by itself
    assert (mon.store_path is not None) == (rank == 0)  # only rank 0 writes
    for s in range(STEPS):
        x, y = global_batch(s)
        opt.zero_grad()
        nn.functional.mse_loss(ddp(part(x, rank, WORLD)), part(y, rank, WORLD)).backward()
        opt.step()
    np.savez(out / f"ddp-{rank}.npz", **record(mon))
    mon.close()


def _ddp_no_sync(rank: int, out: Path) -> None:
    from torch.nn.parallel import DistributedDataParallel as DDP

    model = make_model()
    ddp = DDP(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    mon = gg.watch(model, opt, config="full", diagnose_online=False)
    for s in range(STEPS):
        x, y = global_batch(s)
        x, y = part(x, rank, WORLD), part(y, rank, WORLD)
        opt.zero_grad()
        with ddp.no_sync():  # first micro-batch: local accumulation only
            (nn.functional.mse_loss(ddp(part(x, 0, 2)), part(y, 0, 2)) / 2).backward()
        (nn.functional.mse_loss(ddp(part(x, 1, 2)), part(y, 1, 2)) / 2).backward()
        opt.step()
    np.savez(out / f"nosync-{rank}.npz", **record(mon))
    mon.close()


def _fsdp2(rank: int, out: Path) -> None:
    from torch.distributed.fsdp import fully_shard

    model = make_model()
    for m in model:
        if isinstance(m, nn.Linear):
            fully_shard(m)
    fully_shard(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = gg.watch(model, opt, config="full", diagnose_online=False)
    for s in range(STEPS):
        x, y = global_batch(s)
        opt.zero_grad()
        nn.functional.mse_loss(model(part(x, rank, WORLD)), part(y, rank, WORLD)).backward()
        opt.step()
    np.savez(out / f"fsdp2-{rank}.npz", **record(mon))
    mon.close()


def _fsdp2_nonfinite_in_both_shards(rank: int, out: Path) -> None:
    """NaN in both ranks' shards of one tensor (model[0].weight) and, on rank 0 alone, in another."""
    from torch.distributed.fsdp import fully_shard

    model = make_model()
    for m in model:
        if isinstance(m, nn.Linear):
            fully_shard(m)
    fully_shard(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    mon = gg.watch(model, opt, config="light", diagnose_online=False)
    x, y = global_batch(0)
    nn.functional.mse_loss(model(part(x, rank, WORLD)), part(y, rank, WORLD)).backward()
    with torch.no_grad():
        model[0].weight.grad.to_local()[0, 0] = math.nan  # each rank's own shard of one tensor
        if rank == 0:
            model[2].weight.grad.to_local()[0, 0] = math.inf
    opt.step()
    np.savez(out / f"fsdp2-nonfinite-{rank}.npz", **record(mon))
    mon.close()


def _nonfinite_on_one_rank(rank: int, out: Path) -> None:
    """Rank 1 alone gets NaN in one layer and Inf in another: both ranks go through, NaN kept."""
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    mon = gg.watch(model, opt, config="light", diagnose_online=False)
    x, y = global_batch(0)
    nn.functional.mse_loss(model(part(x, rank, WORLD)), part(y, rank, WORLD)).backward()
    if rank == 1:
        model[0].weight.grad[0, 0] = math.nan
        model[2].bias.grad[1] = math.inf
    opt.step()
    np.savez(out / f"nonfinite-{rank}.npz", **record(mon))
    mon.close()


def _ddp_budget(rank: int, out: Path) -> None:
    """budget= under DDP, rank 1 believing its work costs 50x what rank 0's does: left alone each
    rank would choose its own schedule and the ranks would record different steps (each recorded
    step is a collective). Saves the steps recorded and the (record, detail) periods per step."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    model = make_model()
    ddp = DDP(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
    mon = gg.watch(model, opt, budget=0.9, flush_every=5, diagnose_online=False)
    assert mon.budget is not None and mon.budget.agree is not None
    if rank == 1:
        add = mon.budget.add
        mon.budget.add = lambda seconds: add(50 * seconds)  # type: ignore[method-assign]
    periods = []
    for s in range(60):
        x, y = global_batch(s % STEPS)
        opt.zero_grad()
        nn.functional.mse_loss(ddp(part(x, rank, WORLD)), part(y, rank, WORLD)).backward()
        opt.step()
        periods.append((mon.budget.record.period, mon.budget.detail.period))
    mon.flush()
    steps = mon.run.metric("grad_norm")[0]
    np.savez(out / f"budget-{rank}.npz", steps=steps, periods=np.array(periods))
    mon.close()


def _worker(rank: int, port: int, out: str, fsdp: bool) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=60)
    )
    try:
        o = Path(out)
        _ddp(rank, o, o / "ddp.db")
        _ddp_no_sync(rank, o)
        _nonfinite_on_one_rank(rank, o)
        _ddp_budget(rank, o)
        from examples import ddp_example

        np.save(o / f"example-loss-{rank}.npy", ddp_example.train(rank, o / "example.db", steps=3))
        if fsdp:
            from examples import fsdp2_example

            _fsdp2(rank, o)
            _fsdp2_nonfinite_in_both_shards(rank, o)
            losses = fsdp2_example.train(rank, o / "fsdp2-example.db", steps=3)
            np.save(o / f"fsdp2-example-loss-{rank}.npy", losses)
    finally:
        dist.destroy_process_group()
    # Every result is on disk and every Monitor closed. Leave without interpreter finalization:
    # FSDP2's device mesh keeps the gloo process group alive past destroy_process_group, and its
    # worker threads torn down during finalization occasionally abort the process ("terminate
    # called without an active exception", seen once in ~12 full-suite runs), failing the ranks
    # after their work was done. An exception above still propagates and fails the test.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ranks_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    fsdp = _fsdp2_available()
    ctx = mp.spawn(_worker, args=(_free_port(), str(out), fsdp), nprocs=WORLD, join=False)
    deadline = time.monotonic() + 150  # a deadlock fails the test instead of hanging it
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the two ranks did not finish within 150 s (deadlock in a collective?)")
    return out


def _fsdp2_available() -> bool:
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        return False
    return True


def load(out: Path, name: str, rank: int) -> dict[str, np.ndarray]:
    with np.load(out / f"{name}-{rank}.npz") as f:
        return {k: f[k] for k in f.files}


def assert_close(got: dict[str, np.ndarray], ref: dict[str, np.ndarray], metrics) -> None:
    np.testing.assert_array_equal(got["steps"], ref["steps"])
    for m in metrics:
        np.testing.assert_allclose(got[m], ref[m], rtol=1e-5, atol=1e-12, err_msg=m)


# ---------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def single() -> dict[str, np.ndarray]:
    return train_single()


def test_ddp_matches_single_process(ranks_out: Path, single: dict[str, np.ndarray]) -> None:
    assert single["steps"].tolist() == list(range(STEPS))
    for rank in range(WORLD):
        got = load(ranks_out, "ddp", rank)
        # Gradients are identical on every rank: a plain sum over ranks would be sqrt(2) too large.
        assert_close(got, single, COMPARED)
        # Activations: each rank's own half of the batch, summed = the whole batch.
        assert_close(got, single, ACT)
        # dL/d(activation): each rank's own mean loss gives 1/8 per sample instead of 1/16; DDP
        # averages gradients, so the reducer divides the summed squares by world_size**2.
        assert_close(got, single, ("act_grad_norm",))


def test_ddp_only_rank0_writes_the_store(ranks_out: Path, single: dict[str, np.ndarray]) -> None:
    run = gg.load(ranks_out / "ddp.db", name="ddp")
    steps, values = run.metric("grad_norm")
    assert steps.tolist() == list(range(STEPS))
    np.testing.assert_allclose(values, single["grad_norm"], rtol=1e-5)
    assert run.config["watch"]["activations"] is True
    # sinks are fed on the writing rank only
    assert (ranks_out / "sink-0.txt").read_text() == str(STEPS)
    assert (ranks_out / "sink-1.txt").read_text() == "0"


def test_ddp_no_sync_accumulation_records_once_per_optimizer_step(
    ranks_out: Path,
) -> None:
    ref = train_single(accumulate=WORLD * 2)  # the same 4 micro-batches, one process
    for rank in range(WORLD):
        assert_close(load(ranks_out, "nosync", rank), ref, COMPARED)


def test_fsdp2_matches_single_process(ranks_out: Path, single: dict[str, np.ndarray]) -> None:
    if not _fsdp2_available():
        pytest.skip("torch.distributed.fsdp.fully_shard is not in this torch")
    for rank in range(WORLD):
        got = load(ranks_out, "fsdp2", rank)
        # Sharded: local squared norms summed, maxima maxed, counts maxed (rank 1 has empty shards);
        # activation gradients as under DDP (FSDP2 averages gradients too).
        assert_close(got, single, COMPARED + ACT + ("act_grad_norm",))


def test_fsdp2_nonfinite_counts_tensors_not_shards(ranks_out: Path) -> None:
    if not _fsdp2_available():
        pytest.skip("torch.distributed.fsdp.fully_shard is not in this torch")
    for rank in range(WORLD):
        got = load(ranks_out, "fsdp2-nonfinite", rank)
        assert math.isnan(got["grad_max"][0, 0]) and got["grad_max"][0, 1] == math.inf
        # model[0].weight has NaN in both shards: one tensor (a sum would say 2)
        np.testing.assert_array_equal(got["nonfinite"][0], [1, 1, 0, 0])


def test_nonfinite_on_one_rank_reaches_every_rank(ranks_out: Path) -> None:
    for rank in range(WORLD):
        got = load(ranks_out, "nonfinite", rank)
        assert math.isnan(got["grad_max"][0, 0])  # NaN on rank 1 only, NaN on both after the MAX
        assert got["grad_max"][0, 1] == math.inf  # forward order: layer 1 is model[2]
        assert np.isfinite(got["grad_max"][0, 2:]).all()
        # a tensor non-finite on any rank counts once (maxed over ranks; a sum over the 2 copies
        # divided by 2 would say 0.5)
        np.testing.assert_array_equal(got["nonfinite"][0], [1, 1, 0, 0])


def test_ddp_ranks_agree_on_the_budget_schedule(ranks_out: Path) -> None:
    r0, r1 = (np.load(ranks_out / f"budget-{r}.npz") for r in range(WORLD))
    np.testing.assert_array_equal(r0["periods"], r1["periods"])  # the same plan on both ranks
    np.testing.assert_array_equal(r0["steps"], r1["steps"])  # hence the same steps recorded
    assert len(set(map(tuple, r0["periods"]))) > 1  # the budget did re-plan during the run
    assert len(r0["steps"]) < 60  # and thinned the recorded steps: rank 1's work looks dear


def test_replication_factor_of_plain_and_sharded_tensors() -> None:
    assert replication_factor(torch.zeros(3), 4) == 4

    class Shard:
        def is_shard(self) -> bool:
            return True

    class Replicate:
        def is_shard(self) -> bool:
            return False

    class Mesh:
        def size(self, dim: int) -> int:
            return (2, 4)[dim]

    class HSDPParam:  # 2 replicas x 4 shards on a mesh of 8 ranks
        placements = (Replicate(), Shard())
        device_mesh = Mesh()

    assert replication_factor(HSDPParam(), 8) == 2  # type: ignore[arg-type]


def test_reducer_without_process_group_is_a_clear_error() -> None:
    assert not dist.is_initialized()
    with pytest.raises(gg.GradguardError, match="init_process_group"):
        DistributedReducer()


def _example_run(out: Path, prefix: str, name: str) -> None:
    run = gg.load(out / f"{prefix}.db", name=name)
    steps, values = run.metric("grad_norm")
    assert steps.tolist() == [0, 1, 2] and values.shape == (3, 3)
    assert np.isfinite(values).all()
    loss_steps, loss = run.scalar("loss")
    assert loss_steps.tolist() == [0, 1, 2]
    # the stored loss is the mean over ranks, not rank 0's own
    local = [np.load(out / f"{prefix}-loss-{r}.npy") for r in range(WORLD)]
    assert not np.allclose(local[0], local[1])
    np.testing.assert_allclose(loss, np.mean(local, axis=0), rtol=1e-6)


def test_ddp_example_trains_in_the_ranks(ranks_out: Path) -> None:
    # the example's train() ran inside the same two ranks (spawning costs ~10 s: DDP imports dynamo)
    _example_run(ranks_out, "example", "ddp-example")


def test_fsdp2_example_trains_in_the_ranks(ranks_out: Path) -> None:
    if not _fsdp2_available():
        pytest.skip("torch.distributed.fsdp.fully_shard is not in this torch")
    _example_run(ranks_out, "fsdp2-example", "fsdp2-example")


def test_ddp_example_main_spawns_its_ranks(tmp_path: Path) -> None:
    from examples.ddp_example import main

    run = main(tmp_path / "ddp.db", steps=2)
    assert run.metric("grad_norm")[0].tolist() == [0, 1]
    assert run.scalar("loss")[0].tolist() == [0, 1]
