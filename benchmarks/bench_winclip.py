"""WinCLIP window embeddings: images/s and peak memory at 240 px, tiny and ViT-B-16-plus-240-sized backbones.

Random weights (``pretrained=None``): speed does not depend on them. Per image WinCLIP runs the
whole vision transformer on every 2x2 and 3x3 window (CLS + 4 or 9 tokens) plus the whole image;
on ViT-B-16-plus-240 (15x15 grid) that is 196 + 169 + 1 sequences, 2,896 tokens (13x the tokens
of one plain forward), which is what this measures. Each backbone runs in its own process so
that the peak memory (RSS on CPU, ``torch.cuda.max_memory_allocated`` on GPU) is its own.

    python benchmarks/bench_winclip.py [--quick] [--device cuda] [--batch 8] [--max-tokens 32768]

Prints a table and writes ``results/benchmarks/winclip_windows.csv``.

``--anomalib PYTHON`` compares instead with anomalib's ``WinClipModel`` (the reference of
``tpslab/methods/winclip.py``): PYTHON is the interpreter of a separate environment where
``anomalib`` and ``open_clip_torch`` are importable (anomalib is no dependency of tpslab, and
its code is never copied here). Both sides run on the CPU (or ``--device``) with the same random
ViT-B-16-plus-240 weights (tpslab's seeded ones, saved and loaded into anomalib's model), the
same ``--images`` random 240 px inputs and the class "bottle" (anomalib's window pass with its token
layout put right for open_clip 3, see ``winclip_anomalib.py``; ``--anomalib-as-installed`` not),
each in its own long-lived process with ``--threads`` torch threads; after one untimed pass each,
``--rounds`` alternate one timed pass of each side (all images, in batches of ``--batch``; text
embeddings computed before). It prints each round's seconds, the ratio anomalib / tpslab, the
largest differences of image scores and maps, and writes ``results/benchmarks/winclip_anomalib.csv``::

    python benchmarks/bench_winclip.py --anomalib /path/to/venv/bin/python [--images 2 --rounds 2]

With ``$TPSLAB_ANOMALIB_PYTHON`` set, ``--quick`` (``make bench``) adds the comparison on one image.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import write_rows  # benchmarks/common.py (the script's folder is on sys.path)
from winclip_anomalib import compare_with_anomalib  # benchmarks/winclip_anomalib.py

BACKBONES = ("tpslab-tiny", "ViT-B-16-plus-240")
IMAGE_SIZE = 240
OUT = Path(__file__).resolve().parents[1] / "results" / "benchmarks" / "winclip_windows.csv"


def measure(backbone: str, device: str, batch: int, repeats: int, max_tokens: int) -> dict:
    """Time the window embeddings of one backbone (in this process) and return one CSV row."""
    from tpslab.methods import build_method

    dev = torch.device(device)
    model = build_method("winclip", backbone=backbone, pretrained=None, image_size=IMAGE_SIZE,
                         max_tokens_per_call=max_tokens).to(dev)
    bb, g = model.backbone, model.backbone.grid_size
    windows = [model.whole_image] + [model.windows(k) for k in model.settings.scales]
    tokens = sum(w.shape[0] * (1 + w.shape[1]) for w in windows)  # per image
    x = torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, device=dev)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def windows_pass() -> None:
        for w in windows:
            bb.encode_windows(x, w, max_tokens)

    bb.clip.encode_image(x[:1])
    model.predict(x[:1], ["bottle"])  # warm-up, and the class's text embeddings
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        windows_pass()
        sync()
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    bb.clip.encode_image(x)  # one plain forward, for comparison
    sync()
    plain_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.predict(x, ["bottle"] * batch)
    sync()
    predict_s = time.perf_counter() - t0
    if dev.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated() / 2**30, "cuda max_memory_allocated"
    else:
        peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "process peak RSS"
    return dict(backbone=backbone, image_size=IMAGE_SIZE, grid=g, width=bb.clip.visual.conv1.out_channels,
                blocks=bb.num_blocks, windows_2x2=model.windows(2).shape[0], windows_3x3=model.windows(3).shape[0],
                tokens_per_image=tokens, device=str(dev), threads=torch.get_num_threads(), batch=batch,
                max_tokens_per_call=max_tokens, seconds_per_batch=round(min(times), 4),
                windows_images_per_s=round(batch / min(times), 3), predict_images_per_s=round(batch / predict_s, 3),
                plain_forward_images_per_s=round(batch / plain_s, 3),
                peak_memory_gib=round(peak, 3), memory=kind)


def main() -> None:
    """Measure each backbone in its own process (or compare with anomalib), print the table, write the CSV."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="batch 2 (1 for ViT-B-16-plus-240 on CPU), one repeat")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=32768, help="max_tokens_per_call")
    ap.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure this backbone, print a JSON row
    ap.add_argument("--anomalib", type=Path, default=os.environ.get("TPSLAB_ANOMALIB_PYTHON") or None,
                    help="python of an environment with anomalib: compare with its WinClipModel instead (with "
                         "--quick: after the table, 1 image, 1 round; default $TPSLAB_ANOMALIB_PYTHON)")
    ap.add_argument("--images", type=int, default=2, help="--anomalib: random images of each timed pass")
    ap.add_argument("--rounds", type=int, default=2, help="--anomalib: alternating timed passes of each side")
    ap.add_argument("--threads", type=int, default=2, help="--anomalib: torch threads of each side")
    ap.add_argument("--anomalib-as-installed", dest="fix_layout", action="store_false",
                    help="--anomalib: leave its window pass's token layout as is (open_clip >= 2.24 is batch-first)")
    args = ap.parse_args()
    if args.anomalib and not args.quick and not args.one:
        compare_with_anomalib(args.anomalib, args.images, args.rounds, min(args.batch, args.images), args.threads,
                              args.device, args.out.with_name("winclip_anomalib.csv"), args.fix_layout)
        return
    if args.one:
        print(json.dumps(measure(args.one, args.device, args.batch, args.repeats, args.max_tokens)))
        return
    rows = []
    for name in args.backbones:
        batch, repeats = args.batch, args.repeats
        if args.quick:
            batch, repeats = (1 if name != "tpslab-tiny" and args.device == "cpu" else 2), 1
        cmd = [sys.executable, __file__, "--one", name, "--device", args.device, "--batch", str(batch),
               "--repeats", str(repeats), "--max-tokens", str(args.max_tokens)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    cols = ["backbone", "grid", "tokens_per_image", "device", "batch", "windows_images_per_s",
            "predict_images_per_s", "plain_forward_images_per_s", "peak_memory_gib"]
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(str(r[c]) for c in cols))
    print(f"(peak memory = {rows[0]['memory']}; {rows[0]['threads']} threads; max_tokens_per_call {args.max_tokens})")
    write_rows(args.out, rows)
    if args.anomalib:  # --quick: the comparison at its smallest, after the table
        compare_with_anomalib(args.anomalib, 1, 1, 1, args.threads, args.device,
                              args.out.with_name("winclip_anomalib_quick.csv"), args.fix_layout)


if __name__ == "__main__":
    main()
