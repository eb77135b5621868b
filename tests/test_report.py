"""``tpslab report``: the static site of a fake-but-structurally-real results tree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.fake_results import CLASSES, make_results
from tpslab.cli import main
from tpslab.site.build import build
from tpslab.site.collect import collect
from tpslab.site.gallery import pick
from tpslab.utils import TPSLabError


def _links(html: str) -> list[str]:
    return re.findall(r'(?:href|src)="([^"#:]+)"', html)


def test_full_site_builds_and_links_resolve(tmp_path: Path) -> None:
    res = make_results(tmp_path)
    index = build(res, tmp_path / "site", data_root=tmp_path / "data", profile="fake")
    site = index.parent
    pages = sorted(site.glob("*.html"))
    assert {p.name for p in pages} == {"index.html", "data_synth.html", "training.html", "about.html"}
    for page in pages:
        for link in _links(page.read_text()):
            assert (site / link).is_file(), f"{page.name}: {link}"
    overview = index.read_text()
    assert "90.1 [88.0, 92.0]" in overview and "Missing jobs" not in overview
    assert "Classification" in overview  # the other tables (Table 3) as written
    gallery = (site / "data_synth.html").read_text()
    assert gallery.count('class="row"') == 2 * 12  # n=4 per group x 3 groups = all 12 of each class
    assert 0 < gallery.index('option value="winclip/r0"') < gallery.index('option value="tps/r0"')  # paper's order
    assert gallery.count('alt="ground truth"') == 2 * 12
    assert "not paper numbers" in (site / "about.html").read_text()
    assert (site / "img" / "loss_0.png").is_file()
    with pytest.raises(TPSLabError, match="--force"):
        build(res, site)


def test_half_done_tree_lists_missing_jobs(tmp_path: Path) -> None:
    res = make_results(tmp_path, complete=False)
    assert collect(res).missing == ["winclip/synth/r0"]
    index = build(res, None, profile="fake")
    assert "winclip/synth/r0" in index.read_text() and "Missing jobs" in index.read_text()
    gallery = (index.parent / "data_synth.html").read_text()
    assert re.search(r'data-cls="screw"', gallery) and set(CLASSES) <= set(re.findall(r'data-cls="(\w+)"', gallery))


def test_pick_orders_groups() -> None:
    import numpy as np
    scores = np.array([0.1, 0.9, 0.5, 0.2, 0.8, 0.3])
    labels = np.array([0, 1, 0, 1, 0, 1])
    chosen = pick(scores, labels, 1, seed=0)
    assert chosen[:2] == [4, 3] and len(chosen) == 3 and chosen[2] not in (3, 4)


def test_cli_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_results(tmp_path)
    assert main(["report", "--profile", "fake", "--results-dir", str(tmp_path / "results"),
                 "--data-dir", str(tmp_path / "data")]) == 0
    assert "MB" in capsys.readouterr().out
    assert (tmp_path / "results" / "fake" / "site" / "index.html").is_file()


def test_notebooks_in_every_menu(tmp_path: Path) -> None:
    pytest.importorskip("mathjax", reason="needs the `django-static-mathjax` package")
    import nbformat
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("**What you will learn.** maps\n\n$x$")])
    nbformat.write(nb, nbs / "00_demo.ipynb")
    site = build(make_results(tmp_path), tmp_path / "site", profile="fake", notebooks=nbs).parent
    for page in ["index.html", "data_synth.html", "training.html", "about.html", "notebooks.html"]:
        assert '<a href="notebooks.html">notebooks</a>' in (site / page).read_text(), page
    assert (site / "notebooks" / "00_demo.html").is_file()
    plain = build(make_results(tmp_path / "b"), tmp_path / "plain", profile="fake").parent
    assert "notebooks.html" not in (plain / "index.html").read_text()


def test_gallery_masks_black_for_normal_images(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from tpslab.site.gallery import build_rows

    res = collect(make_results(tmp_path))
    rows = build_rows(res.runs, "synth", "screw", tmp_path / "img", tmp_path / "data" / "synth")
    assert rows and all(r.mask for r in rows)
    for r in rows:
        mask = np.asarray(Image.open(tmp_path / "img" / r.mask))
        assert (mask.max() > 0) == bool(r.label), r.path
    assert all(r.mask is None for r in build_rows(res.runs, "synth", "screw", tmp_path / "img2", None))


def test_overview_tables_in_paper_layout(tmp_path: Path) -> None:
    from tpslab.reports import paper_numbers as pn
    from tpslab.runs.score import PROTOCOLS

    overview = build(make_results(tmp_path), tmp_path / "site", profile="fake").read_text()
    assert "not paper numbers" in overview
    for number in (1, 2):
        for protocol in PROTOCOLS:
            m = re.search(rf'<table class="paper-table" id="table{number}-{protocol}">(.*?)</table>', overview, re.S)
            assert m, (number, protocol)
            table = m.group(1)
            head = re.findall(r"<th colspan=2>(\w+)</th>", table)
            assert head == list(pn.METHODS)  # the paper's column order, all five
            sets = re.findall(r'data-dataset="(\w+)"', table)
            published = pn.TABLE1 if number == 1 else pn.TABLE2
            assert sets == [*published, "synth"]  # the paper's rows, then ours not in it
            mvtec = re.search(r'data-dataset="mvtec">(.*?)</tr>', table).group(1)
            cells = re.findall(r"<td[^>]*>(.*?)</td>", mvtec)
            tps = pn.published_cell(published["mvtec"]["TPS"], number, "mvtec", "TPS")
            assert cells[-2] == tps and re.fullmatch(r"[\d.]+ \[[\d.]+, [\d.]+\]\*?<br>[\d.]+ \[[\d.]+, [\d.]+\]\*?",
                                                     cells[-1]), cells[-2:]
            assert "not run" in table  # CLIP, AnomalyCLIP, MuSc were not run
    assert overview.count("<table class=\"paper-table\"") == 4


def test_dataset_page_metrics_per_class(tmp_path: Path) -> None:
    import numpy as np

    from tpslab.metrics.bootstrap import interval
    from tpslab.runs.score import METRICS, PROTOCOLS

    res = make_results(tmp_path)
    page = (build(res, tmp_path / "site", profile="fake").parent / "data_synth.html").read_text()
    for protocol in PROTOCOLS:
        table = re.search(rf"id='classes-{protocol}'>(.*?)</table>", page, re.S).group(1)
        rows = re.findall(r"<tr[^>]*><td>(.*?)</td><td>(.*?)</td>(.*?)</tr>", table)
        pairs = {(c, m) for c, m, _ in rows}
        assert {(c, m) for c in CLASSES for m in ("tps/r0", "winclip/r0")} <= pairs
        with np.load(res / "predictions" / "tps" / "synth" / "r0" / f"scores-{protocol}.npz") as f:
            point, boot = 100 * float(f["screw|point|image_ap"]), 100 * f["screw|boot|image_ap"]
        low, high = interval(boot)
        cells = next(re.findall(r"<td>(.*?)</td>", rest) for c, m, rest in rows if (c, m) == ("screw", "tps/r0"))
        assert len(cells) == len(METRICS) and cells[METRICS.index("image_ap")] == f"{point:.1f} [{low:.1f}, {high:.1f}]"
        assert ("<b>mean over classes</b>", "tps") in pairs  # the data set's row, from the long CSVs
    assert "90.1 [88.0, 92.0]" in page


def test_jobs_never_started_are_missing(tmp_path: Path) -> None:
    from tpslab.evaluation import predictions
    from tpslab.profiles import load_profile
    from tpslab.runs.plan import plan, prediction_folder, train_folder

    res = make_results(tmp_path, complete=False)
    jobs = [j for j in plan(load_profile("smoke")) if j.kind == "predict"]
    done = prediction_folder(res, jobs[0])
    predictions.start(done, {})
    predictions.finish(done, {"bottle": 1}, 16, 4.0, "any")
    half = prediction_folder(res, jobs[1])
    predictions.start(half, {})
    trains = [j for j in plan(load_profile("smoke")) if j.kind == "train"]
    (train_folder(res, trains[-1]) / "checkpoint.pt").parent.mkdir(parents=True)
    overview = build(res, None, profile="smoke").read_text()
    listed = re.search(r"<ul id='not-started'>(.*?)</ul>", overview).group(1).replace("&#x27;", "'")
    for job in jobs[2:]:
        assert f"<li>{job.name} (" in listed, job.name
    assert jobs[0].name not in listed and jobs[1].name not in listed
    assert trains[-1].name not in listed
    for job in trains[:-1]:  # started only if one of its models' prediction folders exists
        used = any((p.entry, p.run, p.replicate) == (job.entry, job.run, job.replicate) for p in jobs[:2])
        assert (f"<li>{job.name} (" in listed) != used, job.name
    incomplete = re.search(r"<ul id='incomplete'>(.*?)</ul>", overview).group(1)
    assert "winclip/synth/r0" in incomplete and f"{jobs[1].entry}/{jobs[1].dataset}/{jobs[1].tag}" in incomplete
    assert "never started" not in build(make_results(tmp_path / "b"), None, profile="fake").read_text()


def test_site_source_and_make_site_test(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fake_results import site_source

    monkeypatch.delenv("TPSLAB_SITE_RESULTS", raising=False)
    assert site_source(tmp_path)[2] == "fake"
    real = make_results(tmp_path / "run")
    monkeypatch.setenv("TPSLAB_SITE_RESULTS", str(real))
    monkeypatch.delenv("TPSLAB_SITE_DATA", raising=False)
    assert site_source(tmp_path / "x") == (real.resolve(), real.resolve().parent.parent / "data", "fake")
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())
    make = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    target = re.search(r"^site-test:(.*?)(?=^\S|\Z)", make, re.S | re.M).group(1)
    assert "TPSLAB_SITE_RESULTS=" in target and "tests/test_site_browser.py" in target and "tpslab report" in target
    assert "site-test" not in re.search(r"^test:(.*)$", make, re.M).group(1)


def test_gallery_picks_by_tps(tmp_path: Path) -> None:
    import numpy as np

    from tpslab.evaluation import predictions
    from tpslab.site.gallery import build_rows

    res = collect(make_results(tmp_path))
    runs = sorted(res.runs, key=lambda r: r.entry != "winclip")  # winclip first
    rows = build_rows(runs, "synth", "bottle", tmp_path / "img", None, n=2)
    tps = predictions.load_class(next(r.folder for r in runs if r.entry == "tps"), "bottle")
    normal = np.flatnonzero(tps.labels == 0)
    top = [tps.paths[i] for i in normal[np.argsort(-tps.scores[normal])][:2]]
    assert [r.path for r in rows[:2]] == top
