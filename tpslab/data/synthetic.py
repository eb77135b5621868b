"""A synthetic anomaly data set, made offline from the images scikit-image ships.

No public data set or pretrained weight can be downloaded everywhere this lab
runs, so tests and demos use data made here. Every *class* is one source
photograph or texture from ``skimage.data`` (only those inside the wheel, never
the ones fetched with ``pooch``). Each sample is a random crop of its source;
about half of them get one painted-in defect with an exact pixel mask.

There are two disjoint *domains* (different source images), so that zero-shot
transfer can be tried the way TPS does it: train prompts on one domain
(``"train"``, the auxiliary set, like MVTec AD), test on the other
(``"heldout"``). All samples of a domain go in the ``"test"`` split of its
``meta.json`` (TPS trains on the *test* split of its auxiliary data set);
``"train"`` is left empty.

Layout on disk (the real data sets' form)::

    root/meta.json
    root/synthetic.json                          # the arguments it was made with
    root/<class>/good/000.png
    root/<class>/<defect>/000.png
    root/<class>/ground_truth/<defect>/000_mask.png

Everything is deterministic: the same arguments give byte-identical files,
whatever the global random state. Each sample has its own generator,
``sample_rng(seed, cls_name, index)``, so one sample can be rebuilt alone with
``render_sample`` (which also returns the clean crop under the defect).
"""

from __future__ import annotations

import colorsys
import json
import os
import shutil
import tempfile
import zlib
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from tpslab.data.meta import META_NAME, write_meta
from tpslab.utils import TPSLabError, atomic_write_json

# Source images per domain: every one ships inside the scikit-image wheel (no
# download). The two domains share no image (note skimage.data.cat *is* chelsea).
TRAIN_CLASSES: tuple[str, ...] = (
    "brick", "grass", "gravel", "moon", "page", "cell", "immunohistochemistry", "hubble_deep_field",
)
HELDOUT_CLASSES: tuple[str, ...] = (
    "camera", "coffee", "chelsea", "astronaut", "rocket", "coins", "text", "retina",
)
SOURCE_CLASSES: dict[str, tuple[str, ...]] = {"train": TRAIN_CLASSES, "heldout": HELDOUT_CLASSES}

# "scratch": thin polyline of a saturated colour; "spot": irregular ellipse of a
# saturated colour; "blob": smooth-noise blob filled with another source's
# texture; "patch": rectangle cut from another crop (same or other source),
# rotated/flipped, pasted.
DEFECT_TYPES: tuple[str, ...] = ("scratch", "spot", "blob", "patch")
DEFAULT_DEFECTS: tuple[str, ...] = ("scratch", "spot")

CROP_SCALE = (0.4, 0.9)  # crop side, as a fraction of the source's shorter side
DEFECT_AREA = (0.01, 0.15)  # allowed fraction of the image a defect covers
SYNTHETIC_NAME = "synthetic.json"
GENERATOR_VERSION = 1  # bump when the output of the same arguments changes


# --------------------------------------------------------------------------- sources


@cache
def _source_image(name: str, grey: bool) -> Image.Image:
    """The source as a PIL image ("L" if grey else "RGB"), cached per process."""
    import skimage.data

    known = {c for classes in SOURCE_CLASSES.values() for c in classes}
    if name not in known:
        raise TPSLabError(f"unknown synthetic source image {name!r} (known: {', '.join(sorted(known))})")
    arr = np.asarray(getattr(skimage.data, name)())
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
        arr = np.clip(np.round(arr.astype(np.float64) * (255.0 if arr.max() <= 1.0 else 1.0)), 0, 255).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    img = Image.fromarray(arr).convert("RGB")
    return img.convert("L") if grey else img


def load_source(name: str, grey: bool = True) -> np.ndarray:
    """A class's source image as uint8 ``(H, W, 3)`` (grey replicated to 3 channels)."""
    arr = np.asarray(_source_image(name, bool(grey)))
    return np.repeat(arr[..., None], 3, axis=-1) if arr.ndim == 2 else arr.copy()


# --------------------------------------------------------------------------- one sample


def sample_rng(seed: int, cls_name: str, index: int) -> np.random.Generator:
    """The generator of sample ``index`` of class ``cls_name`` (stable: crc32, not ``hash()``)."""
    return np.random.default_rng([int(seed), zlib.crc32(cls_name.encode()), int(index)])


def random_crop(name: str, rng: np.random.Generator, image_size: int = 64, grey: bool = True) -> np.ndarray:
    """A random square crop of a source, flipped, jittered, resized (bicubic): uint8 (S, S, 3)."""
    src = _source_image(name, bool(grey))
    w, h = src.size
    side = max(1, int(round(min(w, h) * rng.uniform(*CROP_SCALE))))
    x0 = int(rng.integers(0, w - side + 1))
    y0 = int(rng.integers(0, h - side + 1))
    img = src.crop((x0, y0, x0 + side, y0 + side)).resize((image_size, image_size), Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.float32)
    if rng.random() < 0.5:
        arr = arr[:, ::-1]
    contrast, brightness = rng.uniform(0.85, 1.15), rng.uniform(0.9, 1.1)
    mean = float(arr.mean())
    arr = (arr - mean) * contrast + mean * brightness
    arr = np.clip(np.round(arr), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    return np.ascontiguousarray(arr)


def _saturated_colour(rng: np.random.Generator) -> np.ndarray:
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.85, 1.0), rng.uniform(0.8, 1.0))
    return np.array([r, g, b], np.float32) * 255


def _paint(img: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Fill ``mask`` with ``colour``, lightly shaded by the underlying luminance."""
    out = img.copy()
    lum = img[mask].astype(np.float32).mean(axis=-1, keepdims=True) / 255.0
    out[mask] = np.clip(np.round(colour * (0.75 + 0.25 * lum)), 0, 255).astype(np.uint8)
    return out


def _scratch_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    width = max(1, int(round(rng.integers(1, 4) * size / 64)))
    n_points = int(rng.integers(3, 7))
    step = size * rng.uniform(0.08, 0.18)
    point = rng.uniform(0.15 * size, 0.85 * size, 2)
    angle = rng.uniform(0, 2 * np.pi)
    points = [tuple(point)]
    for _ in range(n_points - 1):
        angle += rng.normal(0, 0.5)
        point = point + step * np.array([np.cos(angle), np.sin(angle)])
        points.append(tuple(point))
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).line(points, fill=255, width=width, joint="curve")
    return np.asarray(canvas) > 0


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return yy + 0.5, xx + 0.5


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    noise = ndimage.gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), sigma, mode="wrap")
    return noise / (noise.std() + 1e-8)


def _spot_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    area = rng.uniform(0.015, 0.10) * size * size
    ratio = rng.uniform(0.5, 1.0)
    a = np.sqrt(area / (np.pi * ratio))
    b = a * ratio
    cy, cx = rng.uniform(0.2 * size, 0.8 * size, 2)
    theta = rng.uniform(0, np.pi)
    yy, xx = _grid(size)
    u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
    v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
    dist = (u / a) ** 2 + (v / b) ** 2
    wobble = 0.25 * _smooth_noise(rng, size, max(1.0, a / 2))
    return dist + wobble < 1.0


def _blob_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    frac = rng.uniform(0.03, 0.12)
    cy, cx = rng.uniform(0.2 * size, 0.8 * size, 2)
    radius = np.sqrt(frac * size * size / np.pi)
    yy, xx = _grid(size)
    envelope = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (1.3 * radius) ** 2))
    score = envelope * (1.0 + 0.5 * _smooth_noise(rng, size, max(1.0, size / 16)))
    mask = score >= np.quantile(score, 1.0 - frac)
    labels, n = ndimage.label(mask)
    if n > 1:  # keep the largest piece: one defect
        sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
        mask = labels == (1 + int(np.argmax(sizes)))
    return mask


def _area_ok(mask: np.ndarray) -> bool:
    frac = mask.mean()
    return bool(mask.any()) and DEFECT_AREA[0] <= frac <= DEFECT_AREA[1]


def _mask_with_area(make, rng: np.random.Generator, size: int) -> np.ndarray:
    """Draw masks until one covers a sensible area (the last non-empty one otherwise)."""
    last = None
    for _ in range(50):
        mask = make(rng, size)
        if _area_ok(mask):
            return mask
        if mask.any():
            last = mask
    if last is None:
        raise RuntimeError("could not draw a non-empty defect mask")
    return last


def _foreign_class(rng: np.random.Generator, cls_name: str, others: tuple[str, ...]) -> str:
    candidates = [c for c in others if c != cls_name]
    return candidates[int(rng.integers(len(candidates)))] if candidates else cls_name


def _patch(img: np.ndarray, rng: np.random.Generator, cls_name: str, others: tuple[str, ...],
           grey: bool) -> tuple[np.ndarray, np.ndarray]:
    size = img.shape[0]
    donor_cls = cls_name if rng.random() < 0.5 else _foreign_class(rng, cls_name, others)
    donor = random_crop(donor_cls, rng, size, grey)
    k = int(rng.integers(0, 4))
    flip = rng.random() < 0.5
    if donor_cls == cls_name and k == 0 and not flip:
        k = 2  # a crop of the same source: always turn it, so the patch shows
    ph, pw = (max(2, int(round(size * rng.uniform(0.15, 0.35)))) for _ in range(2))
    sh, sw = (pw, ph) if k % 2 else (ph, pw)  # donor rectangle before rotation
    dy, dx = int(rng.integers(0, size - sh + 1)), int(rng.integers(0, size - sw + 1))
    piece = np.rot90(donor[dy:dy + sh, dx:dx + sw], k)
    if flip:
        piece = piece[:, ::-1]
    y0, x0 = int(rng.integers(0, size - ph + 1)), int(rng.integers(0, size - pw + 1))
    out = img.copy()
    out[y0:y0 + ph, x0:x0 + pw] = piece
    mask = np.zeros((size, size), bool)
    mask[y0:y0 + ph, x0:x0 + pw] = True
    return out, mask


def apply_defect(img: np.ndarray, defect: str, rng: np.random.Generator, cls_name: str = "",
                 foreign_classes: tuple[str, ...] = (), grey: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Put one ``defect`` into ``img`` (uint8 (S, S, 3)); return (new image, bool mask).

    Pixels outside the mask are left exactly as they were. ``foreign_classes``
    are the sources "blob" and "patch" may take texture from (the domain's).
    """
    if defect not in DEFECT_TYPES:
        raise TPSLabError(f"unknown defect {defect!r} (choose from {', '.join(DEFECT_TYPES)})")
    size = img.shape[0]
    if defect == "scratch":
        mask = _mask_with_area(_scratch_mask, rng, size)
        return _paint(img, mask, _saturated_colour(rng)), mask
    if defect == "spot":
        mask = _mask_with_area(_spot_mask, rng, size)
        return _paint(img, mask, _saturated_colour(rng)), mask
    if defect == "blob":
        mask = _mask_with_area(_blob_mask, rng, size)
        texture = random_crop(_foreign_class(rng, cls_name, foreign_classes or (cls_name,)), rng, size, grey)
        out = img.copy()
        out[mask] = texture[mask]
        return out, mask
    return _patch(img, rng, cls_name, foreign_classes or (cls_name,), grey)


def render_sample(cls_name: str, defect: str | None, rng: np.random.Generator, image_size: int = 64,
                  grey: bool = True, foreign_classes: tuple[str, ...] = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One sample: ``(clean, image, mask)``, uint8 (S, S, 3), (S, S, 3) and (S, S) in {0, 255}.

    ``defect=None`` makes a normal sample (``image`` is ``clean``, the mask is all zero).
    """
    clean = random_crop(cls_name, rng, image_size, grey)
    if defect is None:
        return clean, clean.copy(), np.zeros((image_size, image_size), np.uint8)
    image, mask = apply_defect(clean, defect, rng, cls_name, foreign_classes, grey)
    return clean, image, mask.astype(np.uint8) * 255


# --------------------------------------------------------------------------- the data set


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise TPSLabError(f"make_synthetic: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _arguments(domain: str, n_per_class: int, image_size: int, grey: bool, defects: Any,
               anomaly_ratio: float, seed: int) -> dict[str, Any]:
    """Validate the arguments; return them in canonical, JSON-able form."""
    if domain not in SOURCE_CLASSES:
        raise TPSLabError(f"make_synthetic: unknown domain {domain!r} (choose from {', '.join(SOURCE_CLASSES)})")
    n_per_class = _check_int("n_per_class", n_per_class, 2)
    image_size = _check_int("image_size", image_size, 16)
    seed = _check_int("seed", seed, 0)
    defects = (defects,) if isinstance(defects, str) else tuple(defects)
    if not defects:
        raise TPSLabError("make_synthetic: defects is empty (choose from " + ", ".join(DEFECT_TYPES) + ")")
    for d in defects:
        if d not in DEFECT_TYPES:
            raise TPSLabError(f"make_synthetic: unknown defect {d!r} (choose from {', '.join(DEFECT_TYPES)})")
    if len(set(defects)) != len(defects):
        raise TPSLabError(f"make_synthetic: defect listed twice in {list(defects)}")
    try:
        ratio = float(anomaly_ratio)
    except (TypeError, ValueError):
        raise TPSLabError(f"make_synthetic: anomaly_ratio must be a number in (0, 1), got {anomaly_ratio!r}") from None
    if not 0.0 < ratio < 1.0:
        raise TPSLabError(f"make_synthetic: anomaly_ratio must be in (0, 1), got {anomaly_ratio!r}")
    return {
        "version": GENERATOR_VERSION, "domain": domain, "classes": list(SOURCE_CLASSES[domain]),
        "n_per_class": n_per_class, "image_size": image_size, "grey": bool(grey), "defects": list(defects),
        "anomaly_ratio": ratio, "seed": seed,
    }


def _plan(args: dict[str, Any], cls_name: str) -> list[str | None]:
    """Per sample index: None (normal) or its defect type; balanced over the defect types."""
    n = args["n_per_class"]
    n_bad = min(n - 1, max(1, int(round(n * args["anomaly_ratio"]))))
    rng = np.random.default_rng([args["seed"], zlib.crc32(cls_name.encode()), 2**31])
    kinds = [args["defects"][j % len(args["defects"])] for j in range(n_bad)]
    plan: list[str | None] = [None] * (n - n_bad) + kinds
    return [plan[i] for i in rng.permutation(n)]


def _is_cached(root: Path, args: dict[str, Any]) -> bool:
    try:
        return (root / META_NAME).is_file() and json.loads((root / SYNTHETIC_NAME).read_text()) == args
    except (OSError, ValueError):
        return False


def _save_png(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format="PNG", compress_level=3)  # faster and smaller than 6 here


def _generate(out: Path, args: dict[str, Any], progress: bool) -> None:
    from tqdm import tqdm

    classes = tuple(args["classes"])
    size, grey = args["image_size"], args["grey"]
    test: dict[str, list[dict[str, Any]]] = {}
    with tqdm(total=len(classes) * args["n_per_class"], desc=f"synthetic {args['domain']}",
              disable=not progress, unit="img") as bar:
        for cls_name in classes:
            counters: dict[str, int] = {}
            samples = test[cls_name] = []
            for index, defect in enumerate(_plan(args, cls_name)):
                specie = defect or "good"
                number = counters.get(specie, 0)
                counters[specie] = number + 1
                _, image, mask = render_sample(cls_name, defect, sample_rng(args["seed"], cls_name, index),
                                               size, grey, classes)
                img_path = f"{cls_name}/{specie}/{number:03d}.png"
                _save_png(image, out / img_path)
                mask_path = ""
                if defect is not None:
                    mask_path = f"{cls_name}/ground_truth/{specie}/{number:03d}_mask.png"
                    _save_png(mask, out / mask_path)
                samples.append({"img_path": img_path, "mask_path": mask_path, "cls_name": cls_name,
                                "specie_name": specie, "anomaly": int(defect is not None)})
                bar.update(1)
    atomic_write_json(out / SYNTHETIC_NAME, args)
    write_meta({"train": {}, "test": test}, out)


def make_synthetic(root: str | os.PathLike, domain: str = "train", n_per_class: int = 100, image_size: int = 64,
                   grey: bool = True, defects: tuple[str, ...] | list[str] = DEFAULT_DEFECTS,
                   anomaly_ratio: float = 0.5, seed: int = 0, progress: bool = True) -> Path:
    """Make (or reuse) a synthetic anomaly data set of one domain in ``root``.

    Args:
        root: the folder to make; built in a temporary sibling, renamed at the end.
            If it already holds a data set made with the same arguments, it is
            kept as is; one made with other arguments is replaced. A non-empty
            folder that is not a synthetic data set is never touched.
        domain: ``"train"`` or ``"heldout"`` (see ``SOURCE_CLASSES``).
        n_per_class: samples per class (all in the "test" split).
        image_size: side of the square images, in pixels (>= 16).
        grey: convert the sources to grey (saved as 3-channel RGB).
        defects: defect types to use, from ``DEFECT_TYPES``.
        anomaly_ratio: fraction of anomalous samples per class, in (0, 1).
        seed: the seed (>= 0); the output depends on nothing else.
        progress: show a tqdm progress bar.

    Returns:
        The path of ``root/meta.json``.

    Raises:
        TPSLabError: bad arguments, or ``root`` is in the way.
    """
    args = _arguments(domain, n_per_class, image_size, grey, defects, anomaly_ratio, seed)
    root = Path(root)
    if _is_cached(root, args):
        return root / META_NAME
    if root.exists() and not root.is_dir():
        raise TPSLabError(f"{root}: exists and is not a folder")
    if root.is_dir() and any(root.iterdir()) and not (root / SYNTHETIC_NAME).is_file():
        raise TPSLabError(f"{root}: folder is not empty and not a synthetic data set; not overwriting it")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.tmp-"))
    try:
        _generate(tmp, args, progress)
        os.chmod(tmp, 0o777 & ~_umask())
        _swap_in(tmp, root, args)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root / META_NAME


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _swap_in(tmp: Path, root: Path, args: dict[str, Any]) -> None:
    """Move the finished folder ``tmp`` to ``root``, replacing an old data set there."""
    old = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.old-")) if root.exists() else None
    try:
        if old is not None:
            os.replace(root, old / "data")
        os.rename(tmp, root)
    except OSError:
        if _is_cached(root, args):  # another process made the same set meanwhile
            return
        if old is not None and not root.exists():
            os.replace(old / "data", root)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def make_synthetic_pair(root: str | os.PathLike, **kwargs: Any) -> dict[str, Path]:
    """Make ``root/train-domain`` and ``root/heldout-domain``; return their meta paths.

    ``kwargs`` are passed to ``make_synthetic`` (all but ``domain``).
    """
    if "domain" in kwargs:
        raise TPSLabError("make_synthetic_pair: makes both domains; do not pass domain=")
    root = Path(root)
    return {domain: make_synthetic(root / f"{domain}-domain", domain=domain, **kwargs) for domain in SOURCE_CLASSES}
