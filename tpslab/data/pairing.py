"""Pairing images with masks by file stem, and collecting a data set's samples (:class:`Context`).

Used by the layout builders (:mod:`tpslab.data.layouts`): every image is paired with its
mask **by file stem** (never by sorting two listings), and every problem is collected, one
line each, naming the file, before anything is written.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tpslab.data.images import IMAGE_SUFFIXES, load_mask
from tpslab.utils import TPSLabError

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
    return sorted(files, key=natural_key)


def natural_key(path: Path) -> list:
    """Sort key for natural order of file names ("2.png" before "10.png")."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def mask_key(stem: str) -> str:
    """A mask's stem without one of ``MASK_SUFFIXES`` ("000_mask" -> "000")."""
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


def _where(paths: list[Path]) -> Path:
    """The folder that holds all of ``paths``."""
    return Path(os.path.commonpath([p.parent for p in paths]))


def _names(paths: list[Path]) -> str:
    """File names if they share one folder, else their paths below the common folder (``a/000.png, b/000.png``)."""
    if len({p.parent for p in paths}) == 1:
        return ", ".join(p.name for p in paths)
    common = _where(paths)
    return ", ".join(str(p.relative_to(common)) for p in paths)


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
    problems = [f"{_where(paths)}: {len(paths)} images share the stem {stem!r}: {_names(paths)}"
                for stem, paths in by_stem.items() if len(paths) > 1]
    found: dict[str, list[Path]] = {}
    orphans = []
    for mask in masks:
        key = mask.stem if mask.stem in by_stem else mask_key(mask.stem)
        if key in by_stem:
            found.setdefault(key, []).append(mask)
        else:
            orphans.append(mask)
    pairs: dict[Path, Path | None] = {}
    for img in images:
        candidates = found.get(img.stem, [])
        if len(candidates) > 1:
            problems.append(f"{img}: {len(candidates)} candidate masks: {_names(candidates)}")
        elif len(by_stem[img.stem]) == 1:
            pairs[img] = candidates[0] if candidates else None
    return Pairing(pairs, orphans, problems)


# ----------------------------------------------------------------------------- collecting samples


@dataclass
class Sample:
    """One image found by a builder."""

    img: Path
    mask: Path | None  # None for a normal image (or an anomalous one without a mask)
    cls: str  # class name
    specie: str  # defect type ("good" for normal images)
    anomaly: int  # 0 normal, 1 anomalous


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
        """Record ``sample`` in ``split``."""
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
            split: "train" or "test".
            cls: the class name.
            specie: the defect type (normal images get "good").
            images: the image files.
            mask_dir: the folder of their masks (None: no masks).
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


def norm_name(name: str) -> str:
    """A folder name compared loosely: lower case, letters and digits only."""
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
        matches = [p for p in here.iterdir() if p.is_dir() and norm_name(p.name) == norm_name(part)]
        if len(matches) != 1:
            return None
        here = matches[0]
    return here


def subdirs(folder: Path) -> list[Path]:
    """Visible subfolders, in natural order."""
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=natural_key)


def layout_hint(root: Path, looks_right: Callable[[Path], bool]) -> str:
    """`` (did you mean ROOT/x?)`` when a folder up to two levels down has the expected layout."""
    if not root.is_dir():
        return " (no such folder)"
    for level in (subdirs(root), [s for d in subdirs(root) for s in subdirs(d)]):
        hits = [d for d in level if looks_right(d)]
        if hits:
            return f" (did you mean {hits[0]}?)"
    return ""


def class_list(classes: str | Iterable[str] | None, default: list[str]) -> list[str]:
    """Classes asked for (a list or "a,b"), or ``default``."""
    if classes is None:
        return list(default)
    if isinstance(classes, str):
        classes = [c.strip() for c in classes.split(",")]
    return [c for c in classes if c]
