"""Training side by side: the authors' TPS ``train.py`` against ``tpslab train --profile paper``.

What it measures (issue 22's "Done when"): the wall-clock seconds of one whole training run, each
side in its own subprocess with the same number of torch threads (``--threads``, default 2), on
the same synthetic images (``tpslab.data.synthetic``, ``--images`` of them at 256 px, written
with the meta.json layout both sides read), ``--epochs`` passes, batch 8, 518 px, and a randomly
initialised ViT-L-14-336 (24 blocks, 37 x 37 tokens; no pretrained weights are downloaded).

* ``authors``: their ``train.py`` from a checkout given with ``--reference`` (never part of this
  repository), run unchanged through the launcher of :mod:`authors_launcher` (stand-ins for
  packages their imports need, random weights in their own format made by their own ``CLIP``
  class, ``.cuda()`` on a machine without CUDA, the synthetic class names). Making the weight
  file is not timed.
* ``tpslab``: ``python -m tpslab train DATA --profile paper`` with the profile's own training
  settings (its feature cache on, on disk in float16, starting empty: the cold-cache cost of one
  run) and only what the measurement fixes: ``--pretrained none``, ``--device cpu``,
  ``--epochs``, ``train.threads``.
* ``tpslab, no cache``: the same with ``train.cache_features=false`` (``--loss-check``, on by
  default): its per-epoch losses should equal the cached run's to ``--rtol`` (relative); the
  cache stores float16 features, so this also measures what that rounding costs.

``--rounds`` repeats the authors/tpslab pair back to back (the CPU may be shared; each round's
ratio is reported). Without ``--reference`` only the tpslab side runs (``make bench``).
Writes ``results/benchmarks/train_authors[_quick].csv``.

    python benchmarks/bench_train_authors.py [--reference PATH] [--images 24 --epochs 6] [--quick]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

from authors_launcher import child_env, make_weights, run_script, timed  # benchmarks/authors_launcher.py
from common import write_rows  # benchmarks/common.py (the script's folder is on sys.path)

RESULTS = Path(os.environ.get("TPSLAB_RESULTS", Path(__file__).resolve().parents[1] / "results")) / "benchmarks"
BACKBONE = "ViT-L-14-336"


def make_data(root: Path, images: int) -> Path:
    """Synthetic training images (the train domain's 8 classes), trimmed to ``images``; return the data root."""
    from tpslab.data.synthetic import SOURCE_CLASSES, make_synthetic

    per_class = -(-images // len(SOURCE_CLASSES["train"]))
    meta_path = make_synthetic(root, domain="train", n_per_class=max(2, per_class), image_size=256, progress=False)
    meta = json.loads(meta_path.read_text())
    kept, left = {}, images
    for cls, items in meta["test"].items():  # the same number from every class, the remainder from the first
        take = min(len(items), left, -(-left // (len(meta["test"]) - len(kept))))
        kept[cls], left = items[:take], left - take
    meta["test"] = kept
    meta_path.write_text(json.dumps(meta, indent=2))
    return root


def run_authors(reference: Path, weights: Path, data: Path, out: Path, args: argparse.Namespace) -> float:
    """The authors' train.py through the launcher (:mod:`authors_launcher`); return its seconds."""
    argv = ["--train_data_path", str(data), "--save_path", str(out), "--dataset", "synthetic", "--epoch",
            str(args.epochs), "--batch_size", str(args.batch), "--image_size", str(args.image_size)]
    return run_script(reference, "train.py", argv, weights, data, args.threads, out.parent / f"{out.name}.log")


def run_tpslab(data: Path, out: Path, cache: Path, args: argparse.Namespace, cached: bool = True) -> float:
    """``tpslab train`` with the paper profile's settings (cache on, or off); return its seconds."""
    cmd = [sys.executable, "-m", "tpslab", "train", str(data), "--out", str(out), "--profile", "paper",
           "--backbone", args.backbone, "--pretrained", "none", "--device", "cpu", "--image-size",
           str(args.image_size), "--epochs", str(args.epochs), "--batch-size", str(args.batch),
           "--set", f"train.threads={args.threads}", "--quiet"]
    if not cached:
        cmd += ["--set", "train.cache_features=false"]
    return timed(cmd, None, child_env(args.threads, cache), out.parent / f"{out.name}.log")


def losses(out: Path) -> list[dict[str, float]]:
    """The per-epoch losses of a tpslab run (its history.csv)."""
    with open(out / "history.csv") as fh:
        return [{k: float(r[k]) for k in ("loss", "image_loss", "seg_loss")} for r in csv.DictReader(fh)]


def compare_losses(a: list[dict[str, float]], b: list[dict[str, float]]) -> float:
    """The largest relative difference between two runs' per-epoch losses."""
    return max(abs(x[k] - y[k]) / max(abs(y[k]), 1e-12) for x, y in zip(a, b, strict=True) for k in x)


def main() -> None:
    """Prepare the data (and the authors' weights), run the sides, print times and ratios, write the CSV."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", type=Path, default=None, help="a checkout of the authors' TPS code")
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--image-size", type=int, default=518)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of every measured run")
    ap.add_argument("--rounds", type=int, default=1, help="authors/tpslab pairs, back to back")
    ap.add_argument("--backbone", default=BACKBONE, help="tpslab's backbone (the authors' side is always ViT-L)")
    ap.add_argument("--no-loss-check", dest="loss_check", action="store_false",
                    help="skip tpslab's no-cache run and the loss comparison")
    ap.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance of the loss check")
    ap.add_argument("--quick", action="store_true",
                    help="make bench: tpslab only, tiny backbone at 64 px, 16 images, 2 epochs")
    ap.add_argument("--out", default=str(RESULTS), help="folder of the CSV")
    args = ap.parse_args()
    if args.quick:
        args.reference, args.backbone, args.image_size, args.images, args.epochs = None, "tpslab-tiny", 64, 16, 2
    rows: list[dict] = []
    csv_path = Path(args.out) / ("train_authors_quick.csv" if args.quick else "train_authors.csv")
    common = {"images": args.images, "epochs": args.epochs, "batch": args.batch, "image_size": args.image_size,
              "threads": args.threads, "backbone": args.backbone}
    with tempfile.TemporaryDirectory(prefix="bench-train-authors-") as name:
        tmp = Path(name)
        data = make_data(tmp / "data", args.images)
        weights = tmp / "authors-vit-l-14-336-random.pt"
        if args.reference:
            make_weights(args.reference, weights, args.threads)
        for rnd in range(1, args.rounds + 1):
            if args.reference:
                sec = run_authors(args.reference.resolve(), weights, data, tmp / f"authors-{rnd}", args)
                rows.append({"round": rnd, "side": "authors train.py", **common, "seconds": round(sec, 1)})
                print(f"round {rnd}: authors' train.py {sec:.1f} s", flush=True)
            sec = run_tpslab(data, tmp / f"tpslab-{rnd}", tmp / f"cache-{rnd}", args)
            rows.append({"round": rnd, "side": "tpslab paper (cache)", **common, "seconds": round(sec, 1)})
            line = f"round {rnd}: tpslab train --profile paper {sec:.1f} s"
            if args.reference:
                ratio = rows[-2]["seconds"] / sec
                rows[-1]["speedup"] = round(ratio, 2)
                line += f" -> {ratio:.2f}x the authors' ({'meets' if ratio >= 3 else 'below'} the 3x target)"
            print(line, flush=True)
            write_rows(csv_path, rows)  # after every pair: a run stopped later keeps what it measured
        if args.loss_check:
            sec = run_tpslab(data, tmp / "tpslab-nocache", tmp / "cache-unused", args, cached=False)
            rows.append({"round": 0, "side": "tpslab paper, cache_features=false", **common, "seconds": round(sec, 1)})
            diff = compare_losses(losses(tmp / "tpslab-1"), losses(tmp / "tpslab-nocache"))
            for r in rows:
                if r["side"].startswith("tpslab"):
                    r["loss_rel_diff_cache_vs_nocache"] = f"{diff:.2e}"
            print(f"tpslab without the cache: {sec:.1f} s; per-epoch losses, cached vs not: largest relative "
                  f"difference {diff:.2e} ({'within' if diff <= args.rtol else 'OUTSIDE'} {args.rtol:g})")
            for a, b in zip(losses(tmp / "tpslab-1"), losses(tmp / "tpslab-nocache"), strict=True):
                print("  cached  " + " ".join(f"{k} {v:.6f}" for k, v in a.items()))
                print("  nocache " + " ".join(f"{k} {v:.6f}" for k, v in b.items()))
    import torch

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} torch "
          f"threads per run, torch {torch.__version__}")
    write_rows(csv_path, rows)


if __name__ == "__main__":
    main()
