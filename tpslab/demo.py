"""The main job on a profile: train TPS on the auxiliary domain, evaluate held out, before and after.

``tpslab demo`` (and ``make demo``) runs it on the built-in ``smoke`` profile: a tiny CLIP
with seeded random weights and synthetic data, on the CPU, in a few minutes. It writes
``results/demo/`` (tables, figures, the checkpoint) and ends with::

    held-out pixel AUROC: untrained X -> trained Y
    held-out image AUROC: untrained X -> trained Y
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

from tpslab import viz
from tpslab.data.dataset import AnomalyDataset
from tpslab.data.meta import load_meta
from tpslab.evaluate import evaluate, write_table
from tpslab.model import TPS, TPSConfig
from tpslab.profiles import Profile, data_root, load_profile, results_root
from tpslab.train import TrainConfig, train
from tpslab.utils import TPSLabError


def synthetic_metas(profile: Profile, root: Path, progress: bool = True) -> dict[str, Path]:
    """Make (or reuse) the profile's synthetic domains; return meta paths by role."""
    from tpslab.data.synthetic import make_synthetic_pair

    spec = profile.data
    settings = dict(spec.get("synthetic", {}))
    if "defects" in settings:
        settings["defects"] = tuple(settings["defects"])
    metas = make_synthetic_pair(root / spec.get("root", "synthetic"), progress=progress, **settings)
    return {"train": metas["train"], "heldout": metas["heldout"]}


def pick_examples(samples: list[dict], n: int) -> list[int]:
    """Indices of ``n`` samples: alternately anomalous and normal, each from another class where possible."""
    classes = list(dict.fromkeys(s["cls_name"] for s in samples))
    chosen: list[int] = []
    for k in range(n):
        cls, label = classes[k % len(classes)], 1 - k % 2
        pool = [i for i, s in enumerate(samples) if s["cls_name"] == cls and s["anomaly"] == label and i not in chosen]
        pool = pool or [i for i, s in enumerate(samples) if s["anomaly"] == label and i not in chosen]
        if pool:
            chosen.append(pool[0])
    return chosen


def example_figure(model: TPS, meta_path: Path, n: int = 6, title: str = "", label: str | None = None):
    """Held-out examples (half normal, half anomalous) with their anomaly maps."""
    meta = load_meta(meta_path)
    ds = AnomalyDataset(meta, model.backbone.image_size)
    items = [ds[i] for i in pick_examples(ds.samples, n)]
    images = torch.stack([it["image"] for it in items])
    pred = model.predict(images)
    return viz.plot_examples([viz.to_rgb(x) for x in images], list(pred.anomaly_maps.numpy()),
                             [it["mask"].numpy() for it in items],
                             [f"{it['cls_name']}\nscore {s:.2f}" for it, s in zip(items, pred.image_scores.tolist())],
                             title, label)


def run_demo(profile_name: str = "smoke", out: str | Path | None = None, data: str | Path | None = None,
             resume: bool = False, progress: bool = True, log: Callable[[str], None] = print) -> dict[str, float]:
    """Train on the profile's auxiliary data and evaluate on its held-out data, before and after.

    Returns:
        ``{"pixel_auroc_untrained", "pixel_auroc_trained", "image_auroc_untrained", "image_auroc_trained"}``
        (percent, mean over held-out classes).
    """
    t0 = time.time()
    profile = load_profile(profile_name)
    if profile.data.get("kind") != "synthetic":
        raise TPSLabError(f"profile {profile.name!r} uses real data sets: run `tpslab reproduce --profile {profile.name}`")
    out = Path(out) if out else results_root() / "demo"
    out.mkdir(parents=True, exist_ok=True)
    synthetic = profile.data.get("synthetic", {})
    label = viz.SYNTHETIC_LABEL if profile.model.get("pretrained") is None else "synthetic data: not paper numbers"
    log(f"profile {profile.name}: {profile.description}")
    metas = synthetic_metas(profile, data_root(data), progress)
    log(f"data: {metas['train']} (training domain), {metas['heldout']} (held-out domain)")
    if profile.extra.get("threads"):
        torch.set_num_threads(int(profile.extra["threads"]))  # small models: more threads only add overhead
    device = profile.device if profile.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model = TPS(TPSConfig.from_dict(profile.model))
    ev = dict(batch_size=profile.evaluate.get("batch_size", 8), aupro_method=profile.evaluate.get("aupro_method", "exact"),
              device=device, progress=progress, dataset_name="heldout")
    before = evaluate(model, metas["heldout"], **ev)
    viz.save_figure(example_figure(model, metas["heldout"], title="Held-out examples, untrained TPS", label=label),
                    out / "examples_untrained")
    train_cfg = TrainConfig.from_dict({**profile.train, "device": device})
    train_ds = AnomalyDataset(metas["train"], model.backbone.image_size)
    history = train(model, train_ds, train_cfg, out / "train", resume=resume, progress=progress, log=log)
    after = evaluate(model, metas["heldout"], **ev)
    tables = pd.concat([before.assign(model="untrained"), after.assign(model="trained")], ignore_index=True)
    note = (f"Held-out domain of the synthetic data ({synthetic.get('n_per_class')} images per class, "
            f"{synthetic.get('image_size')} px), TPS {profile.model.get('backbone')} before and after training "
            f"on the training domain. {label}.")
    write_table(tables[["model"] + [c for c in before.columns]], out / "heldout_metrics", note)
    viz.save_figure(viz.plot_history(history, label), out / "training_loss")
    viz.save_figure(viz.plot_metric_bars(tables[tables["class"] != "mean"], x="class", hue="model",
                                         metrics=["image_auroc", "pixel_auroc", "pixel_aupro"],
                                         title="Held-out domain: untrained vs trained TPS", label=label),
                    out / "heldout_metrics")
    viz.save_figure(example_figure(model, metas["heldout"], title="Held-out examples, trained TPS", label=label),
                    out / "examples_trained")
    b, a = before.iloc[-1], after.iloc[-1]
    result = {"pixel_auroc_untrained": b.pixel_auroc, "pixel_auroc_trained": a.pixel_auroc,
              "image_auroc_untrained": b.image_auroc, "image_auroc_trained": a.image_auroc}
    log(f"results in {out}/ ({time.time() - t0:.0f} s)")
    log(f"held-out pixel AUROC: untrained {b.pixel_auroc / 100:.3f} -> trained {a.pixel_auroc / 100:.3f}")
    log(f"held-out image AUROC: untrained {b.image_auroc / 100:.3f} -> trained {a.image_auroc / 100:.3f}")
    return result
