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

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tpslab.methods import TRAINED
from tpslab.profiles import Profile, evaluation_plan, industrial_runs, load_profile, training_runs
from tpslab.utils import TPSLabError, shown

EXECUTORS = ("local", "local-parallel", "slurm")  # imports here stay torch-free: the CLI parser reads this


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


def _slug(name: str) -> str:
    from tpslab.lab import slug

    return slug(name)


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
            return out / "ablation" / _slug(job.entry)
        return out / "train" / (job.run if job.method == "tps" else f"{job.method}-{job.run}")
    prefix = f"ablation-{_slug(job.entry)}" if job.ablation else job.method
    return out / "compare" / "train" / f"{prefix}-{job.run}-r{job.replicate}"


def prediction_folder(out: Path, job: Job) -> Path:
    """Where a predict job's files go: ``predictions/<entry>/<dataset>/<tag>``."""
    return out / "predictions" / _slug(job.entry) / job.dataset / job.tag


def train_set(profile: Profile, job: Job) -> str:
    """The auxiliary data set a train job (or the trainer of a predict job) learns from."""
    return profile.data.train if job.ablation else training_runs(profile)[job.run]


def train_folders(out: Path, job: Job) -> list[Path]:
    """Where a train job's finished run may be: its folder (and for an ablation row's replicate 0, 02's run)."""
    return [train_folder(out, job), *([out / "train" / "main"] if job.ablation and job.replicate == 0 else [])]


def _lab(ctx: Context, profile: Profile) -> Any:
    from tpslab.lab import Lab
    from tpslab.utils import resolve_device

    return Lab(profile, Path(ctx.out), Path(ctx.data), str(resolve_device(profile.device)), profile.label)


def train_settings(profile: Profile, job: Job) -> dict[str, Any]:
    """The arguments of :func:`tpslab.lab.train_run` for a train job (replicate seeds included)."""
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
    from tpslab.lab import run_spec

    return run_spec(_lab(ctx, profile), train_set(profile, job), **train_settings(profile, job))


def prediction_spec(ctx: Context, profile: Profile, job: Job) -> dict[str, Any]:
    """What a predict job's stored predictions are made with (a changed spec invalidates them)."""
    import tpslab
    from tpslab.methods import method_module

    if job.run:
        settings = {"trained": train_spec(ctx, profile, job.trainer())}
    else:
        settings = {"settings": method_module(job.method).Settings.from_dict(
            profile.method_settings(job.method)).to_dict()}
    return {"entry": job.entry, "method": job.method, "dataset": job.dataset, "meta": ctx.datasets[job.dataset],
            "split": "test", "precision": profile.evaluate.precision, "tpslab": tpslab.__version__, **settings}


def is_finished(ctx: Context, job: Job, profile: Profile | None = None) -> bool:
    """Whether a job's files are already there (it is then skipped)."""
    from tpslab.evaluation import predictions
    from tpslab.lab import finished_run

    profile = profile or ctx.load()
    out = Path(ctx.out)
    if job.kind == "train":
        return finished_run(train_folders(out, job), train_spec(ctx, profile, job)) is not None
    return predictions.is_done(prediction_folder(out, job), prediction_spec(ctx, profile, job))


# ----------------------------------------------------------------------------- running one job


def run_job(ctx: Context, job: Job) -> str:
    """Run one job (in this process or a worker); return a one-line summary. Finished jobs return at once."""
    profile = ctx.load()
    profile.apply_threads()
    if is_finished(ctx, job, profile):
        return f"{job.name}: already done"
    start = time.perf_counter()
    if job.kind == "train":
        _train(ctx, profile, job)
    else:
        _predict(ctx, profile, job)
    return f"{job.name}: done in {time.perf_counter() - start:.1f} s"


def _train(ctx: Context, profile: Profile, job: Job) -> None:
    from tpslab.lab import train_run

    first, *reuse = train_folders(Path(ctx.out), job)
    train_run(_lab(ctx, profile), first, train_set(profile, job), reuse=reuse, **train_settings(profile, job))


def _model(ctx: Context, profile: Profile, job: Job) -> Any:
    from tpslab.lab import finished_run
    from tpslab.methods import build_method
    from tpslab.methods.checkpoint import CHECKPOINT, load_checkpoint

    if not job.run:
        return build_method(job.method, **profile.method_settings(job.method))
    trainer = job.trainer()
    found = finished_run(train_folders(Path(ctx.out), trainer), train_spec(ctx, profile, trainer))
    if found is None:
        raise TPSLabError(f"{job.name}: the model of '{trainer.name}' is not trained yet (run its train job first)")
    return load_checkpoint(found / CHECKPOINT)


def _predict(ctx: Context, profile: Profile, job: Job) -> None:
    import numpy as np

    from tpslab.data.dataset import AnomalyDataset
    from tpslab.data.meta import load_meta
    from tpslab.evaluation import predictions
    from tpslab.evaluation.inference import stream_maps
    from tpslab.utils import resolve_device

    folder, spec = prediction_folder(Path(ctx.out), job), prediction_spec(ctx, profile, job)
    predictions.start(folder, spec)
    model, meta, cfg = _model(ctx, profile, job), load_meta(ctx.datasets[job.dataset]), profile.evaluate
    device = resolve_device(profile.device)
    counts = {}
    for cls in meta.classes("test"):
        ds = AnomalyDataset(meta, model.image_size, "test", [cls], mask_rule=model.mask_rule)
        counts[cls] = len(ds)
        if predictions.has_class(folder, cls):
            continue  # an interrupted run keeps the classes it finished
        parts: dict[str, list] = {k: [] for k in ("scores", "maps", "labels", "has_mask", "paths", "types")}
        for item, scores, maps in stream_maps(model, ds, cfg.batch_size, 0.0, device, cfg.precision,
                                              cfg.workers, "float16", ctx.progress, f"{job.entry}/{job.dataset}/{cls}"):
            parts["scores"].append(scores)
            parts["maps"].append(maps.numpy())
            parts["labels"].append(item["label"].numpy())
            parts["has_mask"].append(np.asarray(item["has_mask"], bool))
            parts["paths"] += list(item["img_path"])
            parts["types"] += list(item["specie_name"])
        predictions.save_class(folder, cls, predictions.ClassRun(
            np.concatenate(parts["scores"]), np.concatenate(parts["maps"]), np.concatenate(parts["labels"]),
            np.concatenate(parts["has_mask"]), parts["paths"], parts["types"]))
    predictions.finish(folder, counts, model.protocol.image_size, model.protocol.sigma, model.mask_rule)
    from tpslab.runs.compare import protocols, score_run

    for protocol in protocols(profile).values():  # scored here, so executors spread the scoring too (cached)
        score_run(folder, ctx.datasets[job.dataset], job.dataset, protocol, profile.compare.n_boot,
                  profile.compare.boot_seed)


# ----------------------------------------------------------------------------- executors


@dataclass
class ExecutorOptions:
    """How ``tpslab compare`` runs its jobs."""

    kind: str = "local"  # "local", "local-parallel" or "slurm"
    jobs: int = 2  # local-parallel: processes at a time; slurm: jobs in flight
    folder: str | None = None  # submitit's logs and pickles (default: <out>/compare/submitit)
    partition: str | None = None  # slurm: the partition
    gpus: int = 1  # slurm: GPUs per job (training-free and trained alike)
    time_min: int = 240  # slurm: each job's time limit in minutes
    cluster: str | None = None  # submitit's cluster (None: slurm for "slurm", "local" for "local-parallel"); "debug"

    def __post_init__(self) -> None:
        """Check the executor's name and the counts."""
        if self.kind not in EXECUTORS:
            raise TPSLabError(f"--executor must be one of {', '.join(EXECUTORS)}, got {self.kind!r}")
        if self.jobs < 1 or self.gpus < 0 or self.time_min < 1:
            raise TPSLabError("--jobs >= 1, --gpus >= 0 and --time-min >= 1 expected")


def _submitit() -> Any:
    try:
        import submitit
    except ImportError as err:
        raise TPSLabError("--executor local-parallel and slurm need submitit: pip install 'tpslab[cluster]'") from err
    return submitit


def make_executor(opts: ExecutorOptions, out: Path) -> Any:
    """A submitit executor for ``local-parallel`` or ``slurm`` (its logs under ``opts.folder``).

    The SLURM parameters are given whatever the cluster; submitit ignores them on another one
    (its ``debug`` cluster, which runs each job in this process, is how the tests exercise this path).
    """
    submitit = _submitit()
    folder = Path(opts.folder or out / "compare" / "submitit")
    cluster = opts.cluster or ("local" if opts.kind == "local-parallel" else "slurm")
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    params: dict[str, Any] = {"timeout_min": opts.time_min, "name": "tpslab-compare", "tasks_per_node": 1}
    if opts.kind == "slurm":
        params.update(gpus_per_node=opts.gpus, slurm_partition=opts.partition)
    executor.update_parameters(**params)
    return executor


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def _in_flight(executor: Any, ctx: Context, jobs: list[Job], opts: ExecutorOptions,
               say: Callable[[str], None]) -> None:
    """Submit ``jobs`` with at most ``opts.jobs`` running at once; wait for all; raise if any failed.

    On the local executor with GPUs, each running job gets a GPU of its own (slot ``i`` sees GPU ``i mod n``).
    """
    gpus = _gpu_count() if executor.cluster == "local" else 0
    pending, running, failed = list(jobs), [], []
    while pending or running:
        while pending and len(running) < opts.jobs:
            slot = min(set(range(opts.jobs)) - {s for _, _, s in running})
            if gpus:
                executor.update_parameters(gpus_per_node=1, local_visible_gpus=[slot % gpus])
            job = pending.pop(0)
            running.append((job, executor.submit(run_job, ctx, job), slot))
        time.sleep(0.5)
        still = []
        for job, handle, slot in running:
            if not handle.done():
                still.append((job, handle, slot))
                continue
            try:
                say(handle.result())
            except Exception as err:  # noqa: BLE001 - a worker's error, reported with its log folder below
                text = str(err).strip()
                failed.append(f"{job.name}: {text.splitlines()[-1] if text else repr(err)}")
        running = still
    if failed:
        raise TPSLabError(f"{len(failed)} job(s) failed (logs under {shown(Path(executor.folder))}): "
                          + "; ".join(failed))


def run_grid(ctx: Context, jobs: Iterable[Job], opts: ExecutorOptions | None = None,
             say: Callable[[str], None] = print) -> list[Job]:
    """Run the jobs not yet finished, train jobs first; return the jobs that ran.

    Args:
        ctx: the profile, folders and data sets.
        jobs: from :func:`plan` (or a subset).
        opts: the executor (default: ``local``).
        say: where progress lines go.
    """
    opts = opts or ExecutorOptions()
    profile, jobs = ctx.load(), list(jobs)
    ran: list[Job] = []
    executor = make_executor(opts, Path(ctx.out)) if opts.kind != "local" else None
    for kind in ("train", "predict"):
        todo = [j for j in jobs if j.kind == kind and not is_finished(ctx, j, profile)]
        skipped = sum(j.kind == kind for j in jobs) - len(todo)
        if skipped:
            say(f"{skipped} {kind} job(s) already done (reused)")
        if not todo:
            continue
        if executor is None:
            for i, job in enumerate(todo, 1):
                say(f"[{i}/{len(todo)}] {run_job(ctx, job)}")
        else:
            say(f"{len(todo)} {kind} job(s) on {opts.kind} ({opts.jobs} at a time)")
            _in_flight(executor, ctx, todo, opts, say)
        ran += todo
    return ran


def write_datasets(ctx: Context) -> None:
    """Write ``data.json`` (data set -> meta.json) as notebook 01 does, for the jobs' :class:`tpslab.lab.Lab`."""
    from tpslab.utils import atomic_write_json

    atomic_write_json(Path(ctx.out) / "data.json", dict(ctx.datasets))
