"""The main job on a profile: train TPS on the auxiliary domain, evaluate held out, before and after.

``tpslab demo`` (and ``make demo``) runs it on the built-in ``smoke`` profile: ``tpslab-mini``
(a small CLIP pre-trained on generated captions, shipped with tpslab) and synthetic data, on the
CPU, in a few minutes. It writes
``results/demo/`` (tables, figures, the checkpoint) and ends with::

    held-out pixel AUROC: untrained X -> trained Y
    held-out image AUROC: untrained X -> trained Y
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from tpslab import viz
from tpslab.data.dataset import AnomalyDataset, load_examples
from tpslab.evaluation.evaluate import evaluate_with
from tpslab.methods.checkpoint import CHECKPOINT
from tpslab.methods.tps.model import TPS, TPSConfig
from tpslab.methods.train import TrainConfig, train
from tpslab.profiles import data_root, load_profile, locate_datasets, results_root
from tpslab.reports.tables import write_table
from tpslab.utils import TPSLabError, check_writable_dir, resolve_device

OUTPUTS = ("examples_untrained", "examples_trained", "heldout_metrics", "training_loss")  # stems under --out
EXAMPLES = 6  # held-out images in each example figure
RANDOM_CLIP_IMAGE_NOTE = (
    "Why the image AUROC can stay near 0.55 with random weights: the image score reads CLIP's class token, and "
    "the class token of a small CLIP with random weights carries little about a small defect, while the maps "
    "read the patch tokens, which is where training shows here; the image branch is not broken (with real CLIP "
    "weights, as in the course and paper profiles, or tpslab-mini's, the class token does describe the image).")

log = logging.getLogger(__name__)


def run_demo(profile_name: str = "smoke", out: str | Path | None = None, data: str | Path | None = None,
             resume: bool = False, progress: bool = True,
             device: str | None = None, force: bool = False) -> dict[str, float]:
    """Train on the profile's auxiliary data and evaluate on its held-out data, before and after.

    Args:
        profile_name: a profile with synthetic data (``smoke``).
        out: results folder (default ``results/demo``).
        data: data root (default ``$TPSLAB_DATA`` or ``./data``).
        resume: continue an interrupted training run.
        progress: show progress bars.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (default: the profile's).
        force: start again in a folder that holds a previous demo (its outputs are removed first).

    Raises:
        TPSLabError: a profile with real data, an ``out`` that cannot be written, or one that holds a previous
            demo's checkpoint without ``resume`` or ``force``.

    Returns:
        ``{"pixel_auroc_untrained", "pixel_auroc_trained", "image_auroc_untrained", "image_auroc_trained"}``
        (percent, mean over held-out classes).
    """
    t0 = time.time()
    profile = load_profile(profile_name)
    if profile.data.kind != "synthetic":
        raise TPSLabError(f"profile {profile.name!r} uses real data sets: run "
                          f"`tpslab reproduce --profile {profile.name}`")
    out = Path(out) if out else results_root() / "demo"
    check_writable_dir(out)
    previous = out / "train" / CHECKPOINT
    if previous.is_file() and not (resume or force):
        raise TPSLabError(f"{previous} holds a previous demo's checkpoint: add --resume to continue it, --force to "
                          "start again (replacing its results), or choose another --out")
    if force and not resume:
        for stem in OUTPUTS:
            for path in out.glob(f"{stem}.*"):
                path.unlink()
        for name in (CHECKPOINT, "history.csv", "train.log"):
            if (out / "train" / name).is_file():
                (out / "train" / name).unlink()
    out.mkdir(parents=True, exist_ok=True)
    log.info(f"profile {profile.name}: {profile.description}")
    found = locate_datasets(profile, data_root(data), progress)
    metas = {"train": found[profile.data.train], "heldout": found[profile.data.test[0]]}
    log.info(f"data: {metas['train']} (training domain), {metas['heldout']} (held-out domain)")
    profile.apply_threads()
    device = str(resolve_device(device or profile.device))
    model = TPS(TPSConfig.from_dict(profile.model))
    ev = replace(profile.evaluate, device=device)
    before = evaluate_with(model, metas["heldout"], ev, progress=progress, dataset_name="heldout")
    examples = load_examples(metas["heldout"], model.backbone.image_size, EXAMPLES)
    figure = viz.example_figure(model, examples, "Held-out examples, untrained TPS", profile.label, device=device)
    viz.save_figure(figure, out / "examples_untrained")
    train_cfg = TrainConfig.from_dict({"threads": profile.threads, **profile.train, "device": device})
    train_ds = AnomalyDataset(metas["train"], model.backbone.image_size)
    history = train(model, train_ds, train_cfg, out / "train", resume=resume, progress=progress)
    after = evaluate_with(model, metas["heldout"], ev, progress=progress, dataset_name="heldout")
    tables = pd.concat([before.assign(model="untrained"), after.assign(model="trained")], ignore_index=True)
    made = ", ".join(f"{k} {v}" for k, v in profile.data.synthetic.items())
    note = (f"Held-out domain of the synthetic data ({made}), TPS {profile.model_config.backbone} before and after "
            f"training on the training domain. {profile.label}.")
    write_table(tables[["model", *before.columns]], out / "heldout_metrics", note)
    viz.save_figure(viz.plot_history(history, profile.label), out / "training_loss")
    viz.save_figure(viz.plot_metric_bars(tables[tables["class"] != "mean"], x="class", hue="model",
                                         metrics=["image_auroc", "pixel_auroc", "pixel_aupro"],
                                         title="Held-out domain: untrained vs trained TPS", label=profile.label),
                    out / "heldout_metrics")
    figure = viz.example_figure(model, examples, "Held-out examples, trained TPS", profile.label, device=device)
    viz.save_figure(figure, out / "examples_trained")
    b, a = before.iloc[-1], after.iloc[-1]
    result = {"pixel_auroc_untrained": b.pixel_auroc, "pixel_auroc_trained": a.pixel_auroc,
              "image_auroc_untrained": b.image_auroc, "image_auroc_trained": a.image_auroc}
    log.info(f"results in {out}/ ({time.time() - t0:.0f} s)")
    log.info(f"held-out pixel AUROC: untrained {b.pixel_auroc / 100:.3f} -> trained {a.pixel_auroc / 100:.3f}")
    why = f" ({RANDOM_CLIP_IMAGE_NOTE})" if not profile.model_config.pretrained else ""
    log.info(f"held-out image AUROC: untrained {b.image_auroc / 100:.3f} -> trained {a.image_auroc / 100:.3f}{why}")
    return result
