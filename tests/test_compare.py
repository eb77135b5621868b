"""tpslab compare: running the grid (resume, invalidation, executors) and the tables computed from stored predictions."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from tpslab.evaluation import predictions
from tpslab.profiles import PROFILE_DIR, load_profile
from tpslab.runs.compare import context, run_compare, write_comparison
from tpslab.runs.execute import ExecutorOptions, run_grid
from tpslab.runs.plan import is_finished, plan, prediction_folder

FIVE = ["tps", "clip", "anomalyclip", "winclip", "musc"]


@pytest.fixture(scope="module")
def profile_file(tmp_path_factory):
    """The smoke profile made tiny: 6 images per class, 1 epoch, two ablation rows, 30 resamples."""
    p = yaml.safe_load((PROFILE_DIR / "smoke.yaml").read_text())
    p["name"] = "compare-test"
    p["data"]["synthetic"]["n_per_class"] = 6
    p["train"]["epochs"] = 1
    p["ablation"].update(per_class=3, train={"epochs": 1},
                         runs={"A1": {"prompts": "fixed", "pathway": False}, "A2 (TPS)": {}})
    p["compare"]["n_boot"] = 30
    path = tmp_path_factory.mktemp("profile") / "compare-test.yaml"
    path.write_text(yaml.safe_dump(p, sort_keys=False))
    return str(path)


@pytest.fixture(scope="module")
def first_run(profile_file, tmp_path_factory):
    """One full local run: (results folder, data folder, the Comparison)."""
    root = tmp_path_factory.mktemp("compare")
    result = run_compare(profile_file, out=root / "res", data=root / "data", progress=False)
    return root / "res", root / "data", result


def test_five_methods_both_protocols_intervals_and_figures(first_run):
    out, _, result = first_run
    for protocol in ("reference", "harmonised"):
        layout = result.tables[f"table2_{protocol}"]
        row = layout[layout["Datasets"] == "heldout-domain"].iloc[0]
        ours = [c for c in layout.columns if c.endswith("(tpslab compare-test)")]
        assert len(ours) == 5 and all(row[c] != "not run" for c in ours)
        long = result.tables[f"table1_{protocol}_long"]
        assert set(long["method"]) == set(FIVE)
        assert (long["ci_low"] <= long["ours"] + 1e-9).all() and (long["ours"] <= long["ci_high"] + 1e-9).all()
        assert (long["ci_high"] > long["ci_low"]).any()  # real intervals, not points
        assert (out / "compare" / "figures" / f"table1_{protocol}.png").is_file()
        assert (out / "compare" / "tables" / f"table2_{protocol}.tex").is_file()
        assert set(result.tables[f"figure3_{protocol}"]["row"]) == {"A1", "A2 (TPS)"}
    assert (out / "compare" / "tables" / "table3_reference.md").is_file()
    for number, pair in ((1, "image AUROC and image AP"), (2, "pixel AUROC and pixel AUPRO")):  # issue 18
        assert f"each cell 'a, b' is {pair}" in (out / "compare" / "tables" / f"table{number}_reference.md").read_text()


def test_reference_protocol_equals_evaluate(first_run, profile_file):
    """The numbers from stored predictions are what `tpslab evaluate` gives for the same model (float16 rounding)."""
    from tpslab.evaluation.evaluate import evaluate
    from tpslab.methods import build_method

    out, data, result = first_run
    prof = load_profile(profile_file)
    clip = build_method("clip", **prof.method_settings("clip"))
    meta = data / "synthetic" / "heldout-domain" / "meta.json"
    table = evaluate(clip, meta, batch_size=8, progress=False)
    mean = table[table["class"] == "mean"].iloc[0]
    got = result.summary[(result.summary["entry"] == "clip") & (result.summary["protocol"] == "reference")]
    for metric in ("image_auroc", "image_ap", "pixel_auroc", "pixel_aupro"):
        assert got[got["metric"] == metric]["mean"].iloc[0] == pytest.approx(mean[metric], abs=0.05), metric


def test_rerun_reuses_everything_and_an_interrupted_job_resumes(first_run, profile_file):
    out, data, result = first_run
    ctx, prof = context(profile_file, out=out, data=data)
    jobs = plan(prof)
    assert all(is_finished(ctx, j, prof) for j in jobs)
    assert run_grid(ctx, jobs) == []  # nothing recomputed
    # an interruption: one job lost its last class and its done.json
    job = next(j for j in jobs if j.kind == "predict" and j.entry == "musc")
    folder = prediction_folder(out, job)
    done = predictions.done_classes(folder)
    keep = {c: predictions.class_file(folder, c).stat().st_mtime_ns for c in list(done)[:-1]}
    (folder / predictions.DONE).unlink()
    predictions.class_file(folder, list(done)[-1]).unlink()
    ran = run_grid(ctx, jobs)
    assert ran == [job]
    assert {c: predictions.class_file(folder, c).stat().st_mtime_ns for c in keep} == keep  # finished classes kept
    again = write_comparison(ctx, prof, jobs)
    pd.testing.assert_frame_equal(again.summary.drop(columns=[]), result.summary)


def test_changed_settings_invalidate_a_stored_run(first_run, profile_file):
    out, data, _ = first_run
    ctx, prof = context(profile_file, ["methods.clip.temperature=0.05"], out=out, data=data)
    jobs = plan(prof)
    stale = [j for j in jobs if not is_finished(ctx, j, prof)]
    assert [j.entry for j in stale] == ["clip"]
    ctx2, prof2 = context(profile_file, ["train.lr_prompts=0.002"], out=out, data=data)
    stale = {(j.kind, j.entry) for j in plan(prof2) if not is_finished(ctx2, j, prof2)}
    assert ("train", "tps") in stale and ("predict", "tps") in stale and ("predict", "clip") not in stale


def test_local_parallel_and_slurm_debug_give_the_same_tables(first_run, profile_file, tmp_path):
    pytest.importorskip("submitit")
    out, data, result = first_run
    for kind, cluster in (("local-parallel", None), ("slurm", "debug")):
        copy = tmp_path / kind
        shutil.copytree(out / "train", copy / "train")  # the trained models; every prediction is made again
        shutil.copytree(out / "ablation", copy / "ablation")
        opts = ExecutorOptions(kind, jobs=2, cluster=cluster, partition="gpu", gpus=1, time_min=10)
        got = run_compare(profile_file, out=copy, data=data, executor=opts, progress=False)
        pd.testing.assert_frame_equal(got.summary, result.summary, check_exact=False, atol=1e-9)


def test_a_second_seed_gives_a_std_and_its_own_models(first_run, profile_file):
    out, data, _ = first_run
    got = run_compare(profile_file, ["compare.seeds=2", "compare.ablation=false", "compare.methods=[tps]"], out=out,
                      data=data, progress=False)
    tps = got.summary[(got.summary["entry"] == "tps") & (got.summary["protocol"] == "reference")]
    assert (tps["seeds"] == 2).all() and tps["std"].notna().all() and (tps["std"] > 0).any()
    assert (out / "compare" / "train" / "tps-main-r1" / "checkpoint.pt").is_file()
    layout = got.tables["table2_reference"]
    assert "\u00b1" in layout[layout["Datasets"] == "heldout-domain"].iloc[0]["TPS (tpslab compare-test)"]


def test_published_numbers_outside_the_interval_are_marked():
    from tpslab.reports.paper_tables import layout, long_table

    summary = pd.DataFrame([{"entry": "tps", "method": "tps", "dataset": "mvtec", "run": "main", "ablation": False,
                             "protocol": "reference", "metric": m, "mean": 80.0, "std": np.nan, "seeds": 1,
                             "ci_low": 78.0, "ci_high": 82.0, "classes": 15} for m in ("pixel_auroc", "pixel_aupro")])
    long = long_table(summary, 2, "reference", {"mvtec": "main"})
    auroc = long[long["metric"] == "pixel_auroc"].iloc[0]
    assert auroc["published"] == 94.4 and auroc["difference"] == pytest.approx(-14.4) and auroc["outside_interval"]
    aupro = long[long["metric"] == "pixel_aupro"].iloc[0]
    assert aupro["published"] == 90.9 and aupro["outside_interval"]
    row = layout(long, 2, ["tps"], "ours")
    assert row[row["Datasets"] == "MVTec AD"].iloc[0]["TPS (ours)"] == "80.0*, 80.0*"
    inside = summary.assign(mean=94.0, ci_low=90.0, ci_high=95.0)
    assert not long_table(inside, 2, "reference", {"mvtec": "main"})["outside_interval"].iloc[0]


def test_dry_run_lists_jobs_and_what_is_missing(capsys, tmp_path):
    from tpslab.cli import main

    assert main(["compare", "--profile", "paper", "--dry-run", "--data", str(tmp_path / "none"),
                 "--out", str(tmp_path / "res")]) == 0
    text = capsys.readouterr().out
    assert "predict musc mvtec" in text and "train tps mvtec main r2" in text
    assert "not prepared" in text and "tpslab prepare mvtec" in text
    assert not (tmp_path / "res").exists()  # a dry run writes nothing


def test_bad_executor_settings_are_one_line(capsys, tmp_path):
    from tpslab.cli import main

    assert main(["compare", "--profile", "smoke", "--jobs", "0", "--out", str(tmp_path)]) == 2
    assert "--jobs" in capsys.readouterr().err


def test_an_interrupted_compare_says_how_to_continue(capsys, monkeypatch, tmp_path):
    from tpslab import cli
    from tpslab.runs import compare

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(compare, "run_compare", interrupted)
    assert cli.main(["compare", "--profile", "smoke", "--out", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert "rerun the same command" in err and "--resume" not in err
