"""The disk a profile's training runs need in the feature cache (``tpslab compare --dry-run``, ``tpslab cache info``).

Every train job of the comparison (:func:`tpslab.runs.plan.plan`) reads the frozen features of its
auxiliary data set. Jobs whose features coincide share one set of cache entries: the seeds
of a run and the ablation rows (their prompts and pathway do not change CLIP's features);
AnomalyCLIP's DPAM features and the authors'-code variant are sets of their own. The size of
an entry comes from the architecture (:func:`tpslab.backbone.cache.arch_entry_bytes`), the
number of images from the data set's ``meta.json`` (its test split, which training reads),
else from the published split sizes below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tpslab.backbone.cache import arch_entry_bytes, cache_limit, cache_root, free_bytes
from tpslab.data.meta import load_meta
from tpslab.methods import method_module
from tpslab.runs.plan import plan, train_set
from tpslab.utils import TPSLabError

# test-split images of the auxiliary data sets the profiles train on, when their meta.json is not there yet
KNOWN_TRAIN_IMAGES = {"mvtec": 1725, "visa": 2162, "headct": 200, "isic": 379}


def _images(datasets: dict[str, str], name: str) -> int | None:
    meta = Path(datasets.get(name, ""))
    if meta.is_file():
        try:
            return len(load_meta(meta, check_files=False).samples("test"))
        except TPSLabError:
            pass
    return KNOWN_TRAIN_IMAGES.get(name)


def feature_sets(profile: Any, datasets: dict[str, str]) -> list[dict[str, Any]]:
    """One row per distinct set of cached features: what it is, its images, bytes per image and in all."""
    rows: dict[tuple, dict[str, Any]] = {}
    for job in plan(profile):
        if job.kind != "train":
            continue
        settings = dict(profile.method_settings(job.method))
        if job.ablation:
            settings.update(profile.ablation.runs[job.entry] or {})
        s = method_module(job.method).Settings.from_dict(settings)
        variant = getattr(s, "variant", "")
        layers = getattr(s, "layers", None)
        n_layers = len(layers) if layers else (4 if job.method == "tps" else 1)  # AnomalyCLIP: the last block
        data = train_set(profile, job)
        key = (job.method, s.backbone, s.image_size, variant, n_layers, data)
        if key not in rows:
            per = arch_entry_bytes(s.backbone, s.image_size, n_layers)
            n = _images(datasets, data)
            rows[key] = {"what": f"{job.method}{' ' + variant if variant and variant != 'paper' else ''} "
                                 f"{s.backbone}@{s.image_size} on {data}", "images": n, "entry_bytes": per,
                         "bytes": per * n if per and n else None, "jobs": 0}
        rows[key]["jobs"] += 1
    return list(rows.values())


def describe(profile: Any, datasets: dict[str, str]) -> list[str]:
    """Lines stating the disk the profile's training needs in the feature cache, and what there is."""
    if not profile.train_config.cache_features:
        return [f"feature cache: off in profile {profile.name} (train.cache_features: false)"]
    sets = feature_sets(profile, datasets)
    if not sets:
        return [f"feature cache: profile {profile.name} trains nothing"]
    known = [r["bytes"] for r in sets if r["bytes"] is not None]
    total = sum(known)
    unknown = len(sets) - len(known)
    root = cache_root()
    lines = [f"feature cache: {len(sets)} feature set(s) for {sum(r['jobs'] for r in sets)} train job(s), up to "
             f"{total / 1e9:.1f} GB on disk{f' (+ {unknown} set(s) of unknown size)' if unknown else ''}; "
             f"limit {cache_limit() / 2**30:.0f} GiB (TPSLAB_CACHE_LIMIT_GB), {free_bytes(root) / 1e9:.0f} GB free "
             f"under {root}"]
    for r in sets:
        per = f"{r['entry_bytes'] / 1e6:.2f} MB/image" if r["entry_bytes"] else "? MB/image"
        size = f"{r['bytes'] / 1e9:.1f} GB" if r["bytes"] else "?"
        lines.append(f"  {r['what']:<44} {r['images'] or '?':>6} images x {per:<14} = {size:>8}  ({r['jobs']} job(s))")
    if total > cache_limit():
        lines.append("  over the limit: raise TPSLAB_CACHE_LIMIT_GB, or training runs without the cache")
    return lines
