"""The published numbers of TPS, typed in as data (never computed here).

Source: Ma, Xie, Ye, Li, Fang, "Aligning and Prompting Anything for Zero-Shot Generalized
Anomaly Detection", AAAI 2025:
Tables 1, 2 and 3, as printed (percent, one decimal). Each entry is a pair:

* Table 1 (classification): (image AUROC, image AP);
* Table 2 (segmentation): (pixel AUROC, pixel AUPRO);
* Table 3 (TPS trained on medical data): classification rows (AUROC, AP), segmentation
  rows (AUROC, AUPRO), for "TPS (Industrial)" (trained on MVTec AD) and "TPS (Medical)"
  (trained on HeadCT for classification, on ISIC for segmentation).

Figure 3 (ablation A1 vs A2) is a bar chart whose values are not printed in the paper's
text, so it is not typed in; A2 is TPS itself, i.e. the TPS column of Tables 1 and 2.

The data-set keys are tpslab's (``tpslab prepare NAME``); ``DATASET_NAMES`` gives the
paper's spelling.
"""

from __future__ import annotations

from typing import Any

SOURCE = "Ma et al., Aligning and Prompting Anything for Zero-Shot Generalized Anomaly Detection, AAAI 2025"

METHODS = ("CLIP", "WinCLIP", "AnomalyCLIP", "MuSc", "TPS")
PAPER_NAMES = {"tps": "TPS", "clip": "CLIP", "winclip": "WinCLIP", "anomalyclip": "AnomalyCLIP", "musc": "MuSc"}

DATASET_NAMES = {
    "mvtec": "MVTec AD", "visa": "VisA", "mpdd": "MPDD", "btad": "BTAD", "sdsaliency900": "SD-saliency-900",
    "rsdds": "RSDDS-113", "headct": "HeadCT", "brainmri": "BrainMRI", "br35h": "Br35H", "isic": "ISIC",
    "kvasir": "Kvasir", "tn3k": "TN3k", "msd": "MSD",
}

# (category, |C| = number of classes) as printed in Tables 1 and 2.
CATEGORY = {
    "mvtec": ("Obj & texture", 15), "visa": ("Obj", 12), "mpdd": ("Obj", 6), "btad": ("Obj", 3),
    "sdsaliency900": ("Texture", 1), "rsdds": ("Texture", 1), "headct": ("Brain", 1), "brainmri": ("Brain", 1),
    "br35h": ("Brain", 1), "isic": ("Skin", 1), "kvasir": ("Colon", 1), "tn3k": ("Thyroid", 1), "msd": ("Lung", 1),
}


def _row(*pairs: tuple[float, float]) -> dict[str, tuple[float, float]]:
    """One data set's published pair per method, given in the order of ``METHODS``."""
    return dict(zip(METHODS, pairs, strict=True))


# Table 1: ZSAD classification, (AUROC, AP) per method.
TABLE1 = {  # CLIP, WinCLIP, AnomalyCLIP, MuSc, TPS
    "mvtec": _row((74.1, 87.6), (91.8, 96.5), (91.5, 96.2), (97.8, 99.1), (96.4, 98.4)),
    "visa": _row((66.4, 71.5), (78.1, 81.2), (82.1, 85.4), (92.8, 93.5), (83.3, 85.6)),
    "mpdd": _row((54.3, 65.4), (63.6, 69.9), (77.0, 82.0), (61.7, 75.4), (73.3, 74.7)),
    "btad": _row((34.5, 52.5), (68.2, 70.9), (88.3, 87.3), (96.5, 93.9), (88.1, 90.0)),
    "headct": _row((56.5, 58.4), (81.8, 80.2), (93.0, 91.1), (68.6, 58.5), (92.3, 91.9)),
    "brainmri": _row((73.9, 81.7), (86.6, 91.5), (90.2, 92.4), (88.4, 86.0), (92.4, 93.8)),
    "br35h": _row((78.4, 78.8), (80.5, 82.2), (84.9, 73.8), (91.0, 81.7), (96.2, 96.1)),
}

# Table 2: ZSAD segmentation, (pixel AUROC, AUPRO) per method.
TABLE2 = {  # CLIP, WinCLIP, AnomalyCLIP, MuSc, TPS
    "mvtec": _row((38.4, 11.3), (85.1, 64.6), (91.1, 81.4), (97.3, 93.8), (94.4, 90.9)),
    "visa": _row((46.6, 14.8), (79.6, 56.8), (95.5, 86.7), (98.8, 92.7), (95.5, 90.9)),
    "mpdd": _row((62.1, 33.0), (76.4, 48.9), (96.5, 88.7), (98.2, 81.0), (97.2, 92.1)),
    "btad": _row((30.6, 4.4), (72.7, 27.3), (94.2, 74.8), (98.1, 81.6), (94.2, 80.9)),
    "sdsaliency900": _row((34.3, 2.4), (78.5, 33.1), (84.9, 73.8), (82.2, 52.2), (89.4, 75.6)),
    "rsdds": _row((26.7, 2.6), (64.3, 30.5), (94.8, 83.5), (94.2, 67.7), (96.3, 88.6)),
    "isic": _row((33.1, 5.8), (83.3, 55.1), (89.7, 78.4), (77.6, 39.7), (91.2, 83.7)),
    "kvasir": _row((44.6, 17.7), (69.7, 24.5), (78.9, 45.1), (74.6, 36.8), (78.8, 45.2)),
    "tn3k": _row((42.3, 7.3), (70.7, 39.8), (81.4, 50.5), (77.3, 53.4), (80.2, 47.9)),
    "msd": _row((41.1, 8.7), (88.5, 60.8), (89.8, 59.9), (86.3, 50.5), (93.3, 71.2)),
}

# Table 3: TPS trained on industrial (MVTec AD) vs medical auxiliary data.
# task -> data set -> {"TPS (Industrial)": pair, "TPS (Medical)": pair}
TABLE3 = {
    "classification": {
        "headct": {"TPS (Industrial)": (92.3, 91.9), "TPS (Medical)": (99.9, 99.9)},
        "brainmri": {"TPS (Industrial)": (92.4, 93.8), "TPS (Medical)": (96.8, 98.1)},
        "br35h": {"TPS (Industrial)": (96.2, 96.1), "TPS (Medical)": (98.4, 98.5)},
    },
    "segmentation": {
        "isic": {"TPS (Industrial)": (91.2, 83.7), "TPS (Medical)": (99.6, 98.1)},
        "kvasir": {"TPS (Industrial)": (78.8, 45.2), "TPS (Medical)": (86.1, 50.0)},
        "tn3k": {"TPS (Industrial)": (80.2, 47.9), "TPS (Medical)": (86.5, 44.4)},
        "msd": {"TPS (Industrial)": (93.3, 71.2), "TPS (Medical)": (95.0, 81.9)},
    },
}

# ----------------------------------------------------------------------------- where each baseline cell comes from
# TPS reprints the four baselines' numbers without saying where each comes from. Traced in
# docs/baselines.md#section-5 against AnomalyCLIP's Tables 1-2 (Zhou et al., ICLR 2024,
# README images of 2023-11-24), the WinCLIP paper (Jeong et al., CVPR 2023), the MuSc paper
# (Li et al., ICLR 2024) and MuSc's README; what matches none of them is TPS's own run, or
# traces to no source at all.

SOURCES = {
    "AC": "copied from AnomalyCLIP's Tables 1-2 (Zhou et al., ICLR 2024)",
    "AC, from WinCLIP paper": "AnomalyCLIP's table, which takes it from the WinCLIP paper (Jeong et al., CVPR 2023)",
    "AC repo log": "AnomalyCLIP's repository re-evaluation log with the released checkpoints (2024-12-18)",
    "AC, differs": "AnomalyCLIP's table prints slightly different numbers; no other source found",
    "MuSc paper": "copied from the MuSc paper (Li et al., ICLR 2024)",
    "TPS run": "not in any baseline paper: TPS's own run, settings not published",
    "no source": "matches no published source (see the note)",
    "TPS paper": "TPS itself (Ma et al., AAAI 2025)",
}

# Data sets that AnomalyCLIP's tables report (everything else is TPS's own run for CLIP/WinCLIP/AnomalyCLIP).
_IN_AC = {"mvtec", "visa", "mpdd", "btad", "headct", "brainmri", "br35h", "isic", "kvasir", "tn3k"}

# (table, data set, method) -> (source key, note): the cells that do not follow the rules in provenance().
_EXCEPTIONS = {
    (1, "mvtec", "WinCLIP"): ("AC, from WinCLIP paper", ""),
    (2, "mvtec", "WinCLIP"): ("AC, from WinCLIP paper", ""),
    (1, "visa", "WinCLIP"): ("AC, from WinCLIP paper", ""),
    (2, "visa", "WinCLIP"): ("AC, from WinCLIP paper", ""),
    (2, "visa", "AnomalyCLIP"): ("AC repo log", "AUPRO 86.7 is the repository log's; AnomalyCLIP's table prints 87.0"),
    (1, "headct", "AnomalyCLIP"): ("AC, differs", "AnomalyCLIP's table: 93.4, 91.6"),
    (1, "brainmri", "AnomalyCLIP"): ("AC, differs", "AnomalyCLIP's table: 90.3, 92.2"),
    (1, "br35h", "AnomalyCLIP"): ("no source", "AnomalyCLIP's table: 94.6, 94.7; 84.9, 73.8 is TPS's own "
                                  "AnomalyCLIP cell for SD-saliency-900 (Table 2), likely a copy slip"),
    (2, "kvasir", "AnomalyCLIP"): ("AC, differs", "AnomalyCLIP's table: AUPRO 45.6"),
    (2, "tn3k", "AnomalyCLIP"): ("AC, differs", "AnomalyCLIP's table: 81.5, 50.4"),
    (1, "btad", "MuSc"): ("no source", "matches neither the MuSc paper nor its README (96.16, 97.85); "
                          "93.9 is the README's image F1-max"),
    (2, "btad", "MuSc"): ("no source", "matches neither the MuSc paper nor its README (97.35, 83.43)"),
}


def provenance(table: int, dataset: str, method: str) -> tuple[str, str]:
    """Where a published baseline cell of Table 1 or 2 comes from.

    Args:
        table: 1 (classification) or 2 (segmentation).
        dataset: tpslab's data-set key (``"mvtec"``).
        method: ``"CLIP"``, ``"WinCLIP"``, ``"AnomalyCLIP"`` or ``"MuSc"`` (``"TPS"`` is the paper itself).

    Returns:
        ``(source, note)``: a key of :data:`SOURCES` and a note (empty when there is nothing to add).

    >>> provenance(1, "br35h", "AnomalyCLIP")[0]
    'no source'
    >>> provenance(2, "msd", "CLIP")[0]
    'TPS run'
    """
    published = TABLE1 if table == 1 else TABLE2
    if dataset not in published or method not in published[dataset]:
        raise KeyError(f"Table {table} has no {method} cell for {dataset!r}")
    if method == "TPS":
        return "TPS paper", ""
    if (table, dataset, method) in _EXCEPTIONS:
        return _EXCEPTIONS[(table, dataset, method)]
    if method == "MuSc":
        return ("MuSc paper", "") if dataset in ("mvtec", "visa") else ("TPS run", "")
    return ("AC", "") if dataset in _IN_AC else ("TPS run", "")


def provenance_table() -> Any:
    """Every baseline cell of Tables 1-2 with its source and note, as a DataFrame."""
    import pandas as pd

    return pd.DataFrame([{"table": t, "dataset": d, "method": m, "published": published[d][m],
                          "source": provenance(t, d, m)[0], "note": provenance(t, d, m)[1]}
                         for t, published in ((1, TABLE1), (2, TABLE2)) for d in published
                         for m in METHODS if m != "TPS"])


# Which metrics each table's pairs are, as tpslab.evaluation.evaluate names them.
TABLE_METRICS = {1: ("image_auroc", "image_ap"), 2: ("pixel_auroc", "pixel_aupro"),
                 "classification": ("image_auroc", "image_ap"), "segmentation": ("pixel_auroc", "pixel_aupro")}


# ----------------------------------------------------------------------------- a published cell as printed

DAGGER = "\u2020"  # marks a published baseline cell that traces to no source


def published_cell(pair: tuple[float, float], number: int, dataset: str, method: str) -> str:
    """A published pair as printed, with a dagger where it traces to no source (see :func:`provenance`).

    The tables themselves (ours beside these) are laid out by :mod:`tpslab.reports.paper_tables`.

    >>> published_cell(TABLE1["br35h"]["AnomalyCLIP"], 1, "br35h", "AnomalyCLIP")
    '84.9, 73.8 \u2020'
    """
    mark = f" {DAGGER}" if method != "TPS" and provenance(number, dataset, method)[0] == "no source" else ""
    return f"{pair[0]:.1f}, {pair[1]:.1f}{mark}"
