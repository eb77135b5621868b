"""``tpslab prepare NAME ROOT``: describe a data set, as distributed, in a ``meta.json``.

Each of the paper's 13 data sets (and any user folder) has a builder below that walks
the layout as it is downloaded, pairs every image with its mask **by file stem** (never
by sorting two listings), and collects every problem before anything is written:

* an image without its mask, a mask without its image, two masks for one image, two
  images with one stem: one line each, naming the file. ``allow_missing_masks`` keeps
  images without masks (for image-level metrics only) and skips stray masks, listing
  both; ambiguities are always errors.
* then every image and mask is opened (:mod:`tpslab.data.validate`): sizes agree, masks
  are binary or binarisable, labels agree with masks.

Only when nothing is wrong is ``meta.json`` written, atomically, so a failed run never
leaves a half-written file. The per-data-set layouts, licences and commands are in
``data/README.md``.

>>> path = prepare_dataset("mvtec", "/data/mvtec")           # doctest: +SKIP
>>> print(summarize(path))                                   # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import csv
import inspect
import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tpslab.data.images import IMAGE_SUFFIXES, load_mask
from tpslab.data.meta import Meta, load_meta, raise_problems, structure_problems, write_meta
from tpslab.data.validate import content_problems
from tpslab.data.volumes import HU_WINDOW, convert_msd, parse_window
from tpslab.utils import TPSLabError

log = logging.getLogger(__name__)

MVTEC_CLASSES = ["bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill",
                 "screw", "tile", "toothbrush", "transistor", "wood", "zipper"]
VISA_CLASSES = ["candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2", "pcb1", "pcb2",
                "pcb3", "pcb4", "pipe_fryum"]
MPDD_CLASSES = ["bracket_black", "bracket_brown", "bracket_white", "connector", "metal_plate", "tubes"]
BTAD_CLASSES = ["01", "02", "03"]

NORMAL_DIRS = ("good", "normal", "ok")      # folder layout: names of the normal folder (any case)
MASK_DIRS = ("ground_truth", "groundtruth", "gt", "masks")
MASK_SUFFIXES = ("_mask", "_gt", "_segmentation", "-mask")  # stripped from mask stems (any case)


# ----------------------------------------------------------------------------- pairing


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (any case of suffix, hidden files skipped), natural order."""
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir()
             if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=_natural_key)


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def _mask_key(stem: str) -> str:
    low = stem.lower()
    for suffix in MASK_SUFFIXES:
        if low.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


@dataclass
class Pairing:
    """Result of :func:`pair_by_stem`."""

    pairs: dict[Path, Path | None]        # every unambiguous image (in order) -> its mask or None
    orphans: list[Path]                   # masks matching no image
    problems: list[str]                   # ambiguities: one line each


def pair_by_stem(images: list[Path], masks: list[Path]) -> Pairing:
    """Pair images with masks by file stem.

    A mask matches an image when its stem equals the image's stem, or does after
    removing one of ``MASK_SUFFIXES`` (``000_mask.png``, ``ISIC_0000003_Segmentation.png``);
    suffixes (``.png``, ``.jpg``, ``.bmp``, ``.tif``) may differ.

    >>> p = pair_by_stem([Path("10.png"), Path("2.png")], [Path("2_mask.png"), Path("10_mask.png")])
    >>> {i.name: m.name for i, m in p.pairs.items()}
    {'10.png': '10_mask.png', '2.png': '2_mask.png'}
    """
    by_stem: dict[str, list[Path]] = {}
    for img in images:
        by_stem.setdefault(img.stem, []).append(img)
    problems = [f"{paths[0].parent}: {len(paths)} images share the stem {stem!r}: {', '.join(p.name for p in paths)}"
                for stem, paths in by_stem.items() if len(paths) > 1]
    found: dict[str, list[Path]] = {}
    orphans = []
    for mask in masks:
        key = mask.stem if mask.stem in by_stem else _mask_key(mask.stem)
        if key in by_stem:
            found.setdefault(key, []).append(mask)
        else:
            orphans.append(mask)
    pairs: dict[Path, Path | None] = {}
    for img in images:
        candidates = found.get(img.stem, [])
        if len(candidates) > 1:
            problems.append(f"{img}: {len(candidates)} candidate masks: {', '.join(m.name for m in candidates)}")
        elif len(by_stem[img.stem]) == 1:
            pairs[img] = candidates[0] if candidates else None
    return Pairing(pairs, orphans, problems)


# ----------------------------------------------------------------------------- collecting samples


@dataclass
class Sample:
    img: Path
    mask: Path | None
    cls: str
    specie: str
    anomaly: int


@dataclass
class Context:
    """What a builder works with: where the data is, and where its findings go."""

    root: Path
    dest: Path                              # where meta.json (and any derived files) go
    allow_missing_masks: bool = False
    samples: dict[str, dict[str, list[Sample]]] = field(default_factory=lambda: {"train": {}, "test": {}})
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, split: str, sample: Sample) -> None:
        self.samples[split].setdefault(sample.cls, []).append(sample)

    def missing_mask(self, line: str) -> None:
        """An anomalous image without its mask: an error, or kept for image metrics only."""
        if self.allow_missing_masks:
            self.notes.append(line + "; kept for image-level metrics only")
        else:
            self.problems.append(line)

    def stray_masks(self, line: str) -> None:
        """Masks without their images: an error, or ignored."""
        if self.allow_missing_masks:
            self.notes.append(line + "; ignored")
        else:
            self.problems.append(line)

    def add_paired(self, split: str, cls: str, specie: str, images: list[Path], mask_dir: Path | None,
                   anomaly: int | None = 1) -> None:
        """Add images paired with the masks in ``mask_dir``.

        Args:
            anomaly: 1 or 0 for all; ``None`` decides from each mask (non-empty -> 1).
        """
        if mask_dir is None or not mask_dir.is_dir():
            if anomaly != 0 and images:
                self.missing_mask(f"{mask_dir}: mask folder not found ({len(images)} images in {images[0].parent})")
            for img in images:
                self.add(split, Sample(img, None, cls, specie, 1 if anomaly is None else anomaly))
            return
        pairing = pair_by_stem(images, list_images(mask_dir))
        self.problems += pairing.problems
        for mask in pairing.orphans:
            self.stray_masks(f"{mask}: mask without its image in {images[0].parent if images else '(no images)'}")
        for img, mask in pairing.pairs.items():
            label = anomaly
            if mask is None:
                if anomaly is None or anomaly == 1:
                    self.missing_mask(f"{img}: no mask in {mask_dir} (looked for the same stem, or with _mask/_gt)")
                label = 1 if anomaly is None else anomaly
            elif anomaly is None:
                label = self._mask_label(mask)
                if label is None:
                    continue
            specie_name = specie if label == 1 else "good"
            self.add(split, Sample(img, mask, cls, specie_name, label))

    def _mask_label(self, mask: Path) -> int | None:
        try:
            return int((load_mask(mask) >= 0.5).any())
        except TPSLabError as err:
            self.problems.append(str(err))
            return None


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def child(folder: Path, rel: str) -> Path | None:
    """``folder/rel`` where each part matches ignoring case, spaces, ``_`` and ``-``; None if absent."""
    here = folder
    for part in Path(rel).parts:
        if (here / part).is_dir():
            here = here / part
            continue
        if not here.is_dir():
            return None
        matches = [p for p in here.iterdir() if p.is_dir() and _norm(p.name) == _norm(part)]
        if len(matches) != 1:
            return None
        here = matches[0]
    return here


def _subdirs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=_natural_key)


def _hint(root: Path, looks_right: Callable[[Path], bool]) -> str:
    """`` (did you mean ROOT/x?)`` when a folder up to two levels down has the expected layout."""
    if not root.is_dir():
        return " (no such folder)"
    for level in (_subdirs(root), [s for d in _subdirs(root) for s in _subdirs(d)]):
        hits = [d for d in level if looks_right(d)]
        if hits:
            return f" (did you mean {hits[0]}?)"
    return ""


def _class_list(classes: str | Iterable[str] | None, default: list[str]) -> list[str]:
    if classes is None:
        return list(default)
    if isinstance(classes, str):
        classes = [c.strip() for c in classes.split(",")]
    return [c for c in classes if c]


# ----------------------------------------------------------------------------- builders


def _walk_mvtec_like(ctx: Context, classes: list[str], normal: str, layout: str) -> None:
    """``<class>/train/<normal>``, ``<class>/test/<defect>``, ``<class>/ground_truth/<defect>``."""
    found = [c for c in classes if (ctx.root / c / "test").is_dir()]
    if not found:
        hint = _hint(ctx.root, lambda d: (d / classes[0] / "test").is_dir())
        raise TPSLabError(f"{ctx.root}: none of the classes {', '.join(classes)} has a test/ folder; "
                          f"expected {layout}{hint}")
    for cls in classes:
        cls_dir = ctx.root / cls
        if cls not in found:
            ctx.problems.append(f"{cls_dir / 'test'}: folder not found (class {cls!r}; expected {layout})")
            continue
        for img in list_images(cls_dir / "train" / normal):
            ctx.add("train", Sample(img, None, cls, normal, 0))
        defects = _subdirs(cls_dir / "test")
        if not defects:
            ctx.problems.append(f"{cls_dir / 'test'}: no defect or {normal}/ folders in it")
        for defect in defects:
            images = list_images(defect)
            if not images:
                ctx.problems.append(f"{defect}: folder has no images")
            elif defect.name == normal:
                ctx.add_paired("test", cls, normal, images, None, anomaly=0)
            else:
                ctx.add_paired("test", cls, defect.name, images, cls_dir / "ground_truth" / defect.name)
        names = {d.name for d in defects}
        for gt in _subdirs(cls_dir / "ground_truth") if (cls_dir / "ground_truth").is_dir() else []:
            if gt.name not in names and list_images(gt):
                ctx.stray_masks(f"{gt}: masks for a defect without a test/{gt.name} folder")


def _mvtec(ctx: Context, classes: str | list[str] | None = None) -> None:
    """MVTec AD: 15 classes, normal folder ``good``, masks ``<stem>_mask.png``."""
    _walk_mvtec_like(ctx, _class_list(classes, MVTEC_CLASSES), "good",
                     "MVTec AD layout <class>/{train/good,test/<defect>,ground_truth/<defect>}")


def _mpdd(ctx: Context, classes: str | list[str] | None = None) -> None:
    """MPDD: the MVTec AD layout with 6 classes."""
    _walk_mvtec_like(ctx, _class_list(classes, MPDD_CLASSES), "good",
                     "MPDD layout <class>/{train/good,test/<defect>,ground_truth/<defect>}")


def _btad(ctx: Context, classes: str | list[str] | None = None) -> None:
    """BTAD (BTech_Dataset_transformed): classes 01 02 03, normal ``ok``, defect ``ko``; suffixes differ."""
    _walk_mvtec_like(ctx, _class_list(classes, BTAD_CLASSES), "ok",
                     "BTAD layout <class>/{train/ok,test/{ok,ko},ground_truth/ko}")


def _visa(ctx: Context, classes: str | list[str] | None = None) -> None:
    """VisA: ``split_csv/1cls.csv`` (object, split, label, image, mask); paths relative to the root.

    Without the csv, the MVTec-like folders made by VisA's own ``prepare_data.py``
    (``<class>/{train/good,test/{good,bad},ground_truth/bad}``) are accepted.
    """
    wanted = _class_list(classes, VISA_CLASSES)
    table = ctx.root / "split_csv" / "1cls.csv"
    if not table.is_file():
        if any((ctx.root / c / "test").is_dir() for c in wanted):
            _walk_mvtec_like(ctx, wanted, "good", "VisA 1cls layout <class>/{train/good,test/{good,bad},ground_truth/bad}")
            return
        hint = _hint(ctx.root, lambda d: (d / "split_csv" / "1cls.csv").is_file())
        raise TPSLabError(f"{table}: not found (VisA as distributed has split_csv/1cls.csv){hint}")
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = {"object", "split", "label", "image", "mask"}
    if not rows or not columns <= {k.strip() for k in rows[0]}:
        raise TPSLabError(f"{table}: expected the columns {', '.join(sorted(columns))}")
    seen: set[str] = set()
    for n, raw in enumerate(rows, start=2):
        row = {k.strip(): (v or "").strip() for k, v in raw.items() if k}
        if row["object"] not in wanted:
            continue
        where = f"{table}:{n}"
        if row["split"] not in ("train", "test") or row["label"] not in ("normal", "anomaly"):
            ctx.problems.append(f"{where}: unknown split {row['split']!r} or label {row['label']!r}")
            continue
        if row["image"] in seen:
            ctx.problems.append(f"{where}: image {row['image']} listed twice")
            continue
        seen.add(row["image"])
        img = ctx.root / row["image"]
        if not img.is_file():
            ctx.problems.append(f"{img}: image file not found ({where})")
            continue
        if row["label"] == "normal":
            ctx.add(row["split"], Sample(img, None, row["object"], "good", 0))
            continue
        mask = ctx.root / row["mask"] if row["mask"] else None
        if mask is None or not mask.is_file():
            ctx.missing_mask(f"{img}: no mask ({where} names none)" if mask is None else
                             f"{mask}: mask file not found (for {img.name}, {where})")
            mask = None
        elif _mask_key(mask.stem) != img.stem:
            ctx.problems.append(f"{mask}: mask name does not match its image {img.name} ({where})")
            continue
        ctx.add(row["split"], Sample(img, mask, row["object"], "bad", 1))
    for cls in wanted:
        if cls not in ctx.samples["test"]:
            ctx.problems.append(f"{table}: no test rows for class {cls!r}")


def _image_mask_pairs(ctx: Context, candidates: list[tuple[str, str]], cls: str, images: str | None,
                      masks: str | None, skip: Callable[[Path], bool] | None = None) -> None:
    """An image folder and a mask folder; label each image by its mask (empty -> normal)."""
    if images or masks:
        if not (images and masks):
            raise TPSLabError("give both images= and masks= (--images and --masks), relative to ROOT or absolute")
        candidates = [(images, masks)]
    for img_rel, mask_rel in candidates:
        img_dir = child(ctx.root, img_rel) if not Path(img_rel).is_absolute() else Path(img_rel)
        mask_dir = child(ctx.root, mask_rel) if not Path(mask_rel).is_absolute() else Path(mask_rel)
        if img_dir and mask_dir and img_dir.is_dir() and mask_dir.is_dir():
            break
    else:
        looked = "; ".join(f"{i}/ + {m}/" for i, m in candidates)
        first = candidates[0][0]
        hint = "" if Path(first).is_absolute() else _hint(ctx.root, lambda d, f=first: child(d, f) is not None)
        raise TPSLabError(f"{ctx.root}: no image and mask folders found (looked for {looked}){hint}")
    files = [p for p in list_images(img_dir) if not (skip and skip(p))]
    if not files:
        raise TPSLabError(f"{img_dir}: no images")
    ctx.add_paired("test", cls, "defect", files, mask_dir, anomaly=None)


def _sdsaliency900(ctx: Context, images: str | None = None, masks: str | None = None,
                   class_name: str = "iron") -> None:
    """SD-saliency-900: ``Source Images/`` + ``Ground truth/`` (900 strip-steel defects)."""
    _image_mask_pairs(ctx, [("Source Images", "Ground truth"), ("SD-saliency-900/Source Images",
                                                                "SD-saliency-900/Ground truth"),
                            ("images", "masks")], class_name, images, masks)


def _rsdds(ctx: Context, images: str | None = None, masks: str | None = None, class_name: str = "rail") -> None:
    """RSDDs-113: ``2D_Image/INPUT_IMG/`` + ``Ground Truth/``."""
    _image_mask_pairs(ctx, [("2D_Image/INPUT_IMG", "Ground Truth"), ("INPUT_IMG", "Ground Truth"),
                            ("images", "masks")], class_name, images, masks)


def _isic(ctx: Context, images: str | None = None, masks: str | None = None, class_name: str = "skin") -> None:
    """ISIC (ISBI 2016 part 1 test set, 379 images); 2017 / 2018 test folders are recognised too."""
    _image_mask_pairs(ctx, [("ISBI2016_ISIC_Part1_Test_Data", "ISBI2016_ISIC_Part1_Test_GroundTruth"),
                            ("ISIC-2017_Test_v2_Data", "ISIC-2017_Test_v2_Part1_GroundTruth"),
                            ("ISIC2018_Task1-2_Test_Input", "ISIC2018_Task1_Test_GroundTruth"),
                            ("images", "masks")], class_name, images, masks,
                      skip=lambda p: p.stem.lower().endswith("_superpixels"))


def _kvasir(ctx: Context, images: str | None = None, masks: str | None = None, class_name: str = "colon") -> None:
    """Kvasir-SEG: ``images/`` + ``masks/`` (1000 polyps, JPEG masks)."""
    _image_mask_pairs(ctx, [("images", "masks"), ("Kvasir-SEG/images", "Kvasir-SEG/masks")],
                      class_name, images, masks)


def _tn3k(ctx: Context, images: str | None = None, masks: str | None = None, class_name: str = "thyroid") -> None:
    """TN3K: ``test-image/`` + ``test-mask/`` (614 test images)."""
    _image_mask_pairs(ctx, [("test-image", "test-mask"), ("tn3k/test-image", "tn3k/test-mask")],
                      class_name, images, masks)


def _msd(ctx: Context, per_volume: bool = False, all_slices: bool = False,
         window: str | tuple[float, float] = HU_WINDOW, class_name: str = "lung") -> None:
    """MSD Task06_Lung: NIfTI ``imagesTr/`` + ``labelsTr/``, converted to PNG slices first.

    Existing ``slices/{images,masks}`` are used as they are when there are no volumes.
    """
    if (ctx.root / "imagesTr").is_dir():
        slices, notes = convert_msd(ctx.root, ctx.dest, parse_window(window), all_slices)
        ctx.notes += notes
    else:
        slices = next((d / "slices" for d in (ctx.dest, ctx.root) if (d / "slices" / "images").is_dir()), None)
        if slices is None:
            hint = _hint(ctx.root, lambda d: (d / "imagesTr").is_dir())
            raise TPSLabError(f"{ctx.root}: no imagesTr/ (MSD Task06_Lung NIfTI volumes) and no slices/images/{hint}")
    before = len(ctx.problems)
    _image_mask_pairs(ctx, [(str(slices / "images"), str(slices / "masks"))], class_name, None, None)
    if per_volume and len(ctx.problems) == before:
        test = ctx.samples["test"].pop(class_name, [])
        for s in test:
            s.cls = s.img.stem.rsplit("_", 1)[0]
            ctx.add("test", s)


def _find_no_yes(ctx: Context) -> Path:
    def has(d: Path) -> bool:
        return child(d, "no") is not None and child(d, "yes") is not None
    for level in ([ctx.root], _subdirs(ctx.root), [s for d in _subdirs(ctx.root) for s in _subdirs(d)]):
        hits = [d for d in level if has(d)]
        if len(hits) > 1:
            raise TPSLabError(f"{ctx.root}: several folders hold no/ and yes/ ({', '.join(map(str, hits))}); "
                              "pass the one to use as ROOT")
        if hits:
            return hits[0]
    raise TPSLabError(f"{ctx.root}: no folder with no/ and yes/ subfolders found")


def _no_yes(ctx: Context, class_name: str, defect: str) -> None:
    """``no/`` (normal) and ``yes/`` (anomalous) image folders; other folders are ignored."""
    top = _find_no_yes(ctx)
    for d in _subdirs(top):
        if _norm(d.name) not in ("no", "yes"):
            ctx.notes.append(f"{d}: ignored (only no/ and yes/ carry labels)")
    for name, label in (("no", 0), ("yes", 1)):
        folder = child(top, name)
        images = list_images(folder)
        if not images:
            ctx.problems.append(f"{folder}: folder has no images")
        for img in images:
            ctx.add("test", Sample(img, None, class_name, defect if label else "good", label))


def _headct(ctx: Context, class_name: str = "brain") -> None:
    """HeadCT: ``labels.csv`` (id, hemorrhage) + ``head_ct/head_ct/000.png..``, or ``no/`` + ``yes/``."""
    table = next((p for p in [ctx.root / "labels.csv", *(d / "labels.csv" for d in _subdirs(ctx.root))]
                  if p.is_file()), None) if ctx.root.is_dir() else None
    if table is None:
        _no_yes(ctx, class_name, "hemorrhage")
        return
    folder = next((d for d in (child(ctx.root, "head_ct/head_ct"), child(ctx.root, "head_ct"), table.parent, ctx.root)
                   if d is not None and list_images(d)), None)
    if folder is None:
        raise TPSLabError(f"{table}: no image folder found beside it (expected head_ct/head_ct/000.png ...)")
    files = list_images(folder)
    images = {int(p.stem): p for p in files if p.stem.isdigit()}
    if len(images) < len(files):
        ctx.notes.append(f"{folder}: {len(files) - len(images)} image(s) without a numeric name ignored")
    with open(table, newline="") as f:
        rows = [{k.strip().lower(): (v or "").strip() for k, v in r.items() if k} for r in csv.DictReader(f)]
    if not rows or not {"id", "hemorrhage"} <= set(rows[0]):
        raise TPSLabError(f"{table}: expected the columns id, hemorrhage")
    listed = set()
    for n, row in enumerate(rows, start=2):
        if not row["id"].isdigit() or row["hemorrhage"] not in ("0", "1"):
            ctx.problems.append(f"{table}:{n}: bad row (id {row['id']!r}, hemorrhage {row['hemorrhage']!r})")
            continue
        key = int(row["id"])
        if key in listed:
            ctx.problems.append(f"{table}:{n}: id {key} listed twice")
            continue
        listed.add(key)
        if key not in images:
            ctx.problems.append(f"{table}:{n}: no image for id {key} in {folder}")
            continue
        label = int(row["hemorrhage"])
        ctx.add("test", Sample(images[key], None, class_name, "hemorrhage" if label else "good", label))
    ctx.problems += [f"{images[k]}: image not listed in {table}" for k in sorted(images.keys() - listed)]


def _brainmri(ctx: Context, class_name: str = "brain") -> None:
    """BrainMRI: ``no/`` + ``yes/`` (also found inside ``brain_tumor_dataset/``)."""
    _no_yes(ctx, class_name, "tumor")


def _br35h(ctx: Context, class_name: str = "brain") -> None:
    """Br35H: ``no/`` + ``yes/`` (the unlabelled ``pred/`` is ignored)."""
    _no_yes(ctx, class_name, "tumor")


def _is_normal(d: Path) -> bool:
    return d.name.lower() in NORMAL_DIRS


def _mask_root(d: Path) -> Path | None:
    return next((p for p in _subdirs(d) if _norm(p.name) in {_norm(m) for m in MASK_DIRS}), None)


def _folder_class(ctx: Context, cls: str, d: Path) -> None:
    test = d / "test" if (d / "test").is_dir() else d
    train = d / "train"
    if test is not d and train.is_dir():
        for sub in _subdirs(train):
            if _is_normal(sub):
                for img in list_images(sub):
                    ctx.add("train", Sample(img, None, cls, "good", 0))
    masks = _mask_root(d)
    skip = {p for p in (masks, d / "train", d / "test") if p is not None}
    folders = [s for s in _subdirs(test) if s not in skip]
    loose = list_images(test)
    if loose:
        ctx.notes.append(f"{test}: {len(loose)} image(s) outside the label folders ignored")
    if not folders:
        ctx.problems.append(f"{test}: no good/ (or normal/) and defect folders in it")
    for sub in folders:
        images = list_images(sub)
        if not images:
            ctx.problems.append(f"{sub}: folder has no images")
        elif _is_normal(sub):
            ctx.add_paired("test", cls, "good", images, None, anomaly=0)
        else:
            mask_dir = masks / sub.name if masks is not None and (masks / sub.name).is_dir() else None
            if mask_dir is None:  # no masks for this defect at all: image-level only, by design
                for img in images:
                    ctx.add("test", Sample(img, None, cls, sub.name, 1))
            else:
                ctx.add_paired("test", cls, sub.name, images, mask_dir)


def _folder(ctx: Context, class_name: str | None = None) -> None:
    """Any folder: ``[<class>/][test/]{good|normal|ok, <defect>...}`` with optional ``ground_truth/<defect>/``."""
    def is_class(d: Path) -> bool:
        return any(_is_normal(s) for s in _subdirs(d)) or (d / "test").is_dir() or _mask_root(d) is not None
    if not ctx.root.is_dir():
        raise TPSLabError(f"{ctx.root}: no such folder")
    if is_class(ctx.root):
        _folder_class(ctx, class_name or ctx.root.name, ctx.root)
        return
    classes = [d for d in _subdirs(ctx.root) if is_class(d)]
    if not classes:
        raise TPSLabError(f"{ctx.root}: no good/ (or normal/) folder here or in its subfolders; expected "
                          "ROOT/[<class>/]{good,<defect>...}[/ground_truth/<defect>]")
    for d in _subdirs(ctx.root):
        if d not in classes:
            ctx.notes.append(f"{d}: ignored (no good/ or normal/ folder in it)")
    for d in classes:
        _folder_class(ctx, d.name, d)


DATASETS: dict[str, Callable[..., None]] = {
    "mvtec": _mvtec, "visa": _visa, "mpdd": _mpdd, "btad": _btad, "sdsaliency900": _sdsaliency900,
    "rsdds": _rsdds, "headct": _headct, "brainmri": _brainmri, "br35h": _br35h, "isic": _isic,
    "kvasir": _kvasir, "tn3k": _tn3k, "msd": _msd, "folder": _folder,
}
ALIASES = {"mvtecad": "mvtec", "btech": "btad", "sdsaliency": "sdsaliency900", "sd900": "sdsaliency900",
           "rsdds113": "rsdds", "isic2016": "isic", "isbi": "isic", "isbi2016": "isic", "kvasirseg": "kvasir",
           "msdlung": "msd", "task06lung": "msd", "custom": "folder"}


def resolve_name(name: str) -> str:
    """Canonical data-set name: case, ``-``, ``_`` and spaces ignored, aliases accepted."""
    key = _norm(name)
    key = ALIASES.get(key, key)
    if key not in DATASETS:
        raise TPSLabError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    return key


# ----------------------------------------------------------------------------- the public steps


@dataclass
class Prepared:
    """A built, checked meta description, not yet written."""

    name: str
    dest: Path
    splits: dict[str, dict[str, list[dict[str, Any]]]]
    notes: list[str]


def build_meta(name: str, root: str | os.PathLike, *, allow_missing_masks: bool = False,
               out: str | os.PathLike | None = None, check: bool = True, **options: Any) -> Prepared:
    """Walk a data set and check it; write nothing but derived files (MSD slices, VisA 0/255 masks).

    Args, Raises: as :func:`prepare_dataset`.
    """
    key = resolve_name(name)
    builder = DATASETS[key]
    allowed = set(inspect.signature(builder).parameters) - {"ctx"}
    options = {k: v for k, v in options.items() if v is not None and v is not False}
    unknown = sorted(k for k in options if k not in allowed)
    if unknown:
        raise TPSLabError(f"option(s) {', '.join(unknown)} do not apply to {key}"
                          f" (it takes: {', '.join(sorted(allowed)) or 'none'})")
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise TPSLabError(f"{root}: no such folder")
    dest = Path(out).expanduser().absolute() if out is not None else root
    ctx = Context(root, dest, allow_missing_masks)
    builder(ctx, **options)

    def rows(path: Callable[[Path | None], str]) -> dict[str, dict[str, list[dict[str, Any]]]]:
        return {split: {cls: [{"img_path": path(s.img), "mask_path": path(s.mask), "cls_name": s.cls,
                               "specie_name": s.specie, "anomaly": s.anomaly} for s in samples]
                        for cls, samples in classes.items()}
                for split, classes in ctx.samples.items()}
    problems = list(ctx.problems)
    if check:  # absolute paths: ``dest`` may not exist yet
        problems += content_problems(Meta(dest, rows(lambda p: "" if p is None else str(p))))
    what = f"prepare {key} {root}"
    raise_problems(problems, what, limit=50)
    splits = rows(lambda p: "" if p is None else Path(os.path.relpath(p, dest)).as_posix())
    if not any(splits.values()):
        raise TPSLabError(f"{root}: no images found for {key}")
    raise_problems(structure_problems(splits, str(dest / "meta.json")), what)
    return Prepared(key, dest, splits, ctx.notes)


def prepare_dataset(name: str, root: str | os.PathLike, *, allow_missing_masks: bool = False,
                    out: str | os.PathLike | None = None, **options: Any) -> Path:
    """Describe a data set in ``<root or out>/meta.json``; return the file's path.

    Args:
        name: a key of ``DATASETS`` or an alias (any case, ``-``/``_`` ignored).
        root: the data set's folder, as distributed (see ``data/README.md``).
        allow_missing_masks: keep anomalous images without a mask (image metrics only)
            and skip masks without an image; both are listed in the log.
        out: write ``meta.json`` there instead (its paths then lead back to ``root``).
        **options: ``check=False`` skips opening every file; data-set options:
            ``classes`` (mvtec, visa, mpdd, btad), ``images``/``masks`` (folders of the
            image+mask data sets), ``class_name``, ``per_volume``/``all_slices``/``window`` (msd).

    Raises:
        TPSLabError: one line per problem, each naming the file; nothing is written then.
    """
    prepared = build_meta(name, root, allow_missing_masks=allow_missing_masks, out=out, **options)
    for note in prepared.notes:
        log.warning(note)
    return write_meta(prepared.splits, prepared.dest)


def summarize(meta_path: str | os.PathLike) -> str:
    """A small table of a ``meta.json``: split, class, normal, anomalous, anomalous with a mask."""
    meta = load_meta(meta_path, check_files=False)
    header = ("split", "class", "normal", "anomalous", "with mask")
    rows = []
    for split, classes in meta.splits.items():
        total = [0, 0, 0]
        for cls, samples in classes.items():
            counts = [sum(s["anomaly"] == 0 for s in samples), sum(s["anomaly"] == 1 for s in samples),
                      sum(s["anomaly"] == 1 and bool(s["mask_path"]) for s in samples)]
            total = [a + b for a, b in zip(total, counts, strict=True)]
            rows.append((split, cls, *map(str, counts)))
        if len(classes) > 1:
            rows.append((split, f"(all {len(classes)})", *map(str, total)))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in [header, *rows]]
    return "\n".join(line.rstrip() for line in lines)


def add_prepare_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``NAME ROOT`` and the options of ``tpslab prepare`` to ``parser``."""
    parser.add_argument("name", metavar="NAME", help=f"data set: {', '.join(DATASETS)} (aliases such as mvtec_ad, "
                        "sd-saliency-900 work too)")
    parser.add_argument("root", metavar="ROOT", help="the data set's folder, as downloaded (see data/README.md)")
    parser.add_argument("--allow-missing-masks", action="store_true",
                        help="keep anomalous images without a mask (image metrics only) and skip stray masks")
    parser.add_argument("--out", help="write meta.json (and derived files) here instead of ROOT")
    parser.add_argument("--no-check", dest="check", action="store_false",
                        help="do not open every image and mask (faster; `tpslab` checks again on load)")
    parser.add_argument("--classes", help="comma-separated subset of classes (mvtec, visa, mpdd, btad)")
    parser.add_argument("--class-name", help="class name for single-class data sets and one-class folders")
    parser.add_argument("--images", help="image folder, relative to ROOT (image+mask data sets)")
    parser.add_argument("--masks", help="mask folder, relative to ROOT (image+mask data sets)")
    parser.add_argument("--msd-per-volume", action="store_true", help="MSD: one class per CT volume (authors' code)")
    parser.add_argument("--msd-all-slices", action="store_true",
                        help="MSD: also keep tumour-free slices, as normal samples (authors' code)")
    parser.add_argument("--msd-window", default=None,
                        help="MSD: CT window LOW,HIGH in HU (default -1000,400) or 'minmax' per slice (authors)")


_OPTION_ARGS = {"classes": "classes", "class_name": "class_name", "images": "images", "masks": "masks",
                "msd_per_volume": "per_volume", "msd_all_slices": "all_slices", "msd_window": "window"}


def run_prepare(args: argparse.Namespace) -> int:
    """What ``tpslab prepare`` runs: prepare, print notes and the summary; return 0.

    Raises:
        TPSLabError: on any problem with the data (nothing is written then).
    """
    options = {opt: getattr(args, arg) for arg, opt in _OPTION_ARGS.items()
               if getattr(args, arg, None) not in (None, False)}
    prepared = build_meta(args.name, args.root, allow_missing_masks=args.allow_missing_masks,
                          out=args.out, check=getattr(args, "check", True), **options)
    path = write_meta(prepared.splits, prepared.dest)
    for note in prepared.notes:
        print(f"note: {note}")
    print(f"wrote {path}")
    print(summarize(path))
    return 0
