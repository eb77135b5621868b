"""tpslab.data.prepare and tpslab.data.volumes: every layout from a fake tree, every error."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import fake_trees as ft
import numpy as np
import pytest
from PIL import Image

from tpslab.cli import add_prepare_arguments, run_prepare
from tpslab.data.images import load_mask
from tpslab.data.layouts import DATASETS, resolve_name
from tpslab.data.meta import load_meta
from tpslab.data.pairing import pair_by_stem
from tpslab.data.prepare import prepare_dataset, summarize
from tpslab.data.volumes import tumour_slices, volume_slices, window_slice
from tpslab.utils import TPSLabError


def counts(meta_path: Path, split: str = "test") -> dict[str, tuple[int, int, int]]:
    """class -> (normal, anomalous, anomalous with a mask)."""
    meta = load_meta(meta_path)
    return {cls: (sum(s["anomaly"] == 0 for s in ss), sum(s["anomaly"] == 1 for s in ss),
                  sum(s["anomaly"] == 1 and bool(s["mask_path"]) for s in ss))
            for cls, ss in meta.splits[split].items()}


def pairs(meta_path: Path) -> dict[str, str]:
    """image file name (with parent) -> mask file name, over all samples with a mask."""
    meta = load_meta(meta_path)
    return {"/".join(Path(s["img_path"]).parts[-2:]): Path(s["mask_path"]).name
            for c in meta.splits["test"].values() for s in c if s["mask_path"]}


def failed(root: Path, *args, match: str, **kw) -> str:
    """Prepare must raise TPSLabError matching ``match`` and leave no file behind."""
    with pytest.raises(TPSLabError, match=match) as err:
        prepare_dataset(*args, **kw)
    assert not (root / "meta.json").exists()
    assert not list(root.glob(".meta.json*"))
    return str(err.value)


# ----------------------------------------------------------------------------- registry and pairing


def test_registry_names_and_aliases():
    assert set(DATASETS) == {"mvtec", "visa", "mpdd", "btad", "sdsaliency900", "rsdds", "headct", "brainmri",
                             "br35h", "isic", "kvasir", "tn3k", "msd", "folder"}
    assert resolve_name("MVTec_AD") == "mvtec"
    assert resolve_name("sd-saliency-900") == "sdsaliency900"
    assert resolve_name("RSDDs-113") == "rsdds"
    assert resolve_name("Kvasir-SEG") == "kvasir"
    with pytest.raises(TPSLabError, match="unknown data set 'imagenet'"):
        resolve_name("imagenet")


def test_pair_by_stem_where_sorting_two_listings_mismatches():
    images = [Path("d/1.png"), Path("d/2.png"), Path("d/10.png")]
    masks = [Path("m/10_mask.png"), Path("m/1_mask.png"), Path("m/2_mask.png")]
    # sorted(masks) puts 10_mask before 1_mask: zipping sorted listings pairs 1 with 10
    assert [m.name for m in sorted(masks)][:2] == ["10_mask.png", "1_mask.png"]
    p = pair_by_stem(images, masks)
    assert {i.stem: m.name for i, m in p.pairs.items()} == {"1": "1_mask.png", "2": "2_mask.png", "10": "10_mask.png"}
    assert not p.orphans and not p.problems


def test_pair_by_stem_tolerates_suffixes_and_reports_the_rest():
    images = [Path("a.jpg"), Path("b.bmp"), Path("c.png"), Path("d.png"), Path("e.png"), Path("e.jpg")]
    masks = [Path("a_Segmentation.png"), Path("b.png"), Path("c_gt.tif"), Path("d_mask.png"), Path("d.png"),
             Path("zz_mask.png")]
    p = pair_by_stem(images, masks)
    assert p.pairs[Path("a.jpg")].name == "a_Segmentation.png"
    assert p.pairs[Path("b.bmp")].name == "b.png"
    assert p.pairs[Path("c.png")].name == "c_gt.tif"
    assert Path("d.png") not in p.pairs and Path("e.png") not in p.pairs  # ambiguous: reported, not paired
    assert [m.name for m in p.orphans] == ["zz_mask.png"]
    assert any("2 candidate masks: d_mask.png, d.png" in line for line in p.problems)
    assert any("2 images share the stem 'e'" in line for line in p.problems)


# ----------------------------------------------------------------------------- MVTec-like


def test_mvtec_counts_pairing_and_train_split(tmp_path):
    ft.mvtec_like(tmp_path, ["bottle", "cable"])
    path = prepare_dataset("mvtec", tmp_path, classes="bottle,cable")
    assert path == tmp_path / "meta.json"
    assert counts(path) == {"bottle": (2, 3, 3), "cable": (2, 3, 3)}
    assert counts(path, "train") == {"bottle": (2, 0, 0), "cable": (2, 0, 0)}
    assert pairs(path)["crack/001.png"] == "001_mask.png"
    sample = load_meta(path).splits["test"]["bottle"][-1]
    assert sample == {"img_path": "bottle/test/hole/000.png", "mask_path": "bottle/ground_truth/hole/000_mask.png",
                      "cls_name": "bottle", "specie_name": "hole", "anomaly": 1}


def test_mvtec_default_is_the_papers_15_classes(tmp_path):
    ft.mvtec_like(tmp_path, ["bottle"])
    err = failed(tmp_path, "mvtec", tmp_path, match="14 problem")
    assert f"{tmp_path / 'zipper' / 'test'}: folder not found" in err


def test_mvtec_root_one_level_too_high_gets_a_hint(tmp_path):
    ft.mvtec_like(tmp_path / "mvtec_anomaly_detection", ["bottle"])
    failed(tmp_path, "mvtec", tmp_path, match="did you mean .*mvtec_anomaly_detection")


def test_mpdd(tmp_path):
    classes = ["bracket_black", "bracket_brown", "bracket_white", "connector", "metal_plate", "tubes"]
    ft.mvtec_like(tmp_path, classes, defects={"bend_and_parts_mismatch": 2})
    assert counts(prepare_dataset("MPDD", tmp_path)) == {c: (2, 2, 2) for c in classes}


def test_btad_ok_ko_and_mixed_suffixes(tmp_path):
    ft.btad(tmp_path)
    path = prepare_dataset("btad", tmp_path)
    assert counts(path) == {"01": (2, 3, 3), "02": (2, 3, 3), "03": (2, 3, 3)}
    assert counts(path, "train") == {"01": (2, 0, 0), "02": (2, 0, 0), "03": (2, 0, 0)}
    masks = {s["img_path"]: s["mask_path"] for c in load_meta(path).splits["test"].values() for s in c}
    assert masks["01/test/ko/002.bmp"] == "01/ground_truth/ko/002.png"
    assert masks["03/test/ko/002.bmp"] == "03/ground_truth/ko/002.bmp"
    assert masks["02/test/ok/000.png"] == ""


def test_missing_mask_is_an_error_naming_the_file(tmp_path):
    ft.mvtec_like(tmp_path, ["bottle"])
    (tmp_path / "bottle/ground_truth/crack/001_mask.png").unlink()
    err = failed(tmp_path, "mvtec", tmp_path, classes=["bottle"], match="001.png: no mask")
    assert str(tmp_path / "bottle/test/crack/001.png") in err


def test_allow_missing_masks_keeps_the_image_and_lists_it(tmp_path, caplog):
    ft.mvtec_like(tmp_path, ["bottle"])
    (tmp_path / "bottle/ground_truth/crack/001_mask.png").unlink()
    ft.mask(tmp_path / "bottle/ground_truth/crack/007_mask.png")  # a mask without its image
    path = prepare_dataset("mvtec", tmp_path, classes=["bottle"], allow_missing_masks=True)
    assert counts(path) == {"bottle": (2, 3, 2)}
    assert "crack/001.png: no mask" in caplog.text
    assert "007_mask.png: mask without its image" in caplog.text


def test_mask_without_image_is_an_error(tmp_path):
    ft.mvtec_like(tmp_path, ["bottle"])
    ft.mask(tmp_path / "bottle/ground_truth/crack/009_mask.png")
    failed(tmp_path, "mvtec", tmp_path, classes=["bottle"], match="009_mask.png: mask without its image")


def test_two_candidate_masks_is_an_error_even_when_allowing_missing(tmp_path):
    ft.mvtec_like(tmp_path, ["bottle"])
    ft.mask(tmp_path / "bottle/ground_truth/crack/000.png")
    err = failed(tmp_path, "mvtec", tmp_path, classes=["bottle"], allow_missing_masks=True,
                 match="000.png: 2 candidate masks: 000.png, 000_mask.png")
    assert "problem" not in err  # one line, not also "no mask"


def test_two_images_with_one_stem_is_an_error(tmp_path):
    ft.mvtec_like(tmp_path, ["bottle"])
    ft.image(tmp_path / "bottle/test/crack/000.jpg")
    err = failed(tmp_path, "mvtec", tmp_path, classes=["bottle"], match="2 images share the stem '000'")
    assert "problem" not in err


def test_missing_mask_folder_is_one_line(tmp_path):
    ft.mvtec_like(tmp_path, ["bottle"])
    for f in (tmp_path / "bottle/ground_truth/crack").iterdir():
        f.unlink()
    (tmp_path / "bottle/ground_truth/crack").rmdir()
    failed(tmp_path, "mvtec", tmp_path, classes=["bottle"], match=r"crack: mask folder not found \(2 images")


def test_empty_defect_folder_and_unreadable_image(tmp_path):
    ft.mvtec_like(tmp_path, ["bottle"])
    (tmp_path / "bottle/test/scratch").mkdir()
    (tmp_path / "bottle/test/hole/000.png").write_bytes(b"not a png")
    err = failed(tmp_path, "mvtec", tmp_path, classes=["bottle"], match="2 problem")
    assert f"{tmp_path / 'bottle/test/scratch'}: folder has no images" in err
    assert f"{tmp_path / 'bottle/test/hole/000.png'}: cannot read image" in err


def test_mask_size_mismatch_and_non_binary_mask(tmp_path):
    ft.mvtec_like(tmp_path, ["bottle"])
    ft.mask(tmp_path / "bottle/ground_truth/crack/000_mask.png", size=(20, 16))
    grey = np.tile(np.linspace(0, 255, 16, dtype=np.uint8), (16, 1))
    Image.fromarray(grey).save(tmp_path / "bottle/ground_truth/crack/001_mask.png")
    err = failed(tmp_path, "mvtec", tmp_path, classes=["bottle"], match="2 problem")
    assert "000_mask.png: mask is 20x16 but its image" in err
    assert "001_mask.png: mask is not binary" in err
    # --no-check skips opening the files
    prepare_dataset("mvtec", tmp_path, classes=["bottle"], check=False)


def test_failure_keeps_an_existing_meta_file_untouched(tmp_path):
    ft.mvtec_like(tmp_path, ["bottle"])
    (tmp_path / "meta.json").write_text("old")
    (tmp_path / "bottle/ground_truth/crack/000_mask.png").unlink()
    with pytest.raises(TPSLabError):
        prepare_dataset("mvtec", tmp_path, classes=["bottle"])
    assert (tmp_path / "meta.json").read_text() == "old"


def test_out_folder_paths_resolve(tmp_path):
    data, out = tmp_path / "data", tmp_path / "elsewhere" / "meta"
    ft.mvtec_like(data, ["bottle"])
    path = prepare_dataset("mvtec", data, classes=["bottle"], out=out)
    assert path == out / "meta.json" and not (data / "meta.json").exists()
    meta = load_meta(path)  # checks every file exists
    assert "../../data/bottle/test/good/000.png" in [s["img_path"] for s in meta.splits["test"]["bottle"]]


def test_unknown_and_inapplicable_options(tmp_path):
    ft.mvtec_like(tmp_path, ["bottle"])
    failed(tmp_path, "mvtec", tmp_path, per_volume=True, match="per_volume do not apply to mvtec")
    failed(tmp_path, "mvtec", tmp_path / "nope", match="no such folder")


# ----------------------------------------------------------------------------- VisA


def test_visa_from_the_csv(tmp_path):
    ft.visa(tmp_path, ["candle", "pcb1"])
    path = prepare_dataset("visa", tmp_path, classes="candle,pcb1")
    assert counts(path) == {"candle": (2, 2, 2), "pcb1": (2, 2, 2)}
    assert counts(path, "train") == {"candle": (3, 0, 0), "pcb1": (3, 0, 0)}
    assert pairs(path)["Anomaly/001.JPG"] == "001.png"


def test_visa_label_index_masks_read_as_defects(tmp_path):
    ft.visa(tmp_path, ["candle"], mask_value=2)  # VisA stores defect-type indices, not 255
    path = prepare_dataset("visa", tmp_path, classes=["candle"])  # content check passes: non-zero = defect
    s = load_meta(path).splits["test"]["candle"][-1]
    assert s["mask_path"] == "candle/Data/Masks/Anomaly/001.png"
    assert load_mask(tmp_path / s["mask_path"]).max() == 1.0


def test_visa_errors(tmp_path):
    failed(tmp_path, "visa", tmp_path, match="split_csv/1cls.csv: not found")
    ft.visa(tmp_path, ["candle"])
    (tmp_path / "candle/Data/Images/Anomaly/000.JPG").unlink()
    (tmp_path / "candle/Data/Masks/Anomaly/001.png").unlink()
    err = failed(tmp_path, "visa", tmp_path, classes=["candle"], match="2 problem")
    assert "Anomaly/000.JPG: image file not found" in err
    assert "Masks/Anomaly/001.png: mask file not found (for 001.JPG" in err


def test_visa_folders_from_its_own_prepare_script(tmp_path):
    ft.mvtec_like(tmp_path, ["candle"], defects={"bad": 2})
    assert counts(prepare_dataset("visa", tmp_path, classes=["candle"])) == {"candle": (2, 2, 2)}


# ----------------------------------------------------------------------------- image + mask folders


def test_sdsaliency900_bmp_images_png_masks(tmp_path):
    stems = ["In_1", "In_2", "Pa_1", "Sc_10", "Sc_2"]
    ft.image_mask_folders(tmp_path, "Source Images", "Ground truth", stems, img_ext=".bmp")
    path = prepare_dataset("SD-saliency-900", tmp_path)
    assert counts(path) == {"iron": (0, 5, 5)}
    assert pairs(path)["Source Images/Sc_10.bmp"] == "Sc_10.png"


def test_rsdds(tmp_path):
    ft.image_mask_folders(tmp_path, "2D_Image/INPUT_IMG", "Ground Truth", ["rail_1", "rail_2", "rail_3"])
    assert counts(prepare_dataset("rsdds", tmp_path)) == {"rail": (0, 3, 3)}


def test_isic_segmentation_suffix_and_superpixels(tmp_path):
    stems = ["ISIC_0000003", "ISIC_0000012", "ISIC_0000013"]
    ft.image_mask_folders(tmp_path, "ISBI2016_ISIC_Part1_Test_Data", "ISBI2016_ISIC_Part1_Test_GroundTruth",
                          stems, mask_suffix="_Segmentation")
    ft.image(tmp_path / "ISBI2016_ISIC_Part1_Test_Data/ISIC_0000003_superpixels.png")
    path = prepare_dataset("isic", tmp_path)
    assert counts(path) == {"skin": (0, 3, 3)}
    assert pairs(path)["ISBI2016_ISIC_Part1_Test_Data/ISIC_0000012.jpg"] == "ISIC_0000012_Segmentation.png"


def test_kvasir_jpeg_masks_nested_folder(tmp_path):
    ft.image_mask_folders(tmp_path / "Kvasir-SEG", "images", "masks", ["cju0qkwl35piu0993l0dewei2", "cju0s690"],
                          mask_ext=".jpg")
    assert counts(prepare_dataset("kvasir", tmp_path)) == {"colon": (0, 2, 2)}


def test_tn3k_empty_mask_means_normal(tmp_path):
    ft.image_mask_folders(tmp_path, "test-image", "test-mask", ["0000", "0001", "0002"], mask_ext=".jpg",
                          empty=("0001",))
    ft.image_mask_folders(tmp_path, "trainval-image", "trainval-mask", ["0005"], mask_ext=".jpg")
    path = prepare_dataset("tn3k", tmp_path)
    assert counts(path) == {"thyroid": (1, 2, 2)}
    normal = [s for s in load_meta(path).splits["test"]["thyroid"] if s["anomaly"] == 0]
    assert normal[0]["specie_name"] == "good" and normal[0]["img_path"] == "test-image/0001.jpg"


def test_image_mask_folder_overrides_and_errors(tmp_path):
    ft.image_mask_folders(tmp_path, "imgs", "gts", ["a", "b"])
    failed(tmp_path, "kvasir", tmp_path, match="no image and mask folders found")
    failed(tmp_path, "kvasir", tmp_path, images="imgs", match="give both")
    assert counts(prepare_dataset("kvasir", tmp_path, images="imgs", masks="gts", class_name="polyp")) == {
        "polyp": (0, 2, 2)}
    (tmp_path / "meta.json").unlink()
    ft.image(tmp_path / "imgs/c.jpg")
    failed(tmp_path, "kvasir", tmp_path, images="imgs", masks="gts", match="c.jpg: no mask")


# ----------------------------------------------------------------------------- no/ yes/ and HeadCT


def test_headct_kaggle_csv_layout(tmp_path):
    ft.headct_kaggle(tmp_path, [1, 1, 1, 0, 0])
    path = prepare_dataset("headct", tmp_path)
    assert counts(path) == {"brain": (2, 3, 0)}
    meta = load_meta(path)
    assert [s["anomaly"] for s in meta.splits["test"]["brain"]] == [1, 1, 1, 0, 0]
    assert meta.splits["test"]["brain"][3]["img_path"] == "head_ct/head_ct/003.png"


def test_headct_csv_mismatches(tmp_path):
    ft.headct_kaggle(tmp_path, [1, 0, 0])
    (tmp_path / "head_ct/head_ct/001.png").unlink()
    ft.image(tmp_path / "head_ct/head_ct/007.png")
    err = failed(tmp_path, "headct", tmp_path, match="2 problem")
    assert "labels.csv:3: no image for id 1" in err
    assert "007.png: image not listed in" in err


def test_headct_no_yes_layout(tmp_path):
    ft.no_yes(tmp_path, 3, 4)
    assert counts(prepare_dataset("headct", tmp_path)) == {"brain": (3, 4, 0)}


def test_brainmri_mixed_suffixes_and_duplicate_copy(tmp_path):
    names = {("no", 0): "1 no.jpeg", ("no", 1): "N2.JPG", ("yes", 0): "Y1.jpg", ("yes", 1): "Y2.png"}
    ft.no_yes(tmp_path, 2, 3, names=names)
    ft.no_yes(tmp_path / "brain_tumor_dataset", 2, 3, names=names)  # Kaggle ships the folders twice
    path = prepare_dataset("brainmri", tmp_path)
    assert counts(path) == {"brain": (2, 3, 0)}
    assert all(not s["img_path"].startswith("brain_tumor_dataset") for s in load_meta(path).splits["test"]["brain"])


def test_brainmri_only_nested(tmp_path):
    ft.no_yes(tmp_path / "brain_tumor_dataset", 2, 3)
    assert counts(prepare_dataset("brainmri", tmp_path)) == {"brain": (2, 3, 0)}


def test_br35h_ignores_pred(tmp_path, caplog):
    ft.no_yes(tmp_path, 3, 3)
    ft.image(tmp_path / "pred/pred0.jpg")
    assert counts(prepare_dataset("br35h", tmp_path)) == {"brain": (3, 3, 0)}
    assert "pred: ignored" in caplog.text


def test_no_yes_missing(tmp_path):
    ft.image(tmp_path / "images/a.jpg")
    failed(tmp_path, "br35h", tmp_path, match="no folder with no/ and yes/")


# ----------------------------------------------------------------------------- folder


def test_folder_one_class_with_partial_ground_truth(tmp_path):
    root = tmp_path / "widget"
    for i in range(3):
        ft.image(root / "good" / f"g{i}.png")
    for i in range(2):
        ft.image(root / "scratch" / f"s{i}.png")
        ft.mask(root / "ground_truth" / "scratch" / f"s{i}_mask.png")
        ft.image(root / "dent" / f"d{i}.jpg")  # no masks for dents at all: image level only
    path = prepare_dataset("folder", root)
    assert counts(path) == {"widget": (3, 4, 2)}


def test_folder_many_classes_normal_name_and_mvtec_shape(tmp_path):
    for i in range(2):
        ft.image(tmp_path / "a" / "Normal" / f"{i}.png")
        ft.image(tmp_path / "a" / "bad" / f"{i}.png")
    ft.mvtec_like(tmp_path, ["b"])
    ft.image(tmp_path / "docs" / "x" / "readme.png")
    path = prepare_dataset("folder", tmp_path)
    assert counts(path) == {"a": (2, 2, 0), "b": (2, 3, 3)}
    assert counts(path, "train") == {"b": (2, 0, 0)}


def test_folder_errors(tmp_path):
    ft.image(tmp_path / "stuff" / "x" / "a.png")
    failed(tmp_path, "folder", tmp_path, match="no good/")
    ft.image(tmp_path / "c" / "good" / "g.png")
    ft.image(tmp_path / "c" / "bad" / "b0.png")
    ft.image(tmp_path / "c" / "bad" / "b1.png")
    ft.mask(tmp_path / "c" / "ground_truth" / "bad" / "b0.png")
    failed(tmp_path, "folder", tmp_path, match="b1.png: no mask")


# ----------------------------------------------------------------------------- MSD


def test_window_and_slice_selection_on_arrays():
    assert window_slice(np.array([[-2000.0, -1000.0], [-300.0, 400.0]])).tolist() == [[0, 0], [128, 255]]
    assert window_slice(np.array([[5.0, 7.0]]), "minmax").tolist() == [[0, 255]]
    assert window_slice(np.full((2, 2), 3.0), "minmax").tolist() == [[0, 0], [0, 0]]
    label = np.zeros((4, 4, 6), np.uint8)
    label[1, 1, 2] = 1
    label[2, 2, 4] = 2
    assert tumour_slices(label) == [2, 4]
    image = np.full((4, 4, 6), -1000.0)
    out = list(volume_slices(image, label))
    assert [z for z, _, _ in out] == [2, 4]
    assert out[0][2].dtype == np.uint8 and out[0][2][1, 1] == 255 and out[0][2].sum() == 255
    assert len(list(volume_slices(image, label, all_slices=True))) == 6
    with pytest.raises(TPSLabError, match="must be equal"):
        list(volume_slices(image, label[:, :, :3]))


def test_msd_without_nibabel_says_how_to_install(tmp_path, monkeypatch):
    for sub in ("imagesTr", "labelsTr"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "lung_001.nii.gz").write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "nibabel", None)
    failed(tmp_path, "msd", tmp_path, match=r"pip install 'tpslab\[medical\]'")
    assert not (tmp_path / "slices").exists()
    assert not list(tmp_path.glob(".slices*"))


def test_msd_unpaired_volume(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    (tmp_path / "imagesTr" / "lung_002.nii.gz").write_bytes(b"x")
    failed(tmp_path, "msd", tmp_path, match="lung_002.nii.gz: no label volume")


def test_msd_from_existing_slices(tmp_path):
    ft.image_mask_folders(tmp_path / "slices", "images", "masks", ["lung_001_2", "lung_001_3", "lung_004_1"],
                          img_ext=".png")
    assert counts(prepare_dataset("msd", tmp_path)) == {"lung": (0, 3, 3)}
    (tmp_path / "meta.json").unlink()
    assert counts(prepare_dataset("msd", tmp_path, per_volume=True)) == {"lung_001": (0, 2, 2), "lung_004": (0, 1, 1)}


def test_msd_nifti_conversion(tmp_path):
    pytest.importorskip("nibabel")
    ft.msd_volumes(tmp_path, {"lung_001": [1, 2], "lung_003": [4]})
    path = prepare_dataset("msd", tmp_path)
    assert counts(path) == {"lung": (0, 3, 3)}
    assert sorted(p.name for p in (tmp_path / "slices/images").iterdir()) == [
        "lung_001_1.png", "lung_001_2.png", "lung_003_4.png"]
    img = np.asarray(Image.open(tmp_path / "slices/images/lung_001_1.png"))
    assert img.shape == (12, 10) and img.dtype == np.uint8 and img.min() == 0
    record = json.loads((tmp_path / "slices/conversion.json").read_text())
    assert record == {"window": [-1000.0, 400.0], "all_slices": False, "cases": ["lung_001", "lung_003"]}
    # same settings: reused; other settings: converted again; the authors' setup per volume
    mtime = (tmp_path / "slices/images/lung_001_1.png").stat().st_mtime_ns
    (tmp_path / "meta.json").unlink()
    prepare_dataset("msd", tmp_path)
    assert (tmp_path / "slices/images/lung_001_1.png").stat().st_mtime_ns == mtime
    (tmp_path / "meta.json").unlink()
    path = prepare_dataset("msd", tmp_path, per_volume=True, all_slices=True, window="minmax")
    assert counts(path) == {"lung_001": (3, 2, 2), "lung_003": (4, 1, 1)}
    assert not list(tmp_path.glob(".slices*"))


def test_msd_never_replaces_foreign_slices(tmp_path):
    pytest.importorskip("nibabel")
    ft.msd_volumes(tmp_path, {"lung_001": [1]})
    ft.image(tmp_path / "slices/images/mine.png")
    failed(tmp_path, "msd", tmp_path, match="was not made by tpslab")
    assert (tmp_path / "slices/images/mine.png").exists()


# ----------------------------------------------------------------------------- summary and CLI


def test_summarize(tmp_path):
    ft.mvtec_like(tmp_path, ["bottle", "cable"])
    text = summarize(prepare_dataset("mvtec", tmp_path, classes="bottle,cable"))
    lines = text.splitlines()
    assert lines[0].split() == ["split", "class", "normal", "anomalous", "with", "mask"]
    assert lines[1].split() == ["train", "bottle", "2", "0", "0"]
    assert lines[-1].split() == ["test", "(all", "2)", "4", "6", "6"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tpslab prepare")
    add_prepare_arguments(p)
    return p


def test_run_prepare_prints_the_summary(tmp_path, capsys):
    ft.mvtec_like(tmp_path, ["bottle"])
    (tmp_path / "bottle/ground_truth/crack/001_mask.png").unlink()
    args = parser().parse_args(["mvtec_ad", str(tmp_path), "--classes", "bottle", "--allow-missing-masks"])
    assert run_prepare(args) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'meta.json'}" in out
    assert "note: " in out and "001.png: no mask" in out
    assert "test   bottle" in out


def test_run_prepare_msd_options_and_errors(tmp_path, capsys):
    ft.image_mask_folders(tmp_path / "slices", "images", "masks", ["lung_001_2", "lung_004_1"], img_ext=".png")
    args = parser().parse_args(["MSD", str(tmp_path), "--msd-per-volume", "--out", str(tmp_path / "o")])
    assert run_prepare(args) == 0
    assert counts(tmp_path / "o" / "meta.json") == {"lung_001": (0, 1, 1), "lung_004": (0, 1, 1)}
    with pytest.raises(TPSLabError, match="do not apply to mvtec"):
        run_prepare(parser().parse_args(["mvtec", str(tmp_path), "--msd-per-volume"]))
