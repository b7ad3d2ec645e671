"""The page skeleton and stylesheet shared by the run report and the lab report (no JS, no network)."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence

__all__ = ["CSS", "page", "figure", "esc"]

CSS = """
:root { --fg:#1f2328; --muted:#59636e; --line:#d8dee4; --bg:#ffffff; --panel:#f6f8fa; --accent:#0b5cad;
  --info:#2b8a3e; --warning:#b35c00; --critical:#c92a2a; }
* { box-sizing: border-box; }
body { margin:0; color:var(--fg); background:var(--bg); font:15px/1.5 system-ui,-apple-system,"Segoe UI",
  Roboto,"DejaVu Sans",sans-serif; }
header { padding:1.2rem 2rem 0.8rem; border-bottom:1px solid var(--line); background:var(--panel); }
header h1 { margin:0; font-size:1.55rem; }
header p { margin:.2rem 0 0; color:var(--muted); }
.layout { display:flex; align-items:flex-start; max-width:1400px; margin:0 auto; }
nav { position:sticky; top:0; flex:0 0 200px; padding:1.2rem 1rem; font-size:.9rem; max-height:100vh;
  overflow-y:auto; }
nav h2 { font-size:.8rem; text-transform:uppercase; letter-spacing:.05em; color:var(--muted); margin:0 0 .4rem; }
nav ol { list-style:none; margin:0; padding:0; }
nav li { margin:.15rem 0; }
nav a { color:var(--accent); text-decoration:none; }
nav a:hover { text-decoration:underline; }
main { flex:1 1 auto; min-width:0; padding:0.6rem 2rem 2rem; }
section { margin:1.4rem 0 2rem; }
section > h2 { font-size:1.25rem; border-bottom:1px solid var(--line); padding-bottom:.25rem; margin:0 0 .8rem; }
h3 { font-size:1.05rem; margin:1rem 0 .4rem; }
p.lead { margin:.2rem 0 .8rem; max-width:75ch; }
.muted { color:var(--muted); }
figure { margin:.6rem 0 1.2rem; }
figure img { display:block; max-width:100%; height:auto; border:1px solid var(--line); border-radius:4px; }
figcaption { color:var(--muted); font-size:.88rem; margin-top:.3rem; max-width:90ch; }
dl.summary { display:grid; grid-template-columns:max-content 1fr; gap:.2rem 1.2rem; margin:0; }
dl.summary dt { color:var(--muted); }
dl.summary dd { margin:0; }
.table-wrap { overflow-x:auto; max-width:100%; }
.table-wrap.long { display:inline-block; vertical-align:top; max-height:32rem; overflow-y:auto;
  border-bottom:1px solid var(--line); margin-bottom:1rem; }
.table-wrap.long table { margin:0; }
table { border-collapse:collapse; font-size:.86rem; margin:.4rem 0 1rem; }
th, td { padding:.3rem .5rem; border-bottom:1px solid var(--line); text-align:left; white-space:nowrap; }
thead th { white-space:normal; vertical-align:bottom; background:var(--panel); border-bottom:2px solid var(--line); position:sticky; top:0; }
td.wrap { white-space:normal; min-width:30ch; max-width:90ch; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
tbody tr:hover { background:#fafbfc; }
article.finding { border:1px solid var(--line); border-left:6px solid var(--sev); border-radius:4px;
  padding:.6rem 1rem .5rem; margin:.7rem 0; background:#fff; }
article.finding h3, article.finding h5 { margin:0 0 .2rem; font-size:1rem; }
h4 { font-size:.98rem; margin:1rem 0 .2rem; }
details summary { cursor:pointer; color:var(--accent); margin:.2rem 0; }
.badge { display:inline-block; font-size:.72rem; font-weight:700; letter-spacing:.04em; color:#fff;
  background:var(--sev); border-radius:3px; padding:.05rem .4rem; margin-right:.5rem; vertical-align:.1em; }
.sev-info { --sev:var(--info); } .sev-warning { --sev:var(--warning); } .sev-critical { --sev:var(--critical); }
article.finding p { margin:.25rem 0; max-width:95ch; }
article.finding ol { margin:.3rem 0 .2rem; padding-left:1.4rem; }
article.finding li { margin:.2rem 0; }
code { font-family:ui-monospace,"DejaVu Sans Mono",Menlo,monospace; font-size:.85em; background:var(--panel);
  padding:.05rem .3rem; border-radius:3px; }
.counts span { margin-right:1rem; }
footer { color:var(--muted); font-size:.8rem; text-align:center; padding:1rem; border-top:1px solid var(--line); }
@media (max-width: 900px) { .layout { display:block; } nav { position:static; max-height:none; } }
@media print { nav { display:none; } }
"""


def esc(x: object) -> str:
    """HTML-escaped text of any value (quotes too)."""
    return html.escape(str(x), quote=True)


def figure(png: bytes, alt: str, caption: str) -> str:
    """A ``<figure>`` with the PNG embedded as a data: URI and an escaped caption."""
    b64 = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{b64}" alt="{esc(alt)}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def page(title: str, subtitle: str, toc: Sequence[tuple[str, str]], body: str) -> str:
    """A complete, self-contained HTML page.

    Args:
        title: page title (escaped here).
        subtitle: a line under the title (escaped here).
        toc: ``(anchor id, label)`` pairs for the navigation, in page order.
        body: the sections, already HTML.
    """
    nav = "\n".join(f'<li><a href="#{esc(a)}">{esc(label)}</a></li>' for a, label in toc)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header>\n"
        '<div class="layout">\n'
        f'<nav aria-label="contents"><h2>Contents</h2><ol>\n{nav}\n</ol></nav>\n'
        f"<main>\n{body}\n</main>\n</div>\n"
        "<footer>generated by gradguard</footer>\n</body>\n</html>\n"
    )
