"""Shared fixtures: one `gradguard demo` run per test session (about 30 s on 2 cores).

tests/commands/test_demo.py and tests/report/test_browser.py both read it, so the demo runs once however many of
its tests are selected.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass
class DemoRun:
    """What one ``gradguard demo --out OUT`` (not quiet) left behind.

    Attributes:
        out: the output directory (report.html, NAME/*.png, runs.db).
        results: experiment name -> ExperimentResult, in demo order.
        printed: everything the demo printed on stdout (tables, readings, findings).
    """

    out: Path
    results: dict[str, Any]
    printed: str


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    from gradguard import cli
    from gradguard.commands import demo as demo_cmd

    out = tmp_path_factory.mktemp("demo") / "out"
    captured: list[Any] = []
    real = demo_cmd.run_demo

    def spy(*args: Any, **kwargs: Any) -> Any:
        results = real(*args, **kwargs)
        captured.extend(results)
        return results

    buf = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(demo_cmd, "run_demo", spy)
        mp.setenv("COLUMNS", "200")  # rich: wide enough that table cells are not wrapped
        with contextlib.redirect_stdout(buf):
            assert cli.main(["demo", "--out", str(out)]) == 0
    return DemoRun(out, {r.name: r for r in captured}, buf.getvalue())
