"""``tpslab predict``: score image files; write scores, the maps, and an overlay per image.

Outputs in the ``--out`` folder:

* ``scores.csv``, one row per image: ``image`` (its path), ``score`` (the image score, a
  probability in [0, 1]: threshold it to call an image anomalous), ``map_max`` (the
  highest value of its smoothed anomaly map, in [0, number of layers] for TPS: the map sums
  one probability per layer; threshold the map to segment), ``overlay`` (the PNG's file
  name) and ``map`` (its key in ``maps.npz``).
* ``<name>_overlay.png``: the image at its original size beside the map laid over it, with
  the score and the colour scale; all overlays of a run share one scale, so they compare.
* ``maps.npz``: each image's smoothed map (float32, the model's input size S x S, as scored).
* ``skipped.csv`` (only when some image could not be read): ``image``, ``error``; the run
  scores the others and names them in its summary (``strict=True`` stops at the first).
* ``run.json`` (written by ``tpslab predict``): the method, weights, backbone and settings.

A folder that holds a previous run's ``scores.csv`` or ``maps.npz`` is refused unless
``force``; then the previous run's overlays are removed too, so no two colour scales mix.

``<name>`` is the image's path below the input folder made flat (``good/001.png`` ->
``good__001``), so images of the same name in different folders never collide.
"""

from __future__ import annotations

import csv
import io
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from tpslab.configs import EvalConfig
from tpslab.data.images import IMAGE_SUFFIXES, load_image
from tpslab.data.meta import load_meta
from tpslab.data.pairing import MASK_DIRS, norm_name
from tpslab.evaluation.evaluate import smooth_maps
from tpslab.methods.base import Detector
from tpslab.store import RUN_JSON, refuse_existing
from tpslab.utils import TPSLabError, atomic_path, atomic_write_text
from tpslab.viz import prediction_panel

log = logging.getLogger(__name__)
COLUMNS = ["image", "score", "map_max", "overlay", "map"]
OUTPUTS = ("scores.csv", "maps.npz")  # a folder holding either holds a previous run
MASK_FOLDERS = {norm_name(m) for m in MASK_DIRS}  # skipped when scanning a folder, as `tpslab prepare` reads them


@dataclass(frozen=True)
class Found:
    """An image to score and the unique name of its outputs."""

    path: Path
    name: str


def _flat_name(rel: Path) -> str:
    return "__".join([*rel.parent.parts, rel.stem]) or rel.stem


def _from_meta(path: Path, split: str) -> list[tuple[Path, str]]:
    meta = load_meta(path)
    if not meta.splits.get(split):
        raise TPSLabError(f"{path}: split {split!r} has no images; choose another --split")
    return [(meta.path(s["img_path"]), _flat_name(Path(s["img_path"]))) for s in meta.samples(split)]


def collect_images(inputs: Sequence[str | Path], split: str = "test") -> list[Found]:
    """The images to score: files, folders (recursively, skipping mask folders) or a ``meta.json``'s split.

    Args:
        inputs: image files, folders, or ``meta.json`` files of prepared data sets.
        split: the split taken from a ``meta.json``.

    Returns:
        Every image with a unique output name, in order.

    Raises:
        TPSLabError: an input that does not exist, or no image at all.
    """
    found: list[tuple[Path, str]] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files = sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                           and not any(norm_name(part) in MASK_FOLDERS for part in p.relative_to(item).parts[:-1]))
            found += [(p, _flat_name(p.relative_to(item))) for p in files]
        elif item.is_file() and item.suffix.lower() == ".json":
            found += _from_meta(item, split)
        elif item.is_file():
            found.append((item, item.stem))
        else:
            raise TPSLabError(f"{item}: no such file or folder")
    if not found:
        raise TPSLabError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, inputs))}")
    seen: dict[str, int] = {}
    unique = []
    for path, name in found:
        seen[name] = seen.get(name, 0) + 1
        unique.append(Found(path, name if seen[name] == 1 else f"{name}_{seen[name]}"))
    return unique


def _clear_previous(out: Path, force: bool) -> None:
    """Refuse a folder holding a previous run (unless ``force``); with ``force``, remove that run's files."""
    refuse_existing([out / name for name in OUTPUTS], force, "a previous predict run")
    old = out / "scores.csv"
    if old.is_file():
        with open(old, newline="") as fh:
            names = [row.get("overlay") or "" for row in csv.DictReader(fh)]
        for name in names:
            if name.endswith("_overlay.png") and "/" not in name and (out / name).is_file():
                (out / name).unlink()
    for name in (*OUTPUTS, "skipped.csv", RUN_JSON):
        if (out / name).is_file():
            (out / name).unlink()


@torch.no_grad()
def predict_paths(model: Detector, inputs: Sequence[str | Path | Found], out: str | Path, sigma: float | None = None,
                  progress: bool = True, class_name: str = "object", batch_size: int = EvalConfig.batch_size,
                  device: str | torch.device = "cpu", split: str = "test", strict: bool = False,
                  force: bool = False) -> Path:
    """Score images; write ``scores.csv``, ``maps.npz`` and one ``<name>_overlay.png`` each (see the module).

    Args:
        model: any non-transductive method (MuSc needs a whole class: use ``tpslab evaluate``).
        inputs: image files, folders or ``meta.json`` files, or what :func:`collect_images` found.
        out: the output folder.
        sigma: smoothing in px; None: the method's reference protocol.
        progress: show a progress bar.
        class_name: the object's name, for the methods whose prompts name it (CLIP, WinCLIP).
        batch_size: images per forward pass.
        device: where the model runs.
        split: the split taken from a ``meta.json`` input.
        strict: stop at the first image that cannot be read (default: skip it, list it in ``skipped.csv``).
        force: replace a previous run in ``out``.

    Returns:
        The path of ``scores.csv``.

    Raises:
        TPSLabError: a previous run in ``out`` (without ``force``), an unreadable image with ``strict``, or no
            readable image at all.
    """
    if model.transductive:
        raise TPSLabError(f"{model.method} scores a whole class at once; use `tpslab evaluate` on a prepared data set")
    found = list(inputs) if inputs and all(isinstance(i, Found) for i in inputs) else collect_images(inputs, split)
    out = Path(out)
    _clear_previous(out, force)
    size = model.image_size
    sigma = model.protocol.sigma if sigma is None else sigma
    model.eval().to(device)
    scores, maps, kept, skipped = [], [], [], []
    bar = tqdm(total=len(found), desc="predict", disable=not progress)
    for start in range(0, len(found), batch_size):
        chunk, tensors = [], []
        for f in found[start:start + batch_size]:
            try:
                tensors.append(model.preprocess(load_image(f.path)))  # (3, S, S)
                chunk.append(f)
            except (TPSLabError, OSError, ValueError) as err:
                if strict:
                    raise TPSLabError(f"{f.path}: cannot read image ({err}); without --strict it is skipped") from err
                skipped.append({"image": str(f.path), "error": str(err).splitlines()[0] if str(err) else repr(err)})
                if len(found) > 1:  # on its own line above the progress bar, not on it
                    tqdm.write(f"tpslab: warning: skipped {f.path}: cannot read it", file=sys.stderr)
        bar.update(len(found[start:start + batch_size]))
        if not chunk:
            continue
        pred = model.predict(torch.stack(tensors).to(device), [class_name] * len(chunk))
        maps += list(smooth_maps(pred.anomaly_maps.float().cpu().numpy(), size, sigma).astype(np.float32))  # (S, S)
        scores += pred.image_scores.float().cpu().tolist()
        kept += chunk
    bar.close()
    if not kept:  # nothing to keep: one error, nothing written
        others = f" (nor any of the other {len(found) - 1} image(s))" if len(found) > 1 else ""
        raise TPSLabError(f"{skipped[0]['image']}: cannot read image ({skipped[0]['error']}){others}")
    out.mkdir(parents=True, exist_ok=True)
    if skipped:
        _write_csv(out / "skipped.csv", ["image", "error"], skipped)
    lo, hi = min(float(m.min()) for m in maps), max(float(m.max()) for m in maps)
    rows = []
    for f, score, amap in zip(kept, scores, maps, strict=True):
        img = load_image(f.path)
        full = np.asarray(Image.fromarray(amap).resize(img.size, Image.BILINEAR))  # (H, W)
        with atomic_path(out / f"{f.name}_overlay.png") as tmp:
            Image.fromarray(prediction_panel(np.asarray(img), full, lo, hi, score)).save(tmp, format="PNG")
        rows.append({"image": str(f.path), "score": round(score, 6), "map_max": round(float(amap.max()), 6),
                     "overlay": f"{f.name}_overlay.png", "map": f.name})
    with atomic_path(out / "maps.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **{f.name: m for f, m in zip(kept, maps, strict=True)})
    _write_csv(out / "scores.csv", COLUMNS, rows)
    log.info("scored %d image(s): %s, overlays and maps.npz in %s/", len(rows), out / "scores.csv", out)
    if skipped:
        log.info("skipped %d image(s) that could not be read, listed in %s: %s%s", len(skipped), out / "skipped.csv",
                 ", ".join(s["image"] for s in skipped[:3]), ", ..." if len(skipped) > 3 else "")
    return out / "scores.csv"


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, object]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())
