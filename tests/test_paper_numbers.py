"""Provenance of the published baseline cells (docs/baselines.md#section-5)."""

from __future__ import annotations

import pandas as pd
import pytest

from tpslab.reports import paper_numbers as pn


def test_every_baseline_cell_has_a_known_source():
    table = pn.provenance_table()
    assert len(table) == 4 * (len(pn.TABLE1) + len(pn.TABLE2))
    assert set(table["source"]) <= set(pn.SOURCES)
    assert (table.loc[table["source"] != "AC", "source"] != "").all()


def test_cells_without_source_are_the_traced_ones():
    table = pn.provenance_table()
    flagged = {(r.table, r.dataset, r.method) for r in table.itertuples() if r.source == "no source"}
    assert flagged == {(1, "br35h", "AnomalyCLIP"), (1, "btad", "MuSc"), (2, "btad", "MuSc")}
    assert all(table.loc[table["source"] == "no source", "note"].str.len() > 0)


@pytest.mark.parametrize(("cell", "source"), [
    ((1, "mvtec", "CLIP"), "AC"), ((1, "mvtec", "WinCLIP"), "AC, from WinCLIP paper"),
    ((2, "msd", "WinCLIP"), "TPS run"), ((2, "rsdds", "AnomalyCLIP"), "TPS run"),
    ((1, "visa", "MuSc"), "MuSc paper"), ((2, "mpdd", "MuSc"), "TPS run"),
    ((2, "visa", "AnomalyCLIP"), "AC repo log"), ((1, "headct", "AnomalyCLIP"), "AC, differs"),
    ((1, "mvtec", "TPS"), "TPS paper"),
])
def test_provenance_rules(cell, source):
    assert pn.provenance(*cell)[0] == source


def test_unknown_cell_is_an_error():
    with pytest.raises(KeyError):
        pn.provenance(1, "isic", "CLIP")  # ISIC is a segmentation-only data set


def test_layout_marks_cells_without_source():
    from tpslab.reports.paper_tables import layout, long_table

    summary = pd.DataFrame([{"entry": "tps", "method": "tps", "dataset": "synthetic", "run": "main", "ablation": False,
                             "protocol": "reference", "metric": m, "mean": v, "std": float("nan"), "seeds": 1,
                             "ci_low": v - 1, "ci_high": v + 1, "classes": 8}
                            for m, v in (("image_auroc", 55.0), ("image_ap", 60.0))])
    long = long_table(summary, 1, "reference", {"synthetic": "main"})
    table = layout(long, 1, ["clip", "winclip", "anomalyclip", "musc", "tps"], "tpslab")
    row = table[table["Datasets"] == "Br35H"].iloc[0]
    assert row["AnomalyCLIP (paper)"].endswith("\u2020") and not row["CLIP (paper)"].endswith("\u2020")
    assert table[table["Datasets"] == "MVTec AD"].iloc[0]["MuSc (paper)"] == "97.8, 99.1"
    assert table[table["Datasets"] == "synthetic"].iloc[0]["TPS (tpslab)"] == "55.0, 60.0"
