"""A generated image-caption corpus about defects, for pre-training a small CLIP offline.

Every pair is made from a seed, so the corpus needs no file and no download: the same
``(seed, index)`` always gives the same image and caption. An image is a crop of one *class*
(:data:`CLASSES`: scikit-image's bundled pictures that the smoke profile's two domains do not
use, and procedural textures), either normal or with one defect (:data:`DEFECTS`) at a random
place. Its caption combines the class word, a state word (:data:`NORMAL_WORDS`,
:data:`ANOMALOUS_WORDS`: the ones CLIP-based detectors put in their prompts), for a defect its
kind and sometimes its place, in one of many templates.

>>> corpus = CaptionCorpus(seed=0, image_size=64)
>>> pair = corpus.pair(3)
>>> pair.image.shape, pair.anomalous in (0, 1), pair.caption == corpus.pair(3).caption
((64, 64, 3), True, True)

Each pair also carries its *state-flipped* caption (same class and wording, the other state):
the hard negative that teaches the text tower that the state word matters (as in NegCLIP).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image

from tpslab.data.synthetic_sample import (
    HELDOUT_CLASSES,
    TRAIN_CLASSES,
    _mask_with_area,
    _paint,
    _saturated_colour,
    _scratch_mask,
    _smooth_noise,
    _spot_mask,
)
from tpslab.utils import TPSLabError

PICTURES = {  # scikit-image picture -> class word; none of the smoke profile's domains
    "binary_blobs": "blobs", "checkerboard": "checkerboard", "clock": "clock", "colorwheel": "colour wheel",
    "horse": "horse", "logo": "logo", "microaneurysms": "fundus", "shepp_logan_phantom": "phantom",
}
TEXTURES = ("stripes", "dots", "waves", "noise", "tiles", "wood", "marble", "rings", "mesh", "fabric", "grid",
            "gradient")
CLASSES: tuple[str, ...] = (*PICTURES.values(), *TEXTURES)
DEFECTS: tuple[str, ...] = ("scratch", "crack", "spot", "hole", "stain", "missing piece", "colour blotch")
NORMAL_WORDS = ("flawless", "perfect", "normal", "good", "unblemished", "intact", "clean", "pristine",
                "without defect", "without flaw")
ANOMALOUS_WORDS = ("damaged", "broken", "defective", "anomalous", "flawed", "faulty", "with a flaw",
                   "with a defect", "with damage", "abnormal")
PLACES = ("top left", "top right", "bottom left", "bottom right", "centre")
TEMPLATES = ("a photo of a {state} {cls}.", "a {state} {cls}.", "a close-up photo of a {state} {cls}.",
             "a cropped photo of a {state} {cls}.", "an image of a {state} {cls}.", "a picture of a {state} {cls}.",
             "a bright photo of a {state} {cls}.", "a dark photo of a {state} {cls}.", "this {cls} is {state}.",
             "there is a {state} {cls}.")
assert not set(PICTURES) & (set(TRAIN_CLASSES) | set(HELDOUT_CLASSES))  # the smoke domains stay unseen


@dataclass
class Pair:
    """One image-caption pair."""

    image: np.ndarray  # (S, S, 3) uint8
    caption: str
    flipped: str  # the same caption with the other state: the hard negative
    cls: str  # the class word
    defect: str | None  # None for a normal image
    clean: np.ndarray  # (S, S, 3) the image before its defect (the image itself when normal)

    @property
    def anomalous(self) -> int:
        """1 when the image has a defect."""
        return int(self.defect is not None)


@cache
def _picture(name: str) -> np.ndarray:
    """A bundled scikit-image picture as uint8 RGB (cached per process)."""
    import skimage.data

    arr = np.asarray(getattr(skimage.data, name)())
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
        arr = np.clip(np.round(arr * (255.0 if arr.max() <= 1.0 else 1.0)), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, -1)
    return np.ascontiguousarray(arr[..., :3])


def _texture(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """A procedural texture (uint8 RGB), its colours and scale drawn from ``rng``."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) / size
    f, phase, angle = rng.uniform(3, 9), rng.uniform(0, 2 * np.pi), rng.uniform(0, np.pi)
    u = x * np.cos(angle) + y * np.sin(angle)
    if kind == "stripes":
        v = (np.sin(2 * np.pi * f * u + phase) > 0).astype(float)
    elif kind == "dots":
        v = ((np.sin(2 * np.pi * f * x) * np.sin(2 * np.pi * f * y)) > 0.5).astype(float)
    elif kind == "waves":
        v = 0.5 + 0.5 * np.sin(2 * np.pi * f * u + 2 * np.sin(2 * np.pi * 2 * (x - y)) + phase)
    elif kind == "noise":
        v = _smooth_noise(rng, size, 1.0)
    elif kind == "tiles":
        v = ((np.floor(f * x) + np.floor(f * y)) % 2) * 0.6 + 0.2 + 0.1 * (np.abs(np.sin(np.pi * f * x)) < 0.1)
    elif kind == "wood":
        v = np.mod(f * 2 * np.hypot(x - rng.uniform(-1, 0), y - 0.5) + 0.3 * _smooth_noise(rng, size, 4.0), 1.0)
    elif kind == "marble":
        v = 0.5 + 0.5 * np.sin(2 * np.pi * f * u + 4 * _smooth_noise(rng, size, 6.0))
    elif kind == "rings":
        v = 0.5 + 0.5 * np.sin(2 * np.pi * f * 2 * np.hypot(x - 0.5, y - 0.5) + phase)
    elif kind == "mesh":
        v = ((np.mod(f * 2 * x, 1) < 0.15) | (np.mod(f * 2 * y, 1) < 0.15)).astype(float)
    elif kind == "fabric":
        v = 0.5 + 0.25 * np.sin(2 * np.pi * f * 3 * x) * np.sign(np.sin(2 * np.pi * f * y)) + 0.15 * rng.random(
            (size, size))
    elif kind == "grid":
        v = 1.0 - ((np.mod(f * x, 1) < 0.08) | (np.mod(f * y, 1) < 0.08)) * 0.8
    else:  # gradient
        v = u / max(u.max(), 1e-6)
    v = (v - v.min()) / max(np.ptp(v), 1e-6)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    return np.clip(c0 + (c1 - c0) * v[..., None], 0, 255).astype(np.uint8)


def class_image(cls: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """A normal image of class ``cls`` (a random crop of its picture, or a new texture)."""
    if cls not in CLASSES:
        raise TPSLabError(f"unknown corpus class {cls!r}")
    if cls in TEXTURES:
        return _texture(cls, rng, size)
    pic = _picture(next(k for k, v in PICTURES.items() if v == cls))
    side = int(min(pic.shape[:2]) * rng.uniform(0.5, 1.0))
    y, x = (int(rng.integers(0, n - side + 1)) for n in pic.shape[:2])
    crop = Image.fromarray(pic[y:y + side, x:x + side]).resize((size, size), Image.BILINEAR)
    return np.asarray(crop)


def _disc(rng: np.random.Generator, size: int, lo: float, hi: float) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    r = rng.uniform(lo, hi) * size
    cy, cx = rng.uniform(r, size - r, 2)
    return (y - cy) ** 2 + (x - cx) ** 2 <= r * r


def _crack_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    """A jagged thin line that forks once."""
    mask = np.zeros((size, size), bool)
    y, x = rng.uniform(0.2, 0.8, 2) * size
    angle = rng.uniform(0, 2 * np.pi)
    for step in range(int(size * 0.6)):
        angle += rng.normal(0, 0.5)
        y, x = y + np.sin(angle), x + np.cos(angle)
        if not (0 <= y < size and 0 <= x < size):
            break
        mask[int(y), int(x)] = True
        if step == size // 4:
            angle += rng.choice([-1.0, 1.0]) * 0.9
    return mask


def add_defect(img: np.ndarray, defect: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``img`` with one ``defect``; return (image, bool mask). Pixels outside the mask are unchanged."""
    size = img.shape[0]
    if defect == "scratch":
        mask = _mask_with_area(_scratch_mask, rng, size)
        return _paint(img, mask, _saturated_colour(rng)), mask
    if defect in ("spot", "colour blotch"):
        mask = _mask_with_area(_spot_mask, rng, size)
        colour = _saturated_colour(rng)
        if defect == "colour blotch":  # a soft-edged tint rather than paint
            out = img.astype(np.float64)
            out[mask] = 0.35 * out[mask] + 0.65 * colour
            return out.astype(np.uint8), mask
        return _paint(img, mask, colour), mask
    if defect == "crack":
        mask = _crack_mask(rng, size)
        return _paint(img, mask, np.array([20.0, 20.0, 20.0])), mask
    if defect == "hole":
        mask = _disc(rng, size, 0.06, 0.14)
        return _paint(img, mask, np.array([5.0, 5.0, 5.0])), mask
    if defect == "stain":
        mask = _mask_with_area(_spot_mask, rng, size)
        out = img.astype(np.float64)
        out[mask] = out[mask] * np.array([0.55, 0.4, 0.25])  # brownish darkening
        return out.astype(np.uint8), mask
    if defect == "missing piece":
        mask = np.zeros((size, size), bool)
        h, w = (int(size * rng.uniform(0.15, 0.3)) for _ in range(2))
        corner = int(rng.integers(4))
        ys = slice(0, h) if corner < 2 else slice(size - h, size)
        xs = slice(0, w) if corner % 2 == 0 else slice(size - w, size)
        mask[ys, xs] = True
        return _paint(img, mask, np.full(3, rng.uniform(200, 255))), mask
    raise TPSLabError(f"unknown defect {defect!r} (choose from {', '.join(DEFECTS)})")


def _place(mask: np.ndarray) -> str:
    """Where a defect is, in words."""
    ys, xs = np.nonzero(mask)
    cy, cx = ys.mean() / mask.shape[0], xs.mean() / mask.shape[1]
    if abs(cy - 0.5) < 0.2 and abs(cx - 0.5) < 0.2:
        return "centre"
    return f"{'top' if cy < 0.5 else 'bottom'} {'left' if cx < 0.5 else 'right'}"


def fill(template: str, state: str, cls: str) -> str:
    """``template`` with ``state`` and ``cls``: "with ..." states follow the noun; "a" before a vowel is "an"."""
    if state.startswith(("with ", "without ")):
        template = template.replace("this {cls} is {state}", "there is a {cls} {state}")
        template = template.replace("{state} {cls}", "{cls} {state}")
    text = template.format(state=state, cls=cls)
    return re.sub(r"\b([Aa]) ([aeiou])", r"\1n \2", text)


def caption(cls: str, defect: str | None, rng: np.random.Generator, place: str | None = None) -> tuple[str, str]:
    """A caption and its state-flipped twin (the same template, class and place; the other state)."""
    template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
    normal = NORMAL_WORDS[int(rng.integers(len(NORMAL_WORDS)))]
    bad = ANOMALOUS_WORDS[int(rng.integers(len(ANOMALOUS_WORDS)))]
    kind = defect or DEFECTS[int(rng.integers(len(DEFECTS)))]  # the flipped caption of a normal image names one
    detail = f" with a {kind}" if rng.random() < 0.5 and not bad.startswith("with") else ""
    where = f" at the {place}" if detail and place and rng.random() < 0.5 else ""
    good_text = fill(template, normal, cls)
    bad_text = fill(template, bad, cls)
    if detail:
        bad_text = bad_text.rstrip(".") + detail + where + "."
    return (bad_text, good_text) if defect else (good_text, bad_text)


class CaptionCorpus:
    """An endless, seeded corpus of image-caption pairs: ``pair(i)`` is a pure function of ``(seed, i)``.

    Args:
        seed: the corpus seed.
        image_size: the images' side in pixels.
        anomalous_fraction: the share of images with a defect.
        grey_fraction: the share of images made grey before their defect (defects keep their colour,
            as in the smoke profile's data sets).
        classes: the class words to draw from (default :data:`CLASSES`).
        defects: the defect kinds (default :data:`DEFECTS`).
    """

    def __init__(self, seed: int = 0, image_size: int = 64, anomalous_fraction: float = 0.5,
                 grey_fraction: float = 0.5, classes: tuple[str, ...] = CLASSES,
                 defects: tuple[str, ...] = DEFECTS) -> None:
        unknown = sorted(set(classes) - set(CLASSES)) + sorted(set(defects) - set(DEFECTS))
        if unknown:
            raise TPSLabError(f"unknown corpus classes or defects: {', '.join(unknown)}")
        self.seed, self.image_size, self.anomalous_fraction = seed, image_size, anomalous_fraction
        self.grey_fraction = grey_fraction
        self.classes, self.defects = tuple(classes), tuple(defects)

    def settings(self) -> dict[str, object]:
        """What defines the corpus (stored beside weights trained on it)."""
        return {"seed": self.seed, "image_size": self.image_size, "anomalous_fraction": self.anomalous_fraction,
                "grey_fraction": self.grey_fraction, "classes": list(self.classes), "defects": list(self.defects)}

    def rng(self, index: int) -> np.random.Generator:
        """The generator of pair ``index``."""
        return np.random.default_rng([self.seed, index, zlib.crc32(b"tpslab-captions")])

    def pair(self, index: int, defect: str | None | bool = True) -> Pair:
        """Pair ``index``. ``defect=True``: drawn (normal or not by ``anomalous_fraction``); False: normal."""
        rng = self.rng(index)
        cls = self.classes[int(rng.integers(len(self.classes)))]
        clean = class_image(cls, rng, self.image_size)
        if rng.random() < self.grey_fraction:
            clean = np.repeat(np.asarray(Image.fromarray(clean).convert("L"))[..., None], 3, -1)
        if defect is True:
            defect = self.defects[int(rng.integers(len(self.defects)))] if rng.random() < self.anomalous_fraction \
                else None
        image, place = clean, None
        if defect:
            image, mask = add_defect(clean, defect, rng)
            place = _place(mask)
        text, flipped = caption(cls, defect or None, rng, place)
        return Pair(image, text, flipped, cls, defect or None, clean)

    def twins(self, index: int) -> tuple[Pair, Pair]:
        """The same crop twice: normal, and with a defect (each with its own caption)."""
        bad = self.pair(index, self.defects[index % len(self.defects)])
        text, flipped = caption(bad.cls, None, np.random.default_rng([self.seed, index, 1]))
        return Pair(bad.clean, text, flipped, bad.cls, None, bad.clean), bad
