"""tpslab.dev.portable: trained numbers collected from a results folder, compared within per-group tolerances."""

from __future__ import annotations

import pandas as pd
import pytest

from tpslab.dev import portable
from tpslab.utils import TPSLabError


def _results(root, loss=2.967, auroc=96.61, images=40):
    (root / "train" / "main").mkdir(parents=True)
    pd.DataFrame({"epoch": [1, 2], "loss": [4.2, loss], "image_loss": [0.72, 0.69], "seg_loss": [3.5, loss - 0.69],
                  "seconds": [8.0, 7.5]}).to_csv(root / "train" / "main" / "history.csv", index=False)
    (root / "tables").mkdir()
    pd.DataFrame({"class": ["brick", "mean"], "images": [images, images], "pixel_auroc": [auroc, auroc - 1]}).to_csv(
        root / "tables" / "03_heldout_main.csv", index=False)
    pd.DataFrame({"dataset": ["a"], "normal": [3]}).to_csv(root / "tables" / "01_counts.csv", index=False)
    return root


def test_collect_reads_last_epoch_and_trained_tables_only(tmp_path):
    numbers = portable.collect(_results(tmp_path))
    values = dict(zip(numbers["key"], numbers["value"]))
    groups = dict(zip(numbers["key"], numbers["group"]))
    assert values["train/main/loss"] == pytest.approx(2.967)
    assert "train/main/seconds" not in values
    assert values["tables/03_heldout_main/mean/pixel_auroc"] == pytest.approx(95.61)
    assert groups["tables/03_heldout_main/brick/images"] == "exact"
    assert groups["tables/03_heldout_main/brick/pixel_auroc"] == "class"
    assert groups["tables/03_heldout_main/mean/pixel_auroc"] == "percent"
    assert not any(key.startswith("tables/01_") for key in values)


def test_compare_accepts_kernel_noise_and_rejects_real_changes(tmp_path):
    reference = portable.collect(_results(tmp_path / "a"))
    assert portable.compare(portable.collect(_results(tmp_path / "b", loss=2.981, auroc=96.2)), reference) == []
    problems = portable.compare(portable.collect(_results(tmp_path / "c", loss=3.2, auroc=90.0, images=41)), reference)
    assert any("train/main/loss" in p for p in problems)
    assert any("brick/pixel_auroc" in p for p in problems)
    assert any("brick/images" in p for p in problems)


def test_compare_reports_missing_nan_and_unrecorded_numbers(tmp_path):
    reference = portable.collect(_results(tmp_path / "a"))
    fresh = reference.copy()
    fresh.loc[0, "value"] = float("nan")
    fresh = pd.concat([fresh.iloc[:-1], pd.DataFrame([{"key": "new", "group": "loss", "value": 1.0}])])
    problems = portable.compare(fresh, reference)
    assert len(problems) == 3
    assert "missing" in problems[1] and "not recorded" in problems[2]


def test_record_then_check_round_trips_and_filters_notebooks(tmp_path):
    results = _results(tmp_path / "r")
    numbers = tmp_path / "numbers.csv"
    assert portable.main(["record", str(results), "--numbers", str(numbers)]) == 0
    assert portable.main(["check", str(results), "--numbers", str(numbers)]) == 0
    other = _results(tmp_path / "o", loss=5.0)
    assert portable.main(["check", str(other), "--numbers", str(numbers)]) == 1
    assert portable.main(["check", str(other), "--numbers", str(numbers), "--notebooks", "03"]) == 0


def test_empty_results_are_an_error(tmp_path):
    with pytest.raises(TPSLabError, match="no trained numbers"):
        portable.collect(tmp_path)
    with pytest.raises(TPSLabError, match="no results folder"):
        portable.collect(tmp_path / "absent")


def test_ci_runs_the_portable_notebooks_after_the_tests():
    ci = (portable.ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "make nbval-portable" in ci
    assert ci.index("make nbval-portable") > ci.index("make test")
    makefile = (portable.ROOT / "Makefile").read_text()
    assert "ATEN_CPU_CAPABILITY=default" in makefile and "tpslab.dev.portable check" in makefile
