"""Reading images and masks robustly: any mode, any bit depth, clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from tpslab.utils import TPSLabError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _open(path: str | os.PathLike) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise TPSLabError(f"{path}: file not found")
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise TPSLabError(f"{path}: cannot read image ({err.__class__.__name__})") from err
    return img


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale an integer or float array of any range to uint8 (16-bit PNGs, float TIFFs)."""
    if arr.dtype == np.uint8:
        return arr
    arr = arr.astype(np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, np.uint8)
    if lo >= 0 and hi <= 1.0:
        return np.round(arr * 255).astype(np.uint8)
    return np.round((arr - lo) / (hi - lo) * 255).astype(np.uint8)


def load_image(path: str | os.PathLike) -> Image.Image:
    """Load any image file as an 8-bit RGB PIL image.

    Grayscale is replicated to three channels, alpha is composited on black,
    16-bit and float images are rescaled to 0..255.

    Raises:
        TPSLabError: if the file is missing or not a readable image.
    """
    return as_rgb(_open(path))


def as_rgb(img: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB: greyscale replicated, alpha composited on black, 16-bit and float rescaled.

    >>> as_rgb(Image.new("I;16", (4, 4))).mode
    'RGB'
    """
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        img = Image.fromarray(_to_uint8(np.asarray(img)))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def load_mask(path: str | os.PathLike) -> np.ndarray:
    """Load a mask file as a float32 array in [0, 1] of shape (H, W).

    Any mode is accepted: colour masks are reduced to their maximum channel,
    16-bit masks are rescaled. Binarisation (at 0.5) is left to the caller,
    after resizing.
    """
    img = _open(path)
    arr = np.asarray(img)
    if arr.ndim == 3:
        arr = arr[..., :3].max(axis=-1) if arr.shape[-1] >= 3 else arr[..., 0]
    if arr.dtype == bool:
        return arr.astype(np.float32)
    if arr.dtype == np.uint8:
        if arr.max() >= 128:  # an ordinary 0/255 mask (possibly JPEG-noisy)
            return arr.astype(np.float32) / 255.0
        return (arr > 0).astype(np.float32)  # 0/1 masks and label maps (VisA stores defect ids 1, 2, ...)
    return _to_uint8(arr).astype(np.float32) / 255.0
