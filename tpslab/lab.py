"""Small helpers that the numbered notebooks (``notebooks/NN_*.ipynb``) call.

The notebooks stay thin: every step longer than a few lines lives here, as a plain
function. They talk to each other only through files under ``results/<profile>/``::

    data.json                     01: meta.json of every data set, by name
    train/<run>/checkpoint.pt     02: trained models (run "main" = the profile's TPS)
    ablation/<row>/checkpoint.pt  04: the ablation models
    tables/NN_*.csv|md|tex        every table
    figures/NN_*.png|pdf          every figure
    notebooks/NN_*.ipynb          the executed copies (tpslab reproduce)
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
import torch.nn.functional as F
from torch.utils.data import Subset

import tpslab
from tpslab import metrics, viz
from tpslab.data.dataset import AnomalyDataset
from tpslab.data.meta import load_meta
from tpslab.evaluate import METRIC_COLUMNS, default_sigma, evaluate, predict_dataset, score_class, write_table
from tpslab.model import TPS, TPSConfig
from tpslab.profiles import Profile, data_root, load_profile, results_root
from tpslab.train import CHECKPOINT, TrainConfig, load_checkpoint, train
from tpslab.utils import TPSLabError, atomic_write_json, atomic_write_text, seed_everything

PROJECT = Path(tpslab.__file__).resolve().parents[1]  # the source checkout (if this is one)
RUN_FILE = "run.json"  # beside each checkpoint: what it was trained with


def project_path(path: str | os.PathLike) -> Path:
    """A relative path is taken from the project root in a source checkout (notebooks run in notebooks/)."""
    path = Path(path)
    if path.is_absolute() or not (PROJECT / "notebooks").is_dir():
        return path.absolute()
    return PROJECT / path


def shown(path: str | os.PathLike) -> str:
    """A path as notebooks print it: relative to the project root when inside it."""
    path = Path(path).absolute()
    return str(path.relative_to(PROJECT)) if path.is_relative_to(PROJECT) else str(path)


@dataclass
class Lab:
    """Where a notebook reads and writes, and the profile it runs."""

    profile: Profile
    out: Path  # results/<profile>
    data: Path  # the data root
    device: str
    label: str  # printed under every figure title and atop every table

    def setting(self, key: str, default: Any = None) -> Any:
        """A value of the profile's ``notebooks:`` section."""
        return self.profile.extra.get("notebooks", {}).get(key, default)

    def save_figure(self, fig, name: str) -> None:
        """Show ``fig`` in the notebook, then save ``figures/<name>.png`` and ``.pdf``."""
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
        stem = self.out / "tables" / name
        note = f"{note} ({self.label})" if note else f"({self.label})"
        write_table(table, stem, note)
        if latex:
            atomic_write_text(stem.with_suffix(".tex"), to_latex(table, note))
        print(f"saved tables/{name}.csv, .md" + (", .tex" if latex else ""))

    def evaluate(self, model: TPS, dataset: str) -> pd.DataFrame:
        """``tpslab.evaluate.evaluate`` on a located data set, with the profile's settings."""
        ev = self.profile.evaluate
        return evaluate(model, self.datasets()[dataset], dataset_name=dataset, batch_size=ev.get("batch_size", 8),
                        aupro_method=ev.get("aupro_method", "exact"), device=self.device, progress=False)

    def checkpoint(self, run: str = "main") -> Path:
        return self.out / "train" / run / CHECKPOINT

    def datasets(self) -> dict[str, Path]:
        """The data sets 01_data_prep located: name -> meta.json."""
        file = self.out / "data.json"
        if not file.is_file():
            raise TPSLabError(f"{file}: not found; run notebooks/01_data_prep first")
        return {k: Path(v) for k, v in json.loads(file.read_text()).items()}


def setup(profile: str = "smoke", results_dir: str | None = None, data_dir: str | None = None) -> Lab:
    """Load the profile, apply its threads and seed; print where things go."""
    prof = load_profile(profile)
    if prof.extra.get("threads"):
        torch.set_num_threads(int(prof.extra["threads"]))  # tiny models: more threads only add overhead
    seed_everything(int(prof.train.get("seed", 111)))
    sns.set_theme(style="whitegrid", context="paper")
    plt.rcParams["figure.dpi"] = 72  # inline copies small; the saved files use 120 dpi
    device = prof.device if prof.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    synthetic = prof.data.get("kind") == "synthetic"
    label = (viz.SYNTHETIC_LABEL if synthetic and prof.model.get("pretrained") is None else
             f"synthetic data, profile {prof.name}: not paper numbers" if synthetic else
             f"tpslab, profile {prof.name}")
    lab = Lab(prof, project_path(results_dir or results_root() / prof.name), project_path(data_root(data_dir)),
              device, label)
    lab.out.mkdir(parents=True, exist_ok=True)
    print(f"profile {prof.name}: {prof.description}\nresults: {shown(lab.out)}\ndata: {shown(lab.data)}\n"
          f"device: {device}, torch threads: {torch.get_num_threads()}")
    return lab


# ----------------------------------------------------------------------------- data sets


def training_runs(profile: Profile) -> dict[str, str]:
    """Run name -> auxiliary data set: "main", one per ``auxiliary_for`` entry, the medical ones."""
    data = profile.data
    runs = {"main": data["train"]}
    runs.update({f"aux-{aux}": aux for aux in (data.get("auxiliary_for") or {}).values()})
    runs.update({f"medical-{task}": spec["train"] for task, spec in (data.get("medical") or {}).items()})
    return runs


def industrial_runs(profile: Profile) -> dict[str, str]:
    """Data set -> the run of the paper's Tables 1-2 that evaluates it (every run but the medical ones)."""
    return {d: r for d, r in evaluation_plan(profile) if not r.startswith("medical-")}


def evaluation_plan(profile: Profile) -> list[tuple[str, str]]:
    """(data set, run) pairs to evaluate: each test set with its model, then the medical ones."""
    data = profile.data
    aux = data.get("auxiliary_for") or {}
    plan = [(name, f"aux-{aux[name]}" if name in aux else "main") for name in data["test"]]
    plan += [(name, f"medical-{task}") for task, spec in (data.get("medical") or {}).items() for name in spec["test"]]
    return plan


def needed_datasets(profile: Profile) -> list[str]:
    """Every data set a profile's notebooks read, in order, without repeats."""
    names = list(training_runs(profile).values()) + [d for d, _ in evaluation_plan(profile)]
    names += profile.extra.get("ablation", {}).get("test", [])
    return list(dict.fromkeys(names))


def missing_datasets(profile: Profile, root: Path) -> list[str]:
    """The command that makes each missing ``meta.json`` of a real data set (none for synthetic data)."""
    if profile.data.get("kind") == "synthetic":
        return []
    folders = {n: root / profile.data.get("roots", {}).get(n, n) for n in needed_datasets(profile)}
    return [f"`tpslab prepare {n} {shown(f)}`" for n, f in folders.items() if not (f / "meta.json").is_file()]


def prepare_data(lab: Lab) -> dict[str, Path]:
    """Make the synthetic domains, or find each real data set's meta.json; write ``data.json``."""
    spec = lab.profile.data
    if spec.get("kind") == "synthetic":
        from tpslab.data.synthetic import make_synthetic_pair

        settings = dict(spec.get("synthetic", {}))
        metas = make_synthetic_pair(lab.data / spec.get("root", "synthetic"), progress=False, **settings)
        found = {path.parent.name: path for path in metas.values()}
    else:
        missing = missing_datasets(lab.profile, lab.data)
        if missing:
            raise TPSLabError(f"data sets not prepared (get them as data/README.md says, then run): {'; '.join(missing)}")
        roots = spec.get("roots", {})
        found = {n: lab.data / roots.get(n, n) / "meta.json" for n in needed_datasets(lab.profile)}
    atomic_write_json(lab.out / "data.json", {k: str(v) for k, v in found.items()})
    return found


def class_counts(metas: dict[str, Path]) -> pd.DataFrame:
    """Test-split counts per data set and class: normal, anomalous, anomalous with a mask."""
    rows = []
    for name, path in metas.items():
        for cls, samples in load_meta(path, check_files=False).splits["test"].items():
            rows.append({"dataset": name, "class": cls, "normal": sum(s["anomaly"] == 0 for s in samples),
                         "anomalous": sum(s["anomaly"] == 1 for s in samples),
                         "with mask": sum(s["anomaly"] == 1 and bool(s["mask_path"]) for s in samples)})
    return pd.DataFrame(rows)


def first_per_class(dataset: AnomalyDataset, per_class: int) -> list[int]:
    """Indices of the first ``per_class`` samples of each class (a deterministic subset)."""
    names = pd.Series([s["cls_name"] for s in dataset.samples])
    return np.flatnonzero(names.groupby(names).cumcount() < per_class).tolist()


def sample_batch(meta: Path, image_size: int, n: int, n_anomalous: int | None = None) -> dict[str, Any]:
    """n test images spread over the classes (normal first, then ``n_anomalous``, default half, anomalous)."""
    ds = AnomalyDataset(meta, image_size)
    k = n // 2 if n_anomalous is None else n_anomalous
    picks = []
    for label, count in ((0, n - k), (1, k)):
        pool = [i for i, s in enumerate(ds.samples) if s["anomaly"] == label]
        picks += [pool[j * len(pool) // count] for j in range(count)] if pool and count else []
    items = [ds[i] for i in picks]
    return {"images": torch.stack([it["image"] for it in items]), "masks": [it["mask"].numpy() for it in items],
            "rgb": [viz.to_rgb(it["image"]) for it in items], "labels": [it["label"] for it in items],
            "classes": [it["cls_name"] for it in items]}


def plot_samples(batch: dict[str, Any], title: str, label: str):
    """Sample images (defects outlined in red) above their masks."""
    n = len(batch["rgb"])
    fig, axes = plt.subplots(2, n, figsize=(1.5 * n, 3.6), squeeze=False)
    for j in range(n):
        axes[0, j].imshow(batch["rgb"][j])
        axes[0, j].contour(batch["masks"][j], levels=[0.5], colors="red", linewidths=0.8)
        axes[0, j].set_title(f"{batch['classes'][j]}\n{'anomalous' if batch['labels'][j] else 'normal'}", fontsize=7)
        axes[1, j].imshow(batch["masks"][j], cmap="gray", vmin=0, vmax=1)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(f"{title}\n({label})", fontsize=9)
    return fig


# ----------------------------------------------------------------------------- training


def train_run(lab: Lab, out_dir: Path, dataset: str, model_settings: dict | None = None,
              train_settings: dict | None = None, per_class: int | None = None,
              reuse: list[Path] = ()) -> tuple[TPS, pd.DataFrame]:
    """Train TPS (profile settings + overrides) on a data set; reuse a finished identical run if any."""
    cfg = TPSConfig.from_dict({**lab.profile.model, **(model_settings or {})})
    tcfg = TrainConfig.from_dict({**lab.profile.train, **(train_settings or {}), "device": lab.device})
    spec = json.loads(json.dumps({"model": cfg.to_dict(), "train": asdict(tcfg), "dataset": dataset,
                                  "per_class": per_class, "tpslab": tpslab.__version__}))
    for folder in [out_dir, *reuse]:
        run_file = folder / RUN_FILE
        if run_file.is_file() and json.loads(run_file.read_text()) == spec:
            print(f"reusing the finished run in {shown(folder)} (delete it to train again)")
            return load_checkpoint(folder / CHECKPOINT).to(lab.device), pd.read_csv(folder / "history.csv")
    model = TPS(cfg)
    data = AnomalyDataset(lab.datasets()[dataset], model.backbone.image_size)
    data = Subset(data, first_per_class(data, per_class)) if per_class else data
    print(f"training on {dataset}: {len(data)} images, {tcfg.epochs} epochs, variant {cfg.variant}")
    history = train(model, data, tcfg, out_dir, progress=False)
    atomic_write_json(out_dir / RUN_FILE, spec)
    return model, pd.DataFrame(history)


def slug(name: str) -> str:
    """A folder name for a table row: "A2 (TPS)" -> "a2-tps"."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


# ----------------------------------------------------------------------------- evaluation


def _pick(ranked: list[tuple], k: int) -> list[tuple]:
    """The first k of ``ranked`` (quality, class, index) cases, one per class before any class repeats."""
    firsts = [c for n, c in enumerate(ranked) if c[1] not in {d[1] for d in ranked[:n]}]
    return (firsts + [c for c in ranked if c not in firsts])[:k]


def evaluate_with_cases(lab: Lab, model: TPS, meta: Path, name: str, n: int = 6) -> tuple[pd.DataFrame, dict]:
    """Per-class metrics (as tpslab.evaluate.evaluate) plus the best and worst localised test images.

    An anomalous image's quality is the pixel AUROC of its own map; a normal image's is one minus
    its map's maximum (per layer): a false alarm is low. Returns the table and
    {"good": cases, "bad": cases}, half anomalous and half normal, each case (quality, class, index).
    """
    size, ev, layers = model.backbone.image_size, lab.profile.evaluate, len(model.backbone.layers)
    rows, cand, m = [], {0: [], 1: []}, load_meta(meta)
    for cls in m.classes("test"):
        ds = AnomalyDataset(m, size, "test", [cls])
        p = predict_dataset(model, ds, ev.get("batch_size", 8), None, lab.device, progress=False)
        rows.append({"dataset": name, "class": cls, "images": len(ds), "anomalous": int(p.labels.sum()),
                     **score_class(p, ev.get("aupro_method", "exact"))})
        for i in np.flatnonzero(p.has_mask):
            quality = metrics.pixel_auroc(p.masks[i], p.maps[i]) if p.labels[i] else 1 - p.maps[i].max() / layers
            cand[int(p.labels[i])].append((float(quality), cls, int(i)))
    table = pd.DataFrame(rows)
    mean = {"dataset": name, "class": "mean", "images": int(table["images"].sum()),
            "anomalous": int(table["anomalous"].sum()), **table[METRIC_COLUMNS].mean().to_dict()}
    ranked = {k: sorted(v, key=lambda c: -c[0]) for k, v in cand.items()}
    cases = {"good": _pick(ranked[1], n - n // 2) + _pick(ranked[0], n // 2),
             "bad": _pick(ranked[1][::-1], n - n // 2) + _pick(ranked[0][::-1], n // 2)}
    return pd.concat([table, pd.DataFrame([mean])], ignore_index=True), cases


def case_figure(lab: Lab, model: TPS, meta: Path, cases: list[tuple], title: str):
    """Image, ground truth and smoothed anomaly map of chosen (quality, class, index) cases."""
    size, m = model.backbone.image_size, load_meta(meta)
    items = [AnomalyDataset(m, size, "test", [c])[i] for _, c, i in cases]
    p = predict_dataset(model, items, len(items), default_sigma(size), lab.device, progress=False)
    captions = [f"{c}\n{'anomalous' if y else 'normal'}, score {s:.2f}\nquality {q:.2f}"
                for (q, c, _), y, s in zip(cases, p.labels, p.scores, strict=True)]
    return viz.plot_examples([viz.to_rgb(it["image"]) for it in items], list(p.maps), list(p.masks), captions,
                             title, lab.label)


# ----------------------------------------------------------------------------- what the model looks at


@dataclass
class Explanation:
    """Per selected layer k, for a batch: P(anomalous) per patch and the pathway's attention.

    Attributes:
        global_maps: (K, B, g, g) read out with the global (classification) prompts.
        shunt_maps: (K, B, g, g) with the plain shunt prompts: a fixed read-out, the same for every image.
        pathway_maps: (K, B, g, g) with the shunt prompts customised to the image by the pathway (what TPS uses).
        attention: (K, B, 2, g, g) MHA_eta's attention of the normal / anomalous shunt token over the patches.
        readout: (K, B, D) per-image read-out direction s_a - s_n after the pathway.
    """

    global_maps: torch.Tensor
    shunt_maps: torch.Tensor
    pathway_maps: torch.Tensor
    attention: torch.Tensor
    readout: torch.Tensor


def _mask_grid(masks: list[np.ndarray], g: int) -> torch.Tensor:
    """(B, g, g): the share of each patch that the (S, S) masks cover."""
    return F.adaptive_avg_pool2d(torch.from_numpy(np.stack(masks)).float()[:, None], g)[:, 0]


def _heat(rgb: np.ndarray, grid: torch.Tensor, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """A (g, g) patch map upsampled (bilinear) and laid over the image."""
    up = F.interpolate(grid[None, None].float(), size=rgb.shape[:2], mode="bilinear")[0, 0].numpy()
    return viz.overlay(rgb, up, lo, hi)


def _p_anomalous(z: torch.Tensor, text: torch.Tensor, t: float) -> torch.Tensor:
    """softmax over [normal, anomalous] of cosine / t, per patch: (B, L, D) x (.., 2, D) -> (B, L)."""
    return (F.normalize(z, dim=-1) @ F.normalize(text, dim=-1).transpose(-1, -2) / t).softmax(-1)[..., 1]


@torch.no_grad()
def explain(model: TPS, images: torch.Tensor) -> Explanation:
    """Global, plain-shunt and pathway read-outs of every selected layer (the paper variant's pathways)."""
    model.eval()
    feats = model.encode_images(images.to(next(model.parameters()).device))
    g_t, s_t = model.text_features()  # (2, D) each
    b, g, t = images.shape[0], model.backbone.grid_size, model.config.temperature
    out: dict[str, list[torch.Tensor]] = {k: [] for k in ("global", "shunt", "pathway", "attention", "readout")}
    for i, z in enumerate(feats.patches):  # z: (B, L, D)
        s, att = model.pathway_for(i)(s_t.expand(b, -1, -1), g_t.expand(b, -1, -1), z, return_attention=True)
        out["global"].append(_p_anomalous(z, g_t, t).reshape(b, g, g))
        out["shunt"].append(_p_anomalous(z, s_t, t).reshape(b, g, g))
        out["pathway"].append(_p_anomalous(z, s, t).reshape(b, g, g))
        out["attention"].append(att.reshape(b, 2, g, g))
        out["readout"].append(F.normalize(s[:, 1] - s[:, 0], dim=-1))
    return Explanation(*(torch.stack(out[k]).cpu() for k in ("global", "shunt", "pathway", "attention", "readout")))


def layer_summary(expl: Explanation, masks: list[np.ndarray], layers: tuple[int, ...]) -> pd.DataFrame:
    """Per layer: pixel AUROC of the three read-outs, attention lift on defects, read-out agreement."""
    size, m = masks[0].shape[-1], np.stack(masks).astype(np.uint8)  # (B, S, S)
    grid = _mask_grid(masks, expl.attention.shape[-1])  # (B, g, g)
    bad = grid.flatten(1).sum(1) > 0
    rows = []
    for k, layer in enumerate(layers):
        up = {n: F.interpolate(getattr(expl, f"{n}_maps")[k][:, None], size=size, mode="bilinear")[:, 0].numpy()
              for n in ("global", "shunt", "pathway")}
        att = expl.attention[k]  # (B, 2, g, g), each token's attention sums to 1 over the patches
        lift = [float(((att[bad, j] * grid[bad]).flatten(1).sum(1) / grid[bad].flatten(1).mean(1)).mean()) for j in (0, 1)]
        r = expl.readout[k]
        rows.append({"layer": layer, **{f"pixel_auroc {n}": 100 * metrics.pixel_auroc(m, up[n]) for n in up},
                     "attention lift normal": lift[0], "attention lift anomalous": lift[1],
                     "readout agreement": float((r @ F.normalize(r.mean(0), dim=0)).mean())})
    return pd.DataFrame(rows)


def plot_layers(rgb: np.ndarray, mask: np.ndarray, expl: Explanation, j: int, layers: tuple[int, ...], label: str):
    """Image j: per layer (rows) the three read-outs (P(anomalous), 0 to 1) and the two tokens' attention."""
    cols = [("global prompts", expl.global_maps, 0, 1), ("shunt prompts", expl.shunt_maps, 0, 1),
            ("shunt + pathway", expl.pathway_maps, 0, 1)]
    cols += [(f"attention,\n{w} token", expl.attention[:, :, c], None, None) for c, w in ((0, "normal"), (1, "anomalous"))]
    fig, axes = plt.subplots(len(layers), len(cols) + 1, figsize=(1.6 * (len(cols) + 1), 1.7 * len(layers) + 0.6),
                             squeeze=False)
    for r, layer in enumerate(layers):
        axes[r, 0].imshow(rgb)
        axes[r, 0].contour(mask, levels=[0.5], colors="lime", linewidths=0.8)
        axes[r, 0].set_ylabel(f"layer {layer}", fontsize=8)
        for c, (name, maps, lo, hi) in enumerate(cols, start=1):
            axes[r, c].imshow(_heat(rgb, maps[r, j], lo, hi))
            axes[0, c].set_title(name, fontsize=8)
    axes[0, 0].set_title("image, defect\noutlined", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(f"What each read-out scores as anomalous, per layer\n({label})", fontsize=9)
    return fig


def plot_attention(batch: dict[str, Any], expl: Explanation, k: int, layer: int, label: str):
    """Per image (columns): the image (defect outlined), then each shunt token's attention (layer index k)."""
    n = len(batch["rgb"])
    fig, axes = plt.subplots(3, n, figsize=(1.6 * n, 5.2), squeeze=False)
    for j in range(n):
        axes[0, j].imshow(batch["rgb"][j])
        axes[0, j].contour(batch["masks"][j], levels=[0.5], colors="lime", linewidths=0.8)
        axes[0, j].set_title(batch["classes"][j], fontsize=8)
        for token in (0, 1):
            axes[token + 1, j].imshow(_heat(batch["rgb"][j], expl.attention[k, j, token]))
    for r, name in enumerate(("image", "normal token", "anomalous token")):
        axes[r, 0].set_ylabel(name, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(f"Where the pathway's shunt tokens look (MHA_eta, layer {layer})\n({label})", fontsize=9)
    return fig


def patch_table(expl: Explanation, masks: list[np.ndarray], layers: tuple[int, ...]) -> pd.DataFrame:
    """Every patch's P(anomalous) per layer and read-out, with whether it is mostly defect."""
    defect = np.where(_mask_grid(masks, expl.attention.shape[-1]).flatten().numpy() > 0.5, "defect", "normal")
    return pd.concat([pd.DataFrame({"layer": layer, "read-out": name, "patch": defect,
                                    "P(anomalous)": getattr(expl, f"{attr}_maps")[k].flatten().numpy()})
                      for k, layer in enumerate(layers)
                      for name, attr in (("global", "global"), ("shunt", "shunt"), ("shunt + pathway", "pathway"))])


# ----------------------------------------------------------------------------- tables


def to_latex(table: pd.DataFrame, caption: str | None = None) -> str:
    """A booktabs ``tabular`` (no extra dependency); floats with one decimal."""
    def cell(v: Any) -> str:
        text = f"{v:.1f}" if isinstance(v, float) else str(v)
        return re.sub(r"([&%_#$])", r"\\\1", text)
    lines = [f"% {caption}" if caption else "%", "\\begin{tabular}{" + "l" * len(table.columns) + "}", "\\toprule",
             " & ".join(cell(c) for c in table.columns) + " \\\\", "\\midrule"]
    lines += [" & ".join(cell(v) for v in row) + " \\\\" for row in table.itertuples(index=False)]
    return "\n".join(lines + ["\\bottomrule", "\\end{tabular}"]) + "\n"


def show_table(table: pd.DataFrame, digits: int = 1) -> None:
    """Print a table as Markdown, numbers rounded (what nbval compares)."""
    from tpslab.evaluate import to_markdown

    print(to_markdown(table, digits), end="")

