"""Checking what a ``meta.json`` points at: readable images, matching binary masks.

:func:`tpslab.data.meta.load_meta` checks the file's shape and that every path exists.
:func:`content_problems` opens the files, and :func:`validate` does both. Every
problem is one line that names the file, for example::

    /data/mvtec/bottle/ground_truth/broken_large/000_mask.png: mask is 512x512 but its image ... is 900x900

Masks are judged as the data loader reads them (:func:`tpslab.data.images.load_mask`:
values in [0, 1], binarised at 0.5):

* binary or binarisable: at most ``MAX_GREY_FRACTION`` of the pixels may lie strictly
  between 0.2 and 0.8 (JPEG ringing along the edge of a 0/255 mask is fine; a
  greyscale picture or a soft probability map is not);
* an anomalous sample's mask must mark at least one pixel (>= 0.5), a normal sample's
  mask must mark none. A mask of small integer labels (0, 1, 2, ...) saved as 8-bit
  looks black and fails here, with a hint.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from tpslab.data.images import load_mask
from tpslab.data.meta import Meta, load_meta, meta_file, raise_problems
from tpslab.utils import TPSLabError

GREY_BAND = (0.2, 0.8)
MAX_GREY_FRACTION = 0.05


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image file, decoding it whole (a truncated file fails here, not in training).

    Raises:
        TPSLabError: missing or unreadable file, or one whose pixel data is cut short.
    """
    try:
        with Image.open(path) as img:
            img.load()
            return img.size
    except FileNotFoundError as err:
        raise TPSLabError(f"{path}: file not found") from err
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        detail = err.__class__.__name__
        if str(err) and not isinstance(err, UnidentifiedImageError):  # e.g. "image file is truncated"
            detail += f": {str(err).splitlines()[0]}"
        raise TPSLabError(f"{path}: cannot read image ({detail})") from err


def mask_problem(mask: np.ndarray, anomaly: int | None = None) -> str | None:
    """What is wrong with a loaded mask (``load_mask`` output), or None.

    Args:
        mask: (H, W) float values in [0, 1].
        anomaly: the sample's label; ``None`` skips the label agreement check.
    """
    lo, hi = GREY_BAND
    grey = float(((mask > lo) & (mask < hi)).mean()) if mask.size else 0.0
    if grey > MAX_GREY_FRACTION:
        return (f"mask is not binary: {grey:.0%} of its pixels are mid-grey ({lo:g}..{hi:g} of full scale); "
                "save it as 0/255")
    marked = int((mask >= 0.5).sum())
    if anomaly == 1 and marked == 0:
        return "mask of an anomalous sample marks no pixel"
    if anomaly == 0 and marked > 0:
        return f"mask of a normal sample marks {marked} pixel(s)"
    return None


def _sample_problems(meta: Meta, s: dict[str, Any], where: str) -> list[str]:
    img = meta.path(s["img_path"])
    try:
        width, height = image_size(img)
    except TPSLabError as err:
        return [f"{err} ({where})"]
    if not s["mask_path"]:
        return []
    mask_path = meta.path(s["mask_path"])
    try:
        mask = load_mask(mask_path)
    except TPSLabError as err:
        return [f"{err} ({where})"]
    if mask.shape != (height, width):
        return [f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image {img} is {width}x{height} "
                f"({where})"]
    problem = mask_problem(mask, s["anomaly"])
    return [f"{mask_path}: {problem} ({where})"] if problem else []


def content_problems(meta: Meta, needs_both_labels: bool = False, needs_masks: bool = False,
                     label_splits: tuple[str, ...] = ("test",)) -> list[str]:
    """Decode every image and mask of ``meta`` fully (in threads); list what is wrong, in file order.

    Args:
        meta: a loaded meta file (paths assumed to exist: see ``load_meta``).
        needs_both_labels: every class of ``label_splits`` must have normal and
            anomalous samples (image AUROC / AP need both).
        needs_masks: every anomalous sample of ``label_splits`` must have a mask
            (pixel metrics, segmentation losses).
        label_splits: the splits the two checks above apply to. Only ``test`` by
            default: zero-shot evaluation and TPS training both use the test split,
            and a training split of normal images only is normal.

    Returns:
        one line per problem, naming the file (or the meta file for a class).
    """
    problems = []
    where_meta = meta.root / "meta.json"
    jobs = [(s, f"{split}/{cls}") for split, classes in meta.splits.items() for cls, samples in classes.items()
            for s in samples]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # PIL decodes without the GIL
        for found in pool.map(lambda job: _sample_problems(meta, *job), jobs):
            problems += found
    for split, classes in meta.splits.items():
        for cls, samples in classes.items():
            if split not in label_splits:
                continue
            labels = {s["anomaly"] for s in samples}
            if needs_both_labels and labels != {0, 1}:
                missing = "normal" if 0 not in labels else "anomalous"
                problems.append(f"{where_meta}: {split}/{cls} has no {missing} sample (image AUROC/AP need both)")
            if needs_masks:
                problems += [f"{meta.path(s['img_path'])}: anomalous sample has no mask (pixel metrics need one) "
                             f"({split}/{cls})" for s in samples if s["anomaly"] == 1 and not s["mask_path"]]
    return problems


def validate(meta_path: str | os.PathLike, deep: bool = True, **kw: Any) -> Meta:
    """Load a ``meta.json`` and check it; raise one error listing every problem.

    Args:
        meta_path: the meta file or its folder.
        deep: also open every image and mask (:func:`content_problems`).
        **kw: ``needs_both_labels``, ``needs_masks``, ``label_splits``.

    Raises:
        MetaError: one line per problem, each naming the file.
    """
    meta = load_meta(meta_path, check_files=True)
    if deep:
        raise_problems(content_problems(meta, **kw), str(meta_file(meta_path)))
    return meta
