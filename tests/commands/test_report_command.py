"""`gradguard report RUN.db`: writes the HTML page; bad input is one clear error line and exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from gradguard.cli import main
from gradguard.commands.report import _default_output
from tests.report.test_html import parse, record_run


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "runs.db"
    record_run(path, name="first", steps=3)
    record_run(path, name="second/run", steps=4)
    return path


def test_report_writes_a_page_for_the_last_run(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.html"
    assert main(["report", str(store), "-o", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    html = out.read_text(encoding="utf-8")
    assert "<title>gradguard report: second/run</title>" in html
    assert "4 (steps 0..3)" in html
    page = parse(html)
    assert page.errors == [] and len(page.imgs) == 4
    assert 'id="findings"' in html and html.count('<article class="finding') >= 1  # diagnose() ran


def test_report_by_name_with_default_output_next_to_the_store(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(store), "--name", "first", "--title", "my <title>"]) == 0
    out = store.parent / "first.html"
    assert f"wrote {out}" in capsys.readouterr().out
    html = out.read_text(encoding="utf-8")
    assert "<title>my &lt;title&gt;</title>" in html and "3 (steps 0..2)" in html
    # a run name with a slash still gives a file next to the store
    assert _default_output(str(store), "second/run") == store.parent.resolve() / "second_run.html"
    assert _default_output("x.db", "..") == Path("x.db").resolve().parent / "report.html"


@pytest.mark.parametrize(
    ("setup", "extra", "message"),
    [
        ("missing", [], "no store at"),
        ("text", [], "not a gradguard store"),
        ("store", ["--name", "nope"], "no run named 'nope'"),
        ("store", ["-o", "/nonexistent-dir/x.html"], "does not exist"),
    ],
)
def test_report_bad_input_exits_2_with_one_line(
    setup: str,
    extra: list[str],
    message: str,
    store: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if setup == "missing":
        path = tmp_path / "missing.db"
    elif setup == "text":
        path = tmp_path / "notes.db"
        path.write_text("not sqlite at all\n" * 20)
    else:
        path = store
    assert main(["report", str(path), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gradguard: error: ") and message in err and err.count("\n") == 1
