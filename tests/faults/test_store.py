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
from tests.faults.child import batch, losses
from tests.faults.harness import mlp3
from tests.faults.matrix import fault

ROOT = Path(__file__).resolve().parents[2]


def child(mode: str, store: Path, steps: int) -> subprocess.Popen[str]:
    src = Path(gg.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(ROOT)])}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.faults.child", mode, str(store), str(steps)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@fault(
    "SIGKILL at random points of a training process",
    kind="process",
    models="mlp3",
    count=2,
    checks="every step committed before the kill is in the store with the loss of a plain run",
)
def test_sigkill_loses_only_the_uncommitted_tail(tmp_path: Path) -> None:
    want = losses(40)
    rng = random.Random(13)
    for k in range(2):
        store = tmp_path / f"kill{k}.db"
        kill_after = rng.randrange(3, 38)  # a random step of the loop
        proc = child("plain", store, 40)
        assert proc.stdout is not None
        committed = -1
        seen = 0
        for line in proc.stdout:
            msg = json.loads(line)
            if "committed" in msg:
                committed = msg["committed"]
            if "step" in msg:
                assert msg["loss"] == want[msg["step"]]  # (a) the numbers of a plain run
                seen = msg["step"]
                if seen >= kill_after:
                    break
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        run = gg.load(store)
        got = run.metric(GRAD_NORM)[0].tolist()
        # (b) every committed step is there, in order, and nothing that was not computed
        assert got[: committed + 1] == list(range(committed + 1))
        assert got == list(range(len(got))) and len(got) <= seen + 1
        steps, vals = run.scalar(LOSS)
        np.testing.assert_array_equal(vals, np.asarray(want[: len(steps)]))


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

    def writer(name: str) -> None:
        try:
            torch.manual_seed(0)
            model = mlp3()
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
