"""Evaluation benchmark: images/s, time per stage (load, forward, smoothing, metrics), peak memory.

TPS with random CLIP weights (the cost does not depend on them) on synthetic images, one class,
for the tiny model, ViT-B-16 at 224 px and ViT-L-14-336 at 518 px. For each, in one run:

* ``clip_forward``: CLIP's image encoder alone over the preloaded images (what any pipeline pays),
  the mean of one run before and one after the evaluation;
* ``evaluate``: :func:`tpslab.evaluation.evaluate.evaluate` end to end (images decoded from files), with
  its stages from :class:`tpslab.evaluation.inference.StageTimer`, and its ratio to ``clip_forward``;
* peak memory of the case's process: RSS on the CPU, ``torch.cuda.max_memory_allocated`` on CUDA.

``--done-when`` measures issue 13's target instead: 60 images at 518 px with a small random
24-block ViT (``tpslab-ref24`` with 14 px patches, so 37 x 37 tokens as ViT-L-14-336 at 518 px;
CLIP cheap, as on a GPU): evaluation should take at most the CLIP forward + 25 %. Each case
runs in its own process. Writes ``results/benchmarks/evaluate[_quick|_done_when].csv``.

    python benchmarks/bench_evaluate.py [--quick | --done-when] [--device cuda] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import register_bench_models, write_rows  # benchmarks/common.py (the script's folder is on sys.path)

RESULTS = Path(os.environ.get("TPSLAB_RESULTS", Path(__file__).resolve().parents[1] / "results")) / "benchmarks"
# (label, backbone, image size, images on CPU quick / CPU full / GPU, batch size)
CASES = [
    ("tiny@64", "tpslab-tiny", 64, (128, 400, 800), 32),
    ("ViT-B-16@224", "ViT-B-16", 224, (4, 24, 400), 16),
    ("ViT-L-14-336@518", "ViT-L-14-336", 518, (2, 6, 200), 8),
]
DONE_WHEN = ("ref24-p14@518 (issue 13)", "bench-ref24-p14", 518, (60, 60, 60), 8)
def peak_mb(device: torch.device) -> float:
    """This process's peak memory in MB: RSS on the CPU, allocated tensor memory on CUDA."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def one_case(label: str, backbone: str, size: int, n: int, batch: int, device: str, workers: int,
             precision: str) -> dict:
    """Measure one model in this process; return the CSV row."""
    import tpslab
    from tpslab.data.dataset import AnomalyDataset
    from tpslab.data.synthetic import make_synthetic
    from tpslab.evaluation.evaluate import evaluate
    from tpslab.evaluation.inference import StageTimer, autocast, resolve_precision

    dev = torch.device(device)
    with tempfile.TemporaryDirectory() as tmp:
        register_bench_models(Path(tmp))
        meta = make_synthetic(Path(tmp) / "data", domain="heldout", n_per_class=n, image_size=256, progress=False)
        model = tpslab.build_model(backbone, None, size, seed=0).eval().to(dev)
        cls = AnomalyDataset(meta, size).meta.classes("test")[0]
        ds = AnomalyDataset(meta, size, classes=[cls])
        images = torch.stack([ds[i]["image"] for i in range(len(ds))])
        mode = resolve_precision(precision, dev)

        def clip_forward() -> float:
            with torch.inference_mode(), autocast(mode, dev):
                sync(dev)
                start = time.perf_counter()
                for i in range(0, len(images), batch):
                    model.encode_images(images[i:i + batch].to(dev))
                sync(dev)
                return time.perf_counter() - start

        with torch.inference_mode(), autocast(mode, dev):
            model.predict(images[:1].to(dev))  # warm-up
        before = clip_forward()
        timer = StageTimer(device=dev)
        start = time.perf_counter()
        table = evaluate(model, meta, classes=[cls], batch_size=batch, device=dev, progress=False,
                         precision=precision, num_workers=workers, timer=timer)
        total = time.perf_counter() - start
        forward = (before + clip_forward()) / 2  # before and after: load drifts on shared machines
    stages = {f"{k}_s": round(v, 4) for k, v in timer.seconds.items()}
    return {"case": label, "device": device, "precision": mode, "workers": workers, "images": n, "image_size": size,
            "batch": batch, "clip_forward_s": round(forward, 4), "evaluate_s": round(total, 4), **stages,
            "images_per_s": round(n / total, 3), "evaluate_over_forward": round(total / forward, 3),
            "peak_mb": round(peak_mb(dev), 1), "pixel_auroc": round(float(table["pixel_auroc"].iloc[0]), 3)}


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    """Run the cases (each in its own process), print them with their ratios, write the CSV."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few images per model (CI; about a minute on a CPU)")
    ap.add_argument("--done-when", action="store_true", help="issue 13's measurement: 60 images, ref24 at 518 px")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--workers", type=int, default=None,
                    help="DataLoader workers (default: cores, at most 8, on CUDA; 0 on CPU)")
    ap.add_argument("--precision", default="auto", help="auto, fp32, bf16 or fp16")
    ap.add_argument("--models", nargs="*", default=None, help="only these cases, e.g. tiny@64")
    ap.add_argument("--out", default=str(RESULTS), help="folder of the CSV")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_case(**json.loads(args.one))))
        return
    from tpslab.evaluation.inference import default_workers

    workers = default_workers(args.device) if args.workers is None else args.workers
    column = 2 if args.device.startswith("cuda") else 0 if args.quick else 1
    cases = [DONE_WHEN] if args.done_when else [c for c in CASES if not args.models or c[0] in args.models]
    rows = []
    for label, backbone, size, counts, batch in cases:
        spec = dict(label=label, backbone=backbone, size=size, n=counts[column], batch=batch, device=args.device,
                    workers=workers, precision=args.precision)
        done = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], check=True, capture_output=True,
                              text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{label}: {r['images']} images, evaluate {r['evaluate_s']:.2f} s ({r['images_per_s']:.2f} img/s) = "
              f"{r['evaluate_over_forward']:.2f} x the CLIP forward ({r['clip_forward_s']:.2f} s); stages "
              + ", ".join(f"{k[:-2]} {r[k]:.2f}" for k in ("load_s", "forward_s", "smoothing_s", "metrics_s") if k in r)
              + f"; peak {r['peak_mb']:.0f} MB", flush=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, device {args.device}")
    if args.done_when:
        r = rows[0]
        verdict = "met" if r["evaluate_over_forward"] <= 1.25 else "NOT met"
        print(f"issue 13 target (evaluation <= CLIP forward + 25 %): {verdict}, "
              f"forward + {100 * (r['evaluate_over_forward'] - 1):.0f} %")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "evaluate_done_when" if args.done_when else "evaluate_quick" if args.quick else "evaluate"
    path = out / f"{name}.csv"
    write_rows(path, rows)


if __name__ == "__main__":
    main()
