"""Checks of notebook 04's exercises: what an ablation row changes, and where it lands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from tpslab.configs import TPSConfig
from tpslab.course.checks import Mistake, exercise, expect, seeds

PAIRS = [({}, {"variant": "authors-code"}), ({"n_ctx": 4}, {"n_ctx": 8, "variant": "authors-code"}),
         ({}, {"shared_pathway": True}), ({"variant": "authors-code"}, {"variant": "authors-code"})]


def _diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    fa, fb = TPSConfig.from_dict(a).to_dict(), TPSConfig.from_dict(b).to_dict()
    return {k: (fa[k], fb[k]) for k in fa if fa[k] != fb[k]}


@exercise("e4.1", "what an ablation row changes")
def config_diff(fn: Callable[..., Any], hidden: bool) -> int:
    """``fn(a, b) -> {field: (a's value, b's value)}`` over the TPSConfig fields in which two rows differ."""
    pairs = PAIRS + ([({"variant": "authors-code"}, {}), ({"shared_pathway": True}, {"n_ctx": 4})] if hidden else [])
    for a, b in pairs:
        got, want = fn(dict(a), dict(b)), _diff(a, b)
        if got == want:
            continue
        if got == {k: (a.get(k), b.get(k)) for k in {*a, *b} if a.get(k) != b.get(k)}:
            raise Mistake("compare the full configurations: TPSConfig.from_dict(row).to_dict() fills in the "
                          "defaults and what the variant switches on")
        raise Mistake(f"for {a} vs {b} expected {want}, got {got}")
    return len(pairs)


def _table(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = ["A1", "prompts only", "A2 (TPS)"]
    return pd.DataFrame([{"row": r, "dataset": d, "pixel_auroc": 50 + 20 * i + rng.normal(0, 3),
                          "pixel_aupro": 20 + 15 * i + rng.normal(0, 3)}
                         for i, r in enumerate(rows) for d in ("synth-a", "synth-b", "synth-c")])


@exercise("e4.2", "the gap between two ablation rows")
def row_gap(fn: Callable[..., Any], hidden: bool) -> int:
    """``fn(table, row, base, metric) -> float``: mean over data sets of ``row - base`` for one metric."""
    cases = [(_table(s), r, "A1", m) for s in seeds(hidden) for r, m in
             (("A2 (TPS)", "pixel_auroc"), ("prompts only", "pixel_aupro"))]
    for table, row, base, metric in cases:
        part = table.pivot(index="dataset", columns="row", values=metric)
        want = float((part[row] - part[base]).mean())
        expect(fn(table.copy(), row, base, metric), want, {
            "the gap is row minus base (positive when the row is better)": -want,
        }, f"expected the mean over data sets of {metric}[row] - {metric}[base]")
    return len(cases)
