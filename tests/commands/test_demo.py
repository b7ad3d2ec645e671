"""`gradguard demo` end to end, and the textbook direction of every quick preset.

One demo run (all quick presets, through the CLI, not quiet) is shared by every test in this module
and by tests/report/test_browser.py: the ``demo_run`` fixture of tests/conftest.py.
"""

from __future__ import annotations

import base64
import html as html_lib
import math
import re
from pathlib import Path
from typing import Any

import pytest

import gradguard as gg
from gradguard import lab
from gradguard.runs.store import list_runs
from tests.conftest import DemoRun


@pytest.fixture(scope="module")
def demo(demo_run: DemoRun) -> tuple[Path, dict[str, Any]]:
    """The session's one demo run (tests/conftest.py), run without --quiet."""
    return demo_run.out, demo_run.results


def row(result: Any, **match: Any) -> dict[str, Any]:
    hits = [r for r in result.table if all(r[k] == v for k, v in match.items())]
    assert len(hits) == 1, (match, len(hits))
    return hits[0]


def test_demo_writes_report_figures_and_store(demo: tuple[Path, dict[str, Any]]) -> None:
    out, results = demo
    assert list(results) == [name for name, _ in lab.list_experiments()]
    html = (out / "report.html").read_text(encoding="utf-8")
    for r in results.values():
        assert r.title in html
        assert r.figures, r.name
        for fig in r.figures:
            png = (out / r.name / f"{fig}.png").read_bytes()
            assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / r.name / "table.csv").read_text().count("\n") == len(r.table) + 1
    # every recorded run is in runs.db under its label, and loads back with the same numbers
    names = [n for n, _ in list_runs(out / "runs.db")]
    assert len(names) == sum(len(r.runs) for r in results.values())
    assert len(set(names)) == len(names)
    original = results["remedies"].runs["sigmoid + batchnorm"]
    loaded = gg.load(out / "runs.db", name="sigmoid + batchnorm")
    assert loaded.layer_names == original.layer_names
    assert loaded.scalar("loss")[1] == pytest.approx(original.scalar("loss")[1])
    assert loaded.metric("grad_norm")[1] == pytest.approx(
        original.metric("grad_norm")[1], nan_ok=True
    )


def test_depth_sweep_direction(demo: tuple[Path, dict[str, Any]]) -> None:
    r = demo[1]["depth_sweep"]
    sig = row(r, activation="sigmoid", init="Xavier", depth=20)["grad_first"]
    relu_he = row(r, activation="relu", init="He", depth=20)["grad_first"]
    assert sig < 1e-4 * relu_he  # vanishing: measured ~1e-12 of it
    assert 0.05 < relu_he < 20  # He keeps ReLU near 1
    assert row(r, activation="relu", init="N(0, 1)", depth=20)["grad_first"] > 1e6  # exploding
    assert row(r, activation="tanh", init="N(0, 0.01²)", depth=20)["grad_first"] < 1e-10
    # deeper is worse for sigmoid: monotone over depth
    curve = [
        row(r, activation="sigmoid", init="Xavier", depth=d)["grad_first"]
        for d in (1, 5, 10, 20, 50)
    ]
    assert curve == sorted(curve, reverse=True)
    assert len(r.runs) == 6 * 4 * 5


def test_weight_scale_matches_mean_field(demo: tuple[Path, dict[str, Any]]) -> None:
    r = demo[1]["weight_scale"]
    for rw in r.table:
        assert math.isfinite(rw["chi1_theory"])
        assert rw["chi1_measured"] == pytest.approx(rw["chi1_theory"], rel=0.25), rw
    for act in ("tanh", "linear", "relu"):
        assert (
            row(r, activation=act, sigma_w=0.3)["chi1_measured"]
            < 1
            < row(r, activation=act, sigma_w=3.0)["chi1_measured"]
        )
        lo = row(r, activation=act, sigma_w=0.01)["grad_first"]
        hi = row(r, activation=act, sigma_w=3.0)["grad_first"]
        assert hi > 1e15 * lo


def test_remedies_direction(demo: tuple[Path, dict[str, Any]]) -> None:
    r = demo[1]["remedies"]
    base = row(r, config="baseline (sigmoid)")
    assert base["test_acc"] < 0.3
    assert base["grad_first_over_last"] < 1e-6
    for fix in ("sigmoid + batchnorm", "sigmoid + residual", "all combined"):
        assert row(r, config=fix)["test_acc"] > base["test_acc"] + 0.4
    assert "vanishing_gradients" in base["diagnosis"]
    assert set(r.findings) == set(r.runs)


def test_exploding_training_direction(demo: tuple[Path, dict[str, Any]]) -> None:
    r = demo[1]["exploding_training"]
    assert row(r, config="baseline (diverges)")["first_nan_step"] is not None
    for fix in ("norm clip 1.0", "AGC 0.01 (adaptive)", "Adam lr 1e-3", "lower lr 0.05"):
        fixed = row(r, config=fix)
        assert fixed["first_nan_step"] is None, fix
        assert fixed["test_acc"] > 0.5, fix


def test_recurrent_direction(demo: tuple[Path, dict[str, Any]]) -> None:
    r = demo[1]["recurrent"]
    rnn = row(r, part="init gradient", model="rnn", T=50)["grad_h0"]
    lstm = row(r, part="init gradient", model="lstm", T=50)["grad_h0"]
    assert lstm > 1e3 * rnn
    assert row(r, part="init gradient", model="rnn", T=100)["grad_h0"] < 1e-12
    gru = row(r, part="training", model="gru", T=10)["test_mse"]
    assert gru < 0.1 < 1 / 6  # learnt; the mean predictor scores 0.167
    unclipped = row(r, part="exploding", model="rnn W_hh=2*orth")
    clipped = row(r, part="exploding", model="rnn W_hh=2*orth + clip 1.0")
    assert unclipped["h0_over_hT"] > 100  # exploding through time
    assert unclipped["first_nan_step"] is not None
    assert clipped["first_nan_step"] is None and math.isfinite(clipped["test_mse"])


def test_residual_depth_direction(demo: tuple[Path, dict[str, Any]]) -> None:
    r = demo[1]["residual_depth"]
    plain = row(r, arch="plain", depth=100)["grad_first_init"]
    res = row(r, arch="residual", depth=100)["grad_first_init"]
    assert res > 1e10 * plain
    for depth in (10, 30):
        assert (
            row(r, arch="residual", depth=depth)["test_acc"]
            > row(r, arch="plain", depth=depth)["test_acc"] + 0.5
        )


def _text(html: str) -> str:
    """The page's text: tags dropped, entities decoded, whitespace collapsed."""
    return " ".join(html_lib.unescape(re.sub(r"<[^>]+>", " ", html)).split())


def test_report_is_self_contained_with_every_figure_table_and_reading(
    demo: tuple[Path, dict[str, Any]],
) -> None:
    out, results = demo
    html = (out / "report.html").read_text(encoding="utf-8")
    pngs = sorted(out.glob("*/*.png"))
    assert len(pngs) == sum(len(r.figures) for r in results.values())
    # every figure embedded as a data: URI, byte for byte the PNG written next to the report
    embedded = re.findall(r'<img[^>]+src="data:image/png;base64,([^"]+)"', html)
    assert len(embedded) == html.count("data:image/png") == len(pngs)
    assert sorted(base64.b64decode(b) for b in embedded) == sorted(p.read_bytes() for p in pngs)
    # nothing external: no http(s) src/href, no stylesheet or script from elsewhere
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, re.I)
    assert not re.search(r"<(?:script|link|iframe)\b", html, re.I)
    assert not re.search(r"url\(\s*['\"]?(?:https?:)?//", html, re.I)
    text = _text(html)
    sections = re.split(r'<section id="', html)
    for r in results.values():
        # the experiment's own section holds its reading and its table (header and every row)
        mine = [sec for sec in sections if f"experiment {r.name}" in sec]
        assert len(mine) == 1, r.name
        sec = mine[0]
        assert " ".join(r.reading.split()) in _text(sec), r.name
        table = sec.split("<h3>Results", 1)[1].split("</table>", 1)[0]  # the tidy table
        heads = re.findall(r"<th[^>]*scope=\"col\"[^>]*>(.*?)</th>", table)
        assert [html_lib.unescape(h) for h in heads] == list(r.columns), r.name
        assert len(re.findall(r"<tr\b", table)) == len(r.table) + 1, r.name  # header + rows
        first = r.table[0][r.columns[0]]
        assert f'<th scope="row">{html_lib.escape(str(first))}</th>' in table, r.name
        assert f"Recorded runs ({', '.join(r.runs)})" in _text(sec) or not r.runs
    assert "gradguard report runs.db --name LABEL" in text


def test_demo_prints_key_tables_and_findings(demo_run: DemoRun) -> None:
    printed = demo_run.printed
    flat = " ".join(printed.split())
    for r in demo_run.results.values():
        assert r.title in printed, r.name
        assert " ".join(r.reading.split()) in flat, r.name  # wrapped lines, same words
        for col in r.columns:
            assert col in printed, (r.name, col)
    # the table's rows: first cells of the first rows, and the remedies row labels
    assert "sigmoid + batchnorm" in printed and "baseline (diverges)" in printed
    # the worst finding of each diagnosed configuration, e.g. the sigmoid baseline's vanishing
    remedies = demo_run.results["remedies"]
    for label, found in remedies.findings.items():
        if found:
            worst = max(found, key=lambda f: f.severity)
            assert f"{label}: {worst.severity.value} {worst.kind}" in flat
    assert "baseline (sigmoid): critical vanishing_gradients" in flat or (
        "baseline (sigmoid): warning vanishing_gradients" in flat
    )
    assert "demo done in" in printed


def test_demo_figures_show_spread_and_training_curves(demo: tuple[Path, dict[str, Any]]) -> None:
    out, results = demo
    sweep = results["depth_sweep"]
    for init in ("small", "unit", "xavier", "he"):  # vanishing and exploding flows both drawn
        assert (out / "depth_sweep" / f"flow_depth20_{init}.png").is_file()
    assert len(sweep.curves) == len(sweep.table)
    rec = results["recurrent"]
    assert {"training_mse_T10", "exploding_rnn_loss"} <= set(rec.figures)
