"""Running the grid's jobs: one job in this process or a worker, and the executors.

* ``local``: in this process, in order;
* ``local-parallel``: submitit's local executor, ``jobs`` processes at a time (one per GPU when
  there are GPUs: each process sees one);
* ``slurm``: submitit on a SLURM cluster (partition, GPUs per job, time limit); submitit's own
  ``debug`` cluster runs the same path in this process (what the tests use).

Progress goes to this module's logger (``tpslab.runs.execute``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tpslab.configs import EXECUTORS
from tpslab.data.dataset import AnomalyDataset
from tpslab.data.meta import load_meta
from tpslab.evaluation import predictions
from tpslab.evaluation.evaluate import ClassCollector
from tpslab.evaluation.inference import stream_maps
from tpslab.methods import build_method
from tpslab.methods.checkpoint import CHECKPOINT, load_checkpoint
from tpslab.profiles import Profile
from tpslab.runs.plan import (
    Context,
    Job,
    is_finished,
    prediction_folder,
    prediction_spec,
    train_folders,
    train_set,
    train_settings,
    train_spec,
)
from tpslab.runs.score import protocols, score_run
from tpslab.runs.training import finished_run, train_run
from tpslab.utils import TPSLabError, atomic_write_json, resolve_device, shown

log = logging.getLogger(__name__)


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
    first, *reuse = train_folders(Path(ctx.out), job)
    dataset = train_set(profile, job)
    train_run(profile, str(resolve_device(profile.device)), Path(ctx.datasets[dataset]), first, dataset, reuse=reuse,
              **train_settings(profile, job))


def _model(ctx: Context, profile: Profile, job: Job) -> Any:
    if not job.run:
        return build_method(job.method, **profile.method_settings(job.method))
    trainer = job.trainer()
    found = finished_run(train_folders(Path(ctx.out), trainer), train_spec(ctx, profile, trainer))
    if found is None:
        raise TPSLabError(f"{job.name}: the model of '{trainer.name}' is not trained yet (run its train job first)")
    return load_checkpoint(found / CHECKPOINT)


def _predict(ctx: Context, profile: Profile, job: Job) -> None:
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
        got = ClassCollector(keep_maps=True, pool=False, keep_masks=False)  # unsmoothed float16 maps, as stored
        for item, scores, maps in stream_maps(model, ds, cfg.batch_size, 0.0, device, cfg.precision,
                                              cfg.workers, "float16", ctx.progress, f"{job.entry}/{job.dataset}/{cls}"):
            got.add(item, scores, maps)
        predictions.save_class(folder, cls, got.predictions())
    predictions.finish(folder, counts, model.protocol.image_size, model.protocol.sigma, model.mask_rule)
    for protocol in protocols(profile).values():  # scored here, so executors spread the scoring too (cached)
        score_run(folder, ctx.datasets[job.dataset], job.dataset, protocol, profile.compare.n_boot,
                  profile.compare.boot_seed)


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
    return torch.cuda.device_count()


def _in_flight(executor: Any, ctx: Context, jobs: list[Job], opts: ExecutorOptions) -> None:
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
                log.info(handle.result())
            except Exception as err:  # noqa: BLE001 - a worker's error, reported with its log folder below
                text = str(err).strip()
                failed.append(f"{job.name}: {text.splitlines()[-1] if text else repr(err)}")
        running = still
    if failed:
        raise TPSLabError(f"{len(failed)} job(s) failed (logs under {shown(Path(executor.folder))}): "
                          + "; ".join(failed))


def run_grid(ctx: Context, jobs: Iterable[Job], opts: ExecutorOptions | None = None) -> list[Job]:
    """Run the jobs not yet finished, train jobs first; return the jobs that ran.

    Args:
        ctx: the profile, folders and data sets.
        jobs: from :func:`plan` (or a subset).
        opts: the executor (default: ``local``).
    """
    opts = opts or ExecutorOptions()
    profile, jobs = ctx.load(), list(jobs)
    ran: list[Job] = []
    executor = make_executor(opts, Path(ctx.out)) if opts.kind != "local" else None
    for kind in ("train", "predict"):
        todo = [j for j in jobs if j.kind == kind and not is_finished(ctx, j, profile)]
        skipped = sum(j.kind == kind for j in jobs) - len(todo)
        if skipped:
            log.info(f"{skipped} {kind} job(s) already done (reused)")
        if not todo:
            continue
        if executor is None:
            for i, job in enumerate(todo, 1):
                log.info(f"[{i}/{len(todo)}] {run_job(ctx, job)}")
        else:
            log.info(f"{len(todo)} {kind} job(s) on {opts.kind} ({opts.jobs} at a time)")
            _in_flight(executor, ctx, todo, opts)
        ran += todo
    return ran


def write_datasets(ctx: Context) -> None:
    """Write ``data.json`` (data set -> meta.json) as notebook 01 does, for the jobs' :class:`tpslab.lab.Lab`."""
    atomic_write_json(Path(ctx.out) / "data.json", dict(ctx.datasets))
