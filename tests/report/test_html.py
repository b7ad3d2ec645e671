"""The HTML run report: a real watched run rendered, PNGs valid, findings listed, text escaped, golden skeleton."""

from __future__ import annotations

import base64
import os
import re
import struct
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

import gradguard as gg
from gradguard.diagnosis.finding import Finding, Remedy, Severity
from gradguard.record.batch import Event, Layer
from gradguard.report.html import render_run, write_report
from gradguard.runs.run import Run

PNG_SIG = b"\x89PNG\r\n\x1a\n"
GOLDEN = Path(__file__).parents[1] / "golden"
SECTIONS = (
    "summary",
    "findings",
    "gradient-flow",
    "heatmap",
    "curves",
    "activations",
    "layers",
    "events",
)
VOID = {"meta", "img", "br", "hr", "link", "input", "col", "source", "wbr"}


def record_run(path: Path, name: str = "mlp", steps: int = 6) -> Run:
    """A real run: a small tanh MLP trained a few steps under gg.watch (every probe, every step)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16), torch.nn.Tanh(),
        torch.nn.Linear(16, 1),
    )  # fmt: skip
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(32, 8), torch.randn(32, 1)
    with gg.watch(model, opt, store=path, name=name, detail_every=1) as mon:
        for _ in range(steps):
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            mon.log(loss=loss)
    return gg.load(path, name)


class Page(HTMLParser):
    """Collects images, ids, links and checks that every non-void element is closed in order."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.imgs: list[dict[str, str | None]] = []
        self.ids: list[str] = []
        self.hrefs: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        if a.get("id"):
            self.ids.append(str(a["id"]))
        if tag == "img":
            self.imgs.append(a)
        if tag == "a" and a.get("href"):
            self.hrefs.append(str(a["href"]))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> Page:
    p = Page()
    p.feed(html)
    p.close()
    return p


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, checking the signature first."""
    assert png[:8] == PNG_SIG
    assert png[12:16] == b"IHDR"
    return struct.unpack(">II", png[16:24])


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Run, list[Finding], str]:
    run = record_run(tmp_path_factory.mktemp("rep") / "run.db")
    findings = gg.diagnose(run)
    return run, findings, render_run(run, findings)


def test_real_run_has_every_section_and_a_working_toc(
    watched: tuple[Run, list[Finding], str],
) -> None:
    _, _, html = watched
    page = parse(html)
    assert page.errors == [] and page.stack == []
    for s in SECTIONS:
        assert s in page.ids
        assert f"#{s}" in page.hrefs
    for tag in ("header", "nav", "main", "section", "figure", "figcaption", "table", "thead", "th"):
        assert tag in page.tags
    assert 'scope="col"' in html and 'scope="row"' in html


def test_every_image_is_an_embedded_png_of_the_expected_size(
    watched: tuple[Run, list[Finding], str],
) -> None:
    _, _, html = watched
    imgs = parse(html).imgs
    assert len(imgs) == 4
    sizes = []
    for img in imgs:
        src = str(img["src"])
        assert src.startswith("data:image/png;base64,")
        assert img.get("alt")
        sizes.append(png_size(base64.b64decode(src.split(",", 1)[1], validate=True)))
    # figure size (inches) x 110 dpi: gradient flow 10 in, heatmap 10 in, curves 10 x 5 in, activations 11 in
    assert [w for w, _ in sizes] == [1100, 1100, 1100, 1210]
    assert sizes[2][1] == 550


def test_self_contained_no_network_no_script(watched: tuple[Run, list[Finding], str]) -> None:
    _, _, html = watched
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "@import" not in html and "url(" not in html
    assert "<script" not in html


def test_summary_and_layer_table_show_the_recorded_numbers(
    watched: tuple[Run, list[Finding], str],
) -> None:
    run, _, html = watched
    assert "3 (433 parameters)" in html  # 8*16+16 + 16*16+16 + 16+1
    steps = run.steps
    assert f"{len(steps)} (steps {steps[0]}..{steps[-1]})" in html
    # the per-layer table holds the latest grad_rms of each layer, 3 significant digits
    _, rms = run.metric("grad_rms")
    body = html.split('id="layers"', 1)[1]
    for v in rms[-1]:
        assert f">{v:.3g}<" in body
    assert "Linear \u2192 Tanh" in body
    assert f"torch {torch.__version__}" in html


def test_findings_are_listed_with_their_remedies(watched: tuple[Run, list[Finding], str]) -> None:
    _, findings, html = watched
    assert findings, "diagnose() returns at least a 'healthy' finding"
    body = html.split('id="findings"', 1)[1].split("</section>", 1)[0]
    assert body.count('<article class="finding') == len(findings)
    for f in findings:
        assert f"sev-{f.severity.value}" in body
        assert f.title in body
        for r in f.remedies:
            assert r.name.replace("'", "&#x27;") in body


def _synthetic(name: str = "synthetic") -> tuple[Run, list[Finding]]:
    """A fixed run and findings: numbers chosen, no clock, no torch (golden file input)."""
    steps = np.arange(0, 20, 2)
    depth = np.arange(4)
    rms = (
        1e-2 * np.power(10.0, depth)[None, :] * (1 + 0.05 * steps)[:, None]
    )  # x10 per layer toward the output
    rms[3, 1] = np.nan
    rms[4, 2] = np.inf
    act = np.tile(np.array([0.9, 0.5, 0.2, 0.05]), (len(steps), 1))
    frac = np.tile(np.array([0.0, 0.1, 0.4, 0.8]), (len(steps), 1))
    layers = [
        Layer(0, "enc.0", "Linear", 80, True, "ReLU"),
        Layer(1, "enc.2", "Linear", 110, True, "ReLU"),
        Layer(2, "dec.0", "Conv2d", 912, True, None),
        Layer(3, "head", "Linear", 11, True, None),
    ]
    run = Run.from_arrays(
        name=name,
        layers=layers,
        metrics={
            "grad_rms": (steps, rms),
            "act_grad_norm": (steps, rms * 3),
            "grad_norm": (steps, rms * 10),
            "act_std": (steps, act),
            "act_zero_frac": (steps, frac),
            "act_sat_frac": (steps, frac[:, ::-1]),
        },
        scalars={
            "loss": (steps, 2.0 / (1 + steps)),
            "grad_norm_total": (steps, np.where(steps == 10, np.nan, 0.5 + steps)),
        },
        events=[Event(10, "skipped_step", "head", float("nan"), "non-finite <grad> & skipped")],
        config={"model": "Net<T>", "optimizer": "Adam"},
    )
    findings = [
        Finding(
            "exploding_gradients",
            Severity.CRITICAL,
            ("enc.0", "enc.2"),
            (8, 14),
            evidence="grad_rms grows x10.0 per layer & <fast>",
            cause="weights too large",
            remedies=(Remedy("gradient clipping", "caps the norm", "gg.clip.Norm(max_norm=1.0)"),),
        ),
        Finding("nonfinite", Severity.WARNING, ("head",), (10, 10), evidence="1 NaN"),
        Finding("healthy", Severity.INFO, evidence="fine elsewhere"),
    ]
    return run, findings


def strip_images(html: str) -> str:
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:image/png;base64,...", html)


def check_golden(name: str, text: str) -> None:
    """Compare with tests/golden/NAME; GRADGUARD_UPDATE_GOLDEN=1 rewrites the file instead."""
    path = GOLDEN / name
    if os.environ.get("GRADGUARD_UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    expected = path.read_text(encoding="utf-8")
    assert text == expected, (
        f"{name} differs from the golden file; if intended, rerun with GRADGUARD_UPDATE_GOLDEN=1"
    )


def test_golden_skeleton_byte_stable_figures_and_escaped_text() -> None:
    run, findings = _synthetic()
    html = render_run(run, findings)
    check_golden("report_run.html", strip_images(html))
    # a second render of the same numbers under a hostile name: same PNG bytes, text escaped
    run2, findings2 = _synthetic("<script>alert(1)</script>")
    html2 = render_run(run2, findings2)
    assert parse(html2).imgs == parse(html).imgs  # PNGs carry no dates: same bytes every time
    assert "<script" not in html2
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html2
    assert (
        "&lt;fast&gt;" in html2
        and "&lt;grad&gt; &amp; skipped" in html2
        and "Net&lt;T&gt;" in html2
    )
    text = "".join(parse(html2).text)
    assert "gradguard report: <script>alert(1)</script>" in text  # shown to the reader as text


def test_empty_run_renders_with_placeholders() -> None:
    run = Run.from_arrays(name="empty", layers=["fc"])
    html = render_run(run, [])
    page = parse(html)
    assert page.errors == [] and len(page.imgs) == 4
    assert "steps recorded</dt><dd>none" in html and "No events were recorded." in html
    assert "No findings." in html and "0 findings" in html


def test_render_run_calls_diagnose_when_no_findings_are_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import gradguard.report.html

    seen: list[Run] = []
    mark = Finding("dead_units", Severity.WARNING, ("fc",), evidence="94% zeros")

    def spy(run: Run) -> list[Finding]:
        seen.append(run)
        return [mark]

    monkeypatch.setattr(gradguard.report.html, "diagnose", spy)
    run = Run.from_arrays(name="empty", layers=["fc"])
    html = render_run(run)
    assert seen == [run]
    assert "dead units" in html and "94% zeros" in html and "1 findings" in html


def test_write_report(tmp_path: Path) -> None:
    out = write_report(tmp_path / "r.html", "<p>é</p>")
    assert out.read_text(encoding="utf-8") == "<p>é</p>"
    with pytest.raises(gg.GradguardError, match="does not exist"):
        write_report(tmp_path / "missing" / "r.html", "x")


def test_render_run_rejects_what_is_not_a_run() -> None:
    with pytest.raises(gg.GradguardError, match="needs a gradguard Run"):
        render_run("runs/x.db")  # type: ignore[arg-type]


def test_event_messages_show_their_first_line_cut_to_240_characters() -> None:
    from gradguard.report.html import _short

    assert _short("[WARNING] exploding\n  evidence: x\n  1. clip") == "[WARNING] exploding"
    long = "a" * 300
    assert _short(long) == "a" * 239 + "\u2026" and len(_short(long)) == 240
    assert _short("") == "" and _short("  \n ") == ""
