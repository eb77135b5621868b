"""The run grid of ``tpslab compare``: independent jobs (method x data set x replicate), and who runs them.

A profile plans two kinds of job:

* ``train``: a trained method (TPS, AnomalyCLIP, an ablation row) on an auxiliary data set, one
  per replicate. Replicate 0 is the profile's own run, in the folder notebooks 02 and 04 use
  (``train/<run>/``, ``train/anomalyclip-<run>/``, ``ablation/<row>/``), so a finished notebook
  run is reused; replicate ``k > 0`` trains with seed ``train.seed + k`` and ``init_seed =
  seed + 1 + k`` under ``compare/train/``.
* ``predict``: one method on one test data set (with one replicate's model), written to the
  prediction store (:mod:`tpslab.evaluation.predictions`).

Every job writes only its own files, atomically, and a finished job is skipped, so the grid
resumes after an interruption and any executor gives the same files (and so the same tables):

* ``local``: in this process, in order;
* ``local-parallel``: submitit's local executor, ``jobs`` processes at a time (one per GPU when
  there are GPUs: each process sees one);
* ``slurm``: submitit on a SLURM cluster (partition, GPUs per job, time limit); submitit's own
  ``debug`` cluster runs the same path in this process (what the tests use).

Training jobs run before the prediction jobs that need them (two phases).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import tpslab
from tpslab.evaluation import predictions
from tpslab.methods import TRAINED, method_module
from tpslab.profiles import Profile, evaluation_plan, industrial_runs, load_profile, training_runs
from tpslab.runs.training import finished_run, run_spec, slug
from tpslab.utils import TPSLabError, resolve_device


@dataclass(frozen=True)
class Job:
    """One unit of work of the grid."""

    kind: str  # "train" or "predict"
    entry: str  # the table column: a method name ("tps", "clip", ...) or an ablation row ("A1", ...)
    method: str  # the registry name of the method (tpslab.methods)
    dataset: str  # train: the auxiliary data set; predict: the evaluated one
    run: str = ""  # the training run ("main", "aux-visa", "medical-<task>"); "" for training-free methods
    replicate: int = 0  # 0 .. compare.seeds - 1 (always 0 for training-free methods)
    ablation: bool = False  # an ablation row (Figure 3): trained with the ablation section's recipe

    @property
    def name(self) -> str:
        """A short readable name, e.g. ``predict tps heldout-domain main r0``."""
        run = f" {self.run} r{self.replicate}" if self.run else ""
        return f"{self.kind} {self.entry} {self.dataset}{run}"

    @property
    def tag(self) -> str:
        """The prediction folder's last part: ``<run>-r<k>`` or ``zero-shot``."""
        return f"{self.run}-r{self.replicate}" if self.run else "zero-shot"

    def trainer(self) -> Job:
        """The train job whose model this prediction job uses."""
        if not self.run:
            raise TPSLabError(f"{self.name}: a training-free method has no training job")
        return replace(self, kind="train", dataset="")


@dataclass(frozen=True)
class Context:
    """Everything a job needs besides itself (picklable: jobs may run in other processes)."""

    profile: str  # a built-in profile's name or a YAML path
    overrides: tuple[str, ...]  # --set section.key=value
    out: str  # results/<profile>
    data: str  # the data root
    datasets: dict[str, str] = field(default_factory=dict)  # data set name -> meta.json
    progress: bool = False

    def load(self) -> Profile:
        """The profile, with the overrides."""
        return load_profile(self.profile, list(self.overrides))


def plan(profile: Profile) -> list[Job]:
    """Every job of the profile's comparison: train jobs first, then predict jobs (no duplicates)."""
    cmp, train_runs = profile.compare, training_runs(profile)
    jobs: list[Job] = []
    for method in profile.compared_methods:
        if method not in TRAINED:
            jobs += [Job("predict", method, method, d) for d in industrial_runs(profile)]
            continue
        pairs = evaluation_plan(profile) if method == "tps" else list(industrial_runs(profile).items())
        for k in range(cmp.seeds):
            for run in dict.fromkeys(r for _, r in pairs):
                jobs.append(Job("train", method, method, train_runs[run], run, k))
            jobs += [Job("predict", method, method, d, r, k) for d, r in pairs]
    if cmp.ablation and profile.ablation.runs:
        for row in profile.ablation.runs:
            for k in range(cmp.seeds):
                jobs.append(Job("train", row, "tps", profile.data.train, "main", k, ablation=True))
                jobs += [Job("predict", row, "tps", d, "main", k, ablation=True) for d in profile.ablation.test]
    jobs = list(dict.fromkeys(jobs))
    return [j for j in jobs if j.kind == "train"] + [j for j in jobs if j.kind == "predict"]


# ----------------------------------------------------------------------------- where each job writes


def train_folder(out: Path, job: Job) -> Path:
    """Where a train job's checkpoint goes (replicate 0: the notebooks' own folders)."""
    if job.replicate == 0:
        if job.ablation:
            return out / "ablation" / slug(job.entry)
        return out / "train" / (job.run if job.method == "tps" else f"{job.method}-{job.run}")
    prefix = f"ablation-{slug(job.entry)}" if job.ablation else job.method
    return out / "compare" / "train" / f"{prefix}-{job.run}-r{job.replicate}"


def prediction_folder(out: Path, job: Job) -> Path:
    """Where a predict job's files go: ``predictions/<entry>/<dataset>/<tag>``."""
    return out / "predictions" / slug(job.entry) / job.dataset / job.tag


def train_set(profile: Profile, job: Job) -> str:
    """The auxiliary data set a train job (or the trainer of a predict job) learns from."""
    return profile.data.train if job.ablation else training_runs(profile)[job.run]


def train_folders(out: Path, job: Job) -> list[Path]:
    """Where a train job's finished run may be: its folder (and for an ablation row's replicate 0, 02's run)."""
    return [train_folder(out, job), *([out / "train" / "main"] if job.ablation and job.replicate == 0 else [])]


def train_settings(profile: Profile, job: Job) -> dict[str, Any]:
    """The settings of :func:`tpslab.runs.training.train_run` for a train job (replicate seeds included)."""
    model = dict(profile.ablation.runs[job.entry] or {}) if job.ablation else {}
    train = dict(profile.ablation.train) if job.ablation else {}
    if job.replicate:
        base = profile.method_settings(job.method)
        model["init_seed"] = int(base.get("seed", 0)) + 1 + job.replicate
        train["seed"] = int(profile.train_config.seed) + job.replicate
    per_class = profile.ablation.per_class if job.ablation else profile.notebooks.train_per_class
    return {"model_settings": model, "train_settings": train, "per_class": per_class, "method": job.method}


def train_spec(ctx: Context, profile: Profile, job: Job) -> dict[str, Any]:
    """The ``run.json`` a train job's finished run holds."""
    return run_spec(profile, str(resolve_device(profile.device)), train_set(profile, job),
                    **train_settings(profile, job))


def prediction_spec(ctx: Context, profile: Profile, job: Job) -> dict[str, Any]:
    """What a predict job's stored predictions are made with (a changed spec invalidates them)."""
    if job.run:
        settings = {"trained": train_spec(ctx, profile, job.trainer())}
    else:
        settings = {"settings": method_module(job.method).Settings.from_dict(
            profile.method_settings(job.method)).to_dict()}
    return {"entry": job.entry, "method": job.method, "dataset": job.dataset, "meta": ctx.datasets[job.dataset],
            "split": "test", "precision": profile.evaluate.precision, "tpslab": tpslab.__version__, **settings}


def is_finished(ctx: Context, job: Job, profile: Profile | None = None) -> bool:
    """Whether a job's files are already there (it is then skipped)."""
    profile = profile or ctx.load()
    out = Path(ctx.out)
    if job.kind == "train":
        return finished_run(train_folders(out, job), train_spec(ctx, profile, job)) is not None
    return predictions.is_done(prediction_folder(out, job), prediction_spec(ctx, profile, job))


