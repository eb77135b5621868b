"""``tpslab predict``: score image files and write anomaly-map overlays."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from tpslab.data.images import IMAGE_SUFFIXES, load_image
from tpslab.evaluate import smooth_maps
from tpslab.methods.base import Detector
from tpslab.utils import TPSLabError, atomic_path, atomic_write_text
from tpslab.viz import overlay


def collect_images(inputs: list[str | Path]) -> list[Path]:
    """Image files named directly or found (recursively) in folders, sorted; error if none."""
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found += sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.is_file():
            found.append(item)
        else:
            raise TPSLabError(f"{item}: no such file or folder")
    if not found:
        raise TPSLabError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, inputs))}")
    return found


@torch.no_grad()
def predict_paths(model: Detector, inputs: list[str | Path], out: str | Path, sigma: float | None = None,
                  progress: bool = True, class_name: str = "object") -> Path:
    """Write ``out/scores.csv`` (path, image score, max of map) and ``out/<stem>_overlay.png``.

    The overlay shows the smoothed map over the image at the model's input size; all
    overlays share one colour scale so they can be compared.

    Args:
        model: any non-transductive method (MuSc needs a whole class: use ``tpslab evaluate``).
        inputs: image files or folders.
        out: the output folder.
        sigma: smoothing in px; None: the method's reference protocol.
        progress: show a progress bar.
        class_name: the object's name, for the methods whose prompts name it (CLIP, WinCLIP).
    """
    if model.transductive:
        raise TPSLabError(f"{model.method} scores a whole class at once; use `tpslab evaluate` on a prepared data set")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = collect_images(inputs)
    size = model.image_size
    sigma = model.protocol.sigma if sigma is None else sigma
    rows, results = [], []
    for path in tqdm(paths, desc="predict", disable=not progress):
        img = load_image(path)
        pred = model.predict(model.preprocess(img)[None], [class_name])
        amap = pred.anomaly_maps[0].numpy()
        amap = smooth_maps(amap[None], size, sigma)[0]  # (S, S)
        rgb = np.asarray(img.resize((size, size), Image.BICUBIC))
        results.append((path, rgb, amap))
        rows.append({"image": str(path), "score": round(float(pred.image_scores[0]), 6),
                     "map_max": round(float(amap.max()), 6)})
    lo = min(float(a.min()) for _, _, a in results)
    hi = max(float(a.max()) for _, _, a in results)
    names: set[str] = set()
    for path, rgb, amap in results:
        name = path.stem if path.stem not in names else f"{path.parent.name}_{path.stem}"
        names.add(name)
        with atomic_path(out / f"{name}_overlay.png") as tmp:
            Image.fromarray(overlay(rgb, amap, lo, hi)).save(tmp, format="PNG")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["image", "score", "map_max"])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "scores.csv", buf.getvalue())
    print(f"scored {len(rows)} image(s): {out / 'scores.csv'} and overlays in {out}/")
    return out / "scores.csv"
