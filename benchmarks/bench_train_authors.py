"""Training side by side: the authors' TPS ``train.py`` against ``tpslab train --profile paper``.

What it measures (issue 22's "Done when"): the wall-clock seconds of one whole training run, each
side in its own subprocess with the same number of torch threads (``--threads``, default 2), on
the same synthetic images (``tpslab.data.synthetic``, ``--images`` of them at 256 px, written
with the meta.json layout both sides read), ``--epochs`` passes, batch 8, 518 px, and a randomly
initialised ViT-L-14-336 (24 blocks, 37 x 37 tokens; no pretrained weights are downloaded).

* ``authors``: their ``train.py`` from a checkout given with ``--reference`` (never part of this
  repository), run unchanged through a small launcher written at run time (see
  :data:`LAUNCHER`): it stands in for two packages their imports need and this environment lacks
  (``pkg_resources.packaging``, ``thop``), points their weight download at a local file of random
  weights in their own format (made by their own ``CLIP`` class, stored in float16 as OpenAI's
  file is; they cast it to float32 on the CPU), lets their one ``.cuda()`` call return the tensor
  on a machine without CUDA, and gives their data set the synthetic class names (their name
  table only knows the real data sets). Making the weight file is not timed.
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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import write_rows  # benchmarks/common.py (the script's folder is on sys.path)

RESULTS = Path(os.environ.get("TPSLAB_RESULTS", Path(__file__).resolve().parents[1] / "results")) / "benchmarks"
BACKBONE = "ViT-L-14-336"
# the authors' CLIP class arguments for ViT-L/14@336px (OpenAI's): embed dim, resolution, vision
# layers, width, patch, then text context, vocabulary, width, heads, layers
AUTHORS_VIT_L = (768, 336, 24, 1024, 14, 77, 49408, 768, 12, 12)

# Imported first by both scripts below (run in the authors' folder):
STUBS = r'''
import sys, types
# 1. packages their imports name that this environment lacks (only imported, not used in training)
import packaging.version
sys.modules.setdefault("pkg_resources", types.SimpleNamespace(packaging=packaging))
if "thop" not in sys.modules:
    try:
        import thop  # noqa: F401
    except ImportError:
        sys.modules["thop"] = types.SimpleNamespace(profile=None)
'''

# Runs in the authors' folder (cwd); argv: weights file, data root, output folder, threads, epochs, batch, size.
LAUNCHER = r'''
import json, runpy, sys, time
''' + STUBS + r'''
from pathlib import Path

weights, data, out, threads, epochs, batch, size = sys.argv[1:8]
import torch
torch.set_num_threads(int(threads))
# 2. no CUDA here: their one .cuda() (the image labels) keeps the tensor where it is
if not torch.cuda.is_available():
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
sys.path.insert(0, ".")
# 3. their loader downloads OpenAI's ViT-L/14@336px: use the local file of random weights instead
import AnomalyCLIP_lib.model_load as model_load
model_load._download = lambda url, root=None: weights
# (a state dict, not a TorchScript archive as OpenAI's: their fallback re-reads the file that the failed
# torch.jit.load left at its end, so the failed try rewinds it first)
_jit_load = torch.jit.load
def _rewinding_jit_load(f, *args, **kwargs):
    try:
        return _jit_load(f, *args, **kwargs)
    except RuntimeError:
        f.seek(0)
        raise
torch.jit.load = _rewinding_jit_load
# 4. their class-name table only knows the real data sets: give it the synthetic classes
import dataset
classes = list(json.loads(Path(data, "meta.json").read_text())["test"])
dataset.generate_class_info = lambda name: (classes, {c: i for i, c in enumerate(classes)})
# 5. their empty mask of a normal image is a float64 array given to Image.fromarray with mode "L",
# which Pillow >= 11 refuses (older versions accepted it): the same zeros as uint8
import numpy as np
from PIL import Image
_fromarray = Image.fromarray
def _fromarray_l(obj, mode=None):
    if mode == "L" and getattr(obj, "dtype", np.uint8) != np.uint8:
        obj = obj.astype(np.uint8)
    return _fromarray(obj, mode=mode) if mode else _fromarray(obj)
Image.fromarray = _fromarray_l
sys.argv = ["train.py", "--train_data_path", data, "--save_path", out, "--dataset", "synthetic",
            "--epoch", epochs, "--batch_size", batch, "--image_size", size]
start = time.perf_counter()
runpy.run_path("train.py", run_name="__main__")
print(json.dumps({"train_py_s": time.perf_counter() - start}))
'''

MAKE_WEIGHTS = r'''
import sys
''' + STUBS + r'''
sys.path.insert(0, ".")
import torch
from AnomalyCLIP_lib.CLIP import CLIP
torch.manual_seed(0)
model = CLIP(*[int(a) for a in sys.argv[2].split(",")])
torch.save({k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}, sys.argv[1])
'''


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


def timed(cmd: list[str], cwd: Path | None, env: dict[str, str], log: Path) -> float:
    """Run ``cmd`` to the end, its output in ``log``; return its wall-clock seconds (raise if it fails)."""
    start = time.perf_counter()
    with open(log, "w") as fh:
        done = subprocess.run(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{cmd[:4]} failed ({done.returncode}); its output: {log}\n" + log.read_text()[-3000:])
    return seconds


def child_env(threads: int, cache: Path | None = None) -> dict[str, str]:
    """The environment of a measured run: the thread count fixed, warnings off, optional cache folder."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONWARNINGS": "ignore", "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "")}
    if cache is not None:
        env["TPSLAB_CACHE"] = str(cache)
    return env


def run_authors(reference: Path, weights: Path, data: Path, out: Path, args: argparse.Namespace) -> float:
    """The authors' train.py through :data:`LAUNCHER`; return its seconds."""
    launcher = out.parent / "authors_launcher.py"
    launcher.write_text(LAUNCHER)
    cmd = [sys.executable, str(launcher), str(weights), str(data), str(out), str(args.threads), str(args.epochs),
           str(args.batch), str(args.image_size)]
    return timed(cmd, reference, child_env(args.threads), out.parent / f"{out.name}.log")


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
            subprocess.run([sys.executable, "-c", MAKE_WEIGHTS, str(weights), ",".join(map(str, AUTHORS_VIT_L))],
                           cwd=args.reference, check=True, env=child_env(args.threads))
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
