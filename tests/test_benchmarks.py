"""The benchmarks stay runnable: each runs end to end at tiny sizes (no timing is asserted)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _load_overhead():
    spec = importlib.util.spec_from_file_location("overhead", ROOT / "benchmarks" / "overhead.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_overhead_benchmark_runs_quick(tmp_path: Path) -> None:
    out = tmp_path / "overhead.json"
    kinds = ["bare2", "watch", "budget", "anomaly", "clip"]
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "overhead.py"),
            "--quick",
            "--variants",
            ",".join(kinds),
            "--markdown",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    # budget runs where gg.watch takes it, and is skipped with the reason where it does not
    budget_ran = "| **budget** |" in proc.stdout
    assert budget_ran != ("skip budget: this gradguard's gg.watch does not take" in proc.stdout)
    ran = {"bare", *kinds} - (set() if budget_ran else {"budget"})
    data = json.loads(out.read_text())
    for name in ("W1", "W2"):
        res = data["workloads"][name]
        assert set(res["median_s"]) == ran and all(v > 0 for v in res["median_s"].values())
        assert sorted(res["rank"].values()) == list(range(1, len(ran) - 1))  # bare, bare2 unranked
        assert f"| {name} | anomaly |" in proc.stdout
    # the docs table: one row per variant that ran, ranked, gradguard in bold, and its rank
    rows = [
        line for line in proc.stdout.splitlines() if line.startswith("| ") and "|---" not in line
    ]
    docs_rows = [r for r in rows if r.count("|") == 7 and not r.startswith("| rank ")]
    assert len(docs_rows) == 2 * len(ran)
    assert any(r.startswith("| — | bare | the loop alone |") for r in docs_rows)
    assert any("| **watch** | gg.watch defaults" in r for r in docs_rows)
    assert f"gradguard's rank among {len(ran) - 2} (1 = cheapest): watch " in proc.stdout
    assert "- W2 defaults <= 2%:" in proc.stdout


def test_overhead_benchmark_skips_missing_packages(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    overhead = _load_overhead()
    for module in ("wandb", "torch.utils.tensorboard", "lightning.pytorch.utilities"):
        monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    kinds = "wandb-grad-1,wandb-all-100,tb-hist,lightning-grad-norm"
    args = ["--quick", "--workloads", "W1", "--steps-only", "--variants", kinds, "--markdown"]
    assert overhead.main(args) == 0
    out = capsys.readouterr().out
    for kind, package in (
        ("wandb-grad-1", "wandb"),
        ("wandb-all-100", "wandb"),
        ("tb-hist", "tensorboard"),
        ("lightning-grad-norm", "lightning"),
    ):
        assert f"skip {kind}: {package} is not installed" in out
        assert f"| W1 | {kind} |" not in out
    assert "| W1 | bare |" in out
    assert not torch.is_anomaly_enabled()


def test_overhead_benchmark_rejects_unknown_variants(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _load_overhead().main(["--quick", "--variants", "bare,nope"])
    assert "unknown variant(s) ['nope']" in capsys.readouterr().err


def _run(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_check_benchmark_runs_small() -> None:
    out = _run(
        "benchmarks/check.py", "--repeats", "1", "--depth", "4", "--width", "16", "--batch", "8"
    )
    assert "median" in out


def test_clip_benchmark_runs_one_round() -> None:
    out = _run("benchmarks/clip.py", "--rounds", "1", "--threads", "1")
    for method in ("AutoClip", "AGC", "ZClip"):
        assert method in out


def test_diagnosis_calibration_runs_small() -> None:
    out = _run(
        "benchmarks/diagnosis_calibration.py",
        "--only",
        "exploding_training",
        "--set",
        "steps",
        "15",
    )
    lines = [line for line in out.splitlines() if line.startswith("| exploding_training: ")]
    assert len(lines) == 8 and all(line.count("|") == 10 for line in lines)


def test_gpu_check_says_plainly_when_there_is_no_cuda() -> None:
    import torch

    if torch.cuda.is_available():  # on a GPU machine run the real check instead
        out = _run("benchmarks/gpu_check.py", "--sync-only")
        assert "no host sync on the training path" in out
        return
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py"], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 2 and "needs a CUDA device" in proc.stderr
