"""The CLI entry point and `gradguard show`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import gradguard as gg
from gradguard.cli import main
from gradguard.format import number as fmt
from gradguard.report.terminal import flow_bars, sparkline


@pytest.fixture(scope="module")
def sigmoid_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(6):
        layers += [nn.Linear(16, 16), nn.Sigmoid()]
    model = nn.Sequential(*layers, nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    db = tmp_path_factory.mktemp("show") / "runs.db"
    with gg.watch(model, opt, store=db, name="sigmoid-6", detail_every=5) as mon:
        for _ in range(12):
            x, y = torch.randn(32, 16), torch.randint(0, 3, (32,))
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            mon.log(loss=loss)
        mon.event("note", "hand-written event")
    return db


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"gradguard {gg.__version__}"
    assert main([]) == 0
    assert "show" in capsys.readouterr().out
    # `python -m gradguard` and the installed console script are the same entry point
    out = subprocess.run(
        [sys.executable, "-m", "gradguard", "--help"], capture_output=True, text=True, check=True
    )
    assert "vanishing and exploding" in out.stdout
    script = Path(sys.executable).with_name("gradguard")  # pip puts it beside the interpreter
    assert script.is_file(), f"no console script at {script}: is gradguard pip-installed here?"
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"gradguard {gg.__version__}"


def test_show_prints_layers_flow_scalars_events(
    sigmoid_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["show", str(sigmoid_run), "--width", "200"]) == 0
    out = capsys.readouterr().out
    run = gg.load(sigmoid_run)
    assert "sigmoid-6" in out and "7 layers" in out and "12 recorded steps (0..11)" in out
    lines = [line for line in out.splitlines() if "Linear→Sigmoid" in line]
    assert len(lines) == 6
    # the gradient-flow bar grows with depth in a vanishing sigmoid net: first layer shortest
    bars = [line.count("█") for line in lines]
    assert bars[0] < bars[-1]
    assert bars == sorted(bars)
    last_loss = run.scalar("loss")[1][-1]
    assert fmt(float(last_loss)) in out
    assert "hand-written event" in out
    assert main(["show", str(sigmoid_run), "--list"]) == 0
    assert "sigmoid-6" in capsys.readouterr().out


def test_show_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(tmp_path / "nope.db")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gradguard: error: no store at") and err.count("\n") == 1
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"\x00" * 4096)
    assert main(["show", str(bad)]) == 2
    assert "not a gradguard store" in capsys.readouterr().err


def test_terminal_helpers() -> None:
    assert (
        fmt(float("nan")) == "—"
        and fmt(0.0) == "0"
        and fmt(1234.5)
        == "1234"  # fixed notation below 1e4, never fewer digits than the integer part
        and fmt(0.5) == "0.5"
    )
    bars = flow_bars([1e-9, 1e-5, 1.0, float("nan")], width=10)
    assert [len(b) for b in bars] == [1, 5, 10, 0]  # 1 + (log10 x + 9) / 9 * 9 blocks
    assert sparkline([1.0, 2.0, 3.0]) == "▁▅█"
    assert sparkline([]) == ""


@pytest.mark.parametrize("width", [80, 100, 120])
def test_show_fits_narrow_terminals_by_dropping_columns(
    sigmoid_run: Path, capsys: pytest.CaptureFixture[str], width: int
) -> None:
    assert main(["show", str(sigmoid_run), "--width", str(width)]) == 0
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith(("┃", "│", "┏", "└"))]
    assert table and all(len(line) <= width for line in table)
    assert "…" not in "\n".join(table)  # no cell squeezed into an ellipsis
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("┡"))  # the layer table
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("└"))
    body = lines[start + 1 : end]
    assert len(body) == 7 and all("█" in line for line in body)  # every layer keeps its bar
    for row, name in zip(body, ["0", "2", "4", "6", "8", "10", "12"]):
        assert row.split("│")[2].strip() == name  # layer names stay whole
    assert "grad_rms" in out and "wider terminal for" in out
