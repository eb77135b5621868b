"""The command line: ``tpslab demo|train|evaluate|predict|prepare|reproduce|cache`` (also ``python -m tpslab``).

Conventions shared by every subcommand: ``--method NAME`` (tps, clip, winclip, anomalyclip,
musc; see :mod:`tpslab.methods`) where a detector runs, ``--profile NAME`` and repeatable ``--set
section.key=value`` where a profile applies (train, evaluate, demo), explicit flags for the
common settings (their defaults are the dataclasses', shown by ``--help``), ``--device
auto|cpu|cuda[:N]`` and a comma-separated ``--classes``. Precedence: dataclass default <
profile < ``--set`` < explicit flag; a resumed run and a given checkpoint fix the settings
they were made with (:mod:`tpslab.cli.settings`).

Errors caused by input (a bad file, a missing data set, an interrupted run, a flag that
contradicts a checkpoint) are printed as one line, without a traceback, before anything is
written, and the exit status is 2 (130 when interrupted). The parser (:mod:`tpslab.cli.args`)
imports no torch, so ``--help`` answers at once; each command imports what it needs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tpslab.cli.args import PREPARE_OPTIONS, add_prepare_arguments, build_parser, classes_arg  # noqa: F401
from tpslab.cli.settings import checkpoint_overrides, resume_settings, settings, split_samples, training_data_warnings
from tpslab.configs import TrainConfig
from tpslab.methods import TRAINED
from tpslab.utils import TPSLabError, check_device_name, check_writable_dir, configure_logging

if TYPE_CHECKING:
    from tpslab.methods.base import Detector

TPSLAB_FILE = " (it is a tpslab checkpoint: give it to --checkpoint)"
AUTHORS_FILE = " (it is the authors' released file: give it to --authors-checkpoint)"


def cmd_demo(args: argparse.Namespace) -> int:
    """``tpslab demo``."""
    from tpslab.cli.demo import run_demo

    run_demo(args.profile, out=args.out, data=args.data, resume=args.resume, progress=not args.quiet,
             device=args.device, force=args.force)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """``tpslab train``: refuses to replace a checkpoint unless --force; --resume takes the checkpoint's settings."""
    from tpslab.methods.checkpoint import CHECKPOINT, read_checkpoint
    from tpslab.utils import resolve_device

    check_writable_dir(args.out)
    ckpt_path = Path(args.out) / CHECKPOINT
    saved = None
    if ckpt_path.is_file() and args.resume:
        saved = read_checkpoint(ckpt_path)
        if args.method_given and saved.get("method", "tps") != args.method:
            raise TPSLabError(f"cannot resume {ckpt_path}: --method {args.method} differs from the checkpoint's "
                              f"{saved.get('method', 'tps')}")
        args.method = saved.get("method", "tps")
    elif ckpt_path.is_file() and not args.force:
        raise TPSLabError(f"{ckpt_path} already holds a trained model: add --resume to continue it, --force to "
                          "replace it, or choose another --out")
    model_settings, train_settings, _, device = settings(args)
    if saved is not None:
        model_settings, train_settings = resume_settings(args, saved, ckpt_path)
    cfg = TrainConfig.from_dict({**train_settings, "device": device})
    resolve_device(device)
    split_samples(args.data, args.split, args.classes)
    from tpslab.data.dataset import AnomalyDataset
    from tpslab.methods import build_method
    from tpslab.methods.train import train

    model = build_method(args.method, **model_settings)
    dataset = AnomalyDataset(args.data, model.image_size, split=args.split, classes=args.classes)
    for warning in training_data_warnings(dataset.samples):
        print(f"tpslab: warning: {warning}", file=sys.stderr)
    train(model, dataset, cfg, args.out, resume=args.resume, progress=not args.quiet)
    print(f"checkpoint: {ckpt_path}")
    return 0


def _load_model(args: argparse.Namespace, model_settings: dict[str, Any]) -> Detector:
    """The detector to run: a checkpoint's, the authors' released file in ours, or a training-free baseline."""
    from tpslab.methods import build_method
    from tpslab.methods.authors import load_anomalyclip_checkpoint, load_authors_checkpoint
    from tpslab.methods.checkpoint import is_tpslab_checkpoint, load_checkpoint, read_checkpoint, torch_load

    method = args.method
    if args.authors_checkpoint:
        loaders = {"tps": load_authors_checkpoint, "anomalyclip": load_anomalyclip_checkpoint}
        if method not in loaders:
            raise TPSLabError(f"--authors-checkpoint loads TPS's or AnomalyCLIP's released file, not {method}'s")
        if is_tpslab_checkpoint(torch_load(args.authors_checkpoint)):
            raise TPSLabError(f"{args.authors_checkpoint}: not the authors' released file{TPSLAB_FILE}")
        return loaders[method](build_method(method, **model_settings), args.authors_checkpoint)
    if args.checkpoint:
        ckpt = read_checkpoint(args.checkpoint, hint=AUTHORS_FILE)
        saved = ckpt.get("method", "tps")
        if args.method_given and saved != method:
            raise TPSLabError(f"{args.checkpoint} holds a {saved} model, not {method}: drop --method or change it")
        return load_checkpoint(args.checkpoint, **checkpoint_overrides(args, model_settings, ckpt, args.checkpoint))
    if method in TRAINED:
        raise TPSLabError(f"{method} is trained: give --checkpoint (a tpslab checkpoint.pt, from `tpslab train "
                          f"--method {method}`) or --authors-checkpoint (the released epoch_15.pth)")
    return build_method(method, **model_settings)


def _not_zero_shot(args: argparse.Namespace) -> str | None:
    """A note when the checkpoint was trained on the data being evaluated (that is not zero-shot), else None."""
    from tpslab.data.meta import load_meta
    from tpslab.methods.checkpoint import read_checkpoint

    if not args.checkpoint:
        return None
    trained_on = read_checkpoint(args.checkpoint, hint=AUTHORS_FILE).get("data") or {}
    if not trained_on.get("root"):
        return None
    meta = load_meta(args.data, check_files=False)
    same = sorted(set(args.classes or meta.classes(args.split)) & set(trained_on.get("classes", [])))
    if Path(trained_on["root"]).resolve() != meta.root.resolve() or not same:
        return None
    return (f"not zero-shot: {args.checkpoint} was trained on this data set ({meta.root}; classes "
            f"{', '.join(same)})")


def _method_of(args: argparse.Namespace) -> str:
    """The method that will run: ``--method``, else the checkpoint's, else tps."""
    from tpslab.methods.checkpoint import read_checkpoint

    if args.checkpoint and not args.method_given:
        return read_checkpoint(args.checkpoint, hint=AUTHORS_FILE).get("method", "tps")
    return args.method


def _record(args: argparse.Namespace, model: Detector, run: dict[str, Any]) -> dict[str, Any]:
    """What ``run.json`` says produced the outputs: weights or checkpoint, backbone and settings."""
    settings_ = model.settings.to_dict() if hasattr(model.settings, "to_dict") else dict(vars(model.settings))
    weights = ({"checkpoint": str(Path(args.checkpoint).resolve())} if args.checkpoint else
               {"authors_checkpoint": str(Path(args.authors_checkpoint).resolve())} if args.authors_checkpoint else {})
    weights["pretrained"] = settings_.get("pretrained")
    return {"method": model.method, "weights": weights, "backbone": settings_.get("backbone"),
            "settings": {"model": settings_, **run}}


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``tpslab evaluate``: refuses to replace a previous evaluation of the same method and data unless --force."""
    from dataclasses import asdict

    from tpslab.data.meta import load_meta
    from tpslab.evaluation.evaluate import evaluate_with
    from tpslab.reports.tables import nan_notes, to_markdown, write_table
    from tpslab.store import refuse_existing, write_run_json
    from tpslab.utils import resolve_device

    if args.out:
        check_writable_dir(args.out)
    model_settings, _, ev, _ = settings(args)
    resolve_device(ev.device)
    split_samples(args.data, args.split, args.classes)
    method = _method_of(args)
    name = args.name or load_meta(args.data, check_files=False).root.name
    stem = Path(args.out) / f"{name}_{method}_metrics" if args.out else None
    if stem is not None:
        refuse_existing([stem.with_suffix(".csv"), stem.with_suffix(".md"), _run_json(stem)], args.force,
                        f"an evaluation of {method} on {name}")
    note = _not_zero_shot(args)
    if note:
        print(f"tpslab: warning: {note}", file=sys.stderr)
    model = _load_model(args, model_settings)
    table = evaluate_with(model, args.data, ev, split=args.split, classes=args.classes, dataset_name=args.name,
                          progress=not args.quiet)
    notes = nan_notes(table)
    print(to_markdown(table) + "".join(f"note: {n}\n" for n in notes), end="")
    if stem is not None:
        heading = "\n".join(([note] if note else []) + [f"Method {model.method}."] + notes)
        paths = write_table(table, stem, note=heading)
        rec = _record(args, model, {"evaluate": asdict(ev)})
        paths.append(write_run_json(stem.parent, rec.pop("method"), rec.pop("weights"), rec.pop("backbone"),
                                    rec.pop("settings"), name=_run_json(stem).name, data=str(Path(args.data)),
                                    split=args.split, classes=args.classes, outputs=[p.name for p in paths]))
        print("wrote " + ", ".join(map(str, paths)))
    return 0


def _run_json(stem: Path) -> Path:
    """``<data>_<method>_run.json`` beside ``<data>_<method>_metrics.*``."""
    return stem.with_name(stem.name.removesuffix("_metrics") + "_run.json")


def cmd_predict(args: argparse.Namespace) -> int:
    """``tpslab predict``: refuses to write over a previous run in --out unless --force."""
    from dataclasses import asdict

    from tpslab.runs.predict import OUTPUTS, collect_images, predict_paths
    from tpslab.store import refuse_existing, write_run_json
    from tpslab.utils import resolve_device

    if args.method == "musc":
        raise TPSLabError("musc scores a whole class at once (each image against the others): use `tpslab "
                          "evaluate` on a prepared data set")
    check_writable_dir(args.out)
    refuse_existing([Path(args.out) / name for name in OUTPUTS], args.force, "a previous predict run")
    model_settings, _, ev, _ = settings(args)
    device = resolve_device(ev.device)
    images = collect_images(args.inputs, split=args.split)
    model = _load_model(args, model_settings).to(device)
    predict_paths(model, images, args.out, sigma=ev.sigma, progress=not args.quiet, class_name=args.class_name,
                  batch_size=ev.batch_size, device=device, strict=args.strict, force=args.force)
    rec = _record(args, model, {"evaluate": asdict(ev), "class_name": args.class_name})
    write_run_json(args.out, rec.pop("method"), rec.pop("weights"), rec.pop("backbone"), rec.pop("settings"),
                   inputs=[str(i) for i in args.inputs])
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    """``tpslab prepare``: prepare, print notes and the summary; return 0.

    Raises:
        TPSLabError: on any problem with the data, or an option the data set does not take, named by its flag
            (nothing is written then).
    """
    from tpslab.data.layouts import builder_options, resolve_name
    from tpslab.data.meta import write_meta
    from tpslab.data.prepare import build_meta, summarize

    key = resolve_name(args.name)
    if Path(args.root).is_dir() or args.out:  # where meta.json goes must take it (a missing ROOT is named later)
        check_writable_dir(args.out or args.root, "--out" if args.out else "ROOT",
                           None if args.out else "give --out to write meta.json elsewhere")
    given_options = {arg: opt for arg, opt in PREPARE_OPTIONS.items() if getattr(args, arg, None) not in (None, False)}
    taken = builder_options(key)
    wrong = [flag for arg, (opt, flag) in given_options.items() if opt not in taken]
    if wrong:
        flags = [flag for opt, flag in PREPARE_OPTIONS.values() if opt in taken]
        raise TPSLabError(f"option(s) {', '.join(wrong)} do not apply to {key} "
                          f"(it takes: {', '.join(flags) or 'none'})")
    prepared = build_meta(args.name, args.root, allow_missing_masks=args.allow_missing_masks, out=args.out,
                          check=getattr(args, "check", True),
                          **{opt: getattr(args, arg) for arg, (opt, _) in given_options.items()})
    path = write_meta(prepared.splits, prepared.dest)
    for note in prepared.notes:
        print(f"note: {note}")
    print(f"wrote {path}")
    print(summarize(path))
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    """``tpslab reproduce``."""
    from tpslab.runs.reproduce import reproduce

    return reproduce(args.profile, out=args.out, data=args.data, only=args.only)


def cmd_compare(args: argparse.Namespace) -> int:
    """``tpslab compare``: the run grid (:mod:`tpslab.runs.plan`, :mod:`tpslab.runs.execute`), then the tables."""
    from tpslab.runs.compare import context, run_compare
    from tpslab.runs.execute import ExecutorOptions

    opts = ExecutorOptions(args.executor, args.jobs, partition=args.partition, gpus=args.gpus,
                           time_min=args.time_min)
    if args.dry_run:
        from tpslab.runs.compare import dry_run

        ctx, prof = context(args.profile, tuple(args.overrides), args.out, args.data, locate=False)
        print(dry_run(ctx, prof))
        return 0
    result = run_compare(args.profile, tuple(args.overrides), args.out, args.data, opts, progress=not args.quiet)
    from tpslab.utils import shown

    print(f"wrote {len(result.tables)} tables and {len(result.figures)} figures under {shown(result.out)}")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    """``tpslab cache info|clear``: the on-disk feature cache of training (:mod:`tpslab.backbone.cache`)."""
    from tpslab.backbone import cache as feature_cache
    from tpslab.backbone import cache_admin

    if args.action == "clear":
        n = cache_admin.clear()
        print(f"cleared {feature_cache.cache_root()} ({n} model folder(s) removed)")
        return 0
    got = cache_admin.info()
    print(f"location: {got['root']} (set TPSLAB_CACHE to move it)")
    print(f"size: {got['bytes'] / 2**20:.1f} MiB in {got['entries']} image(s); limit {got['limit_bytes'] / 2**30:.1f} "
          "GiB (TPSLAB_CACHE_LIMIT_GB), least recently used evicted first")
    for key, m in sorted(got["models"].items(), key=lambda kv: -kv[1]["bytes"]):
        per = m["bytes"] / max(m["entries"], 1) / 1e6
        print(f"  {key}: {m['entries']} image(s), {m['bytes'] / 2**20:.1f} MiB ({per:.2f} MB per image): {m['what']}")
    if getattr(args, "profile", None):
        from tpslab.runs.cache_plan import describe
        from tpslab.runs.compare import context

        ctx, prof = context(args.profile, (), None, None, locate=False)
        print("\n".join(describe(prof, ctx.datasets)))
    else:
        free = feature_cache.free_bytes(feature_cache.cache_root()) / 1e9
        print(f"free disk: {free:.0f} GB; the disk a profile's training needs: tpslab cache info --profile NAME "
              "(paper: about 61 GB, 8.45 MB per image at 518 px)")
    return 0


INTERRUPTED = {  # what Ctrl-C leaves, per command
    "compare": "finished jobs (and the classes of an unfinished one) are kept: rerun the same command to continue",
    "train": "finished epochs are saved (rerun with --resume to continue)",
    "demo": "finished epochs are saved (rerun `tpslab demo --resume` to continue)",
    "reproduce": "the notebooks that finished keep their outputs: rerun the rest with --only",
    "predict": "nothing was written (outputs are written at the end): rerun the same command",
    "evaluate": "nothing was written (the tables are written at the end): rerun the same command",
    "prepare": "no meta.json was written: rerun the same command",
    "pretrain-mini": "the last checkpoint (every save_every steps) is kept: rerun with --resume to continue",
}

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "demo": cmd_demo, "train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "prepare": run_prepare,
    "reproduce": cmd_reproduce, "compare": cmd_compare, "cache": cmd_cache,
}


def cmd_course(args: argparse.Namespace) -> int:
    """``tpslab course build|grade``."""
    if args.course_command == "build":
        from tpslab.course.build import build
        out = args.student or args.teacher
        written = build(out, student=args.student is not None, force=args.force, execute=not args.no_execute,
                        only=args.only)
        print(f"{'student' if args.student else 'teacher'} build: {len(written)} notebooks in {out}")
        return 0
    from tpslab.course.grade import grade
    print(f"grades: {grade(args.submissions, args.out)}")
    return 0


COMMANDS["course"] = cmd_course


def cmd_report(args: argparse.Namespace) -> int:
    """``tpslab report``: the static site of ``results/<profile>/``."""
    import time

    from tpslab.profiles import data_root, results_root
    from tpslab.site.build import build
    t0 = time.perf_counter()
    index = build(results_root(args.results_dir) / args.profile, args.out, force=args.force,
                  data_root=data_root(args.data_dir), profile=args.profile,
                  notebooks=Path("notebooks") if args.notebooks else None)
    size = sum(p.stat().st_size for p in index.parent.rglob("*") if p.is_file())
    print(f"site: {index} ({size / 1e6:.1f} MB, {time.perf_counter() - t0:.1f} s)")
    return 0


COMMANDS["report"] = cmd_report


def cmd_pretrain(args: argparse.Namespace) -> int:
    """``tpslab pretrain-mini``: contrastive pre-training of tpslab-mini (:mod:`tpslab.backbone.pretrain`)."""
    from tpslab.backbone.pretrain import CHECKPOINT, PretrainConfig, pretrain
    from tpslab.store import refuse_existing

    given = {"steps": args.steps, "batch_size": args.batch_size, "seed": args.seed, "threads": args.threads}
    cfg = PretrainConfig.from_dict({k: v for k, v in given.items() if v is not None})
    out = check_writable_dir(args.out)
    if not args.resume:
        refuse_existing([out / CHECKPOINT], args.force, "a pre-training run (add --resume to continue it)")
        (out / CHECKPOINT).unlink(missing_ok=True)
    print(f"weights: {pretrain(cfg, out, resume=args.resume, progress=not args.quiet)}")
    return 0


COMMANDS["pretrain-mini"] = cmd_pretrain


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    configure_logging()
    if hasattr(args, "method"):
        args.method_given, args.method = args.method is not None, args.method or "tps"
    try:
        if getattr(args, "device", None):
            check_device_name(args.device)
        return COMMANDS[args.command](args)
    except TPSLabError as err:
        print(f"tpslab: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tpslab: interrupted; {INTERRUPTED.get(args.command, 'nothing was written')}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
