"""``gradguard diagnose``: rich text, JSON that parses, --fail-on exit codes, bad input -> 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from gradguard.cli import main
from tests.diagnosis.test_real import mlp, record


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("diag")
    torch.manual_seed(0)
    bad, good = d / "explode.db", d / "healthy.db"
    record(
        mlp(10, 32, nn.Tanh, sigma_w2=25.0),
        steps=6,
        store=str(bad),
        name="tanh25",
        diagnose_online=False,
    )
    record(
        mlp(4, 16, nn.ReLU, sigma_w2=2.0),
        steps=6,
        store=str(good),
        name="he",
        diagnose_online=False,
    )
    return {"bad": bad, "good": good}


def test_json_output_parses(stores, capsys) -> None:
    assert main(["diagnose", str(stores["bad"]), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    kinds = {f["kind"]: f for f in out}
    assert kinds["exploding_gradients"]["severity"] in ("warning", "critical")
    assert kinds["exploding_gradients"]["remedies"][0]["how"]
    assert isinstance(kinds["exploding_gradients"]["data"]["per_layer"], float)
    assert [f["severity"] for f in out] == sorted(
        (f["severity"] for f in out), key=["critical", "warning", "info"].index
    )


def test_text_output(stores, capsys) -> None:
    assert main(["diagnose", str(stores["good"]), "--width", "100"]) == 0
    out = capsys.readouterr().out
    assert "he: 1 finding(s)" in out and "healthy" in out


@pytest.mark.parametrize(
    ("store", "fail_on", "code"),
    [
        ("bad", "warning", 1),
        ("bad", None, 0),
        ("good", "warning", 0),
        ("good", "critical", 0),
    ],
)
def test_fail_on_exit_codes(stores, capsys, store: str, fail_on: str | None, code: int) -> None:
    argv = ["diagnose", str(stores[store]), "--json"]
    if fail_on:
        argv += ["--fail-on", fail_on]
    assert main(argv) == code


def test_fail_on_critical_only_for_critical(stores, capsys) -> None:
    main(["diagnose", str(stores["bad"]), "--json"])
    worst = json.loads(capsys.readouterr().out)[0]["severity"]
    assert main(["diagnose", str(stores["bad"]), "--json", "--fail-on", "critical"]) == (
        1 if worst == "critical" else 0
    )


def test_bad_input_exits_2_with_one_line(tmp_path, stores, capsys) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite at all" * 10)
    for argv in (
        ["diagnose", str(junk)],
        ["diagnose", str(tmp_path / "missing.db")],
        ["diagnose", str(stores["good"]), "--name", "nope"],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("gradguard: error: ") and "\n" not in err


@pytest.mark.parametrize("value", ["fatal", "Warning", "info", ""])
def test_bad_fail_on_exits_2_with_one_line(stores, capsys, value: str) -> None:
    # regression: argparse's choices= printed a usage block plus an error line
    assert main(["diagnose", str(stores["good"]), "--fail-on", value]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("gradguard: error: --fail-on must be one of warning, critical")
    assert "\n" not in err and captured.out == ""
