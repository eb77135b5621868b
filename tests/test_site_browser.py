"""The results site in a real browser (Playwright driving Debian's ``chromium``).

Skipped, with the package named, when ``playwright`` or ``/usr/bin/chromium`` is missing.
The screenshots go under ``results/site-screens/`` of the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fake_results import make_results, site_source
from tpslab.site.build import build

CHROMIUM = os.environ.get("TPSLAB_CHROMIUM", "/usr/bin/chromium")
sync_api = pytest.importorskip("playwright.sync_api", reason="needs the `playwright` package (pip install playwright)")
if not Path(CHROMIUM).is_file():
    pytest.skip(f"needs a browser at {CHROMIUM}: apt-get install -y chromium", allow_module_level=True)

SHOTS = Path(__file__).resolve().parents[1] / "results" / "site-screens"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site of the fake tree, or of ``$TPSLAB_SITE_RESULTS`` when set (``make site-test``)."""
    root = tmp_path_factory.mktemp("site")
    results, data, profile = site_source(root)
    return build(results, root / "site", data_root=data, profile=profile).parent


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def _open(browser, url: str):
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_load_state("load")
    return page, errors


def test_every_page_loads_clean(site: Path, browser) -> None:
    for html in sorted(site.glob("*.html")):
        page, errors = _open(browser, html.as_uri())
        broken = page.evaluate("[...document.images].filter(i => !i.closest('#lb') && !(i.naturalWidth > 0))"
                               ".map(i => i.src)")
        assert not broken, f"{html.name}: images that did not load: {broken}"
        hrefs = page.evaluate("[...document.querySelectorAll('a[href]')].map(a => a.href)")
        for href in hrefs:
            if href.startswith("file://"):
                assert Path(href[len("file://"):].split("#")[0]).is_file(), f"{html.name}: dead link {href}"
        assert "$$" not in page.inner_text("body")
        assert not errors, f"{html.name}: console errors {errors}"
        page.close()


def test_every_gallery_row_has_mask_and_all_maps(site: Path, browser) -> None:
    galleries = sorted(site.glob("data_*.html"))
    assert galleries
    for html in galleries:
        page, _ = _open(browser, html.as_uri())
        methods = page.evaluate("[...document.querySelectorAll('#sort option')].map(o => o.value).filter(v => v)")
        cells = page.evaluate("[...document.querySelectorAll('#gallery .row')].map(r => [r.dataset.cls, "
                              "r.querySelectorAll('.cell.mask img').length, "
                              "r.querySelectorAll('.cell[data-m] img').length])")
        assert cells, f"{html.name}: empty gallery"
        for cls, masks, maps in cells:
            assert (masks, maps) == (1, len(methods)), f"{html.name} {cls}: {masks} masks, {maps} of {methods}"
        page.close()


def _gallery_page(site: Path) -> Path:
    """The data-set page whose gallery has the most classes."""
    pages = sorted(site.glob("data_*.html"), key=lambda p: -p.read_text().count("<option"))
    assert pages, "no data-set page"
    return pages[0]


def test_gallery_filter_sort_and_lightbox(site: Path, browser) -> None:
    page, errors = _open(browser, _gallery_page(site).as_uri())
    visible = "[...document.querySelectorAll('#gallery .row')].filter(r => r.style.display != 'none')"
    total = page.evaluate(f"{visible}.length")
    options = page.evaluate("[...document.querySelectorAll('#fcls option')].map(o => o.value).filter(v => v)")
    assert total and options
    page.select_option("#fcls", options[-1])
    classes = page.evaluate(f"{visible}.map(r => r.dataset.cls)")
    assert classes and set(classes) == {options[-1]}
    assert len(classes) < total if len(options) > 1 else len(classes) == total
    page.select_option("#fcls", "")
    method = page.evaluate("[...document.querySelectorAll('#sort option')].map(o => o.value).filter(v => v)")[-1]
    page.select_option("#sort", method)
    scores = page.evaluate("[...document.querySelectorAll('#gallery .row')].map(r => JSON.parse(r.dataset.scores)"
                           f"[{method!r}] ?? -1e9)")
    assert len(scores) == total and scores == sorted(scores, reverse=True)
    page.click("#gallery .row .cell img")
    assert page.is_visible("#lb img")
    page.click("#lb")
    assert not page.is_visible("#lb img")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "gallery.png"), full_page=True)
    over, _ = _open(browser, (site / "index.html").as_uri())
    over.screenshot(path=str(SHOTS / "overview.png"), full_page=True)
    assert not errors


def test_notebooks_typeset_offline(tmp_path: Path, browser) -> None:
    pytest.importorskip("mathjax", reason="needs the `django-static-mathjax` package")
    repo = Path(__file__).resolve().parents[1]
    if not list((repo / "notebooks").glob("*.ipynb")):
        pytest.skip("no executed notebooks/*.ipynb (make notebooks)")
    site = build(make_results(tmp_path), tmp_path / "site", profile="fake", notebooks=repo / "notebooks").parent
    for html in sorted((site / "notebooks").glob("*.html")):
        page, errors = _open(browser, html.as_uri())
        page.wait_for_timeout(1000)
        assert "$$" not in page.inner_text("body"), f"{html.name}: raw $$ left"
        assert not errors, f"{html.name}: console errors {errors}"
        page.close()
