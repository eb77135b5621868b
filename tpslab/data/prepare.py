"""``tpslab prepare NAME ROOT``: describe a data set, as distributed, in a ``meta.json``.

Each of the paper's 13 data sets (and any user folder) has a builder (:mod:`tpslab.data.layouts`) that walks
the layout as it is downloaded, pairs every image with its mask **by file stem** (never
by sorting two listings), and collects every problem before anything is written:

* an image without its mask, a mask without its image, two masks for one image, two
  images with one stem: one line each, naming the file. ``allow_missing_masks`` keeps
  images without masks (for image-level metrics only) and skips stray masks, listing
  both; ambiguities are always errors.
* then every image and mask is opened (:mod:`tpslab.data.validate`): sizes agree, masks
  are binary or binarisable, labels agree with masks.

Only when nothing is wrong is ``meta.json`` written, atomically, so a failed run never
leaves a half-written file. The per-data-set layouts, licences and commands are in
``data/README.md``.

>>> path = prepare_dataset("mvtec", "/data/mvtec")           # doctest: +SKIP
>>> print(summarize(path))                                   # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tpslab.data.layouts import DATASETS, resolve_name
from tpslab.data.meta import Meta, class_counts, load_meta, raise_problems, structure_problems, write_meta
from tpslab.data.pairing import Context
from tpslab.data.validate import content_problems
from tpslab.utils import TPSLabError

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """A built, checked meta description, not yet written."""

    name: str
    dest: Path
    splits: dict[str, dict[str, list[dict[str, Any]]]]
    notes: list[str]


def build_meta(name: str, root: str | os.PathLike, *, allow_missing_masks: bool = False,
               out: str | os.PathLike | None = None, check: bool = True, **options: Any) -> Prepared:
    """Walk a data set and check it; write nothing but derived files (MSD slices, VisA 0/255 masks).

    Args, Raises: as :func:`prepare_dataset`.
    """
    key = resolve_name(name)
    builder = DATASETS[key]
    allowed = set(inspect.signature(builder).parameters) - {"ctx"}
    options = {k: v for k, v in options.items() if v is not None and v is not False}
    unknown = sorted(k for k in options if k not in allowed)
    if unknown:
        raise TPSLabError(f"option(s) {', '.join(unknown)} do not apply to {key}"
                          f" (it takes: {', '.join(sorted(allowed)) or 'none'})")
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise TPSLabError(f"{root}: no such folder")
    dest = Path(out).expanduser().absolute() if out is not None else root
    ctx = Context(root, dest, allow_missing_masks)
    builder(ctx, **options)

    def rows(path: Callable[[Path | None], str]) -> dict[str, dict[str, list[dict[str, Any]]]]:
        return {split: {cls: [{"img_path": path(s.img), "mask_path": path(s.mask), "cls_name": s.cls,
                               "specie_name": s.specie, "anomaly": s.anomaly} for s in samples]
                        for cls, samples in classes.items()}
                for split, classes in ctx.samples.items()}
    problems = list(ctx.problems)
    if check:  # absolute paths: ``dest`` may not exist yet
        problems += content_problems(Meta(dest, rows(lambda p: "" if p is None else str(p))))
    what = f"prepare {key} {root}"
    raise_problems(problems, what, limit=50)
    splits = rows(lambda p: "" if p is None else Path(os.path.relpath(p, dest)).as_posix())
    if not any(splits.values()):
        raise TPSLabError(f"{root}: no images found for {key}")
    raise_problems(structure_problems(splits, str(dest / "meta.json")), what)
    return Prepared(key, dest, splits, ctx.notes)


def prepare_dataset(name: str, root: str | os.PathLike, *, allow_missing_masks: bool = False,
                    out: str | os.PathLike | None = None, **options: Any) -> Path:
    """Describe a data set in ``<root or out>/meta.json``; return the file's path.

    Args:
        name: a key of ``DATASETS`` or an alias (any case, ``-``/``_`` ignored).
        root: the data set's folder, as distributed (see ``data/README.md``).
        allow_missing_masks: keep anomalous images without a mask (image metrics only)
            and skip masks without an image; both are listed in the log.
        out: write ``meta.json`` there instead (its paths then lead back to ``root``).
        **options: ``check=False`` skips opening every file; data-set options:
            ``classes`` (mvtec, visa, mpdd, btad), ``images``/``masks`` (folders of the
            image+mask data sets), ``class_name``, ``per_volume``/``all_slices``/``window`` (msd).

    Raises:
        TPSLabError: one line per problem, each naming the file; nothing is written then.
    """
    prepared = build_meta(name, root, allow_missing_masks=allow_missing_masks, out=out, **options)
    for note in prepared.notes:
        log.warning(note)
    return write_meta(prepared.splits, prepared.dest)


def summarize(meta_path: str | os.PathLike) -> str:
    """A small table of a ``meta.json``: split, class, normal, anomalous, anomalous with a mask."""
    meta = load_meta(meta_path, check_files=False)
    header = ("split", "class", "normal", "anomalous", "with mask")
    rows = []
    for split in meta.splits:
        counts = [[c["normal"], c["anomalous"], c["with mask"]] for c in class_counts(meta, split)]
        rows += [(split, c["class"], *map(str, n)) for c, n in zip(class_counts(meta, split), counts, strict=True)]
        if len(counts) > 1:
            rows.append((split, f"(all {len(counts)})", *(str(sum(col)) for col in zip(*counts, strict=True))))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in [header, *rows]]
    return "\n".join(line.rstrip() for line in lines)
