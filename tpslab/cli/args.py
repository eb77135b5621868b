"""The ``tpslab`` argument parser: every subcommand's options, their help and defaults.

Building the parser imports no torch or open_clip (defaults come from :mod:`tpslab.configs`,
choices from :mod:`tpslab.methods` and :mod:`tpslab.data.layouts`), so ``tpslab --help`` and
``tpslab SUB --help`` answer at once. The commands themselves are in :mod:`tpslab.cli`.
"""

from __future__ import annotations

import argparse
from typing import Any

from tpslab.configs import AUPRO_METHODS, EXECUTORS, VARIANTS, EvalConfig, TPSConfig, TrainConfig
from tpslab.methods import METHODS, TRAINED
from tpslab.profiles import available_profiles, synthetic_profiles
from tpslab.utils import weights_arg

FLAGS: dict[str, str] = {}  # "TrainConfig.epochs" -> "--epochs": the flag of each dataclass setting
PREPARE_OPTIONS = {  # attribute of the parsed arguments -> (option of the data-set builder, its flag)
    "classes": ("classes", "--classes"), "class_name": ("class_name", "--class-name"),
    "images": ("images", "--images"), "masks": ("masks", "--masks"),
    "msd_per_volume": ("per_volume", "--msd-per-volume"), "msd_all_slices": ("all_slices", "--msd-all-slices"),
    "msd_window": ("window", "--msd-window"),
}


COMPARE_DESCRIPTION = """Run every method of a profile (TPS, CLIP, WinCLIP, AnomalyCLIP, MuSc, the ablation rows)
on its data sets, over compare.seeds replicates of the trained ones, store each run's predictions under
<out>/predictions/, then write Tables 1-3 and Figure 3 under <out>/compare/ (CSV, Markdown, LaTeX, figures) for
two protocols (reference: each method's own size and smoothing; harmonised: one size, sigma 4 at 518, exact
AUPRO) with bootstrap intervals. Finished jobs are reused; an interrupted run resumes where it stopped."""


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
    p.add_argument("--device", default=default, help=f"auto, cpu, cuda or cuda:N; auto takes a GPU if there is one "
                   f"(default: {where})")


def _profile_args(p: argparse.ArgumentParser) -> None:
    profiles = ", ".join(available_profiles())
    p.add_argument("--profile", default=None, help=f"take the settings of this profile ({profiles} or a YAML file) "
                   "(default: none, the dataclasses' defaults)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="change one profile setting, e.g. train.epochs=3, checked against its type (repeatable; "
                   "evaluate and predict take evaluate.KEY and the method's settings without --profile too; "
                   "default: none)")


def _setting(p: argparse.ArgumentParser, flag: str, cls: type, name: str, help_: str, profile: bool = True,
             **kw: Any) -> None:
    """A flag for dataclass field ``name``: None unless given, so a profile's value is kept."""
    default = getattr(cls, name)
    if "action" not in kw and "choices" not in kw:
        kw["metavar"] = flag.lstrip("-").upper().replace("-", "_")
    FLAGS[f"{cls.__name__}.{name}"] = flag
    where = ", or the profile's" if profile else ""
    p.add_argument(flag, dest=f"{cls.__name__}.{name}", default=None, help=f"{help_} (default: {default}{where})",
                   **kw)


OWN_DEFAULTS = ("; the default shown is TPS's: without the flag, clip, anomalyclip and musc take their own "
                "(ViT-L-14-336 openai at 518), winclip its own (ViT-B-16-plus-240 laion400m_e31 at 240)")


def _model_args(p: argparse.ArgumentParser, profile: bool = True, training: bool = False,
                any_method: bool = False) -> None:
    own = OWN_DEFAULTS if any_method else ""
    _setting(p, "--backbone", TPSConfig, "backbone", f"open_clip architecture or local-dir:PATH{own}", profile)
    _setting(p, "--pretrained", TPSConfig, "pretrained", "'openai', a checkpoint file; none (or '', null): "
             "seeded random weights, the default of every method on a tpslab-* backbone", profile, type=weights_arg)
    _setting(p, "--image-size", TPSConfig, "image_size", "input size (518 in the paper)", profile, type=int)
    _setting(p, "--variant", TPSConfig, "variant", "what to build", profile, choices=VARIANTS)
    shuffling = " (--train-seed shuffles the data)" if training else ""
    _setting(p, "--seed", TPSConfig, "seed", f"model seed: the random CLIP weights and the initial learnable "
             f"parameters{shuffling}", profile, type=int)


def _method_arg(p: argparse.ArgumentParser, choices: tuple[str, ...]) -> None:
    note = "; musc scores whole classes, so only `evaluate` runs it" if "musc" in choices else ""
    p.add_argument("--method", default=None, choices=choices, help=f"the detector{note} (default: tps, or the "
                   "checkpoint's)")


def _model_source_args(p: argparse.ArgumentParser, profile: bool = True) -> None:
    _method_arg(p, tuple(METHODS))
    p.add_argument("--checkpoint", default=None, help="a tpslab checkpoint.pt (TPS or AnomalyCLIP); it fixes the "
                   "model settings, so --backbone, --variant and --seed must agree with it (default: none)")
    p.add_argument("--authors-checkpoint", default=None, help="the authors' released .pth (with --backbone etc.) "
                   "(default: none)")
    _model_args(p, profile, any_method=True)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _train_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="data root holding meta.json (or the file)")
    p.add_argument("--out", required=True, help="output folder (checkpoint.pt, history.csv, train.log); refused "
                   "if it holds a checkpoint, unless --resume or --force (required; default: none)")
    _method_arg(p, TRAINED)
    _profile_args(p)
    _model_args(p, training=True)
    p.add_argument("--split", default="test", help="split to train on (TPS trains on the auxiliary set's test split)")
    p.add_argument("--classes", type=classes_arg, default=None, help="comma-separated classes to train on "
                   "(default: all)")
    _setting(p, "--epochs", TrainConfig, "epochs", "passes over the data", type=int)
    _setting(p, "--batch-size", TrainConfig, "batch_size", "images per step", type=int)
    _setting(p, "--lr-prompts", TrainConfig, "lr_prompts", "Adam lr of the prompt learners", type=float)
    _setting(p, "--lr-pathway", TrainConfig, "lr_pathway", "Adam lr of the pathways", type=float)
    _setting(p, "--train-seed", TrainConfig, "seed", "data seed: the shuffling of every epoch (--seed is the "
             "model's)", type=int)
    _setting(p, "--cache-features", TrainConfig, "cache_features", "compute CLIP features once (needs memory)",
             action="store_const", const=True)
    _device_arg(p, default=None)
    p.add_argument("--resume", action="store_true", help="continue the run in --out with the checkpoint's settings "
                   "(flags that change results must agree with them; --epochs may extend the run)")
    p.add_argument("--force", action="store_true", help="replace a checkpoint already in --out (without it, "
                   "train refuses)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


TRAIN_DESCRIPTION = ("train TPS (or AnomalyCLIP) on a prepared data set (a meta.json). Without --profile the defaults "
                     "are the paper's recipe (15 epochs, lr_pathway 1e-4) for real CLIP weights; on the tiny random "
                     "backbone (the default --backbone) that recipe barely learns: give --profile smoke (or course, "
                     "paper), whose settings become the defaults, and flags change them.")


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
                        help="do not decode every image and mask (faster; `tpslab` checks again on load) "
                        "(default: every file is decoded)")
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


def build_parser() -> argparse.ArgumentParser:
    """The ``tpslab`` parser and its subcommands; ``args.command`` names the one chosen."""
    parser = argparse.ArgumentParser(prog="tpslab", description="TPS zero-shot anomaly detection lab",
                                     formatter_class=_Help)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_: str, description: str | None = None) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, description=description or help_, formatter_class=_Help)

    p = command("demo", "train on the synthetic training domain, evaluate held out (small profile)")
    profiles = ", ".join(synthetic_profiles())
    p.add_argument("--profile", default="smoke", help=f"a profile with synthetic data: {profiles} or a YAML file")
    p.add_argument("--out", default=None, help="results folder: tables, figures, train/checkpoint.pt; refused if it "
                   "holds a previous demo's checkpoint, unless --resume or --force (default: results/demo)")
    p.add_argument("--data", default=None, help="data root (default: $TPSLAB_DATA or ./data)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted training run")
    p.add_argument("--force", action="store_true", help="start again, replacing a previous demo in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _device_arg(p, default=None)

    p = command("train", "train TPS (or AnomalyCLIP) on a prepared data set (a meta.json)", TRAIN_DESCRIPTION)
    _train_parser(p)

    p = command("evaluate", "per-class metrics of a trained model on a data set")
    p.add_argument("data", help="data root holding meta.json (or the file)")
    _profile_args(p)
    p.add_argument("--split", default="test", help="split to evaluate")
    p.add_argument("--classes", type=classes_arg, default=None, help="comma-separated classes (default: all)")
    p.add_argument("--name", default=None, help="data set name in the table (default: the data folder's name)")
    _setting(p, "--batch-size", EvalConfig, "batch_size", "images per forward pass", type=int)
    _setting(p, "--sigma", EvalConfig, "sigma", "map smoothing in px, >= 0 (0: none; None: the method's reference "
             "protocol)",
             type=float)
    _setting(p, "--aupro", EvalConfig, "aupro_method", "AUPRO thresholds", choices=AUPRO_METHODS)
    _device_arg(p, default=None)
    p.add_argument("--out", default=None, help="folder for <data>_<method>_metrics.csv and .md and "
                   "<data>_<method>_run.json (what produced them); refused if they exist, unless --force "
                   "(default: none, the table is printed only)")
    p.add_argument("--force", action="store_true", help="replace a previous evaluation of the same method and data "
                   "in --out")
    _model_source_args(p)

    p = command("predict", "scores, anomaly maps and overlays for images (files, folders or a prepared data set)")
    p.add_argument("inputs", nargs="+", help="image files, folders (mask folders such as ground_truth/ are skipped) "
                   "or a data set's meta.json (its --split images)")
    p.add_argument("--out", required=True, help="folder for scores.csv, the overlay PNGs, maps.npz, run.json (what "
                   "produced them) and skipped.csv (images that could not be read); refused if it holds a previous "
                   "run's scores.csv or maps.npz, unless --force (required; default: none)")
    _profile_args(p)
    p.add_argument("--split", default="test", help="the split taken from a meta.json input")
    _setting(p, "--sigma", EvalConfig, "sigma", "smoothing in px, >= 0 (0: none; None: the method's reference "
             "protocol, e.g. 4 px at 518 for TPS)", type=float)
    p.add_argument("--class-name", default="object", help="the object's name, for CLIP's and WinCLIP's prompts")
    _setting(p, "--batch-size", EvalConfig, "batch_size", "images per forward pass", type=int)
    _device_arg(p, default=None)
    p.add_argument("--force", action="store_true", help="replace a previous run's outputs in --out")
    p.add_argument("--strict", action="store_true", help="stop at the first image that cannot be read (default: "
                   "skip it, name it in skipped.csv and in the summary)")
    _model_source_args(p)

    p = command("prepare", "write meta.json for a data set as distributed (or any folder)")
    add_prepare_arguments(p)

    p = command("reproduce", "run the numbered notebooks of a profile with papermill")
    p.add_argument("--profile", default="smoke", help=f"the profile the notebooks run: "
                   f"{', '.join(available_profiles())} or a YAML file")
    p.add_argument("--out", default=None, help="results folder (default: results/<profile>)")
    p.add_argument("--data", default=None, help="data root (default: $TPSLAB_DATA or ./data)")
    p.add_argument("--only", nargs="*", default=None, help="run only these notebooks, e.g. 00 02 (default: all)")

    p = command("compare", "every method of a profile on its data sets: Tables 1-3 and Figure 3 with intervals",
                COMPARE_DESCRIPTION)
    p.add_argument("--profile", default="smoke", help=f"the profile whose grid runs: {', '.join(available_profiles())} "
                   "or a YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="change one profile setting, e.g. compare.seeds=3 (repeatable; default: none)")
    p.add_argument("--out", default=None, help="results folder (default: results/<profile>)")
    p.add_argument("--data", default=None, help="data root (default: $TPSLAB_DATA or ./data)")
    p.add_argument("--executor", default="local", choices=EXECUTORS, help="who runs the jobs: this process in "
                   "order, submitit's local processes, or a SLURM cluster through submitit")
    p.add_argument("--jobs", type=int, default=2, help="local-parallel: processes at a time (one GPU each when "
                   "there are GPUs); slurm: jobs in flight")
    p.add_argument("--partition", default=None, help="slurm: the partition (default: the cluster's)")
    p.add_argument("--gpus", type=int, default=1, help="slurm: GPUs per job")
    p.add_argument("--time-min", type=int, default=240, help="slurm and local-parallel: each job's time limit in "
                   "minutes")
    p.add_argument("--dry-run", action="store_true", help="list the jobs, what is done, what is missing; run nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = command("report", "one static offline web site of a profile's results (tables, galleries, training)")
    p.add_argument("--profile", default="smoke", help="the profile whose results/<profile>/ is shown")
    p.add_argument("--out", default=None, help="where the site goes (default: results/<profile>/site)")
    p.add_argument("--results-dir", default=None, help="results root (default: $TPSLAB_RESULTS or ./results)")
    p.add_argument("--data-dir", default=None, help="gallery images root (default: $TPSLAB_DATA or ./data)")
    p.add_argument("--notebooks", action="store_true", help="also render notebooks/*.ipynb with offline MathJax")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")

    p = command("cache", "show or clear the on-disk cache of frozen CLIP features (training's cache_features)")
    p.add_argument("action", choices=["info", "clear"], help="info: where, how big, per model; clear: delete all")
    p.add_argument("--profile", default=None, help="info: also the disk this profile's training needs in the cache")

    p = command("pretrain-mini", "pre-train tpslab-mini, a small CLIP, on generated defect captions (offline)")
    p.add_argument("--out", default="results/pretrain-mini", help="checkpoint, history.csv and the weights")
    p.add_argument("--steps", type=int, default=None, help="optimisation steps (default: 2000, the shipped weights)")
    p.add_argument("--batch-size", type=int, default=None, help="images per step, a multiple of 4 (default: 64)")
    p.add_argument("--seed", type=int, default=None, help="initial weights' seed (default: 0)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: 2; part of the result)")
    p.add_argument("--resume", action="store_true", help="continue from OUT's last checkpoint")
    p.add_argument("--force", action="store_true", help="start again in an OUT that holds a run")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = command("course", "the course kit: student and teacher builds of the notebooks, grading of submissions")
    course = p.add_subparsers(dest="course_command", required=True,
                              help="build: the student or teacher build; grade: a folder of submissions")
    b = course.add_parser("build", help="write the student build (solutions out) or the teacher build",
                          formatter_class=_Help)
    which = b.add_mutually_exclusive_group(required=True)
    which.add_argument("--student", metavar="OUT", default=None, help="write the student build into OUT")
    which.add_argument("--teacher", metavar="OUT", default=None, help="write the teacher build into OUT")
    b.add_argument("--force", action="store_true", help="replace OUT if it exists")
    b.add_argument("--no-execute", action="store_true", help="teacher build: do not run the notebooks")
    b.add_argument("--only", nargs="*", default=None, help="only these notebooks, e.g. 00 03 (default: all)")
    g = course.add_parser("grade", help="run every submission's exercises; write grades.csv and feedback/",
                          formatter_class=_Help)
    g.add_argument("submissions", help="a folder with one folder of notebooks per student")
    g.add_argument("--out", default=None, help="where grades.csv and feedback/ go (default: SUBMISSIONS)")
    return parser
