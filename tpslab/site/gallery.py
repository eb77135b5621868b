"""Gallery thumbnails: the image, its ground-truth mask and every method's stored map on one shared colour scale.

Rows: the highest-scored normal images, the lowest-scored anomalous ones (by TPS, else the first method)
and a seeded random sample. Each thumbnail is written once as a compressed PNG.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from tpslab.data.meta import META_NAME, load_meta
from tpslab.evaluation import predictions
from tpslab.site.collect import PredRun
from tpslab.utils import TPSLabError

THUMB = 160  # px, side of a thumbnail
# zlib level 6: PIL's optimize=True (level 9 and a filter search) took 40 of the smoke site's 60 s to save 7%


@dataclass
class Row:
    """One gallery row: an image and each method's map (file names relative to the site)."""

    cls: str
    path: str
    label: int
    image: str | None
    mask: str | None = None  # thumbnail of the ground truth (black for a normal image); None: not on disk
    maps: dict[str, str] = field(default_factory=dict)  # method -> thumbnail file
    scores: dict[str, float] = field(default_factory=dict)  # method -> image score


def _colour(m: np.ndarray, lo: float, hi: float) -> Image.Image:
    """A (S, S) map as a coloured thumbnail on the scale [lo, hi] (dark blue -> yellow)."""
    t = np.clip((m.astype(np.float32) - lo) / max(hi - lo, 1e-12), 0, 1)  # (S, S)
    rgb = np.stack([t, t ** 0.5 * 0.9, 0.5 * (1 - t)], -1)  # (S, S, 3)
    img = Image.fromarray((rgb * 255).astype(np.uint8))
    return img.resize((THUMB, THUMB), Image.BILINEAR)


def mask_paths(data_root: Path | None) -> dict[str, str]:
    """Image path -> mask path ("" for none) from the data set's ``meta.json`` (empty when it is not there)."""
    if data_root is None or not (data_root / META_NAME).is_file():
        return {}
    try:
        meta = load_meta(data_root / META_NAME, check_files=False)
    except TPSLabError:
        return {}
    return {s["img_path"]: s["mask_path"] for split in meta.splits.values() for c in split.values() for s in c}


def _mask_thumb(data_root: Path, mask: str) -> Image.Image | None:
    """The ground truth as a white-on-black thumbnail (all black when ``mask`` is ""); None if unreadable."""
    if not mask:
        return Image.new("L", (THUMB, THUMB), 0)
    try:
        m = np.asarray(Image.open(data_root / mask).convert("L")) > 0  # (H, W)
    except OSError:
        return None
    return Image.fromarray((m * 255).astype(np.uint8)).resize((THUMB, THUMB), Image.NEAREST)


def pick(scores: np.ndarray, labels: np.ndarray, n: int, seed: int) -> list[int]:
    """Indices: top-n normal by score, bottom-n anomalous, n random others (seeded)."""
    normal = np.flatnonzero(labels == 0)
    anom = np.flatnonzero(labels == 1)
    chosen = list(normal[np.argsort(-scores[normal])][:n]) + list(anom[np.argsort(scores[anom])][:n])
    rest = np.setdiff1d(np.arange(len(scores)), chosen)
    rng = np.random.default_rng(seed)
    chosen += list(rng.choice(rest, size=min(n, len(rest)), replace=False)) if len(rest) else []
    return [int(i) for i in chosen]


def build_rows(runs: list[PredRun], dataset: str, cls: str, out: Path, data_root: Path | None,
               n: int = 4, seed: int = 0) -> list[Row]:
    """Write the thumbnails of one class (complete runs only) and return its rows."""
    loaded = {}
    for r in runs:
        if r.dataset == dataset and cls in r.classes and predictions.class_file(r.folder, cls).is_file():
            try:
                loaded[f"{r.entry}/{r.tag}"] = predictions.load_class(r.folder, cls)
            except Exception:  # noqa: BLE001 - an unreadable file is left out of the gallery
                continue
    if not loaded:
        return []
    by = next((m for m in loaded if m.startswith("tps/")), next(iter(loaded)))  # TPS's scores pick the images
    first = loaded[by]
    idx = pick(first.scores, first.labels, n, seed)
    lo = min(float(np.min(c.maps)) for c in loaded.values())
    hi = max(float(np.max(c.maps)) for c in loaded.values())
    out.mkdir(parents=True, exist_ok=True)
    safe = predictions.class_file(Path(), cls).stem
    masks = mask_paths(data_root)
    rows = []
    for i in idx:
        row = Row(cls, first.paths[i], int(first.labels[i]), None)
        if data_root is not None and (data_root / first.paths[i]).is_file():
            name = f"{dataset}_{safe}_{i}_img.png"
            if not (out / name).exists():
                Image.open(data_root / first.paths[i]).convert("RGB").resize((THUMB, THUMB)).save(
                    out / name, compress_level=6)
            row.image = name
        if data_root is not None and first.paths[i] in masks:
            name = f"{dataset}_{safe}_{i}_mask.png"
            thumb = None if (out / name).exists() else _mask_thumb(data_root, masks[first.paths[i]])
            if thumb is not None:
                thumb.save(out / name, compress_level=6)
            row.mask = name if (out / name).exists() else None
        for k, (method, c) in enumerate(loaded.items()):
            if i >= len(c.scores) or c.paths[i] != first.paths[i]:
                continue
            name = f"{dataset}_{safe}_{i}_m{k}.png"
            if not (out / name).exists():
                _colour(c.maps[i], lo, hi).save(out / name, compress_level=6)
            row.maps[method] = name
            row.scores[method] = float(c.scores[i])
        rows.append(row)
    return rows
