"""The ``meta.json`` format that every data set in tpslab is described by.

One file beside the data (paths inside are relative to its folder)::

    {
      "train": {"<class>": [<sample>, ...], ...},
      "test":  {"<class>": [<sample>, ...], ...}
    }

and each sample is::

    {"img_path": "bottle/test/broken_large/000.png",
     "mask_path": "bottle/ground_truth/broken_large/000_mask.png",   # "" if none
     "cls_name": "bottle",          # the class the sample belongs to
     "specie_name": "broken_large", # defect type, "good" for normal samples
     "anomaly": 1}                  # 0 normal, 1 anomalous

This is the format of the authors' (and AnomalyCLIP's) ``meta.json``, so files
made by their scripts load here too. An anomalous sample without a mask is
allowed (image-level metrics only); a normal sample's missing mask means "all
zero". Either split may be empty (``{}``), as zero-shot test sets have no
training part.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tpslab.utils import TPSLabError, atomic_write_json

SPLITS = ("train", "test")
FIELDS = {"img_path": str, "mask_path": str, "cls_name": str, "specie_name": str, "anomaly": int}
META_NAME = "meta.json"


class MetaError(TPSLabError):
    """A ``meta.json`` that is malformed or points at missing files."""


@dataclass
class Meta:
    """A loaded, validated ``meta.json``.

    Attributes:
        root: the folder that the paths in the file are relative to.
        splits: ``{"train": {class: [sample, ...]}, "test": {...}}``.
    """

    root: Path
    splits: dict[str, dict[str, list[dict[str, Any]]]]

    def classes(self, split: str = "test") -> list[str]:
        """Class names of a split, in file order."""
        return list(self.splits.get(split, {}))

    def samples(self, split: str = "test", classes: list[str] | None = None) -> list[dict[str, Any]]:
        """All samples of a split (optionally of some classes), in file order."""
        wanted = self.classes(split) if classes is None else classes
        missing = [c for c in wanted if c not in self.splits.get(split, {})]
        if missing:
            raise MetaError(f"{self.root / META_NAME}: no class {missing[0]!r} in split {split!r} (it has: "
                            f"{', '.join(self.classes(split)) or 'none'})")
        return [s for c in wanted for s in self.splits[split][c]]

    def path(self, relative: str) -> Path:
        """Absolute path of a file named in the meta file."""
        return self.root / relative


def meta_file(path: str | os.PathLike) -> Path:
    """Accept a data root or a meta file; return the meta file's path."""
    path = Path(path)
    return path / META_NAME if path.is_dir() else path


def structure_problems(data: Any, where: str) -> list[str]:
    """List everything wrong with the shape of a parsed meta file, one line each."""
    if not isinstance(data, dict):
        return [f"{where}: top level must be an object with keys 'train' and 'test'"]
    problems = [f"{where}: unknown top-level key {k!r} (expected 'train', 'test')" for k in data if k not in SPLITS]
    if not any(k in data for k in SPLITS):
        problems.append(f"{where}: neither 'train' nor 'test' is present")
    for split in SPLITS:
        classes = data.get(split, {})
        if not isinstance(classes, dict):
            problems.append(f"{where}: '{split}' must map class names to lists of samples")
            continue
        for cls, samples in classes.items():
            if not isinstance(samples, list):
                problems.append(f"{where}: {split}/{cls} must be a list of samples")
            elif not samples:
                problems.append(f"{where}: {split}/{cls} is an empty class")
            else:
                for i, sample in enumerate(samples):
                    problems += _sample_problems(sample, f"{where}: {split}/{cls}[{i}]")
    return problems


def _sample_problems(sample: Any, where: str) -> list[str]:
    if not isinstance(sample, dict):
        return [f"{where}: a sample must be an object"]
    problems = []
    for name, kind in FIELDS.items():
        if name not in sample:
            problems.append(f"{where}: missing field {name!r}")
        elif not isinstance(sample[name], kind) or isinstance(sample[name], bool):
            problems.append(f"{where}: field {name!r} must be {kind.__name__}, got {sample[name]!r}")
    if isinstance(sample.get("anomaly"), int) and sample["anomaly"] not in (0, 1):
        problems.append(f"{where}: 'anomaly' must be 0 or 1, got {sample['anomaly']}")
    if isinstance(sample.get("img_path"), str) and not sample["img_path"]:
        problems.append(f"{where}: empty 'img_path'")
    return problems


def file_problems(meta: Meta) -> list[str]:
    """List every image or mask named in ``meta`` that does not exist, one line each."""
    problems = []
    for split, classes in meta.splits.items():
        for samples in classes.values():
            for s in samples:
                for key in ("img_path", "mask_path"):
                    if s[key] and not meta.path(s[key]).is_file():
                        what = key.split("_")[0]
                        problems.append(f"{meta.path(s[key])}: {what} file not found ({split}/{s['cls_name']})")
    return problems


def raise_problems(problems: list[str], what: str, limit: int = 20) -> None:
    """Raise one MetaError listing ``problems`` (one per line), if there are any."""
    if not problems:
        return
    shown = problems[:limit]
    more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
    head = f"{what}: {len(problems)} problem(s)" if len(problems) > 1 else problems[0]
    body = "".join(f"\n  {p}" for p in shown) if len(problems) > 1 else ""
    raise MetaError(head + body + more)


def load_meta(path: str | os.PathLike, check_files: bool = True) -> Meta:
    """Load and validate a ``meta.json`` (given the file or its folder).

    Args:
        path: the data root (containing ``meta.json``) or the meta file itself.
        check_files: also check that every image and mask named exists.

    Raises:
        MetaError: with one line per problem, naming the file and the sample.
    """
    file = meta_file(path)
    if not file.is_file():
        raise MetaError(f"{file}: no meta.json here (run `tpslab prepare NAME ROOT` to make one)")
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MetaError(f"{file}: not valid JSON ({err})") from err
    raise_problems(structure_problems(data, str(file)), str(file))
    meta = Meta(root=file.parent, splits={s: data.get(s, {}) for s in SPLITS})
    if check_files:
        raise_problems(file_problems(meta), str(file))
    return meta


def write_meta(splits: dict[str, dict[str, list[dict[str, Any]]]], root: str | os.PathLike) -> Path:
    """Validate ``splits`` and write them atomically as ``root/meta.json``.

    Nothing is written when the structure is invalid.
    """
    file = Path(root) / META_NAME
    data = {s: splits.get(s, {}) for s in SPLITS}
    raise_problems(structure_problems(data, str(file)), str(file))
    atomic_write_json(file, data)
    return file


def class_counts(meta: Meta, split: str) -> list[dict[str, Any]]:
    """Per class of a split: ``{"class", "normal", "anomalous", "with mask"}`` (anomalous images with a mask)."""
    return [{"class": cls, "normal": sum(s["anomaly"] == 0 for s in samples),
             "anomalous": sum(s["anomaly"] == 1 for s in samples),
             "with mask": sum(s["anomaly"] == 1 and bool(s["mask_path"]) for s in samples)}
            for cls, samples in meta.splits[split].items()]
