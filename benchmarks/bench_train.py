"""Training benchmark: step time and set-up time with and without the frozen-feature cache.

TPS with random CLIP weights on synthetic images, two epochs, three ways measured in one run:

* ``no cache``: every step reads the images and runs CLIP (``cache_features: false``);
* ``cache, cold``: CLIP runs once over the data (set-up), its features go to the on-disk cache
  (:mod:`tpslab.backbone.cache`, a temporary folder here) and every step reuses them;
* ``cache, warm``: a second run reads the features from the disk cache (what the notebooks'
  repeated and ablation runs do).

``step_ms`` is the mean time per optimisation step, ``setup_s`` the time before the first
epoch (encoding or reading the features); ``speedup`` is relative to ``no cache``. Peak memory
is the process's peak RSS (CPU; it only grows) or ``torch.cuda.max_memory_allocated``.
Writes ``results/benchmarks/train[_quick].csv``.

    python benchmarks/bench_train.py [--quick] [--device cuda]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import torch
from common import write_rows  # benchmarks/common.py (the script's folder is on sys.path)

RESULTS = Path(os.environ.get("TPSLAB_RESULTS", Path(__file__).resolve().parents[1] / "results")) / "benchmarks"
# (label, backbone, image size, images quick / full, batch size)
CASES = [("tiny@64", "tpslab-tiny", 64, (64, 400), 8), ("ViT-B-16@224", "ViT-B-16", 224, (16, 48), 8)]


def measure(label: str, backbone: str, size: int, n: int, batch: int, device: str, tmp: Path) -> list[dict]:
    """Train the three ways on ``n`` images; return one row each."""
    import tpslab
    from tpslab.data.dataset import AnomalyDataset
    from tpslab.data.synthetic import make_synthetic
    from tpslab.methods.train import TrainConfig, train

    dev = torch.device(device)
    meta = make_synthetic(tmp / f"data-{n}", domain="train", n_per_class=max(2, n // 8), image_size=256,
                          progress=False)
    ds = AnomalyDataset(meta, size)
    rows = []
    os.environ["TPSLAB_CACHE"] = str(tmp / f"cache-{label}")
    for way, cached in (("no cache", False), ("cache, cold", True), ("cache, warm", True)):
        model = tpslab.build_model(backbone, None, size, seed=0)
        cfg = TrainConfig(epochs=2, batch_size=batch, lr_pathway=1e-3, cache_features=cached, device=device)
        start = time.perf_counter()
        history = train(model, ds, cfg, tmp / f"run-{label}-{way}", progress=False)
        total = time.perf_counter() - start
        steps = 2 * -(-len(ds) // batch)
        epochs_s = sum(h["seconds"] for h in history)
        peak = (torch.cuda.max_memory_allocated(dev) if dev.type == "cuda"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20
        rows.append({"case": label, "way": way, "device": device, "images": len(ds), "batch": batch,
                     "setup_s": round(total - epochs_s, 3), "step_ms": round(1000 * epochs_s / steps, 2),
                     "total_s": round(total, 3), "peak_mb": round(peak, 1)})
    base = rows[0]["step_ms"]
    for r in rows:
        r["speedup"] = round(base / r["step_ms"], 2)
    return rows


def main() -> None:
    """Measure each case, print the rows with their ratios, write the CSV."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few images (CI)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--models", nargs="*", default=None, help="only these cases, e.g. tiny@64")
    ap.add_argument("--out", default=str(RESULTS), help="folder of the CSV")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, backbone, size, counts, batch in CASES:
            if args.models and label not in args.models:
                continue
            rows += measure(label, backbone, size, counts[0 if args.quick else 1], batch, args.device, Path(tmp))
            for r in rows[-3:]:
                print(f"{label} {r['way']:12s}: {r['step_ms']:8.1f} ms/step ({r['speedup']:.1f}x), set-up "
                      f"{r['setup_s']:.2f} s, {r['images']} images", flush=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, device {args.device}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / ("train_quick.csv" if args.quick else "train.csv")
    write_rows(path, rows)


if __name__ == "__main__":
    main()
