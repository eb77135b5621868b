"""The executed notebooks as HTML, with equations typeset offline by MathJax 3 served from the site."""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path

from tpslab.utils import TPSLabError

CONFIG = ("<script>window.MathJax={tex:{inlineMath:[['$','$'],['\\\\(','\\\\)']],processEscapes:true},"
          "svg:{fontCache:'global'}};</script><script src=\"../mathjax/tex-svg-full.js\"></script>")


def _mathjax_file() -> Path:
    """MathJax's single-file tex-svg bundle from the ``django-static-mathjax`` package."""
    try:
        import mathjax  # the django-static-mathjax package
    except ImportError as err:
        raise TPSLabError("--notebooks needs MathJax: pip install django-static-mathjax") from err
    path = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5" / "tex-svg-full.js"
    if not path.is_file():
        raise TPSLabError(f"{path}: MathJax file not found; reinstall django-static-mathjax")
    return path


def goals(nb) -> str:
    """The notebook's "What you will learn" paragraph, or ""."""
    for cell in nb.cells:
        m = re.search(r"\*\*What you will learn\.?\*\*(.*?)(\n\s*\n|\Z)", cell.source, re.S)
        if cell.cell_type == "markdown" and m:
            return " ".join(m.group(1).split())
    return ""


def render(notebooks: Path, out: Path) -> list[tuple[str, str]]:
    """Render ``notebooks/*.ipynb`` into ``out/notebooks/``; (file name, learning goals) of each."""
    import nbformat
    from nbconvert import HTMLExporter

    (out / "mathjax").mkdir(parents=True, exist_ok=True)
    shutil.copy(_mathjax_file(), out / "mathjax" / "tex-svg-full.js")
    (out / "notebooks").mkdir(exist_ok=True)
    exporter = HTMLExporter(template_name="classic")
    done = []
    for path in sorted(notebooks.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        body, _ = exporter.from_notebook_node(nb)
        body = re.sub(r"<script[^>]*mathjax[^>]*>\s*</script>", "", body, flags=re.I)
        body = re.sub(r"<script type=\"text/x-mathjax-config\">.*?</script>", "", body, flags=re.S)
        body = re.sub(r"<script[^>]*src=\"https?://[^\"]*\"[^>]*>\s*</script>", "", body)  # no CDN
        body = re.sub(r"<script type=\"module\">(?:(?!</script>).)*?https?://(?:(?!</script>).)*</script>", "", body,
                      flags=re.S)  # nbconvert's mermaid loader (from a CDN)
        body = body.replace("</head>", CONFIG + "</head>", 1)
        name = path.with_suffix(".html").name
        (out / "notebooks" / name).write_text(body)
        done.append((name, goals(nb)))
    return done


def index_body(done: list[tuple[str, str]]) -> str:
    """The notebooks index: each notebook with its learning goals."""
    return "".join(f'<h3><a href="notebooks/{n}">{html.escape(n)}</a></h3><p>{html.escape(g)}</p>' for n, g in done)
