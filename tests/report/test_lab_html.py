"""render_lab on hand-built ExperimentResults: sections, table of contents, tables, figures, findings."""

from __future__ import annotations

import base64

import numpy as np

from gradguard.diagnosis.finding import Finding, Remedy, Severity
from gradguard.report.experiment import ExperimentResult
from gradguard.report.html import render_lab
from gradguard.report.plots import line_plot
from gradguard.runs.run import Run
from tests.report.test_html import check_golden, parse, strip_images


def _results() -> list[ExperimentResult]:
    fig = line_plot(
        {"tanh": ([2, 4, 8], [0.5, 0.1, 0.01])}, logy=True, xlabel="depth", ylabel="ratio"
    )
    run = Run.from_arrays(name="tanh-d8", layers=["fc"], metrics={"grad_rms": ([0], [[1.0]])})
    vanish = Finding(
        "vanishing_gradients",
        Severity.WARNING,
        ("fc",),
        (0, 9),
        evidence="ratio 1e-2 < 0.1",
        remedies=(
            Remedy("ReLU", "derivative 1", "nn.ReLU()"),
            Remedy("He init", "keeps variance", 'gg.init_(m, "he")'),
        ),
    )
    depth = ExperimentResult(
        name="depth_sweep",
        title="Depth x activation <sweep>",
        columns=["activation", "depth", "ratio", "diverged"],
        table=[
            {"activation": "tanh", "depth": 2, "ratio": 0.5, "diverged": False},
            {"activation": "tanh", "depth": 8, "ratio": 0.0123456, "diverged": True},
            {"activation": "relu", "depth": 8, "ratio": float("nan"), "diverged": None},
        ],
        figures={"ratio_vs_depth": fig},
        reading="Tanh loses x10 per 3 layers.\n\nReLU keeps it  near 1.",
        runs={"tanh-d8": run},
        findings={"tanh-d8": [vanish], "relu-d8": []},
        params={"preset": "quick", "seed": 0},
        elapsed_s=1.25,
    )
    twin = ExperimentResult(
        name="depth_sweep", title="", columns=[], table=[{"x": np.float64(2e-5), "n": np.int64(3)}]
    )
    return [depth, twin]


def test_render_lab_sections_toc_tables_figures_findings() -> None:
    html = render_lab(_results(), runs_db="runs/demo.db")
    page = parse(html)
    assert page.errors == [] and page.stack == []
    # one section per experiment, unique anchors, all in the table of contents
    assert [i for i in page.ids if not i.endswith("-h")] == [
        "overview",
        "exp-depth-sweep",
        "exp-depth-sweep-2",
    ]
    assert page.hrefs == ["#overview", "#exp-depth-sweep", "#exp-depth-sweep-2"]
    assert "Depth x activation &lt;sweep&gt;" in html and "<sweep>" not in html
    # the tidy table: header in column order, numbers to 3 significant digits, missing/NaN as a dash
    sec = html.split('id="exp-depth-sweep"', 1)[1].split("</section>", 1)[0]
    assert sec.index(">activation</th>") < sec.index(">depth</th>") < sec.index(">ratio</th>")
    assert '<td class="num">0.0123</td>' in sec and '<th scope="row">relu</th>' in sec
    table = sec.split("<table>", 1)[1].split("</table>", 1)[0]
    assert "<td>yes</td>" in table and "<td>no</td>" in table and table.count("—") == 2
    # the figure is the PNG we passed, byte for byte
    (img,) = [i for i in page.imgs]
    assert (
        base64.b64decode(str(img["src"]).split(",", 1)[1])
        == _results()[0].figures["ratio_vs_depth"]
    )
    # findings per configuration, remedies folded
    assert "<h4>tanh-d8</h4>" in sec and "<h4>relu-d8</h4>" in sec and "No findings." in sec
    assert "<details><summary>2 remedies, best first</summary>" in sec
    assert "gradguard report runs/demo.db --name LABEL" in sec
    assert '<p class="lead">ReLU keeps it near 1.</p>' in sec
    # numpy scalars in a table are formatted as numbers; a missing title falls back to the name
    twin = html.split('id="exp-depth-sweep-2"', 1)[1]
    assert '<th scope="row" class="num">2.00e-05</th>' in twin and '<td class="num">3</td>' in twin
    assert '<h2 id="exp-depth-sweep-2-h">depth_sweep</h2>' in twin


def test_render_lab_golden_skeleton() -> None:
    html = render_lab(_results(), title="gradguard demo", runs_db="runs/demo.db")
    assert render_lab(_results(), title="gradguard demo", runs_db="runs/demo.db") == html
    check_golden("report_lab.html", strip_images(html))


def test_render_lab_empty() -> None:
    html = render_lab([])
    assert "0 experiments" in html and parse(html).errors == []


def test_long_tables_scroll_in_a_box_and_say_how_many_rows() -> None:
    r = _results()[0]
    r.table = [{"activation": "tanh", "depth": d, "ratio": 0.5**d} for d in range(1, 22)]  # 21 rows
    html = render_lab([r])
    assert '<div class="table-wrap long">' in html and "(21 rows)" in html
    r.table = r.table[:20]
    html = render_lab([r])
    assert "table-wrap long" not in html and "rows)" not in html
    assert html.count('<tr><th scope="row">tanh</th>') == 20
