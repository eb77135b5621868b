"""Notebook glue: what the numbered notebooks (``notebooks/NN_*.ipynb``) share.

The notebooks stay thin: set-up (:func:`setup`), the data sets they find
(:func:`prepare_data`), the reuse of finished training runs (:func:`train_run`), and
evaluation with example cases (:func:`evaluate_with_cases`). Everything else they call
lives in the module whose concern it is (``profiles``, ``evaluate``, ``explain``, ``viz``,
``data.dataset``). They talk to each other only through files under ``results/<profile>/``::

    data.json                     01: meta.json of every data set, by name
    train/<run>/checkpoint.pt     02: trained models (run "main" = the profile's TPS)
    train/anomalyclip-<run>/      02: AnomalyCLIP trained on the same data with the same recipe
    ablation/<row>/checkpoint.pt  04: the ablation models
    tables/NN_*.csv|md|tex        every table
    figures/NN_*.png|pdf          every figure
    notebooks/NN_*.ipynb          the executed copies (tpslab reproduce)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch

from tpslab import viz
from tpslab.data.dataset import AnomalyDataset, Examples, load_examples, pick_examples
from tpslab.data.meta import class_counts as meta_counts
from tpslab.data.meta import load_meta
from tpslab.evaluation.evaluate import ClassPredictions, evaluate_with, localisation_quality
from tpslab.methods import TRAINED, build_method
from tpslab.methods.base import Detector
from tpslab.methods.checkpoint import CHECKPOINT, load_checkpoint
from tpslab.profiles import Profile, data_root, load_profile, locate_datasets, results_root
from tpslab.reports.tables import to_markdown, write_table
from tpslab.runs import training
from tpslab.utils import (
    TPSLabError,
    atomic_write_json,
    configure_logging,
    project_path,
    resolve_device,
    seed_everything,
    shown,
)


@dataclass
class Lab:
    """Where a notebook reads and writes, and the profile it runs."""

    profile: Profile
    out: Path  # results/<profile>
    data: Path  # the data root
    device: str
    label: str  # printed under every figure title and atop every table

    def save_figure(self, fig: plt.Figure, name: str) -> None:
        """Show ``fig`` in the notebook, then save ``figures/<name>.png`` and ``.pdf``."""
        if fig.get_layout_engine() is None:  # figures that lay themselves out (constrained) are left alone
            fig.tight_layout()  # keeps a two-line title clear of the panels' titles
        try:
            from IPython.display import display
            display(fig)
        except ImportError:
            pass
        viz.save_figure(fig, self.out / "figures" / name)
        print(f"saved figures/{name}.png and .pdf")  # relative to the results folder: the same on every machine

    def save_table(self, table: pd.DataFrame, name: str, note: str | None = None, latex: bool = False) -> None:
        """Write ``tables/<name>.csv`` and ``.md`` (and ``.tex``), headed by the lab's label."""
        note = f"{note} ({self.label})" if note else f"({self.label})"
        write_table(table, self.out / "tables" / name, note, latex)
        print(f"saved tables/{name}.csv, .md" + (", .tex" if latex else ""))

    def evaluate(self, model: Detector, dataset: str, **kwargs: Any) -> pd.DataFrame:
        """``tpslab.evaluation.evaluate.evaluate`` on a located data set, with the profile's settings."""
        cfg = replace(self.profile.evaluate, device=self.device)
        return evaluate_with(model, self.datasets()[dataset], cfg, dataset_name=dataset, progress=False, **kwargs)

    def checkpoint(self, run: str = "main") -> Path:
        """The checkpoint of a training run of notebook 02."""
        return self.out / "train" / run / CHECKPOINT

    def method(self, name: str, run: str = "main") -> Detector:
        """A method of the profile, ready to evaluate: trained ones from notebook 02's run ``<name>-<run>``.

        TPS is run ``run`` itself; AnomalyCLIP is ``anomalyclip-<run>`` (same data and recipe);
        the training-free baselines are built from the profile's ``methods`` section.
        """
        if name == "tps":
            return load_checkpoint(self.checkpoint(run)).to(self.device)
        if name in TRAINED:
            return load_checkpoint(self.checkpoint(f"{name}-{run}")).to(self.device)
        return build_method(name, **self.profile.method_settings(name)).to(self.device)

    def datasets(self) -> dict[str, Path]:
        """The data sets 01_data_prep located: name -> meta.json."""
        file = self.out / "data.json"
        if not file.is_file():
            raise TPSLabError(f"{file}: not found; run notebooks/01_data_prep first")
        return {k: Path(v) for k, v in json.loads(file.read_text()).items()}

    def examples(self, dataset: str, n: int, n_anomalous: int | None = None, image_size: int = 128) -> Examples:
        """``n`` test images of a located data set, anomalous first, spread over the classes."""
        return load_examples(self.datasets()[dataset], image_size, n, n_anomalous)


def setup(profile: str = "smoke", results_dir: str | None = None, data_dir: str | None = None) -> Lab:
    """Load the profile, apply its threads and seed; print where things go."""
    configure_logging()
    prof = load_profile(profile)
    prof.apply_threads()
    seed_everything(prof.train_config.seed)
    sns.set_theme(style="whitegrid", context="paper")
    plt.rcParams["figure.dpi"] = 72  # inline copies small; the saved files use 120 dpi
    device = str(resolve_device(prof.device))
    lab = Lab(prof, project_path(results_dir or results_root() / prof.name), project_path(data_root(data_dir)),
              device, prof.label)
    lab.out.mkdir(parents=True, exist_ok=True)
    print(f"profile {prof.name}: {prof.description}\nresults: {shown(lab.out)}\ndata: {shown(lab.data)}\n"
          f"device: {device}, torch threads: {torch.get_num_threads()}")
    return lab


def prepare_data(lab: Lab) -> dict[str, Path]:
    """Make the synthetic domains, or find each real data set's meta.json; write ``data.json``."""
    found = locate_datasets(lab.profile, lab.data)
    atomic_write_json(lab.out / "data.json", {k: str(v) for k, v in found.items()})
    return found


def class_counts(metas: dict[str, Path]) -> pd.DataFrame:
    """Test-split counts per data set and class: normal, anomalous, anomalous with a mask."""
    return pd.DataFrame([{"dataset": name, **row} for name, path in metas.items()
                         for row in meta_counts(load_meta(path, check_files=False), "test")])


def train_run(lab: Lab, out_dir: Path, dataset: str, model_settings: dict | None = None,
              train_settings: dict | None = None, per_class: int | None = None,
              reuse: list[Path] = (), method: str = "tps") -> tuple[Detector, pd.DataFrame]:
    """:func:`tpslab.runs.training.train_run` on one of the lab's data sets, on the lab's device."""
    return training.train_run(lab.profile, lab.device, lab.datasets()[dataset], out_dir, dataset, model_settings,
                              train_settings, per_class, reuse, method)


def evaluate_with_cases(lab: Lab, model: Detector, dataset: str, n: int) -> tuple[pd.DataFrame, dict[str, Examples]]:
    """Per-class metrics (as :meth:`Lab.evaluate`) plus the best and the worst localised test images.

    Each image with a mask is ranked by :func:`tpslab.evaluation.evaluate.localisation_quality`; the
    ``n`` good (and bad) cases are picked with :func:`tpslab.data.dataset.pick_examples`
    from the ranking, anomalous first. Each case's quality is in its item's ``"quality"``.

    Returns:
        The table and {"good": cases, "bad": cases}.
    """
    meta, layers = load_meta(lab.datasets()[dataset]), len(model.backbone.layers)
    cand: list[tuple[float, str, int, int]] = []  # (quality, class, index in the class, label)

    def collect(cls: str, p: ClassPredictions) -> None:
        cand.extend((localisation_quality(p, i, layers), cls, int(i), int(p.labels[i]))
                    for i in range(len(p.labels)) if p.has_mask[i])

    table = lab.evaluate(model, dataset, on_class=collect)
    cases = {}
    best_first = sorted(cand, key=lambda c: -c[0])
    for kind, ranked in (("good", best_first), ("bad", best_first[::-1])):
        picks = [ranked[i] for i in pick_examples([c[3] for c in ranked], [c[1] for c in ranked], n)]
        items = [{**AnomalyDataset(meta, model.image_size, "test", [c])[i], "quality": q}
                 for q, c, i, _ in picks]
        cases[kind] = Examples(items)
    return table, cases


def show_table(table: pd.DataFrame, digits: int = 1) -> None:
    """Print a table as Markdown, numbers rounded (what nbval compares)."""
    print(to_markdown(table, digits), end="")

