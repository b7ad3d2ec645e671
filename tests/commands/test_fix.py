"""`gradguard fix FILE.py:factory`: before/after report, --save and --html, one line and exit 2 on bad
input."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

from gradguard.cli import main

MODELS = textwrap.dedent(
    """
    import math
    import torch
    from torch import nn

    def exploding():
        torch.manual_seed(0)
        layers = []
        for i in range(4):
            lin = nn.Linear(64 if i == 0 else 32, 32)
            nn.init.normal_(lin.weight, 0.0, math.sqrt(16.0 / lin.in_features))
            layers += [lin, nn.ReLU()]
        return nn.Sequential(*layers, nn.Linear(32, 10))

    def with_digits():
        from gradguard.lab.data import digits
        return exploding(), digits().x_train[:64]

    def not_a_model():
        return 42

    def no_params():
        return nn.Sequential(nn.ReLU())
    """
)


@pytest.fixture
def models(tmp_path):
    path = tmp_path / "models.py"
    path.write_text(MODELS)
    return path


def test_fix_writes_weights_and_html(models, tmp_path, capsys) -> None:
    weights, page = tmp_path / "fixed.pt", tmp_path / "fix.html"
    code = main(["fix", f"{models}:with_digits", "--save", str(weights), "--html", str(page)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "before:" in out and "after:" in out and "trainable: yes" in out
    assert page.read_text().startswith("<!doctype html>")
    saved = torch.load(weights)
    ns: dict = {}
    exec(MODELS, ns)
    original = ns["exploding"]().state_dict()
    assert set(saved) == set(original)
    assert any(not torch.equal(saved[k], original[k]) for k in saved)  # the weights were fixed


def test_fix_json_with_random_input(models, capsys) -> None:
    code = main(["fix", f"{models}:exploding", "--input-shape", "64,64", "--json"])
    d = json.loads(capsys.readouterr().out)
    assert code == (0 if d["fixed"] else 1)
    assert d["before"]["trainability"]["trainable"] is False
    assert d["tried"]


@pytest.mark.parametrize(
    ("target", "extra", "match"),
    [
        ("not_a_model", ["--input-shape", "4,64"], "returned int"),
        ("no_params", ["--input-shape", "4,64"], "parameter"),
        ("exploding", [], "--input-shape"),
        ("exploding", ["--input-shape", "4,7"], "failed on the example input"),
        (
            "exploding",
            ["--input-shape", "4,64", "--save", "/no/such/dir/w.pt"],
            "no such directory",
        ),
    ],
)
def test_bad_input_one_line_exit_2(models, capsys, target, extra, match) -> None:
    code = main(["fix", f"{models}:{target}", *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("gradguard: error:")
    assert match in err
