"""The ``folder`` layout: any folder of ``good/`` and defect folders, with optional masks.

Accepted, per class (the root itself or each of its subfolders)::

    [<class>/][test/]good/ (or normal/, ok/)   normal images
    [<class>/][test/]<defect>/                 anomalous images, one folder per defect type
    [<class>/]train/good/                      normal training images (optional)
    [<class>/]ground_truth/<defect>/           masks of that defect's images, paired by stem (optional), or
    [<class>/]ground_truth/*.png               all masks in one flat folder, paired by stem with every defect's
                                               images (also ``masks/``, ``gt/``, ``groundtruth/``)

A defect without masks is kept for image-level metrics. Every folder that is not used is
named: a note for folders without a meaning here, an error (as for MVTec) for masks whose
defect folder does not exist.
"""

from __future__ import annotations

from pathlib import Path

from tpslab.data.pairing import MASK_DIRS, NORMAL_DIRS, Context, Sample, list_images, norm_name, pair_by_stem, subdirs
from tpslab.utils import TPSLabError

LAYOUT = "ROOT/[<class>/][test/]{good,<defect>...} with masks in [<class>/]ground_truth/<defect>/ or ground_truth/"


def is_normal(d: Path) -> bool:
    """A folder of normal images (``good``, ``normal``, ``ok``; any case)."""
    return d.name.lower() in NORMAL_DIRS


def mask_root(d: Path) -> Path | None:
    """The masks folder of a class (``ground_truth``, ``gt``, ``masks``...), or None."""
    return next((p for p in subdirs(d) if norm_name(p.name) in {norm_name(m) for m in MASK_DIRS}), None)


def _train_images(ctx: Context, cls: str, train: Path) -> None:
    for sub in subdirs(train):
        if is_normal(sub):
            for img in list_images(sub):
                ctx.add("train", Sample(img, None, cls, "good", 0))
        else:
            ctx.notes.append(f"{sub}: ignored (a train/ folder holds normal images only, in good/)")


def _flat_masks(ctx: Context, cls: str, defects: dict[Path, list[Path]], masks: list[Path]) -> None:
    """Pair every defect's images with one flat folder of masks, by stem."""
    pairing = pair_by_stem([img for images in defects.values() for img in images], masks)
    ctx.problems += pairing.problems
    for mask in pairing.orphans:
        ctx.stray_masks(f"{mask}: mask without its image in any defect folder of {cls!r}")
    for sub, images in defects.items():
        for img in images:
            if img not in pairing.pairs:
                continue  # an ambiguity, already a problem
            mask = pairing.pairs[img]
            if mask is None:
                ctx.missing_mask(f"{img}: no mask in {masks[0].parent} (looked for the same stem, or with _mask/_gt)")
            ctx.add("test", Sample(img, mask, cls, sub.name, 1))


def folder_class(ctx: Context, cls: str, d: Path) -> None:
    """Collect the samples of class ``cls`` in folder ``d``."""
    test = d / "test" if (d / "test").is_dir() else d
    if test is not d and (d / "train").is_dir():
        _train_images(ctx, cls, d / "train")
    masks = mask_root(d)
    skip = {p for p in (masks, d / "train", d / "test") if p is not None}
    if test is not d:
        ctx.notes += [f"{sub}: ignored (expected {LAYOUT})" for sub in subdirs(d) if sub not in skip]
    folders = [s for s in subdirs(test) if s not in skip]
    loose = list_images(test)
    if loose:
        ctx.notes.append(f"{test}: {len(loose)} image(s) outside the label folders ignored")
    if not folders:
        ctx.problems.append(f"{test}: no good/ (or normal/) and defect folders in it")
    defects: dict[Path, list[Path]] = {}
    for sub in folders:
        images = list_images(sub)
        if not images:
            ctx.problems.append(f"{sub}: folder has no images")
        elif is_normal(sub):
            ctx.add_paired("test", cls, "good", images, None, anomaly=0)
        else:
            defects[sub] = images
    mask_dirs = {sub.name: sub for sub in subdirs(masks)} if masks is not None else {}
    flat = list_images(masks) if masks is not None else []
    unpaired = {}
    for sub, images in defects.items():
        if sub.name in mask_dirs:
            ctx.add_paired("test", cls, sub.name, images, mask_dirs[sub.name])
        else:
            unpaired[sub] = images
    if flat:
        _flat_masks(ctx, cls, unpaired, flat)
    else:  # no masks for these defects at all: image-level only, by design
        for sub, images in unpaired.items():
            ctx.notes.append(f"{sub}: no masks for this defect ({masks or d / 'ground_truth'}/{sub.name}/ not found);"
                             " kept for image-level metrics")
            for img in images:
                ctx.add("test", Sample(img, None, cls, sub.name, 1))
    names = {sub.name for sub in folders}
    for name, gt in mask_dirs.items():
        if name not in names:
            if list_images(gt):
                ctx.stray_masks(f"{gt}: masks for a defect without a {test / name} folder (expected {LAYOUT})")
            else:
                ctx.notes.append(f"{gt}: ignored (no masks in it, and no {test / name} folder)")


def folder(ctx: Context, class_name: str | None = None) -> None:
    """Any folder: ``[<class>/][test/]{good|normal|ok, <defect>...}`` with optional ``ground_truth/<defect>/``."""
    def is_class(d: Path) -> bool:
        return any(is_normal(s) for s in subdirs(d)) or (d / "test").is_dir() or mask_root(d) is not None
    if not ctx.root.is_dir():
        raise TPSLabError(f"{ctx.root}: no such folder")
    if is_class(ctx.root):
        folder_class(ctx, class_name or ctx.root.name, ctx.root)
        _check_classes(ctx)
        return
    classes = [d for d in subdirs(ctx.root) if is_class(d)]
    if not classes:
        raise TPSLabError(f"{ctx.root}: no good/ (or normal/) folder here or in its subfolders; expected "
                          "ROOT/[<class>/]{good,<defect>...}[/ground_truth/<defect>]")
    for d in subdirs(ctx.root):
        if d not in classes:
            ctx.notes.append(f"{d}: ignored (no good/ or normal/ folder in it)")
    for d in classes:
        folder_class(ctx, d.name, d)
    _check_classes(ctx)


def _check_classes(ctx: Context) -> None:
    """Drop test classes without normal images (with a note); note those without defect images."""
    test = ctx.samples["test"]
    for cls in list(test):
        if not any(s.anomaly == 0 for s in test[cls]):
            del test[cls]
            ctx.notes.append(f"{cls}: ignored (no normal images: no good/, normal/ or ok/ folder with images)")
        elif not any(s.anomaly for s in test[cls]):
            ctx.notes.append(f"{cls}: no defect images, only normal ones: its image and pixel metrics will be nan "
                             "(kept; add a <defect>/ folder to score it)")
