"""The fault matrix, the process and the store: SIGKILL at random points, the disk filling up
(RLIMIT_FSIZE), the store deleted, the store read-only, two writers and a reader at once."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import gradguard as gg
from gradguard.metrics import GRAD_NORM, LOSS
from gradguard.runs.store import list_runs
from tests.faults.child import FLUSH_EVERY, batch, losses
from tests.faults.harness import mlp3
from tests.faults.matrix import fault, register

ROOT = Path(__file__).resolve().parents[2]


def child(mode: str, store: Path, steps: int) -> subprocess.Popen[str]:
    src = Path(gg.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(ROOT)])}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.faults.child", mode, str(store), str(steps)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@fault(
    "disk full (RLIMIT_FSIZE 96 KiB in a subprocess)",
    kind="store",
    models="mlp3",
    checks="training ends with a plain run's numbers; one warning saying the disk is full; "
    "memory keeps every step; the store holds a complete prefix",
)
def test_disk_full(tmp_path: Path) -> None:
    store = tmp_path / "full.db"
    steps = 300
    proc = child(f"fsize:{96 * 1024}", store, steps)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    lines = [json.loads(line) for line in out.splitlines()]
    got = [m["loss"] for m in lines if "loss" in m]
    assert got == losses(steps)  # (a)
    end = lines[-1]
    store_warnings = [m for m in end["warnings"] if "store" in m]
    assert len(store_warnings) == 1, end["warnings"]
    assert "disk is full" in store_warnings[0] or "file-size limit" in store_warnings[0]
    assert end["in_memory"] == list(range(steps))  # nothing lost from mon.run
    stored = gg.load(store).metric(GRAD_NORM)[0].tolist()  # (b) what was committed
    assert 0 < len(stored) < steps and stored == list(range(len(stored)))


def train_in_process(mon: gg.Monitor, model: Any, opt: Any, steps: range) -> list[float]:
    out = []
    for s in steps:
        x, y = batch(s)
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        mon.log(loss=loss)
        out.append(float(loss))
    return out


@fault(
    "store file deleted during training",
    kind="store",
    models="mlp3",
    checks="training ends with a plain run's numbers; one warning naming the deletion; "
    "memory keeps what was not committed",
)
def test_store_deleted(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = mlp3()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    path = tmp_path / "gone.db"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mon = gg.watch(model, opt, store=path, flush_every=5, diagnose_online=False)
        got = train_in_process(mon, model, opt, range(10))
        mon.flush()
        for f in tmp_path.glob("gone.db*"):
            f.unlink()
        got += train_in_process(mon, model, opt, range(10, 20))
        mon.close()
    assert got == losses(20)
    messages = [str(w.message) for w in caught if "store" in str(w.message)]
    assert len(messages) == 1 and "deleted or replaced" in messages[0], messages
    assert mon.run.metric(GRAD_NORM)[0].tolist()[-10:] == list(range(10, 20))


@fault(
    "store read-only (a copy with mode 0444 in a 0555 directory)",
    kind="store",
    models="mlp3",
    checks="gg.load, show and diagnose read it and change no byte; as non-root, gg.watch "
    "refuses to write there (as root, permissions do not stop writes: not testable)",
)
def test_store_read_only(tmp_path: Path, capsys: Any) -> None:
    from gradguard.cli import main

    torch.manual_seed(0)
    model = mlp3()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    src = tmp_path / "src.db"
    with gg.watch(model, opt, store=src) as mon:
        train_in_process(mon, model, opt, range(6))
    ro = tmp_path / "ro"
    ro.mkdir()
    shutil.copy(src, ro / "run.db")
    before = (ro / "run.db").read_bytes()
    os.chmod(ro / "run.db", 0o444)
    os.chmod(ro, 0o555)
    try:
        assert gg.load(ro / "run.db").metric(GRAD_NORM)[0].tolist() == list(range(6))
        assert main(["show", str(ro / "run.db"), "--width", "100"]) == 0
        assert main(["diagnose", str(ro / "run.db")]) == 0
        assert (ro / "run.db").read_bytes() == before
        # SQLite's WAL reader may leave an empty -wal (and its -shm index) where it can write
        assert all(p.stat().st_size == 0 for p in ro.glob("run.db-wal"))
        if os.geteuid() != 0:  # root writes through permissions
            import pytest

            with pytest.raises(gg.GradguardError, match="read-only"):
                gg.watch(model, opt, store=ro / "new.db")
    finally:
        os.chmod(ro, 0o755)
        os.chmod(ro / "run.db", 0o644)
    capsys.readouterr()


@fault(
    "two writers and a reader on one store at once (threads, one connection each)",
    kind="store",
    models="mlp3 x2",
    checks="both runs complete with a plain run's numbers; the reader never fails; no warning",
)
def test_concurrent_writers_and_reader(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    gg.Store(path).close()
    errors: list[BaseException] = []
    results: dict[str, list[float]] = {}
    done = threading.Event()

    models = {}
    for name in ("a", "b"):  # built here: the global RNG is not to be raced for by two threads
        torch.manual_seed(0)
        models[name] = mlp3()

    def writer(name: str) -> None:
        try:
            model = models[name]
            opt = torch.optim.SGD(model.parameters(), lr=0.05)
            with gg.watch(model, opt, store=path, name=name, flush_every=2) as mon:
                results[name] = train_in_process(mon, model, opt, range(30))
        except BaseException as e:
            errors.append(e)

    reads = [0]

    def reader() -> None:
        try:
            while not done.is_set():
                for name, _ in list_runs(path):
                    gg.load(path, name)
                reads[0] += 1
        except BaseException as e:
            errors.append(e)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        threads = [threading.Thread(target=writer, args=(n,)) for n in ("a", "b")]
        r = threading.Thread(target=reader)
        r.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        done.set()
        r.join()
    assert not errors, errors
    assert not [w for w in caught if "store" in str(w.message)]
    assert reads[0] > 0
    want = losses(30)
    for name in ("a", "b"):
        assert results[name] == want
        run = gg.load(path, name)
        assert run.metric(GRAD_NORM)[0].tolist() == list(range(30))
        np.testing.assert_array_equal(run.scalar(LOSS)[1], np.asarray(want))


register(
    "process",
    "SIGKILL at a random step of a training process (beside another one writing the same store)",
    "mlp3",
    1,
    "every step committed before the kill is in the store with the loss of a plain run; the "
    "file stays readable",
)
register(
    "store",
    "two training processes writing unnamed runs into one store, read meanwhile",
    "mlp3 x2",
    1,
    "the survivor's run complete with a plain run's numbers; distinct names; every read succeeds",
)


def test_two_processes_share_a_store_and_one_is_killed(tmp_path: Path) -> None:
    """Two processes record into one store; a reader loads it all along; one process is killed
    with SIGKILL at a random step (seeded), the other runs to its end."""
    store = tmp_path / "shared.db"
    gg.Store(store).close()
    want = losses(40)
    kill_after = random.Random(13).randrange(3, 38)
    victim, survivor = child("lockstep", store, 40), child("plain", store, 40)
    assert victim.stdin is not None and victim.stdout is not None
    committed, reads = -1, 0
    for s in range(kill_after):  # steps 0 .. kill_after - 1, each to its end
        victim.stdin.write("\n")
        victim.stdin.flush()
        while True:
            msg = json.loads(victim.stdout.readline())
            if "committed" in msg:
                committed = msg["committed"]
                break
            assert msg["step"] == s and msg["loss"] == want[s]  # (a) a plain run's numbers
            if s % FLUSH_EVERY != FLUSH_EVERY - 1:  # no flush after this step
                break
        for name, _ in list_runs(store):  # a reader beside two writers: never an error
            gg.load(store, name)
        reads += 1
    victim.stdin.write("\n")  # step kill_after starts ... and is killed somewhere inside
    victim.stdin.flush()
    seen = kill_after
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    out, err = survivor.communicate(timeout=120)
    assert survivor.returncode == 0, err[-2000:]
    end = json.loads(out.splitlines()[-1])
    assert not [m for m in end["warnings"] if "store" in m], end["warnings"]
    assert reads > 0
    runs = {name: gg.load(store, name) for name, _ in list_runs(store)}
    assert sorted(runs) == ["run-1", "run-2"]  # chosen inside the write transaction
    full = [r for r in runs.values() if len(r.metric(GRAD_NORM)[0]) == 40]
    cut = [r for r in runs.values() if len(r.metric(GRAD_NORM)[0]) < 40]
    assert len(full) == 1 and len(cut) == 1
    np.testing.assert_array_equal(full[0].scalar(LOSS)[1], np.asarray(want))
    # (b) the killed run: every committed step, in order, nothing that was not computed
    got = cut[0].metric(GRAD_NORM)[0].tolist()
    assert got[: committed + 1] == list(range(committed + 1))
    assert got == list(range(len(got))) and len(got) <= seen + 1
    steps, vals = cut[0].scalar(LOSS)
    np.testing.assert_array_equal(vals, np.asarray(want[: len(steps)]))
