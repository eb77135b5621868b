"""Table writers (tpslab.reports.tables): CSV, Markdown, LaTeX, and why a table shows nan."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from tpslab.reports.tables import nan_notes, to_latex, to_markdown, write_table


def test_write_table(tmp_path):
    table = pd.DataFrame([{"dataset": "d", "class": "c", "image_auroc": 91.234}])
    csv, md = write_table(table, tmp_path / "t", note="synthetic")
    assert pd.read_csv(csv)["image_auroc"].iloc[0] == pytest.approx(91.234)
    assert md.read_text().startswith("synthetic") and "| 91.2 |" in md.read_text()
    assert to_markdown(table, 2).splitlines()[2] == "| d | c | 91.23 |"


def test_latex_escapes_and_keeps_integers(tmp_path):
    table = pd.DataFrame([{"class": "a_b & c", "images": 12, "pixel_aupro": 55.55}])
    tex = to_latex(table, "caption 50%")
    assert tex.startswith("% caption 50%") and "a\\_b \\& c & 12 & 55.5" in tex.replace("55.6", "55.5")
    paths = write_table(table, tmp_path / "t", latex=True)
    assert [p.suffix for p in paths] == [".csv", ".md", ".tex"] and paths[2].read_text() == to_latex(table)


def test_nan_notes_say_why():
    table = pd.DataFrame([
        {"class": "all_good", "images": 4, "anomalous": 0, "pixel_auroc": math.nan},
        {"class": "no_masks", "images": 4, "anomalous": 2, "pixel_auroc": math.nan},
        {"class": "fine", "images": 4, "anomalous": 2, "pixel_auroc": 80.0},
        {"class": "mean", "images": 12, "anomalous": 4, "pixel_auroc": 80.0}])
    notes = nan_notes(table)
    assert any(n.startswith("all_good: nan image metrics") for n in notes)
    assert any(n.startswith("no_masks: nan pixel metrics, none of its anomalous images has a mask") for n in notes)
    assert notes[-1].startswith("mean: ") and not any(n.startswith("fine") for n in notes)
    assert nan_notes(table[table["class"] == "fine"]) == []
