"""Checks of notebook 01's exercises: a corrupted mask and the label agreement rule of ``validate``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tpslab.course.checks import Mistake, exercise, seeds
from tpslab.data.validate import GREY_BAND, MAX_GREY_FRACTION, mask_problem


def _mask(seed: int, size: int = 32, empty: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size))
    if not empty:
        r, c = rng.integers(2, size - 10, 2)
        mask[r:r + rng.integers(3, 9), c:c + rng.integers(3, 9)] = 1.0
    return mask


@exercise("e1.1", "corrupt a mask so that validate rejects it")
def corrupt_mask(fn: Callable[..., Any], hidden: bool) -> int:
    """``fn(mask (H, W) in {0, 1}) -> a new mask`` that ``mask_problem`` calls "not binary"; the input is kept."""
    lo, hi = GREY_BAND
    for seed in seeds(hidden):
        mask = _mask(seed)
        before = mask.copy()
        out = np.asarray(fn(mask))
        if not np.array_equal(mask, before):
            raise Mistake("you changed the caller's mask in place: corrupt a scratch copy (mask.copy())")
        problem = mask_problem(out, anomaly=1) or ""
        if not problem.startswith("mask is not binary"):
            raise Mistake(f"validate still accepts it ({problem or 'no problem found'}): make more than "
                          f"{MAX_GREY_FRACTION:.0%} of the pixels mid-grey, strictly between {lo} and {hi}")
    return len(seeds(hidden))


@exercise("e1.2", "validate's label agreement rule")
def label_problem(fn: Callable[..., Any], hidden: bool) -> int:
    """``fn(mask, anomaly) -> str | None``: the message ``mask_problem`` gives a binary mask, or None."""
    cases = [(_mask(s, empty=(s % 2 == 1)), a) for s in seeds(hidden) for a in (0, 1)]
    for mask, anomaly in cases:
        mask = mask.copy()
        mask[0, :2] = 0.5  # two pixels exactly at the threshold: marked
        want, got = mask_problem(mask, anomaly), fn(mask.copy(), anomaly)
        if got == want:
            continue
        marked = int((mask > 0.5).sum())
        if anomaly == 0 and got == f"mask of a normal sample marks {marked} pixel(s)":
            raise Mistake("a pixel is marked when its value is >= 0.5 (load_mask's threshold), not > 0.5")
        if anomaly == 0 and got == f"mask of a normal sample marks {mask.sum():g} pixel(s)":
            raise Mistake("count the marked pixels, not the sum of the mask's values")
        raise Mistake(f"for anomaly={anomaly} and {int((mask >= 0.5).sum())} marked pixels expected {want!r}, "
                      f"got {got!r}")
    return len(cases)
