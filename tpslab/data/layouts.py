"""The layout builders: one per data set as distributed (the paper's 13, and any ``folder``).

Each builder walks a data set's folders (or its csv) into a :class:`tpslab.data.pairing.Context`;
:func:`tpslab.data.prepare.build_meta` calls the one :data:`DATASETS` names. The layouts,
licences and commands are in ``data/README.md``.
"""

from __future__ import annotations

import csv
import inspect
from collections.abc import Callable
from pathlib import Path

from tpslab.data.folder_layout import folder as _folder
from tpslab.data.pairing import (
    Context,
    Sample,
    child,
    class_list,
    layout_hint,
    list_images,
    mask_key,
    norm_name,
    subdirs,
)
from tpslab.data.volumes import HU_WINDOW, convert_msd, parse_window
from tpslab.utils import TPSLabError

MVTEC_CLASSES = ["bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill",
                 "screw", "tile", "toothbrush", "transistor", "wood", "zipper"]
VISA_CLASSES = ["candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2", "pcb1", "pcb2",
                "pcb3", "pcb4", "pipe_fryum"]
MPDD_CLASSES = ["bracket_black", "bracket_brown", "bracket_white", "connector", "metal_plate", "tubes"]
BTAD_CLASSES = ["01", "02", "03"]


def _walk_mvtec_like(ctx: Context, classes: list[str], normal: str, layout: str) -> None:
    """``<class>/train/<normal>``, ``<class>/test/<defect>``, ``<class>/ground_truth/<defect>``."""
    found = [c for c in classes if (ctx.root / c / "test").is_dir()]
    if not found:
        hint = layout_hint(ctx.root, lambda d: (d / classes[0] / "test").is_dir())
        raise TPSLabError(f"{ctx.root}: none of the classes {', '.join(classes)} has a test/ folder; "
                          f"expected {layout}{hint}")
    for cls in classes:
        cls_dir = ctx.root / cls
        if cls not in found:
            ctx.problems.append(f"{cls_dir / 'test'}: folder not found (class {cls!r}; expected {layout})")
            continue
        for img in list_images(cls_dir / "train" / normal):
            ctx.add("train", Sample(img, None, cls, normal, 0))
        defects = subdirs(cls_dir / "test")
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
        for gt in subdirs(cls_dir / "ground_truth") if (cls_dir / "ground_truth").is_dir() else []:
            if gt.name not in names and list_images(gt):
                ctx.stray_masks(f"{gt}: masks for a defect without a test/{gt.name} folder")


def _mvtec(ctx: Context, classes: str | list[str] | None = None) -> None:
    """MVTec AD: 15 classes, normal folder ``good``, masks ``<stem>_mask.png``."""
    _walk_mvtec_like(ctx, class_list(classes, MVTEC_CLASSES), "good",
                     "MVTec AD layout <class>/{train/good,test/<defect>,ground_truth/<defect>}")


def _mpdd(ctx: Context, classes: str | list[str] | None = None) -> None:
    """MPDD: the MVTec AD layout with 6 classes."""
    _walk_mvtec_like(ctx, class_list(classes, MPDD_CLASSES), "good",
                     "MPDD layout <class>/{train/good,test/<defect>,ground_truth/<defect>}")


def _btad(ctx: Context, classes: str | list[str] | None = None) -> None:
    """BTAD (BTech_Dataset_transformed): classes 01 02 03, normal ``ok``, defect ``ko``; suffixes differ."""
    _walk_mvtec_like(ctx, class_list(classes, BTAD_CLASSES), "ok",
                     "BTAD layout <class>/{train/ok,test/{ok,ko},ground_truth/ko}")


def _visa(ctx: Context, classes: str | list[str] | None = None) -> None:
    """VisA: ``split_csv/1cls.csv`` (object, split, label, image, mask); paths relative to the root.

    Without the csv, the MVTec-like folders made by VisA's own ``prepare_data.py``
    (``<class>/{train/good,test/{good,bad},ground_truth/bad}``) are accepted.
    """
    wanted = class_list(classes, VISA_CLASSES)
    table = ctx.root / "split_csv" / "1cls.csv"
    if not table.is_file():
        if any((ctx.root / c / "test").is_dir() for c in wanted):
            _walk_mvtec_like(ctx, wanted, "good",
                             "VisA 1cls layout <class>/{train/good,test/{good,bad},ground_truth/bad}")
            return
        hint = layout_hint(ctx.root, lambda d: (d / "split_csv" / "1cls.csv").is_file())
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
        elif mask_key(mask.stem) != img.stem:
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
        hint = "" if Path(first).is_absolute() else layout_hint(ctx.root, lambda d, f=first: child(d, f) is not None)
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
            hint = layout_hint(ctx.root, lambda d: (d / "imagesTr").is_dir())
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
    for level in ([ctx.root], subdirs(ctx.root), [s for d in subdirs(ctx.root) for s in subdirs(d)]):
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
    for d in subdirs(top):
        if norm_name(d.name) not in ("no", "yes"):
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
    table = next((p for p in [ctx.root / "labels.csv", *(d / "labels.csv" for d in subdirs(ctx.root))]
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


DATASETS: dict[str, Callable[..., None]] = {
    "mvtec": _mvtec, "visa": _visa, "mpdd": _mpdd, "btad": _btad, "sdsaliency900": _sdsaliency900,
    "rsdds": _rsdds, "headct": _headct, "brainmri": _brainmri, "br35h": _br35h, "isic": _isic,
    "kvasir": _kvasir, "tn3k": _tn3k, "msd": _msd, "folder": _folder,
}
ALIASES = {"mvtecad": "mvtec", "btech": "btad", "sdsaliency": "sdsaliency900", "sd900": "sdsaliency900",
           "rsdds113": "rsdds", "isic2016": "isic", "isbi": "isic", "isbi2016": "isic", "kvasirseg": "kvasir",
           "msdlung": "msd", "task06lung": "msd", "custom": "folder"}


def builder_options(key: str) -> set[str]:
    """The options (keyword arguments) the builder of data set ``key`` takes, e.g. ``{"classes"}``."""
    return set(inspect.signature(DATASETS[key]).parameters) - {"ctx"}


def resolve_name(name: str) -> str:
    """Canonical data-set name: case, ``-``, ``_`` and spaces ignored, aliases accepted."""
    key = norm_name(name)
    key = ALIASES.get(key, key)
    if key not in DATASETS:
        raise TPSLabError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    return key
