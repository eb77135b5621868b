"""The command line: ``tpslab demo|train|evaluate|predict|prepare|reproduce`` (also ``python -m tpslab``).

Errors caused by input (a bad file, a missing data set, an interrupted run) are printed
as one line, without a traceback, and the exit status is 2 (130 when interrupted).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tpslab.utils import TPSLabError


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", default="tpslab-tiny", help="open_clip architecture (default tpslab-tiny)")
    p.add_argument("--pretrained", default=None, help="'openai', a checkpoint file, or none for random weights")
    p.add_argument("--image-size", type=int, default=None, help="input size (518 in the paper)")
    p.add_argument("--variant", default="paper", choices=["paper", "authors-code"])
    p.add_argument("--seed", type=int, default=0, help="seed of random weights and learnable parameters")


def cmd_demo(args: argparse.Namespace) -> int:
    from tpslab.demo import run_demo

    run_demo(args.profile, out=args.out, data=args.data, resume=args.resume, progress=not args.quiet)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from tpslab.data.dataset import AnomalyDataset
    from tpslab.model import build_model
    from tpslab.train import TrainConfig, train

    model = build_model(args.backbone, args.pretrained, args.image_size, args.variant, args.seed)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr_prompts=args.lr_prompts,
                      lr_pathway=args.lr_pathway, seed=args.train_seed, cache_features=args.cache_features,
                      device=args.device)
    dataset = AnomalyDataset(args.data, model.backbone.image_size, split=args.split)
    train(model, dataset, cfg, args.out, resume=args.resume, progress=not args.quiet)
    print(f"checkpoint: {Path(args.out) / 'checkpoint.pt'}")
    return 0


def _load_model(args: argparse.Namespace):
    from tpslab.authors import load_authors_checkpoint
    from tpslab.model import build_model
    from tpslab.train import load_checkpoint

    if args.authors_checkpoint:
        model = build_model(args.backbone, args.pretrained, args.image_size, args.variant, args.seed)
        return load_authors_checkpoint(model, args.authors_checkpoint)
    if not args.checkpoint:
        raise TPSLabError("give --checkpoint (a tpslab checkpoint.pt) or --authors-checkpoint (their epoch_15.pth)")
    overrides = {k: v for k, v in (("pretrained", args.pretrained), ("image_size", args.image_size)) if v}
    return load_checkpoint(args.checkpoint, **overrides)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from tpslab.evaluate import evaluate, to_markdown, write_table

    model = _load_model(args)
    table = evaluate(model, args.data, split=args.split, classes=args.classes, dataset_name=args.name,
                     batch_size=args.batch_size, aupro_method=args.aupro, device=args.device, progress=not args.quiet)
    print(to_markdown(table))
    if args.out:
        paths = write_table(table, Path(args.out) / f"{table['dataset'].iloc[0]}_metrics")
        print("wrote " + ", ".join(map(str, paths)))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from tpslab.predict import predict_paths

    model = _load_model(args)
    predict_paths(model, args.inputs, args.out, sigma=args.sigma, progress=not args.quiet)
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from tpslab.data.prepare import run_prepare

    return run_prepare(args)


def cmd_reproduce(args: argparse.Namespace) -> int:
    from tpslab.reproduce import reproduce

    return reproduce(args.profile, out=args.out, data=args.data, only=args.only)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tpslab", description="TPS zero-shot anomaly detection lab")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="train on the synthetic training domain, evaluate held out (small profile)")
    p.add_argument("--profile", default="smoke")
    p.add_argument("--out", default=None, help="results folder (default results/demo)")
    p.add_argument("--data", default=None, help="data root (default $TPSLAB_DATA or ./data)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted training run")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train TPS on a prepared data set (a meta.json)")
    p.add_argument("data", help="data root holding meta.json (or the file)")
    p.add_argument("--out", required=True, help="output folder (checkpoint.pt, history.csv, train.log)")
    _model_args(p)
    p.add_argument("--split", default="test", help="split to train on (TPS trains on the auxiliary set's test split)")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr-prompts", type=float, default=1e-3)
    p.add_argument("--lr-pathway", type=float, default=1e-4)
    p.add_argument("--train-seed", type=int, default=111)
    p.add_argument("--cache-features", action="store_true", help="compute CLIP features once (needs memory)")
    p.add_argument("--device", default="auto")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train)

    for name, func, help_ in (("evaluate", cmd_evaluate, "per-class metrics of a trained model on a data set"),
                              ("predict", cmd_predict, "scores and anomaly-map overlays for images")):
        p = sub.add_parser(name, help=help_)
        if name == "evaluate":
            p.add_argument("data", help="data root holding meta.json (or the file)")
            p.add_argument("--split", default="test")
            p.add_argument("--classes", nargs="*", default=None)
            p.add_argument("--name", default=None, help="data set name in the table")
            p.add_argument("--batch-size", type=int, default=8)
            p.add_argument("--aupro", default="exact", choices=["exact", "authors"])
            p.add_argument("--device", default="cpu")
            p.add_argument("--out", default=None, help="folder for the CSV and Markdown tables")
        else:
            p.add_argument("inputs", nargs="+", help="image files or folders")
            p.add_argument("--out", required=True, help="folder for scores.csv and overlay PNGs")
            p.add_argument("--sigma", type=float, default=None, help="smoothing (default 4 px at 518)")
        p.add_argument("--checkpoint", default=None, help="a tpslab checkpoint.pt")
        p.add_argument("--authors-checkpoint", default=None, help="the authors' released .pth")
        _model_args(p)
        p.add_argument("--quiet", action="store_true")
        p.set_defaults(func=func)

    p = sub.add_parser("prepare", help="write meta.json for a data set as distributed (or any folder)")
    from tpslab.data.prepare import add_prepare_arguments

    add_prepare_arguments(p)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("reproduce", help="run the numbered notebooks of a profile with papermill")
    p.add_argument("--profile", default="smoke")
    p.add_argument("--out", default=None, help="default results/<profile>")
    p.add_argument("--data", default=None, help="data root (default $TPSLAB_DATA or ./data)")
    p.add_argument("--only", nargs="*", default=None, help="run only these notebooks (e.g. 00 02)")
    p.set_defaults(func=cmd_reproduce)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
