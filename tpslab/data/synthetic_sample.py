"""One synthetic sample: the source images scikit-image ships, random crops, painted-in defects.

:mod:`tpslab.data.synthetic` builds whole data sets from these. Every class is one source
photograph or texture from ``skimage.data`` (only those inside the wheel, never the ones
fetched with ``pooch``); each sample has its own generator, ``sample_rng(seed, cls_name,
index)``, so one sample can be rebuilt alone with :func:`render_sample`.
"""

from __future__ import annotations

import colorsys
import zlib
from functools import cache

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from tpslab.utils import TPSLabError

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
                  grey: bool = True,
                  foreign_classes: tuple[str, ...] = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One sample: ``(clean, image, mask)``, uint8 (S, S, 3), (S, S, 3) and (S, S) in {0, 255}.

    ``defect=None`` makes a normal sample (``image`` is ``clean``, the mask is all zero).
    """
    clean = random_crop(cls_name, rng, image_size, grey)
    if defect is None:
        return clean, clean.copy(), np.zeros((image_size, image_size), np.uint8)
    image, mask = apply_defect(clean, defect, rng, cls_name, foreign_classes, grey)
    return clean, image, mask.astype(np.uint8) * 255
