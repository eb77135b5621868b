"""Issue 8, "Trust at the command line": nothing lost, nothing silently wrong, one-line errors, a quick --help.

Every refusal is checked for its exit status (2), its one line, and that no file was changed
or left behind. The ``predict`` items (13-16) are in tests/test_predict.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import fake_trees as ft
import numpy as np
import pytest
import torch
from PIL import Image

import tpslab
from tpslab.cli import main
from tpslab.data.dataset import AnomalyDataset
from tpslab.methods.checkpoint import read_checkpoint
from tpslab.methods.train import TrainConfig, train
from tpslab.utils import TPSLabError


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) and a hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()} if folder.exists() else {}


def refused(capsys, argv: list[str], *folders: Path) -> str:
    """Run the CLI expecting a one-line error (exit 2) that leaves ``folders`` exactly as they were."""
    before = [snapshot(f) for f in folders]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("tpslab: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert [snapshot(f) for f in folders] == before, "a refused command changed or left files"
    return err


def small_folder(root: Path, with_train: bool = False) -> Path:
    """``root/widget/{good,bad,ground_truth/bad}`` (16 px), prepared; returns the meta.json."""
    for i in range(2):
        ft.image(root / "widget" / "good" / f"g{i}.png")
        ft.image(root / "widget" / "bad" / f"b{i}.png")
        ft.mask(root / "widget" / "ground_truth" / "bad" / f"b{i}_mask.png")
    assert main(["prepare", "folder", str(root)]) == 0
    return root / "meta.json"


# ----------------------------------------------------------------------------- nothing lost, nothing silently wrong


def test_1_train_refuses_to_replace_a_checkpoint(capsys, tiny_data, tmp_path):
    out = tmp_path / "run"
    base = ["train", str(tiny_data["train"]), "--profile", "smoke", "--set", "train.epochs=1", "--out", str(out),
            "--quiet", "--classes", "brick"]
    assert main(base) == 0
    assert (out / "train.log").is_file()
    err = refused(capsys, base, out)
    assert "checkpoint.pt already holds a trained model" in err and "--resume" in err and "--force" in err
    assert main([*base, "--force"]) == 0 and read_checkpoint(out / "checkpoint.pt")["epoch"] == 1


def test_2_resume_takes_the_checkpoints_settings(capsys, tiny_data, tmp_path):
    out = tmp_path / "run"
    assert main(["train", str(tiny_data["train"]), "--classes", "brick", "--epochs", "1", "--lr-pathway", "1e-3",
                 "--batch-size", "4", "--cache-features", "--device", "cpu", "--image-size", "64", "--out", str(out),
                 "--quiet"]) == 0
    # only --resume and a longer run: no flag retyped; device and cache change nothing
    assert main(["train", str(tiny_data["train"]), "--classes", "brick", "--resume", "--epochs", "2", "--out",
                 str(out), "--device", "cpu", "--quiet"]) == 0
    ckpt = read_checkpoint(out / "checkpoint.pt")
    assert ckpt["epoch"] == 2 and ckpt["train_config"]["lr_pathway"] == 1e-3 and ckpt["train_config"]["batch_size"] == 4
    argv = ["train", str(tiny_data["train"]), "--resume", "--out", str(out), "--quiet"]
    err = refused(capsys, [*argv, "--lr-pathway", "1e-4"], out)
    assert "--lr-pathway 0.0001 differs from the checkpoint's 0.001" in err
    err = refused(capsys, [*argv, "--epochs", "1", "--seed", "3"], out)
    assert "--epochs 1 differs from the checkpoint's 2" in err and "--seed 3 differs from the checkpoint's 0" in err
    err = refused(capsys, [*argv, "--profile", "smoke"], out)  # the profile's recipe is not the checkpoint's
    assert "(from --profile/--set)" in err
    err = refused(capsys, argv, out)  # all classes: not the data it was trained on
    assert "--classes brick,cell,grass," in err and "differs from the checkpoint's brick" in err
    err = refused(capsys, [*argv, "--classes", "brick", "--split", "train"], out)
    assert "--split train differs from the checkpoint's test" in err


def test_2_anomalyclip_resumes_without_retyping(capsys, tiny_data, tmp_path):
    out = tmp_path / "ac"
    assert main(["train", str(tiny_data["train"]), "--method", "anomalyclip", "--profile", "smoke", "--set",
                 "train.epochs=1", "--classes", "brick", "--out", str(out), "--quiet"]) == 0
    assert main(["train", str(tiny_data["train"]), "--classes", "brick", "--resume", "--epochs", "2", "--out",
                 str(out), "--quiet"]) == 0  # the method and its settings come from the checkpoint
    ckpt = read_checkpoint(out / "checkpoint.pt")
    assert ckpt["method"] == "anomalyclip" and ckpt["epoch"] == 2
    err = refused(capsys, ["train", str(tiny_data["train"]), "--method", "tps", "--resume", "--out", str(out)], out)
    assert "--method tps differs from the checkpoint's anomalyclip" in err


def test_3_an_empty_split_is_one_line_before_anything_is_written(capsys, tmp_path, checkpoint):
    meta = small_folder(tmp_path / "data")
    out = tmp_path / "out"
    err = refused(capsys, ["train", str(meta), "--split", "train", "--out", str(out)], tmp_path)
    assert "split 'train' has no images" in err and "--split" in err
    assert not out.exists()
    refused(capsys, ["evaluate", str(meta), "--split", "train", "--checkpoint", str(checkpoint)], tmp_path)
    refused(capsys, ["predict", str(meta), "--split", "train", "--checkpoint", str(checkpoint), "--out", str(out)],
            tmp_path)
    with pytest.raises(TPSLabError, match="no images to train on"):
        train(tpslab.build_model(), AnomalyDataset(meta, 64, split="train"), TrainConfig(device="cpu"), out)
    assert not out.exists()
    # a split that is there but empty: no classes, or a class without samples
    import json

    data = json.loads(meta.read_text())
    for empty in ({}, {"widget": []}):
        meta.write_text(json.dumps({**data, "train": empty}))
        err = refused(capsys, ["train", str(meta), "--split", "train", "--out", str(out)], tmp_path)
        assert err.count("\n") == 1 and ("split 'train' has no images" in err or "train/widget is an empty class" in err)
        assert not out.exists()


def test_4_prepare_decodes_every_image(capsys, tmp_path):
    root = tmp_path / "widget"
    ft.image(root / "good" / "g0.png", size=(64, 64))
    ft.image(root / "bad" / "b0.png", size=(64, 64))
    path = ft.image(root / "bad" / "b1.png", size=(64, 64))
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])  # the header is intact, the pixels cut short
    with Image.open(path) as img:
        assert img.size == (64, 64)  # reading the header alone would pass it
    err = refused(capsys, ["prepare", "folder", str(root)], root)
    assert "b1.png: cannot read image" in err
    assert not (root / "meta.json").exists()
    # a truncated mask is caught the same way
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8)).save(path)
    mask = ft.mask(root / "ground_truth" / "bad" / "b0_mask.png", size=(64, 64))
    Image.fromarray(np.random.default_rng(2).integers(0, 2, (64, 64), np.uint8) * 255).save(mask)
    mask.write_bytes(mask.read_bytes()[: len(mask.read_bytes()) // 2])
    err = refused(capsys, ["prepare", "folder", str(root), "--allow-missing-masks"], root)
    assert "b0_mask.png" in err and "cannot read" in err
    assert not (root / "meta.json").exists()


def test_5_flags_that_contradict_a_checkpoint_are_refused(capsys, tiny_data, checkpoint, tmp_path):
    base = ["evaluate", str(tiny_data["heldout"]), "--checkpoint", str(checkpoint), "--out", str(tmp_path), "--quiet"]
    err = refused(capsys, [*base, "--backbone", "ViT-B-16"], tmp_path)
    assert "--backbone ViT-B-16 contradicts" in err and "tpslab-tiny" in err
    assert "--variant authors-code contradicts" in refused(capsys, [*base, "--variant", "authors-code"], tmp_path)
    assert "--seed 7 contradicts" in refused(capsys, [*base, "--seed", "7"], tmp_path)


def test_6_flat_mask_folder_and_unused_folders(capsys, tmp_path):
    root = tmp_path / "widget"
    for i in range(2):
        ft.image(root / "good" / f"g{i}.png")
        ft.image(root / "bad" / f"b{i}.png")
        ft.mask(root / "masks" / f"b{i}_mask.png")
    assert main(["prepare", "folder", str(root)]) == 0
    samples = json.loads((root / "meta.json").read_text())["test"]["widget"]
    assert sorted(Path(s["mask_path"]).name for s in samples if s["anomaly"]) == ["b0_mask.png", "b1_mask.png"]
    (root / "masks" / "scratch").mkdir()  # a mask folder without masks and without a defect folder
    capsys.readouterr()
    assert main(["prepare", "folder", str(root)]) == 0
    assert f"note: {root / 'masks' / 'scratch'}: ignored" in capsys.readouterr().out
    ft.mask(root / "masks" / "dent" / "d0_mask.png")  # masks of a defect without images: refused, named
    err = refused(capsys, ["prepare", "folder", str(root)], root)
    assert f"{root / 'masks' / 'dent'}: masks for a defect without a {root / 'dent'} folder" in err


def test_7_evaluating_on_the_training_data_says_it_is_not_zero_shot(capsys, tiny_data, checkpoint, tmp_path):
    assert read_checkpoint(checkpoint)["data"]["root"] == str(Path(tiny_data["train"]).parent)
    assert main(["evaluate", str(tiny_data["train"]), "--checkpoint", str(checkpoint), "--out", str(tmp_path),
                 "--quiet", "--name", "own"]) == 0
    captured = capsys.readouterr()
    assert "tpslab: warning: not zero-shot" in captured.err
    assert "not zero-shot" not in captured.out  # said once (issue 18), and kept in the written table
    assert "not zero-shot" in (tmp_path / "own_tps_metrics.md").read_text()
    assert main(["evaluate", str(tiny_data["heldout"]), "--checkpoint", str(checkpoint), "--quiet"]) == 0
    assert "zero-shot" not in capsys.readouterr().err


# ----------------------------------------------------------------------------- one-line errors


def test_8_bad_devices_are_one_line_for_every_subcommand(capsys, tiny_data, checkpoint, tmp_path):
    data, ckpt = str(tiny_data["heldout"]), str(checkpoint)
    for argv in (["train", data, "--out", str(tmp_path / "t")], ["evaluate", data, "--checkpoint", ckpt],
                 ["predict", data, "--checkpoint", ckpt, "--out", str(tmp_path / "p")],
                 ["demo", "--out", str(tmp_path / "d")]):
        assert "--device gpu: expected auto, cpu, cuda or cuda:N" in refused(capsys, [*argv, "--device", "gpu"],
                                                                              tmp_path)
    if not torch.cuda.is_available():
        err = refused(capsys, ["evaluate", data, "--checkpoint", ckpt, "--device", "cuda", "--quiet"], tmp_path)
        assert "no GPU is available" in err
        refused(capsys, ["predict", data, "--checkpoint", ckpt, "--device", "cuda:1", "--out", str(tmp_path / "p")],
                tmp_path)


def test_9_preprocess_takes_any_image_mode():
    model = tpslab.build_model(image_size=64)
    for img in (Image.new("L", (40, 30), 200), Image.new("RGBA", (20, 20)), Image.new("I;16", (16, 16)),
                Image.new("P", (8, 8)), Image.new("RGB", (10, 10))):
        assert model.preprocess(img).shape == (3, 64, 64), img.mode


def test_10_each_checkpoint_flag_names_the_other(capsys, tiny_data, checkpoint, tmp_path):
    data = str(tiny_data["heldout"])
    err = refused(capsys, ["evaluate", data, "--authors-checkpoint", str(checkpoint)], tmp_path)
    assert "give it to --checkpoint" in err
    theirs = tmp_path / "epoch_15.pth"
    torch.save({"prompt_learner": {"ctx_pos": torch.zeros(1)}, "class_learner": {}, "former": {}}, theirs)
    assert "give it to --authors-checkpoint" in refused(capsys, ["evaluate", data, "--checkpoint", str(theirs)],
                                                         tmp_path)
    ft.mvtec_like(tmp_path / "mv", ["bottle"])
    err = refused(capsys, ["prepare", "mvtec", str(tmp_path / "mv"), "--msd-per-volume", "--msd-window", "minmax"],
                  tmp_path)
    assert "--msd-per-volume, --msd-window do not apply to mvtec (it takes: --classes)" in err


def test_11_reproduce_only_says_what_to_run_first(capsys, tmp_path):
    err = refused(capsys, ["reproduce", "--only", "05", "--out", str(tmp_path / "res"), "--data",
                           str(tmp_path / "data")], tmp_path)
    assert "data.json, " in err
    assert "train/main/checkpoint.pt: run 01 and 02 first (or reproduce without --only)" in err
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "data.json").write_text("{}")
    err = refused(capsys, ["reproduce", "--only", "03", "05", "--out", str(tmp_path / "res")], tmp_path)
    assert "train/main/checkpoint.pt: run 02 first" in err
    from tpslab.runs.reproduce import missing_inputs, notebook_sources

    assert missing_inputs(notebook_sources(["02", "05"]), tmp_path / "res") is None  # 02 runs first, 05 reads it
    assert missing_inputs(notebook_sources(["06"]), tmp_path / "res") is None  # 06 trains (or reuses) what it needs


def test_12_open_clip_errors_say_what_open_clip_said(monkeypatch):
    from huggingface_hub.errors import LocalEntryNotFoundError

    from tpslab.backbone import loading as clip_loading

    with pytest.raises(TPSLabError) as err:
        clip_loading.load_clip("tpslab-tiny", pretrained="no-such-tag")
    assert "no-such-tag" in str(err.value) and "download" not in str(err.value)

    def offline(*args, **kwargs):
        try:
            raise LocalEntryNotFoundError("no connection to the Hub")
        except LocalEntryNotFoundError as cause:
            raise RuntimeError("failed to fetch weights") from cause
    monkeypatch.setattr(clip_loading.open_clip, "create_model", offline)
    with pytest.raises(TPSLabError, match="could not be downloaded: without internet, pass a local checkpoint"):
        clip_loading.load_clip("tpslab-tiny", pretrained="openai")


def test_12_reproduce_tries_to_download_weights_not_cached(monkeypatch, tmp_path, capsys):
    from tpslab.profiles import load_profile
    from tpslab.runs import reproduce

    profile = load_profile("course")
    monkeypatch.setattr(reproduce, "missing_weights", lambda p: "CLIP weights ViT-L-14-336 'openai' are not cached")
    monkeypatch.setattr(reproduce, "missing_datasets", lambda p, root: [])
    monkeypatch.setattr(profile, "device", "cpu")
    assert reproduce.preflight(profile, tmp_path) is False  # not an error: the kernels will try
    assert "note: CLIP weights" in capsys.readouterr().out
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    reproduce._kernel_env(offline=False)
    assert "HF_HUB_OFFLINE" not in os.environ


# ----------------------------------------------------------------------------- small things


def test_17_written_files_follow_the_umask(tmp_path):
    from tpslab.utils import atomic_torch_save, atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_torch_save({"x": torch.zeros(1)}, tmp_path / "b.pt")
        os.umask(0o077)
        atomic_write_text(tmp_path / "c.txt", "x")
    finally:
        os.umask(old)
    assert [(tmp_path / n).stat().st_mode & 0o777 for n in ("a.txt", "b.pt", "c.txt")] == [0o644, 0o644, 0o600]


def test_18_help_imports_no_torch():
    code = ("import sys\nfrom tpslab.cli import main\nfor argv in (['--help'], ['train', '--help'], "
            "['predict', '--help'], ['prepare', '--help']):\n    try:\n        main(argv)\n    except SystemExit:\n"
            "        pass\nprint('HEAVY', sorted(m for m in ('torch', 'open_clip', 'torchvision') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(tpslab.__file__).parents[1])})
    assert "usage: tpslab train" in out.stdout and "HEAVY []" in out.stdout


def test_19_every_option_has_help_and_the_two_seeds_are_explained():
    from tpslab.cli.args import build_parser

    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, command in sub.choices.items():
        for action in command._actions:
            assert action.help, f"tpslab {name} {action.option_strings or action.dest}: no help"
    demo = " ".join(sub.choices["demo"].format_help().split())
    from tpslab.profiles import synthetic_profiles

    assert ", ".join(synthetic_profiles()) in demo and "smoke" in synthetic_profiles()  # only those demo runs
    train_help = " ".join(sub.choices["train"].format_help().split())
    assert "model seed" in train_help and "(--train-seed shuffles the data)" in train_help
    assert "data seed: the shuffling of every epoch (--seed is the model's)" in train_help


def test_20_train_help_says_where_its_defaults_come_from():
    from tpslab.cli.args import build_parser

    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    text = " ".join(sub.choices["train"].format_help().split())
    assert "the paper's recipe (15 epochs, lr_pathway 1e-4)" in text and "barely learns" in text
    assert "--profile smoke" in text and "(default: 0.0001, or the profile's)" in text


def test_21_figures_outline_defects_and_keep_the_legend_off_the_curves():
    import matplotlib.pyplot as plt

    from tpslab import viz

    mask = np.zeros((16, 16))
    mask[4:9, 5:11] = 1
    fig, axes = plt.subplots(1, 2)
    viz.outline(axes[0], mask)
    viz.outline(axes[1], np.zeros((16, 16)))
    assert len(axes[0].collections) == 2 and not axes[1].collections  # halo + line; nothing on a normal image
    plt.close(fig)
    fig = viz.plot_history([{"epoch": e, "loss": 2 - e / 3, "image_loss": 1.0, "seg_loss": 1 - e / 3}
                            for e in range(1, 4)])
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1  # beside the plot, not on it
    plt.close(fig)


def test_21_ipywidgets_in_the_notebooks_extra():
    import tomllib

    root = Path(tpslab.__file__).parents[1]
    assert "ipywidgets" in tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"][
        "notebooks"]


def test_22_load_checkpoint_is_in_eval_mode_and_the_demo_explains_image_auroc(checkpoint):
    from tpslab.cli.demo import RANDOM_CLIP_IMAGE_NOTE

    model = tpslab.load_checkpoint(checkpoint)
    assert not model.training and not any(m.training for m in model.modules())
    assert "0.55" in RANDOM_CLIP_IMAGE_NOTE and "class token" in RANDOM_CLIP_IMAGE_NOTE
