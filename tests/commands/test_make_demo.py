"""`make demo` installs only what the demo needs (issue 13, item 8): the lab and report extras,
not the 2 GB dev extra (Lightning, transformers, playwright)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def dry_run(target: str) -> str:
    """What make would run for ``target`` from scratch (-B), without running it (-n)."""
    assert shutil.which("make"), "make is needed: the README's demo and test commands use it"
    out = subprocess.run(
        ["make", "-n", "-B", target], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return out.stdout


def extras() -> dict[str, list[str]]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        tomllib = pytest.importorskip("tomli")
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return data["project"]["optional-dependencies"]


def installed_extras(commands: str) -> set[str]:
    found = re.findall(r"pip install -q -e '\.\[([a-z,]+)\]'", commands)
    return {e for group in found for e in group.split(",")}


def test_make_demo_installs_the_lab_and_report_extras_only() -> None:
    demo = dry_run("demo")
    assert installed_extras(demo) == {"lab", "report"}
    assert "gradguard demo" in demo
    packages = {re.split(r"[<>=\[ ]", p)[0] for e in ("lab", "report") for p in extras()[e]}
    # what the demo imports besides the core (torch, numpy, rich): sklearn's digits, matplotlib
    assert {"matplotlib", "scikit-learn"} <= packages
    assert not packages & {"lightning", "transformers", "playwright", "tensorboard"}


def test_make_test_still_installs_the_dev_extra() -> None:
    assert installed_extras(dry_run("test")) == {"dev"}
    assert installed_extras(dry_run(".venv/bin/gradguard")) == {"dev"}  # what .ci/run builds
