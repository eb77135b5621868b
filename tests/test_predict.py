"""tpslab.runs.predict through ``tpslab predict``: unique outputs, mask folders skipped, original-size panels, maps."""

from __future__ import annotations

import csv
from pathlib import Path

import fake_trees as ft
import numpy as np
import pytest
from PIL import Image

from tpslab.cli import main
from tpslab.data.dataset import AnomalyDataset
from tpslab.runs.predict import COLUMNS, collect_images


def rows(out: Path) -> list[dict[str, str]]:
    with open(out / "scores.csv") as fh:
        return list(csv.DictReader(fh))


def test_13_same_names_in_different_folders_get_their_own_outputs(tmp_path, checkpoint):
    for folder in ("a", "b", "c/d"):
        ft.image(tmp_path / "in" / folder / "img.png", size=(40, 30))
    ft.image(tmp_path / "loose" / "img.png")
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "in"), str(tmp_path / "loose" / "img.png"), "--checkpoint",
                 str(checkpoint), "--out", str(out), "--quiet"]) == 0
    table = rows(out)
    assert list(table[0]) == COLUMNS and len(table) == 4
    assert [r["overlay"] for r in table] == ["a__img_overlay.png", "b__img_overlay.png", "c__d__img_overlay.png",
                                             "img_overlay.png"]
    assert all((out / r["overlay"]).is_file() for r in table)


def test_14_mask_folders_are_skipped_and_a_meta_json_gives_its_split(tmp_path, checkpoint, tiny_data):
    found = collect_images([Path(tiny_data["heldout"]).parent])
    assert found and not any("ground_truth" in f.path.parts for f in found)
    meta = Path(tiny_data["heldout"])
    out = tmp_path / "out"
    assert main(["predict", str(meta), "--checkpoint", str(checkpoint), "--out", str(out), "--quiet"]) == 0
    n_test = len(AnomalyDataset(meta, 64).samples)
    assert len(rows(out)) == n_test and len({r["overlay"] for r in rows(out)}) == n_test


def test_15_panels_at_the_original_size_with_the_maps_saved(tmp_path, checkpoint):
    ft.image(tmp_path / "wide.png", size=(90, 50))
    ft.image(tmp_path / "small.png", size=(20, 20))
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "wide.png"), str(tmp_path / "small.png"), "--checkpoint", str(checkpoint),
                 "--out", str(out), "--quiet"]) == 0
    table = rows(out)
    with Image.open(out / table[0]["overlay"]) as panel:
        width, height = panel.size
        pixels = np.asarray(panel.convert("RGB"))
    assert width >= 2 * 90 and 50 < height <= 50 + 40  # image | overlay | colour bar, under a line of text
    assert (pixels[-50:, :90] == np.asarray(Image.open(tmp_path / "wide.png").convert("RGB"))).all()  # the image
    maps = np.load(out / "maps.npz")
    assert sorted(maps.files) == sorted(r["map"] for r in table)
    for r in table:
        assert maps[r["map"]].shape == (64, 64)
        assert float(r["map_max"]) == pytest.approx(float(maps[r["map"]].max()), abs=1e-5)
        assert 0 <= float(r["score"]) <= 1


def test_16_device_and_batch_size(tmp_path, checkpoint, capsys):
    for i in range(3):
        ft.image(tmp_path / "in" / f"{i}.png")
    base = ["predict", str(tmp_path / "in"), "--checkpoint", str(checkpoint), "--quiet", "--device", "cpu"]
    assert main([*base, "--batch-size", "2", "--out", str(tmp_path / "b2")]) == 0
    assert main([*base, "--batch-size", "1", "--out", str(tmp_path / "b1")]) == 0
    one, two = rows(tmp_path / "b1"), rows(tmp_path / "b2")
    assert [float(r["score"]) for r in one] == pytest.approx([float(r["score"]) for r in two], abs=1e-5)
    assert main([*base, "--batch-size", "0", "--out", str(tmp_path / "b0")]) == 2
    assert "--batch-size 0 " in capsys.readouterr().err and not (tmp_path / "b0").exists()
