"""README.md stays true: its Python quickstart runs as written, its CLI lines name real commands."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch
from torch import nn

from gradguard.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_python_quickstart_runs_as_written(tmp_path: Path, monkeypatch) -> None:
    (code,) = _blocks("python")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = [(torch.randn(16, 8), torch.randint(0, 3, (16,))) for _ in range(12)]
    monkeypatch.chdir(tmp_path)  # the quickstart writes runs/exp.db
    (tmp_path / "runs").mkdir()
    printed: list[object] = []
    scope = {
        "model": model,
        "optimizer": optimizer,
        "loader": loader,
        "loss_fn": nn.functional.cross_entropy,
        "print": printed.append,
    }
    exec(compile(code, "README.md", "exec"), scope)
    steps, values = scope["steps"], scope["values"]
    assert list(steps) == list(range(12)) and values.shape == (12, 2)
    assert printed and all(hasattr(f, "kind") for f in printed)


def test_cli_lines_name_real_commands(capsys) -> None:
    lines = [
        line.split("#")[0].strip()
        for block in _blocks("bash")
        for line in block.splitlines()
        if line.strip().startswith("gradguard ")
    ]
    assert len(lines) >= 6
    for line in lines:
        words = shlex.split(line)[1:]
        sub = [w for w in words if not w.startswith("-")][:1]
        assert sub, line
        with pytest.raises(SystemExit) as e:  # argparse exits 0 after --help, 2 on a bad command
            main([*sub, "--help"])
        assert e.value.code == 0, line
        assert "usage: gradguard " + sub[0] in capsys.readouterr().out
