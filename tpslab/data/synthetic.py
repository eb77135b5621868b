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
``render_sample`` (which also returns the clean crop under the defect); both live in
:mod:`tpslab.data.synthetic_sample`, with the source images and the defects.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tpslab.data.meta import META_NAME, write_meta
from tpslab.data.synthetic_sample import (
    DEFAULT_DEFECTS,
    DEFECT_TYPES,
    SOURCE_CLASSES,
    render_sample,
    sample_rng,
)
from tpslab.utils import TPSLabError, atomic_write_json

SYNTHETIC_NAME = "synthetic.json"
GENERATOR_VERSION = 1  # bump when the output of the same arguments changes


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
    except (TypeError, ValueError) as err:
        raise TPSLabError(f"make_synthetic: anomaly_ratio must be a number in (0, 1), got {anomaly_ratio!r}") from err
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
