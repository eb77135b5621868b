"""tpslab.cli and predict: one-line errors for bad input, overlays and scores for good input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from conftest import one_line_error
from PIL import Image

import tpslab
import tpslab.methods.checkpoint
from tpslab.cli import main


def test_missing_meta_is_one_line(capsys, tmp_path, checkpoint):
    err = one_line_error(capsys, ["evaluate", str(tmp_path), "--checkpoint", str(checkpoint), "--quiet"])
    assert "meta.json" in err


def test_bad_checkpoint_is_one_line(capsys, tmp_path, tiny_data):
    bad = tmp_path / "x.pt"
    bad.write_text("nope")
    one_line_error(capsys, ["evaluate", str(tiny_data["heldout"]), "--checkpoint", str(bad), "--quiet"])
    one_line_error(capsys, ["evaluate", str(tiny_data["heldout"]), "--quiet"])  # no checkpoint at all


def test_predict_writes_scores_and_overlays(tmp_path, checkpoint, tiny_data):
    folder = tiny_data["heldout"].parent / "camera"
    assert main(["predict", str(folder), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "p"), "--quiet"]) == 0
    scores = (tmp_path / "p" / "scores.csv").read_text().splitlines()
    n_images = len([p for p in folder.rglob("*.png") if "ground_truth" not in p.parts])
    assert len(scores) == 1 + n_images  # a folder is scanned recursively, mask folders skipped (issue 8, item 14)
    assert len(list((tmp_path / "p").glob("*_overlay.png"))) == len(scores) - 1


def test_predict_handles_odd_images_and_rejects_unreadable(capsys, tmp_path, checkpoint):
    Image.fromarray(np.full((40, 30), 200, np.uint8)).save(tmp_path / "grey.png")
    Image.fromarray(np.zeros((20, 20, 4), np.uint8)).save(tmp_path / "rgba.png")
    Image.fromarray(np.full((16, 16), 40000, np.uint16)).save(tmp_path / "deep.png")
    assert main(["predict", str(tmp_path / "grey.png"), str(tmp_path / "rgba.png"), str(tmp_path / "deep.png"),
                 "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    err = one_line_error(capsys, ["predict", str(tmp_path / "broken.png"), "--checkpoint", str(checkpoint),
                                  "--out", str(tmp_path / "o2"), "--quiet"])
    assert "broken.png" in err
    one_line_error(capsys, ["predict", str(tmp_path / "nothing-here"), "--checkpoint", str(checkpoint), "--out",
                            str(tmp_path / "o3")])


def test_evaluate_writes_tables(tmp_path, checkpoint, tiny_data, capsys):
    assert main(["evaluate", str(tiny_data["heldout"]), "--checkpoint", str(checkpoint), "--out", str(tmp_path),
                 "--quiet", "--name", "heldout"]) == 0
    assert (tmp_path / "heldout_tps_metrics.csv").is_file() and "| mean |" in capsys.readouterr().out


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "tpslab", "--help"], capture_output=True, text=True, check=True)
    for command in ("demo", "train", "evaluate", "predict", "prepare", "reproduce"):
        assert command in out.stdout


def test_train_with_a_profile_and_overrides(tiny_data, tmp_path):
    out = tmp_path / "run"
    assert main(["train", str(tiny_data["train"]), "--profile", "smoke", "--set", "train.epochs=1",
                 "--set", "train.batch_size=16", "--classes", "brick,grass", "--out", str(out), "--quiet"]) == 0
    ckpt = tpslab.methods.checkpoint.read_checkpoint(out / "checkpoint.pt")
    assert ckpt["epoch"] == 1 and ckpt["train_config"]["batch_size"] == 16
    assert ckpt["train_config"]["lr_pathway"] == 1e-3 and ckpt["train_config"]["device"] == "cpu"  # the profile's
    assert main(["train", str(tiny_data["train"]), "--profile", "smoke", "--set", "train.epochs=1", "--epochs", "2",
                 "--out", str(tmp_path / "flag"), "--quiet"]) == 0  # an explicit flag wins over --set
    assert tpslab.methods.checkpoint.read_checkpoint(tmp_path / "flag" / "checkpoint.pt")["epoch"] == 2


def test_bad_settings_are_one_line(capsys, tiny_data, tmp_path):
    err = one_line_error(capsys, ["train", str(tiny_data["train"]), "--set", "train.epochs=1", "--out", str(tmp_path)])
    assert "--profile" in err
    err = one_line_error(capsys, ["train", str(tiny_data["train"]), "--profile", "smoke", "--set", "train.epoch=1",
                                  "--out", str(tmp_path)])
    assert "epoch" in err
    one_line_error(capsys, ["train", str(tiny_data["train"]), "--device", "gpu", "--out", str(tmp_path)])


def test_help_shows_every_default():
    from tpslab.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, command in sub.choices.items():
        for action in command._actions:
            if action.option_strings and action.dest != "help":
                text = command.formatter_class("x")._get_help_string(action) or ""
                assert "default" in text, f"tpslab {name} {action.option_strings[0]}: no default in its help"
    text = " ".join(sub.choices["train"].format_help().split())
    assert "passes over the data (default: 15, or the profile's)" in text


def test_evaluate_with_a_profile(tmp_path, checkpoint, tiny_data, capsys):
    assert main(["evaluate", str(tiny_data["heldout"]), "--checkpoint", str(checkpoint), "--profile", "smoke",
                 "--set", "evaluate.batch_size=4", "--aupro", "authors", "--classes", "camera,coffee", "--quiet",
                 "--name", "heldout"]) == 0
    out = capsys.readouterr().out
    assert "| camera |" in out and "| coffee |" in out and "| chelsea |" not in out
    one_line_error(capsys, ["evaluate", str(tiny_data["heldout"]), "--checkpoint", str(checkpoint), "--profile",
                            "smoke", "--set", "evaluate.aupro_method=fast", "--quiet"])
    # the smoke profile's weights (tpslab-mini's) are not forced on this tpslab-tiny checkpoint (above); a flag is
    err = one_line_error(capsys, ["evaluate", str(tiny_data["heldout"]), "--checkpoint", str(checkpoint),
                                  "--profile", "smoke", "--pretrained", "tpslab", "--classes", "camera", "--quiet"])
    assert "no weights ship with tpslab for 'tpslab-tiny'" in err
