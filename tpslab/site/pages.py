"""Static HTML pages with inline CSS and JS: no CDN, no server, opens from the file system."""

from __future__ import annotations

import html
import json
import re

from tpslab.site.gallery import Row

CSS = """body{font-family:sans-serif;margin:1.5em;max-width:1400px}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}nav a{margin-right:1em}.warn{background:#fff3cd;
padding:.6em;border:1px solid #e0c36c}.row{display:flex;gap:4px;margin:4px 0;align-items:flex-start}
.cell{text-align:center;font-size:11px}.cell img{width:120px;height:120px;cursor:zoom-in}
#lb{display:none;position:fixed;inset:0;background:rgba(0,0,0,.85);align-items:center;justify-content:center}
#lb img{max-width:90vw;max-height:90vh;image-rendering:pixelated}#lb.on{display:flex}.missing{color:#a00}"""

JS = """function applyG(){const c=document.getElementById('fcls').value,m=document.getElementById('fmeth').value,
s=document.getElementById('sort').value,g=document.getElementById('gallery');
const rows=[...g.querySelectorAll('.row')];rows.forEach(r=>{r.style.display=(c==''||r.dataset.cls==c)?'flex':'none';
r.querySelectorAll('.cell[data-m]').forEach(x=>{x.style.display=(m==''||x.dataset.m==m)?'':'none'})});
if(s){const sc=r=>{const v=JSON.parse(r.dataset.scores)[s];return v===undefined?-Infinity:v};
rows.sort((a,b)=>sc(b)-sc(a)).forEach(r=>g.appendChild(r))}}
function openLb(src){const l=document.getElementById('lb');l.querySelector('img').src=src;l.classList.add('on')}
function closeLb(){document.getElementById('lb').classList.remove('on')}"""

LABEL = ("Numbers from synthetic data, random weights or tpslab-mini (a small CLIP trained here on generated "
         "captions, not CLIP) are not paper numbers: they show how the methods behave on such a model and data.")


def page(title: str, body: str, nav: list[tuple[str, str]]) -> str:
    """A whole HTML page."""
    links = "".join(f'<a href="{h}">{html.escape(t)}</a>' for t, h in nav)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style><script>{JS}</script></head><body><nav>{links}</nav>"
            f"<h1>{html.escape(title)}</h1>{body}</body></html>")


def md_table(text: str) -> str:
    """Markdown (pipe tables, headings, plain lines) as HTML, enough for the compare tables."""
    out, rows = [], []

    def flush() -> None:
        if rows:
            head, *rest = rows
            out.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rest)
                       + "</table>")
            rows.clear()

    for line in text.splitlines():
        s = line.strip()
        if s.startswith("|"):
            cells = [c.strip() for c in s.strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells if c):
                rows.append(cells)
            continue
        flush()
        if s.startswith("#"):
            out.append(f"<h3>{html.escape(s.lstrip('#').strip())}</h3>")
        elif s:
            out.append(f"<p>{html.escape(s)}</p>")
    flush()
    return "\n".join(out)


def gallery(rows: list[Row], methods: list[str]) -> str:
    """The gallery with its class filter, method filter, sort and full-size view."""
    classes = sorted({r.cls for r in rows})
    opt = lambda vals: "".join(f'<option value="{html.escape(v)}">{html.escape(v)}</option>' for v in vals)  # noqa: E731
    ctl = (f'<p>class <select id="fcls" onchange="applyG()"><option value="">all</option>{opt(classes)}</select> '
           f'method <select id="fmeth" onchange="applyG()"><option value="">all</option>{opt(methods)}</select> '
           f'sort by <select id="sort" onchange="applyG()"><option value="">(as picked)</option>{opt(methods)}'
           f"</select></p>")
    body = []
    for r in rows:
        cells = []
        img = (f'<img src="img/{r.image}" onclick="openLb(this.src)" alt="image">' if r.image
               else "<div style='width:120px;height:120px;background:#eee'>image not on disk</div>")
        cells.append(f'<div class="cell">{img}<br>{"anomalous" if r.label else "normal"}</div>')
        mask = (f'<img src="img/{r.mask}" onclick="openLb(this.src)" alt="ground truth">' if r.mask
                else "<div style='width:120px;height:120px;background:#eee'>mask not on disk</div>")
        cells.append(f'<div class="cell mask">{mask}<br>ground truth</div>')
        for m in methods:
            if m in r.maps:
                cells.append(f'<div class="cell" data-m="{html.escape(m)}"><img src="img/{r.maps[m]}" '
                             f'onclick="openLb(this.src)" alt="{html.escape(m)}"><br>{html.escape(m)} '
                             f"{r.scores[m]:.3f}</div>")
        body.append(f'<div class="row" data-cls="{html.escape(r.cls)}" '
                    f"data-scores='{html.escape(json.dumps(r.scores))}' title=\"{html.escape(r.path)}\">"
                    + "".join(cells) + "</div>")
    lb = '<div id="lb" onclick="closeLb()"><img alt="full size"></div>'
    return ctl + '<div id="gallery">' + "".join(body) + "</div>" + lb
