"""The command line: ``tpslab demo|train|evaluate|predict|prepare|reproduce|cache`` (also ``python -m tpslab``).

Conventions shared by every subcommand: ``--method NAME`` (tps, clip, winclip, anomalyclip,
musc; see :mod:`tpslab.methods`) where a detector runs, ``--profile NAME`` and repeatable ``--set
section.key=value`` where a profile applies (train, evaluate, demo), explicit flags for the
common settings (their defaults are the dataclasses', shown by ``--help``), ``--device
auto|cpu|cuda[:N]`` and a comma-separated ``--classes``. Precedence: dataclass default <
profile < ``--set`` < explicit flag.

Errors caused by input (a bad file, a missing data set, an interrupted run) are printed
as one line, without a traceback, and the exit status is 2 (130 when interrupted).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tpslab.evaluate import AUPRO_METHODS, EvalConfig
from tpslab.methods import METHODS, TRAINED
from tpslab.methods.base import Detector
from tpslab.model import VARIANTS, TPSConfig
from tpslab.train import TrainConfig
from tpslab.utils import TPSLabError


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every flag's default; flags whose help already says it are left as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.help and "default:" in action.help:
            return action.help
        return super()._get_help_string(action)


def classes_arg(text: str) -> list[str]:
    """The one ``--classes`` convention: ``"a,b"`` -> ``["a", "b"]``."""
    return [c.strip() for c in text.split(",") if c.strip()]


def _device_arg(p: argparse.ArgumentParser, default: str | None = "auto") -> None:
    where = "the profile's device, else auto" if default is None else default
    p.add_argument("--device", default=default, help=f"auto, cpu, cuda or cuda:N (default: {where})")


def _profile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default=None, help="take the settings of this profile (smoke, course, paper or a "
                   "YAML file) (default: none, the dataclasses' defaults)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="change one profile setting, e.g. train.epochs=3 (repeatable; default: none)")


def _setting(p: argparse.ArgumentParser, flag: str, cls: type, name: str, help_: str, **kw: Any) -> None:
    """A flag for dataclass field ``name``: None unless given, so a profile's value is kept."""
    default = getattr(cls, name)
    if "action" not in kw and "choices" not in kw:
        kw["metavar"] = flag.lstrip("-").upper().replace("-", "_")
    p.add_argument(flag, dest=f"{cls.__name__}.{name}", default=None, help=f"{help_} (default: {default}, or "
                   "the profile's)", **kw)


def _model_args(p: argparse.ArgumentParser) -> None:
    _setting(p, "--backbone", TPSConfig, "backbone", "open_clip architecture or local-dir:PATH")
    _setting(p, "--pretrained", TPSConfig, "pretrained", "'openai', a checkpoint file; none: random weights")
    _setting(p, "--image-size", TPSConfig, "image_size", "input size (518 in the paper)", type=int)
    _setting(p, "--variant", TPSConfig, "variant", "what to build", choices=VARIANTS)
    _setting(p, "--seed", TPSConfig, "seed", "seed of random weights and learnable parameters", type=int)


def _given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The explicit flags of dataclass ``cls`` that were given."""
    prefix = f"{cls.__name__}."
    return {k[len(prefix):]: v for k, v in vars(args).items() if k.startswith(prefix) and v is not None}


def _settings(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any], EvalConfig, str]:
    """(method, train, evaluate settings, device) from profile < --set < flags.

    The method's settings are the profile's ``model`` section for TPS and its
    ``methods.<name>`` section for a baseline; the model flags (--backbone, --pretrained,
    --image-size, --seed) apply to any method, --variant to TPS only.
    """
    from tpslab.profiles import load_profile

    method = getattr(args, "method", "tps")
    if args.profile:
        prof = load_profile(args.profile, args.overrides)
        prof.apply_threads()
        model, train_, ev, device = prof.method_settings(method), prof.train, asdict(prof.evaluate), prof.device
    elif args.overrides:
        raise TPSLabError("--set changes a profile's settings: give --profile too")
    else:
        model, train_, ev, device = {}, {}, {}, "auto"
    flags = _given(args, TPSConfig)
    if method != "tps" and "variant" in flags:
        raise TPSLabError(f"--variant is a TPS setting; {method} has none")
    device = args.device or device
    ev = EvalConfig.from_dict({**ev, **_given(args, EvalConfig), "device": device})
    return {**model, **flags}, {**train_, **_given(args, TrainConfig)}, ev, device


def cmd_demo(args: argparse.Namespace) -> int:
    """``tpslab demo``."""
    from tpslab.demo import run_demo

    run_demo(args.profile, out=args.out, data=args.data, resume=args.resume, progress=not args.quiet,
             device=args.device)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """``tpslab train``."""
    from tpslab.data.dataset import AnomalyDataset
    from tpslab.methods import build_method
    from tpslab.train import train

    model_settings, train_settings, _, device = _settings(args)
    model = build_method(args.method, **model_settings)
    cfg = TrainConfig.from_dict({**train_settings, "device": device})
    dataset = AnomalyDataset(args.data, model.image_size, split=args.split, classes=args.classes)
    train(model, dataset, cfg, args.out, resume=args.resume, progress=not args.quiet)
    print(f"checkpoint: {Path(args.out) / 'checkpoint.pt'}")
    return 0


def _load_model(args: argparse.Namespace, model_settings: dict[str, Any]) -> Detector:
    """The detector to run: a checkpoint's, the authors' released file in ours, or a training-free baseline."""
    from tpslab.authors import load_anomalyclip_checkpoint, load_authors_checkpoint
    from tpslab.checkpoint import load_checkpoint, read_checkpoint
    from tpslab.methods import build_method

    method = args.method
    if args.authors_checkpoint:
        loaders = {"tps": load_authors_checkpoint, "anomalyclip": load_anomalyclip_checkpoint}
        if method not in loaders:
            raise TPSLabError(f"--authors-checkpoint loads TPS's or AnomalyCLIP's released file, not {method}'s")
        return loaders[method](build_method(method, **model_settings), args.authors_checkpoint)
    if args.checkpoint:
        saved = read_checkpoint(args.checkpoint).get("method", "tps")
        if args.method_given and saved != method:
            raise TPSLabError(f"{args.checkpoint} holds a {saved} model, not {method}: drop --method or change it")
        overrides = {k: v for k, v in model_settings.items() if k in ("pretrained", "image_size") and v}
        return load_checkpoint(args.checkpoint, **overrides)
    if method in TRAINED:
        raise TPSLabError(f"{method} is trained: give --checkpoint (a tpslab checkpoint.pt, from `tpslab train "
                          f"--method {method}`) or --authors-checkpoint (the released epoch_15.pth)")
    return build_method(method, **model_settings)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``tpslab evaluate``."""
    from tpslab.evaluate import evaluate_with, to_markdown, write_table

    model_settings, _, ev, _ = _settings(args)
    model = _load_model(args, model_settings)
    table = evaluate_with(model, args.data, ev, split=args.split, classes=args.classes, dataset_name=args.name,
                          progress=not args.quiet)
    print(to_markdown(table))
    if args.out:
        paths = write_table(table, Path(args.out) / f"{table['dataset'].iloc[0]}_metrics")
        print("wrote " + ", ".join(map(str, paths)))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """``tpslab predict``."""
    from tpslab.predict import predict_paths
    from tpslab.utils import resolve_device

    model = _load_model(args, _given(args, TPSConfig)).to(resolve_device(args.device))
    predict_paths(model, args.inputs, args.out, sigma=args.sigma, progress=not args.quiet, class_name=args.class_name)
    return 0


def add_prepare_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``NAME ROOT`` and the options of ``tpslab prepare`` to ``parser``."""
    from tpslab.data.layouts import DATASETS

    parser.add_argument("name", metavar="NAME", help=f"data set: {', '.join(DATASETS)} (aliases such as mvtec_ad, "
                        "sd-saliency-900 work too)")
    parser.add_argument("root", metavar="ROOT", help="the data set's folder, as downloaded (see data/README.md)")
    parser.add_argument("--allow-missing-masks", action="store_true",
                        help="keep anomalous images without a mask (image metrics only) and skip stray masks")
    parser.add_argument("--out", help="write meta.json (and derived files) here instead of ROOT (default: ROOT)")
    parser.add_argument("--no-check", dest="check", action="store_false",
                        help="do not open every image and mask (faster; `tpslab` checks again on load) "
                        "(default: every file is opened)")
    parser.add_argument("--classes", type=classes_arg, help="comma-separated subset of classes (mvtec, visa, mpdd, "
                        "btad) (default: all)")
    parser.add_argument("--class-name", help="class name for single-class data sets and one-class folders "
                        "(default: the data set's)")
    parser.add_argument("--images", help="image folder, relative to ROOT (image+mask data sets) "
                        "(default: the layout's)")
    parser.add_argument("--masks", help="mask folder, relative to ROOT (image+mask data sets) (default: the layout's)")
    parser.add_argument("--msd-per-volume", action="store_true", help="MSD: one class per CT volume (authors' code)")
    parser.add_argument("--msd-all-slices", action="store_true",
                        help="MSD: also keep tumour-free slices, as normal samples (authors' code)")
    parser.add_argument("--msd-window", default=None,
                        help="MSD: CT window LOW,HIGH in HU or 'minmax' per slice (authors) (default: -1000,400)")


_OPTION_ARGS = {"classes": "classes", "class_name": "class_name", "images": "images", "masks": "masks",
                "msd_per_volume": "per_volume", "msd_all_slices": "all_slices", "msd_window": "window"}


def run_prepare(args: argparse.Namespace) -> int:
    """``tpslab prepare``: prepare, print notes and the summary; return 0.

    Raises:
        TPSLabError: on any problem with the data (nothing is written then).
    """
    from tpslab.data.meta import write_meta
    from tpslab.data.prepare import build_meta, summarize

    options = {opt: getattr(args, arg) for arg, opt in _OPTION_ARGS.items()
               if getattr(args, arg, None) not in (None, False)}
    prepared = build_meta(args.name, args.root, allow_missing_masks=args.allow_missing_masks,
                          out=args.out, check=getattr(args, "check", True), **options)
    path = write_meta(prepared.splits, prepared.dest)
    for note in prepared.notes:
        print(f"note: {note}")
    print(f"wrote {path}")
    print(summarize(path))
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    """``tpslab reproduce``."""
    from tpslab.reproduce import reproduce

    return reproduce(args.profile, out=args.out, data=args.data, only=args.only)


def cmd_cache(args: argparse.Namespace) -> int:
    """``tpslab cache info|clear``: the on-disk feature cache of training (:mod:`tpslab.feature_cache`)."""
    from tpslab import feature_cache

    if args.action == "clear":
        n = feature_cache.clear()
        print(f"cleared {feature_cache.cache_root()} ({n} model folder(s) removed)")
        return 0
    got = feature_cache.info()
    print(f"location: {got['root']} (set TPSLAB_CACHE to move it)")
    print(f"size: {got['bytes'] / 2**20:.1f} MiB in {got['entries']} image(s); limit {got['limit_bytes'] / 2**30:.1f} "
          "GiB (TPSLAB_CACHE_LIMIT_GB), least recently used evicted first")
    for key, m in sorted(got["models"].items(), key=lambda kv: -kv[1]["bytes"]):
        print(f"  {key}: {m['entries']} image(s), {m['bytes'] / 2**20:.1f} MiB: {m['what']}")
    return 0


def _train_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="data root holding meta.json (or the file)")
    p.add_argument("--out", required=True, help="output folder (checkpoint.pt, history.csv, train.log)")
    _method_arg(p, TRAINED)
    _profile_args(p)
    _model_args(p)
    p.add_argument("--split", default="test", help="split to train on (TPS trains on the auxiliary set's test split)")
    p.add_argument("--classes", type=classes_arg, default=None, help="comma-separated classes to train on "
                   "(default: all)")
    _setting(p, "--epochs", TrainConfig, "epochs", "passes over the data", type=int)
    _setting(p, "--batch-size", TrainConfig, "batch_size", "images per step", type=int)
    _setting(p, "--lr-prompts", TrainConfig, "lr_prompts", "Adam lr of the prompt learners", type=float)
    _setting(p, "--lr-pathway", TrainConfig, "lr_pathway", "Adam lr of the pathways", type=float)
    _setting(p, "--train-seed", TrainConfig, "seed", "shuffling seed", type=int)
    _setting(p, "--cache-features", TrainConfig, "cache_features", "compute CLIP features once (needs memory)",
             action="store_const", const=True)
    _device_arg(p, default=None)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _method_arg(p: argparse.ArgumentParser, choices: tuple[str, ...]) -> None:
    p.add_argument("--method", default=None, choices=choices, help="the detector (default: tps, or the checkpoint's)")


def _model_source_args(p: argparse.ArgumentParser) -> None:
    _method_arg(p, tuple(METHODS))
    p.add_argument("--checkpoint", default=None, help="a tpslab checkpoint.pt (TPS or AnomalyCLIP)")
    p.add_argument("--authors-checkpoint", default=None, help="the authors' released .pth (with --backbone etc.)")
    _model_args(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The ``tpslab`` parser and its subcommands."""
    parser = argparse.ArgumentParser(prog="tpslab", description="TPS zero-shot anomaly detection lab",
                                     formatter_class=_Help)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, description=help_, formatter_class=_Help)

    p = command("demo", "train on the synthetic training domain, evaluate held out (small profile)")
    p.add_argument("--profile", default="smoke", help="a profile with synthetic data")
    p.add_argument("--out", default=None, help="results folder (default: results/demo)")
    p.add_argument("--data", default=None, help="data root (default: $TPSLAB_DATA or ./data)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted training run")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _device_arg(p, default=None)
    p.set_defaults(func=cmd_demo)

    p = command("train", "train TPS (or AnomalyCLIP) on a prepared data set (a meta.json)")
    _train_parser(p)
    p.set_defaults(func=cmd_train)

    p = command("evaluate", "per-class metrics of a trained model on a data set")
    p.add_argument("data", help="data root holding meta.json (or the file)")
    _profile_args(p)
    p.add_argument("--split", default="test", help="split to evaluate")
    p.add_argument("--classes", type=classes_arg, default=None, help="comma-separated classes (default: all)")
    p.add_argument("--name", default=None, help="data set name in the table (default: the data folder's name)")
    _setting(p, "--batch-size", EvalConfig, "batch_size", "images per forward pass", type=int)
    _setting(p, "--sigma", EvalConfig, "sigma", "map smoothing in px (None: the method's reference protocol)",
             type=float)
    _setting(p, "--aupro", EvalConfig, "aupro_method", "AUPRO thresholds", choices=AUPRO_METHODS)
    _device_arg(p, default=None)
    p.add_argument("--out", default=None, help="folder for the CSV and Markdown tables (default: none)")
    _model_source_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = command("predict", "scores and anomaly-map overlays for images")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--out", required=True, help="folder for scores.csv and overlay PNGs")
    p.add_argument("--sigma", type=float, default=None, help="smoothing in px (default: the method's reference "
                   "protocol, e.g. 4 px at 518 for TPS)")
    p.add_argument("--class-name", default="object", help="the object's name, for CLIP's and WinCLIP's prompts")
    _device_arg(p)
    _model_source_args(p)
    p.set_defaults(func=cmd_predict)

    p = command("prepare", "write meta.json for a data set as distributed (or any folder)")
    add_prepare_arguments(p)
    p.set_defaults(func=run_prepare)

    p = command("reproduce", "run the numbered notebooks of a profile with papermill")
    p.add_argument("--profile", default="smoke", help="the profile the notebooks run")
    p.add_argument("--out", default=None, help="results folder (default: results/<profile>)")
    p.add_argument("--data", default=None, help="data root (default: $TPSLAB_DATA or ./data)")
    p.add_argument("--only", nargs="*", default=None, help="run only these notebooks, e.g. 00 02 (default: all)")
    p.set_defaults(func=cmd_reproduce)

    p = command("cache", "show or clear the on-disk cache of frozen CLIP features (training's cache_features)")
    p.add_argument("action", choices=["info", "clear"], help="info: where, how big, per model; clear: delete all")
    p.set_defaults(func=cmd_cache)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = build_parser().parse_args(argv)
    if hasattr(args, "method"):
        args.method_given, args.method = args.method is not None, args.method or "tps"
    try:
        return args.func(args)
    except TPSLabError as err:
        print(f"tpslab: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tpslab: interrupted; finished epochs are saved (rerun with --resume to continue)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
