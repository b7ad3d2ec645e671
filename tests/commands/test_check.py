"""`gradguard check FILE.py:factory`: table, JSON, and one clear line with exit code 2 on bad input."""

from __future__ import annotations

import json
import textwrap

import pytest

from gradguard.cli import main

MODELS = textwrap.dedent(
    """
    import math
    import torch
    from torch import nn

    def mlp():
        return nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 4))

    def deep_sigmoid():
        layers = []
        for _ in range(30):
            lin = nn.Linear(32, 32)
            nn.init.normal_(lin.weight, 0.0, 0.01)
            layers += [lin, nn.Sigmoid()]
        return nn.Sequential(*layers, nn.Linear(32, 2))

    def with_input():
        return mlp(), torch.randn(8, 32)

    def broken():
        raise ValueError("no weights file")

    def not_a_model():
        return 42

    NOT_CALLABLE = 3
    """
)


@pytest.fixture
def models(tmp_path):
    path = tmp_path / "models.py"
    path.write_text(MODELS)
    return path


def test_table_and_verdict(models, capsys):
    assert main(["check", f"{models}:mlp", "--input-shape", "16,32", "--width", "160"]) == 0
    out = capsys.readouterr().out
    assert "gradguard check" in out and "verdict: healthy" in out and "pred_gain" in out


def test_json_and_factory_with_input(models, capsys):
    assert main(["check", f"{models}:with_input", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["verdict"] == "healthy"
    assert [row["name"] for row in data["layers"]] == ["0", "2", "4"]
    assert data["jacobian"]["max_singular_value"] > 0


def test_vanishing_model_is_reported(models, capsys):
    assert main(["check", f"{models}:deep_sigmoid", "--input-shape", "8,32", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["verdict"] == "vanishing"
    assert data["findings"][0]["kind"] == "vanishing_gradients"
    assert data["findings"][0]["remedies"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{dir}/missing.py:mlp", "--input-shape", "8,32"], "no such file"),
        (["{path}", "--input-shape", "8,32"], "FILE.py:factory"),
        (["{path}:nothing", "--input-shape", "8,32"], "no callable 'nothing'"),
        (["{path}:NOT_CALLABLE", "--input-shape", "8,32"], "no callable"),
        (["{path}:broken", "--input-shape", "8,32"], "raised ValueError: no weights file"),
        (["{path}:not_a_model", "--input-shape", "8,32"], "returned int"),
        (["{path}:mlp", "--input-shape", "8,31"], "failed on the example input (8, 31)"),
        (["{path}:mlp", "--input-shape", "8,x"], "positive integers"),
        (["{path}:mlp"], "--input-shape"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(models, capsys, args, message):
    argv = ["check", *(a.format(path=models, dir=models.parent) for a in args)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("gradguard: error: ") and message in err
    assert err.count("\n") == 1


def test_import_error_in_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.py"
    bad.write_text("import not_a_module_anywhere\n")
    assert main(["check", f"{bad}:build", "--input-shape", "2,2"]) == 2
    assert "importing" in capsys.readouterr().err
