"""Every CLI command with every kind of bad argument: one line on stderr, exit code 2, no traceback.

Kinds: missing, wrong type, out of range, NaN/inf, huge, and bad files (missing, a directory, not
SQLite, SQLite but not a store, a store without runs, a damaged store). A row that reached a lab
experiment or the demo would run for minutes: those entry points are replaced by a tripwire, so
such a row fails at once instead.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import torch
from torch import nn

import gradguard as gg
from gradguard.cli import main
from tests.faults.matrix import fault

HUGE = str(10**30)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    good = root / "good.db"
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gg.watch(model, opt, store=good, name="r"):
        for _ in range(3):
            opt.zero_grad()
            model(torch.randn(5, 3)).pow(2).mean().backward()
            opt.step()
    damaged = root / "damaged.db"
    damaged.write_bytes(good.read_bytes())
    with sqlite3.connect(damaged) as c:  # the case: the layer rows deleted
        c.execute("DELETE FROM layers")
    empty = root / "empty.db"
    gg.Store(empty).close()
    foreign = root / "foreign.db"
    with sqlite3.connect(foreign) as c:
        c.execute("CREATE TABLE t(x)")
    text = root / "notes.txt"
    text.write_text("not a database\n")
    models = root / "models.py"
    models.write_text(
        "import torch\n"
        "def build():\n    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh())\n"
        "def boom():\n    raise ValueError('no')\n"
        "def three():\n    return 3\n"
        "NOT_CALLABLE = 1\n"
    )
    broken = root / "broken.py"
    broken.write_text("def build(:\n")
    return {
        "good": good,
        "damaged": damaged,
        "empty": empty,
        "foreign": foreign,
        "text": text,
        "dir": root,
        "models": models,
        "broken": broken,
        "missing": root / "nope.db",
        "under_file": text / "x.png",
    }


def _store_rows(cmd: str) -> list[tuple[str, list[str]]]:
    rows = [
        ("missing store", [cmd]),
        ("store file missing", [cmd, "{missing}"]),
        ("store is a directory", [cmd, "{dir}"]),
        ("store is a text file", [cmd, "{text}"]),
        ("store is foreign SQLite", [cmd, "{foreign}"]),
        ("store without runs", [cmd, "{empty}"]),
        ("store with its layer rows deleted", [cmd, "{damaged}"]),
        ("unknown run name", [cmd, "{good}", "--name", "nope"]),
        ("unknown option", [cmd, "{good}", "--bogus"]),
    ]
    if cmd != "report":
        rows += [
            ("width not a number", [cmd, "{good}", "--width", "abc"]),
            ("width negative", [cmd, "{good}", "--width", "-3"]),
            ("width zero", [cmd, "{good}", "--width", "0"]),
            ("width huge", [cmd, "{good}", "--width", HUGE]),
        ]
    return rows


ROWS: list[tuple[str, list[str]]] = [
    *[
        (f"{c}: {why}", argv)
        for c in ("show", "diagnose", "report")
        for why, argv in _store_rows(c)
    ],
    ("show: --list of a text file", ["show", "{text}", "--list"]),
    ("diagnose: --fail-on unknown", ["diagnose", "{good}", "--fail-on", "panic"]),
    ("report: -o under a file", ["report", "{good}", "-o", "{under_file}"]),
    ("report: -o into a missing directory", ["report", "{good}", "-o", "{missing}/x/r.html"]),
    ("theory: missing activation", ["theory"]),
    ("theory: unknown activation", ["theory", "swish2"]),
    ("theory: sigma_w2 not a number", ["theory", "tanh", "--sigma-w2", "abc"]),
    ("theory: sigma_w2 negative", ["theory", "tanh", "--sigma-w2", "-1"]),
    ("theory: sigma_w2 nan", ["theory", "tanh", "--sigma-w2", "nan"]),
    ("theory: sigma_w2 inf", ["theory", "tanh", "--sigma-w2", "inf"]),
    ("theory: sigma_w2 huge", ["theory", "tanh", "--sigma-w2", "1e300"]),
    ("theory: sigma_b2 nan", ["theory", "tanh", "--sigma-b2", "nan"]),
    ("theory: sigma_b2 negative", ["theory", "tanh", "--sigma-b2", "-0.5"]),
    ("theory: negative slope nan", ["theory", "leaky_relu", "--negative-slope", "nan"]),
    ("theory: negative slope inf", ["theory", "leaky_relu", "--negative-slope", "inf"]),
    ("theory: alpha nan", ["theory", "elu", "--alpha", "nan"]),
    ("theory: alpha for tanh", ["theory", "tanh", "--alpha", "1"]),
    ("theory: plot under a file", ["theory", "tanh", "--plot", "{under_file}"]),
    ("theory: plot with an unknown extension", ["theory", "tanh", "--plot", "{dir}/x.xyz"]),
    ("check: missing target", ["check"]),
    ("check: target without factory", ["check", "{models}"]),
    ("check: file missing", ["check", "{missing}:build", "--input-shape", "2,4"]),
    ("check: file does not import", ["check", "{broken}:build", "--input-shape", "2,4"]),
    ("check: factory missing", ["check", "{models}:nope", "--input-shape", "2,4"]),
    ("check: factory not callable", ["check", "{models}:NOT_CALLABLE", "--input-shape", "2,4"]),
    ("check: factory raises", ["check", "{models}:boom", "--input-shape", "2,4"]),
    ("check: factory returns no model", ["check", "{models}:three", "--input-shape", "2,4"]),
    ("check: no input shape", ["check", "{models}:build"]),
    ("check: input shape not numbers", ["check", "{models}:build", "--input-shape", "a,b"]),
    ("check: input shape zero", ["check", "{models}:build", "--input-shape", "0,4"]),
    ("check: input shape negative", ["check", "{models}:build", "--input-shape", "-2,4"]),
    ("check: input shape nan", ["check", "{models}:build", "--input-shape", "nan,4"]),
    ("check: input shape huge", ["check", "{models}:build", "--input-shape", "100000000,784"]),
    ("check: input shape wrong for the model", ["check", "{models}:build", "--input-shape", "2,5"]),
    (
        "check: seed not a number",
        ["check", "{models}:build", "--input-shape", "2,4", "--seed", "x"],
    ),
    ("check: seed huge", ["check", "{models}:build", "--input-shape", "2,4", "--seed", HUGE]),
    ("check: seed negative", ["check", "{models}:build", "--input-shape", "2,4", "--seed", "-1"]),
    ("check: width negative", ["check", "{models}:build", "--input-shape", "2,4", "--width", "-1"]),
    ("lab: missing name", ["lab"]),
    ("lab: unknown experiment", ["lab", "nope"]),
    ("lab: --set without =", ["lab", "depth_sweep", "--set", "steps"]),
    ("lab: --set unknown option", ["lab", "depth_sweep", "--set", "bogus=1"]),
    ("lab: --set wrong type", ["lab", "exploding_training", "--set", "steps=abc"]),
    ("lab: --set negative", ["lab", "exploding_training", "--set", "steps=-5"]),
    ("lab: --set zero", ["lab", "exploding_training", "--set", "width=0"]),
    ("lab: --set huge", ["lab", "exploding_training", "--set", f"steps={HUGE}"]),
    ("lab: --set nan", ["lab", "exploding_training", "--set", "lr=NaN"]),
    ("lab: --set inf", ["lab", "exploding_training", "--set", "lr=Infinity"]),
    ("lab: --set list of wrong type", ["lab", "depth_sweep", "--set", 'depths=[1,"x"]']),
    ("lab: --set list with a huge depth", ["lab", "depth_sweep", "--set", f"depths=[{HUGE}]"]),
    ("lab: threads not a number", ["lab", "depth_sweep", "--threads", "x"]),
    ("lab: threads zero", ["lab", "depth_sweep", "--threads", "0"]),
    ("lab: threads negative", ["lab", "depth_sweep", "--threads", "-2"]),
    ("lab: threads huge", ["lab", "depth_sweep", "--threads", HUGE]),
    ("lab: out under a file", ["lab", "depth_sweep", "--out", "{under_file}"]),
    ("demo: threads zero", ["demo", "--threads", "0"]),
    ("demo: threads huge", ["demo", "--threads", HUGE]),
    ("demo: out under a file", ["demo", "--out", "{under_file}"]),
    ("demo: unknown option", ["demo", "--bogus"]),
    ("unknown command", ["frobnicate"]),
]


def _tripwire(*args: object, **kwargs: object) -> None:
    raise AssertionError("bad input reached the (minutes-long) experiment")


@fault(
    "every CLI command x every bad argument kind (missing, wrong type, out of range, NaN/inf, "
    "huge, bad files)",
    kind="cli",
    count=len(ROWS),
    models="show, diagnose, report, theory, check, lab, demo",
    checks="exit 2, one stderr line, no traceback, no experiment started",
)
@pytest.mark.parametrize(("why", "argv"), ROWS, ids=[r[0] for r in ROWS])
def test_bad_command_line_is_one_line_and_exit_2(
    why: str,
    argv: list[str],
    files: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gradguard import lab

    monkeypatch.setattr(lab, "run_experiment", _tripwire)
    args = [a.format(**files) for a in argv]
    capsys.readouterr()
    try:
        rc = main(args)
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, f"{why}: exit {rc}, stderr {err!r}, stdout {out[-300:]!r}"
    assert len(lines) == 1, f"{why}: {len(lines)} lines on stderr: {err!r}"
    assert lines[0].startswith("gradguard"), lines[0]
    assert "Traceback" not in err
