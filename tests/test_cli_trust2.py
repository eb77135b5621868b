"""Issue 18, "Trust II": nothing overwritten without a word, every bad value a one-line error, work kept.

Each test replays one defect of the issue as a new user met it. Refusals are checked with
``refused`` (exit status 2, one line, no file changed) from tests/test_cli_trust.py.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import fake_trees as ft
import pytest
import torch
from test_cli_trust import refused

from tpslab.cli import main
from tpslab.cli.args import build_parser
from tpslab.methods.checkpoint import read_checkpoint
from tpslab.utils import weights_arg

TINY = ["--method", "clip", "--backbone", "tpslab-tiny", "--image-size", "64", "--quiet"]


@pytest.fixture(scope="module")
def run(tiny_data, tmp_path_factory) -> Path:
    """A one-epoch TPS run on one class of the training domain, made by the CLI with the smoke profile."""
    out = tmp_path_factory.mktemp("run")
    assert main(["train", str(tiny_data["train"]), "--profile", "smoke", "--set", "train.epochs=1", "--classes",
                 "brick", "--out", str(out), "--quiet"]) == 0
    return out


def folder_data(root: Path, classes: dict[str, tuple[int, int, bool]]) -> Path:
    """``root/<class>/{good,bad[,ground_truth/bad]}`` with (normal, anomalous, masks) per class; returns the root."""
    for cls, (normal, bad, masks) in classes.items():
        for i in range(normal):
            ft.image(root / cls / "good" / f"g{i}.png")
        for i in range(bad):
            ft.image(root / cls / "bad" / f"b{i}.png")
            if masks:
                ft.mask(root / cls / "ground_truth" / "bad" / f"b{i}_mask.png")
    return root


# ----------------------------------------------------------------------------- blocks the user


def test_pretrained_none_is_random_weights_and_baselines_on_tiny_need_none(capsys, tiny_data, tmp_path):
    assert [weights_arg(t) for t in ("none", "None", "null", "", "openai")] == ["", "", "", "", "openai"]
    data = str(tiny_data["heldout"])
    for word in ("none", "None", "null"):
        assert main(["evaluate", data, "--classes", "camera", "--pretrained", word, *TINY]) == 0
    # no --pretrained at all: a tpslab-* backbone has no released weights, so the baselines take random ones
    images = tiny_data["heldout"].parent / "camera"
    for method in ("clip", "winclip"):
        assert main(["predict", str(images), "--out", str(tmp_path / method), *TINY, "--method", method]) == 0
        record = json.loads((tmp_path / method / "run.json").read_text())
        assert record["method"] == method and record["pretrained"] is None and record["backbone"] == "tpslab-tiny"


# ----------------------------------------------------------------------------- loses work or data


def test_predict_refuses_a_second_run_and_force_clears_the_first(capsys, tiny_data, tmp_path):
    images = sorted((tiny_data["heldout"].parent / "camera").rglob("*.png"))[:3]
    out = tmp_path / "pred"
    argv = ["predict", *map(str, images), "--out", str(out), *TINY]
    assert main(argv) == 0
    assert len(list(out.glob("*_overlay.png"))) == 3 and (out / "run.json").is_file()
    err = refused(capsys, argv, out)
    assert "scores.csv already holds a previous predict run" in err and "--force" in err
    assert main(["predict", str(images[0]), "--out", str(out), "--force", *TINY]) == 0
    assert len(list(out.glob("*_overlay.png"))) == 1  # no overlay of the first run left with another colour scale


def test_evaluate_names_outputs_by_method_records_them_and_refuses_to_replace(capsys, tiny_data, run, tmp_path):
    data, out = str(tiny_data["heldout"]), tmp_path / "ev"
    base = ["evaluate", data, "--classes", "camera", "--out", str(out), *TINY]
    assert main(base) == 0
    assert main([*base, "--method", "winclip"]) == 0
    assert main(["evaluate", data, "--classes", "camera", "--out", str(out), "--checkpoint",
                 str(run / "checkpoint.pt"), "--quiet"]) == 0
    names = sorted(p.name for p in out.iterdir())
    for method in ("clip", "winclip", "tps"):
        assert {f"heldout-domain_{method}_metrics.csv", f"heldout-domain_{method}_run.json"} <= set(names), names
    record = json.loads((out / "heldout-domain_tps_run.json").read_text())
    assert record["checkpoint"] == str((run / "checkpoint.pt").resolve()) and record["backbone"] == "tpslab-mini"
    assert record["settings"]["evaluate"]["aupro_method"] == "exact" and record["tpslab_version"]
    err = refused(capsys, base, out)
    assert "heldout-domain_clip_metrics.csv already holds an evaluation of clip" in err and "--force" in err
    assert main([*base, "--force"]) == 0


def test_demo_refuses_to_replace_a_finished_run(capsys, tmp_path):
    out = tmp_path / "demo"
    (out / "train").mkdir(parents=True)
    torch.save({"x": torch.zeros(1)}, out / "train" / "checkpoint.pt")
    err = refused(capsys, ["demo", "--out", str(out), "--data", str(tmp_path / "data")], tmp_path)
    assert "previous demo's checkpoint" in err and "--resume" in err and "--force" in err


def test_an_out_that_cannot_be_written_is_one_line_before_any_work(capsys, tiny_data, run, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    bad = str(blocker / "sub")
    data, ckpt = str(tiny_data["heldout"]), str(run / "checkpoint.pt")
    root = folder_data(tmp_path / "own", {"widget": (1, 1, False)})
    for argv in (["predict", data, "--checkpoint", ckpt, "--out", bad],
                 ["evaluate", data, "--checkpoint", ckpt, "--out", bad],
                 ["train", data, "--out", bad], ["prepare", "folder", str(root), "--out", bad],
                 ["demo", "--out", bad]):
        t0 = time.time()
        err = refused(capsys, argv, tmp_path)
        assert f"--out {bad}: {blocker} is a file, not a folder" in err and time.time() - t0 < 5, argv
    if os.geteuid() != 0:  # root writes anywhere: the read-only case cannot be made here
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert "cannot be written to" in refused(capsys, ["evaluate", data, "--checkpoint", ckpt, "--out",
                                                          str(locked / "x")], tmp_path)


def test_resume_without_profile_keeps_the_runs_threads_and_losses(capsys, tiny_data, tmp_path):
    base = ["train", str(tiny_data["train"]), "--classes", "brick", "--quiet"]
    smoke = ["--profile", "smoke"]
    assert main([*base, *smoke, "--set", "train.epochs=2", "--out", str(tmp_path / "straight")]) == 0
    assert main([*base, *smoke, "--set", "train.epochs=1", "--out", str(tmp_path / "cut")]) == 0
    saved = read_checkpoint(tmp_path / "cut" / "checkpoint.pt")["train_config"]
    assert saved["threads"] == 1 and saved["cache_features"] is True
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert main([*base, "--resume", "--epochs", "2", "--out", str(tmp_path / "cut")]) == 0  # what Ctrl-C advises
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(old)
    resumed = read_checkpoint(tmp_path / "cut" / "checkpoint.pt")["history"]
    straight = read_checkpoint(tmp_path / "straight" / "checkpoint.pt")["history"]
    assert [r["loss"] for r in resumed] == [r["loss"] for r in straight]


# ----------------------------------------------------------------------------- confusing


def test_set_values_are_checked_against_the_settings_types(capsys, tiny_data, tmp_path):
    from tpslab.profiles import load_profile

    assert load_profile("smoke", ["train.lr_prompts=1e-3"]).train["lr_prompts"] == 1e-3  # YAML 1.1 reads a string
    base = ["train", str(tiny_data["train"]), "--profile", "smoke", "--out", str(tmp_path / "t"), "--set"]
    for value, expected in (("train.epochs=three", "train.epochs='three': expected a whole number"),
                            ("train.epochs=2.5", "train.epochs=2.5: expected a whole number"),
                            ("train.cache_features=maybe", "expected true/false"),
                            ("methods.clip.image_size=big", "methods.clip.image_size='big': expected")):
        assert expected in refused(capsys, [*base, value], tmp_path)
    assert "--batch-size 0 (train.batch_size): expected a whole number >= 1" in refused(
        capsys, ["train", str(tiny_data["train"]), "--out", str(tmp_path / "t"), "--batch-size", "0"], tmp_path)
    assert "--batch-size 0 (evaluate.batch_size): expected a whole number >= 1" in refused(
        capsys, ["evaluate", str(tiny_data["heldout"]), "--batch-size", "0", *TINY], tmp_path)
    for argv in (["evaluate", str(tiny_data["heldout"]), *TINY],
                 ["predict", str(tiny_data["heldout"]), "--out", str(tmp_path / "p"), *TINY]):
        assert "--sigma -3.0 (evaluate.sigma): expected >= 0 px" in refused(capsys, [*argv, "--sigma", "-3"], tmp_path)


def test_predict_skips_unreadable_images_and_strict_stops(capsys, tiny_data, tmp_path):
    folder = tmp_path / "imgs"
    ft.image(folder / "a.png")
    ft.image(folder / "c.png")
    (folder / "b.png").write_bytes(b"not an image")
    out = tmp_path / "pred"
    assert main(["predict", str(folder), "--out", str(out), "--method", "clip", "--backbone", "tpslab-tiny"]) == 0
    captured = capsys.readouterr()
    assert "skipped 1 image(s)" in captured.out and "b.png" in captured.out
    warning = [line for line in captured.err.splitlines() if "skipped" in line]
    assert warning and warning[0].startswith("tpslab: warning: skipped"), captured.err  # its own line, not the bar's
    assert "b.png" in (out / "skipped.csv").read_text() and len(list(out.glob("*_overlay.png"))) == 2
    err = refused(capsys, ["predict", str(folder), "--out", str(tmp_path / "strict"), "--strict", *TINY], tmp_path)
    assert "b.png: cannot read image" in err


def test_predict_takes_a_profile_and_set(capsys, tiny_data, tmp_path):
    images = str(tiny_data["heldout"].parent / "camera")
    assert main(["predict", images, "--profile", "smoke", "--set", "evaluate.sigma=0", "--method", "clip", "--out",
                 str(tmp_path / "p"), "--quiet"]) == 0
    assert json.loads((tmp_path / "p" / "run.json").read_text())["settings"]["evaluate"]["sigma"] == 0


def test_interrupting_predict_or_evaluate_says_nothing_of_epochs(capsys, monkeypatch, tiny_data, tmp_path):
    from tpslab import cli

    def interrupted(args):
        raise KeyboardInterrupt
    for command in ("predict", "evaluate", "train"):
        monkeypatch.setitem(cli.COMMANDS, command, interrupted)
    argv = {"predict": ["predict", "x.png", "--out", str(tmp_path)], "evaluate": ["evaluate", "x"],
            "train": ["train", "x", "--out", str(tmp_path)]}
    for command, args in argv.items():
        assert main(args) == 130
        err = capsys.readouterr().err
        assert err.startswith("tpslab: interrupted; ") and ("epochs" in err) == (command == "train"), err
        assert ("--resume" in err) == (command == "train"), err


def test_missing_weights_are_one_short_line_at_once(capsys, monkeypatch, tiny_data, tmp_path):
    from tpslab.backbone import loading

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(loading, "missing_weights_reason", lambda name, pretrained, keys=None: "not cached")
    t0 = time.time()
    err = refused(capsys, ["evaluate", str(tiny_data["heldout"]), "--method", "clip", "--backbone", "ViT-B-16",
                           "--pretrained", "openai", "--quiet"], tmp_path)
    assert time.time() - t0 < 10 and len(err) < 300 and "not cached here and HF_HUB_OFFLINE is set" in err
    t0 = time.time()
    err = refused(capsys, ["predict", str(tmp_path), "--method", "musc", "--out", str(tmp_path / "m")], tmp_path)
    assert "only `tpslab evaluate`" in err or "use `tpslab evaluate`" in err
    assert time.time() - t0 < 2


def test_prepare_drops_classes_without_normal_images_and_evaluate_explains_nan(capsys, run, tmp_path):
    root = folder_data(tmp_path / "parts", {"widget": (2, 2, True), "nogood": (0, 2, True), "nobad": (2, 0, False)})
    assert main(["prepare", "folder", str(root)]) == 0
    out = capsys.readouterr().out
    assert "note: nogood: ignored (no normal images" in out and "note: nobad: no defect images" in out
    assert sorted(json.loads((root / "meta.json").read_text())["test"]) == ["nobad", "widget"]
    assert main(["evaluate", str(root), "--checkpoint", str(run / "checkpoint.pt"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "nobad: nan image metrics, its 2 images are all normal" in out
    assert "mean: each metric is averaged over the classes where it is defined" in out


def test_training_warns_about_all_normal_data_and_missing_masks(capsys, tmp_path):
    for name, classes, expected in (("normal", {"w": (2, 0, False)}, "all 2 training images are normal"),
                                    ("nomask", {"w": (2, 2, False)}, "2 of 2 anomalous training images have no mask")):
        root = folder_data(tmp_path / name, classes)
        assert main(["prepare", "folder", str(root)]) == 0
        capsys.readouterr()
        assert main(["train", str(root), "--profile", "smoke", "--set", "train.epochs=1", "--out",
                     str(tmp_path / f"{name}-run"), "--quiet", "--pretrained", "None"]) == 0  # issue 18: None too
        assert f"tpslab: warning: {expected}" in capsys.readouterr().err


def test_small_messages(capsys, tiny_data, run, tmp_path):
    from tpslab.data.pairing import pair_by_stem

    problems = pair_by_stem([Path("/r/hole/000.png"), Path("/r/crack/000.png")], []).problems
    assert problems == ["/r: 2 images share the stem '000': hole/000.png, crack/000.png"]
    demo_help = next(a for a in build_parser()._subparsers._group_actions[0].choices["demo"]._actions
                     if a.dest == "profile").help
    assert "smoke" in demo_help and "course" not in demo_help and "paper" not in demo_help
    data, ckpt = str(tiny_data["heldout"]), str(run / "checkpoint.pt")
    assert main(["evaluate", data, "--checkpoint", ckpt, "--classes", "camera", "--set", "evaluate.sigma=0",
                 "--quiet"]) == 0  # --set without --profile, with a checkpoint
    err = refused(capsys, ["evaluate", data, "--checkpoint", ckpt, "--classes", "nope"], tmp_path)
    assert "no class 'nope'" in err and "camera" in err and "retina" in err
    err = refused(capsys, ["evaluate", data, "--checkpoint", str(run)], tmp_path)
    assert f"{run} is a folder: expected a checkpoint file such as {run / 'checkpoint.pt'}" in err


# ----------------------------------------------------------------------------- cosmetic


def test_cache_info_tells_entries_apart(tmp_path):
    from tpslab.backbone import cache_admin

    base = {"backbone": "tpslab-tiny", "weights": "random, seed 0", "image_size": 64, "layers": [1, 2],
            "kind": "tpslab.methods.tps.model.TPS.encode_images"}
    for key, embedding in (("k1", "open_clip"), ("k2", "authors")):
        (tmp_path / key / "ab").mkdir(parents=True)
        (tmp_path / key / "spec.json").write_text(json.dumps({**base, "image_embedding": embedding}))
        (tmp_path / key / "ab" / "x.pt").write_bytes(b"0")
    whats = [m["what"] for m in cache_admin.info(tmp_path)["models"].values()]
    assert len(set(whats)) == 2 and any("image_embedding=authors" in w for w in whats), whats


def test_aupro_and_ap_panels_have_no_chance_line():
    import pandas as pd

    from tpslab.viz import plot_metric_bars

    table = pd.DataFrame({"class": ["a", "b"], "model": ["m", "m"], "image_auroc": [60.0, 70.0],
                          "pixel_aupro": [30.0, 40.0]})
    fig = plot_metric_bars(table, "class", "model", ["image_auroc", "pixel_aupro"], "t")
    dashed = [len([ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]) for ax in fig.axes]
    assert dashed == [1, 0]


def test_overlay_labels_scale_with_the_image():
    import numpy as np

    from tpslab.viz import prediction_panel

    small = prediction_panel(np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64), np.float32), 0, 1, 0.5)
    large = prediction_panel(np.zeros((1500, 2000, 3), np.uint8), np.zeros((1500, 2000), np.float32), 0, 1, 0.5)
    assert large.shape[0] - 1500 > 2 * (small.shape[0] - 64)  # a taller header: a larger font


def test_paper_dry_run_lists_one_missing_item_per_line(capsys, tmp_path):
    assert main(["compare", "--profile", "paper", "--dry-run", "--out", str(tmp_path / "r"), "--data",
                 str(tmp_path / "d")]) == 0
    missing = [line for line in capsys.readouterr().out.splitlines() if line.startswith("missing:")]
    weights = [line for line in missing if "CLIP weights" in line]
    if weights:  # not cached here
        assert any("methods.winclip.pretrained" in w for w in weights)
        assert not any("notebooks" in w for w in weights)
    assert sum("tpslab prepare" in line for line in missing) >= 10  # one line per data set
    assert any("data/README.md" in line for line in missing)


def test_anomalyclip_log_shows_only_the_rates_it_uses(tiny_data, tmp_path, capsys):
    from tpslab.data.dataset import AnomalyDataset
    from tpslab.methods import build_method
    from tpslab.methods.train import TrainConfig, train

    model = build_method("anomalyclip", backbone="tpslab-tiny", pretrained=None, image_size=None)
    train(model, AnomalyDataset(tiny_data["train"], model.image_size, classes=["brick"]),
          TrainConfig(epochs=1, device="cpu"), tmp_path, progress=False)
    lines = capsys.readouterr().out.splitlines()
    setting = next(line for line in lines if line.startswith("training:"))
    assert "lr_prompts" in setting and "lr_pathway" not in setting


def test_example_maps_have_a_colour_bar_and_no_blank_band():
    import numpy as np

    from tpslab.viz import plot_examples

    rng = np.random.default_rng(0)
    n = 4
    fig = plot_examples([rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(n)],
                        [rng.random((32, 32)).astype(np.float32) for _ in range(n)], [np.zeros((32, 32))] * n,
                        ["c\nnormal, score 0.1"] * n, "Held-out examples", "synthetic data: not paper numbers")
    fig.canvas.draw()
    assert len(fig.axes) == 3 * n + 1  # the panels and one colour bar
    top = max(ax.get_position().y1 for ax in fig.axes[:n])
    assert top > 0.8, top  # the first row starts right under the two-line title
