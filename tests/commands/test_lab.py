"""`gradguard lab list` and `gradguard lab NAME --quick --out DIR`."""

from __future__ import annotations

from pathlib import Path

import pytest

import gradguard as gg
from gradguard import cli, lab


def test_lab_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["lab", "list"]) == 0
    out = capsys.readouterr().out
    for name in lab.EXPERIMENTS:
        assert name in out


def test_lab_run_writes_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["lab", "weight_scale", "--quick", "--out", str(tmp_path), "--quiet"]
    args += ["--set", 'activations=["relu"]', "--set", "scales=[0.5, 2.0]", "--set", "seeds=1"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "chi_1" in out
    assert (tmp_path / "report.html").exists()
    assert (tmp_path / "weight_scale" / "table.csv").read_text().startswith("activation,sigma_w")
    assert (tmp_path / "weight_scale" / "chi1_measured_vs_theory.png").read_bytes()[
        :4
    ] == b"\x89PNG"
    run = gg.load(tmp_path / "runs.db", name="relu/sigma_w=2")
    assert run.metric("grad_norm")[1].shape == (1, 11)  # 1 seed, 10 hidden layers + head


def test_unknown_experiment_is_one_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["lab", "nope", "--quick"]) == 2
    err = capsys.readouterr().err
    assert "unknown experiment 'nope'" in err and "gradguard lab list" in err


def test_bad_option_is_one_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["lab", "remedies", "--quick", "--set", "nonsense"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_print_result_fits_the_console_and_says_what_only_the_report_shows() -> None:
    import io

    from rich.console import Console

    from gradguard.commands.lab import print_result
    from gradguard.report.experiment import ExperimentResult

    cols = ["activation", "depth"] + [f"statistic_{i}" for i in range(8)]
    table = [
        {"activation": a, "depth": d, **{f"statistic_{i}": 1.23456e-7 * (i + 1) for i in range(8)}}
        for a in ("sigmoid", "tanh")
        for d in (5, 20)
    ]
    result = ExperimentResult(name="t", title="T", columns=cols, table=table, reading="R")
    buf = io.StringIO()
    print_result(Console(file=buf, width=60), result)
    out = buf.getvalue()
    grid = [line for line in out.splitlines() if line.startswith(("┃", "│", "┏", "└"))]
    assert grid and all(len(line) <= 60 for line in grid) and "…" not in "\n".join(grid)
    assert "activation" in out and "depth" in out and "also in the report: " in out
    assert "statistic_7" in out.split("also in the report: ")[1]

    result.key = {"where": {"depth": 20}, "columns": ["activation", "statistic_3"]}
    buf = io.StringIO()
    print_result(Console(file=buf, width=60), result)
    out = buf.getvalue()
    rows = [line for line in out.splitlines() if line.startswith("│")]
    assert len(rows) == 2 and "2 of 4 rows (depth = 20)" in out
    flat = " ".join(out.split())  # the caption wraps
    assert "statistic_3" in out and "also in the report: depth, statistic_0" in flat
