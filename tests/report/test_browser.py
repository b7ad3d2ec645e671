"""The HTML report in a real browser: headless Debian chromium driven by playwright's sync API.

Every figure loads (naturalWidth > 0), nothing is fetched from the network, no console or page
errors, tables and sections are there. Setup: ``bash .ci/install-browser`` (apt chromium + the
playwright python package; never ``playwright install``). Without them the test is skipped,
except under CI (``CI`` set), where their absence fails it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from gradguard.report.html import render_lab, render_run, write_report
from tests.report.test_html import SECTIONS, record_run
from tests.report.test_lab_html import _results

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _chromium() -> str | None:
    """Debian's chromium: /usr/bin/chromium, else ``chromium`` on PATH, else None."""
    if os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    return shutil.which("chromium")


def _sync_playwright() -> Any:
    """playwright's sync_playwright, or skip (fail under CI) when it or chromium is missing."""
    missing = []
    if _chromium() is None:
        missing.append(f"chromium ({CHROMIUM})")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing.append("the playwright python package")
        sync_playwright = None
    if missing:
        msg = f"browser test needs {' and '.join(missing)}; run: bash .ci/install-browser"
        if _in_ci():
            pytest.fail(f"CI is set but {msg}")
        pytest.skip(msg)
    return sync_playwright


def _open(path: Path) -> dict[str, Any]:
    """Load a page in headless chromium and report what the page and the browser saw."""
    sync_playwright = _sync_playwright()
    console: list[str] = []
    page_errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 900})
            page.on(
                "console",
                lambda m: console.append(f"{m.type}: {m.text}") if m.type == "error" else None,
            )
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(path.as_uri(), wait_until="load")
            seen = page.evaluate(
                """() => ({
                    images: Array.from(document.images).map(i => ({complete: i.complete, w: i.naturalWidth,
                                                                   h: i.naturalHeight, alt: i.alt})),
                    tables: document.querySelectorAll('table').length,
                    colHeads: document.querySelectorAll('thead th[scope=col]').length,
                    sections: Array.from(document.querySelectorAll('main > section')).map(s => s.id),
                    navLinks: Array.from(document.querySelectorAll('nav a')).map(a => a.getAttribute('href')),
                    title: document.title,
                    scrollWidth: document.documentElement.scrollWidth,
                    clientWidth: document.documentElement.clientWidth,
                    tableHeads: Array.from(document.querySelectorAll('table')).map(t =>
                        Array.from(t.querySelectorAll('thead th')).map(h => h.textContent)),
                    wideImages: Array.from(document.images).filter(i =>
                        i.getBoundingClientRect().right > document.documentElement.clientWidth + 1).length,
                })"""
            )
        finally:
            browser.close()
    seen.update(console=console, page_errors=page_errors, requests=requests)
    return seen


def _network(requests: list[str]) -> list[str]:
    return [u for u in requests if not u.startswith(("file:", "data:"))]


def test_run_report_in_chromium(tmp_path: Path) -> None:
    run = record_run(tmp_path / "run.db", name="browser <run>")
    path = write_report(tmp_path / "report.html", render_run(run))
    seen = _open(path)
    assert seen["console"] == [] and seen["page_errors"] == []
    assert _network(seen["requests"]) == []
    assert len(seen["images"]) == 4
    for img in seen["images"]:
        assert img["complete"] and img["w"] > 0 and img["h"] > 0 and img["alt"], img
    assert seen["sections"] == list(SECTIONS)
    assert seen["navLinks"] == [f"#{s}" for s in SECTIONS]
    assert seen["tables"] >= 1 and seen["colHeads"] >= 10
    assert (
        seen["title"] == "gradguard report: browser <run>"
    )  # escaped in the source, text in the page
    assert seen["scrollWidth"] <= 1366  # no sideways scrolling on a laptop-sized window


def test_lab_report_in_chromium(tmp_path: Path) -> None:
    path = write_report(tmp_path / "lab.html", render_lab(_results(), runs_db="runs/demo.db"))
    seen = _open(path)
    assert seen["console"] == [] and seen["page_errors"] == []
    assert _network(seen["requests"]) == []
    assert [i["w"] for i in seen["images"]] == [770]  # the 7 in x 110 dpi figure
    assert seen["sections"] == ["overview", "exp-depth-sweep", "exp-depth-sweep-2"]
    assert seen["tables"] == 3


@pytest.mark.parametrize(
    ("ci", "outcome"), [(None, "skip"), ("true", "fail"), ("1", "fail"), ("false", "skip")]
)
def test_missing_browser_skips_only_outside_ci(
    ci: str | None, outcome: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(f"{__name__}.CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    expected = pytest.fail.Exception if outcome == "fail" else pytest.skip.Exception
    with pytest.raises(expected, match="install-browser"):
        _sync_playwright()


def test_real_demo_report_in_chromium(request: pytest.FixtureRequest) -> None:
    """The page `gradguard demo` really writes (the session's demo run, tests/conftest.py)."""
    _sync_playwright()  # skip (or fail under CI) before paying for the demo run
    demo = request.getfixturevalue("demo_run")
    seen = _open(demo.out / "report.html")
    assert seen["console"] == [] and seen["page_errors"] == []
    assert _network(seen["requests"]) == []
    results = list(demo.results.values())
    assert len(seen["images"]) == sum(len(r.figures) for r in results)
    for img in seen["images"]:
        assert img["complete"] and img["w"] > 0 and img["h"] > 0 and img["alt"], img
    assert seen["sections"][0] == "overview" and len(seen["sections"]) == 1 + len(results)
    heads = seen["tableHeads"]
    for r in results:  # each experiment's tidy table is in the page, with its columns
        assert list(r.columns) in heads, r.name
    # laptop width: no sideways scrolling of the page, no figure wider than the window
    assert seen["scrollWidth"] <= 1366 and seen["scrollWidth"] <= seen["clientWidth"]
    assert seen["wideImages"] == 0
