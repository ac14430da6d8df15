"""A self-contained HTML page: inline CSS, images as data: URIs, no external reference of any kind.

Every piece of text that comes from a file goes through `esc`. A Content-Security-Policy forbids the page
from loading anything but its own data: images, so it behaves the same offline. A few lines of inline
script record, once the page has loaded, how many of its images decoded (body data-images-loaded /
data-images-total), which the end-to-end test reads back from a headless browser.
"""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field

CSS = """
:root { --fg: #1f2328; --muted: #656d76; --line: #d0d7de; --bg2: #f6f8fa; --accent: #2a6fb0; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: var(--fg);
       background: #fff; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 28px 60px; }
header { border-bottom: 2px solid var(--accent); margin-bottom: 10px; padding-bottom: 8px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 34px 0 8px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 6px; }
.sub { color: var(--muted); margin: 0; }
nav { margin: 10px 0 4px; font-size: 14px; }
nav a { color: var(--accent); text-decoration: none; margin-right: 14px; }
nav a:hover { text-decoration: underline; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 12px 0; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 16px; min-width: 150px; background: var(--bg2); }
.card .v { font-size: 22px; font-weight: 600; }
.card .k { color: var(--muted); font-size: 13px; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 8px 24px; align-items: start; }
.grid3 { display: grid; grid-template-columns: repeat(auto-fit, minmax(240px, 1fr)); gap: 0 24px; align-items: start; }
.grid table, .grid3 table { width: 100%; }
table { border-collapse: collapse; font-size: 13.5px; margin: 6px 0; }
th, td { text-align: left; padding: 3px 12px 3px 0; border-bottom: 1px solid #eaeef2; vertical-align: top; }
th { color: var(--muted); font-weight: 500; white-space: nowrap; }
table.data th { color: var(--fg); font-weight: 600; border-bottom: 1px solid var(--line); }
table.data td.num { text-align: right; font-variant-numeric: tabular-nums; }
td code { font-size: 12.5px; }
figure { margin: 12px 0 18px; }
figure img { max-width: 100%; height: auto; display: block; border: 1px solid #eaeef2; border-radius: 4px;
             image-rendering: auto; }
figcaption { color: var(--muted); font-size: 13.5px; margin-top: 6px; max-width: 900px; }
.note { background: #fff8e6; border-left: 4px solid #e3a008; padding: 8px 12px; margin: 12px 0; font-size: 14px; }
.skipped ul { margin: 4px 0 0; padding-left: 20px; }
.skipped li { margin: 2px 0; }
pre { background: var(--bg2); border: 1px solid var(--line); padding: 10px; overflow-x: auto; font-size: 12.5px; }
details summary { cursor: pointer; color: var(--accent); margin: 8px 0; }
footer { color: var(--muted); font-size: 12px; margin-top: 40px; border-top: 1px solid var(--line); padding-top: 8px; }
"""

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

LOAD_CHECK = """
window.addEventListener("load", function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) { ok++; } }
  document.body.dataset.imagesLoaded = String(ok);
  document.body.dataset.imagesTotal = String(imgs.length);
});
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def img(png: bytes, alt: str) -> str:
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def figure(png: bytes, alt: str, caption: str | None = None) -> str:
    """An embedded PNG with an optional caption (the caption is HTML: escape file text before passing it)."""
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f"<figure>{img(png, alt)}{cap}</figure>"


def _cell(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, list):
        return "<br>".join(esc(x) for x in v)
    return esc(v)


def kv_table(rows: list[tuple[str, object]]) -> str:
    """Two-column table of label -> value; values are escaped (a list shows one item per line); None
    shows as an em dash."""
    body = "".join(f"<tr><th>{esc(k)}</th><td>{_cell(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def data_table(header: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td{" class=num" if i in numeric else ""}>{esc(c)}</td>'
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f'<table class="data"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def card(label: str, shown: str, key: str | None = None, raw=None) -> str:
    """A headline number; `key`/`raw` keep the exact metrics.json value beside the rounded display."""
    attrs = f' data-key="{esc(key)}" data-value="{esc(repr(raw))}"' if key else ""
    return f'<div class="card"{attrs}><div class="v">{esc(shown)}</div><div class="k">{esc(label)}</div></div>'


@dataclass
class Page:
    title: str
    subtitle: str = ""
    sections: list[tuple[str, str, str]] = field(default_factory=list)   # (id, heading, html body)

    def add(self, sid: str, heading: str, body: str) -> None:
        self.sections.append((sid, heading, body))

    def render(self, footer: str = "") -> str:
        nav = " ".join(f'<a href="#{esc(sid)}">{esc(h)}</a>' for sid, h, _ in self.sections)
        secs = "\n".join(f'<section id="{esc(sid)}">\n<h2>{esc(h)}</h2>\n{body}\n</section>'
                         for sid, h, body in self.sections)
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(self.title)}</title>
<style>{CSS}</style>
</head>
<body>
<main>
<header><h1>{esc(self.title)}</h1><p class="sub">{esc(self.subtitle)}</p><nav>{nav}</nav></header>
{secs}
<footer>{footer}</footer>
</main>
<script>{LOAD_CHECK}</script>
</body>
</html>
"""
