"""The frozen image encoder's forward on the CPU: open_clip's own blocks against tpslab's ``Backbone``.

tpslab changes two things in how the vision transformer runs, neither of them its math:

* its blocks compute self-attention with ``scaled_dot_product_attention``
  (:class:`tpslab.backbone.core.SDPABlock`) instead of ``nn.MultiheadAttention``'s native fast
  path, which on the CPU materialises every head's (L, L) attention matrix;
* on the CPU, a batch goes through the transformer in groups of at most
  :data:`tpslab.backbone.core.CPU_TOKENS_PER_CALL` tokens (images x (1 + L)).

For each model and batch size this times ``forward_intermediates`` of four blocks (what TPS
reads) through open_clip's blocks (``open_clip``), then ``Backbone.encode_image`` (``tpslab``),
alternating for ``--rounds`` rounds on the same random weights and images, and prints the best
seconds per image of each and their ratio, and the largest difference of the patch tokens. The
models: ``bench-ref24-p14`` (``tpslab-ref24`` with 14 px patches) at 518 px (24 blocks of width 128, 1370 tokens an
image: the cheap model of ``bench_evaluate_authors.py --cheap``), ViT-B-16 at 224 px (197
tokens), and with ``--full`` ViT-L-14-336 at 518 px (the paper's setting; about 5 s an image
here). ``--quick``: the tiny model, a few seconds. Writes ``results/benchmarks/forward[_quick].csv``.

    python benchmarks/bench_forward.py [--quick] [--full] [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from common import register_bench_models, write_rows  # benchmarks/common.py (the script's folder is on sys.path)

from tpslab.backbone.core import Backbone, load_clip

RESULTS = Path(os.environ.get("TPSLAB_RESULTS", Path(__file__).resolve().parents[1] / "results")) / "benchmarks"


def models(quick: bool, full: bool) -> list[tuple[str, int, tuple[int, ...]]]:
    """(model, image size, batch sizes) to measure."""
    if quick:
        return [("tpslab-tiny", 64, (1, 8))]
    cases = [("bench-ref24-p14", 518, (1, 2, 8)), ("ViT-B-16", 224, (1, 8, 32))]
    return cases + ([("ViT-L-14-336", 518, (1, 4))] if full else [])


@torch.no_grad()
def open_clip_patches(visual: torch.nn.Module, indices: list[int], images: torch.Tensor) -> list[torch.Tensor]:
    """Projected patch tokens of blocks ``indices`` (0-based) through open_clip's own blocks."""
    out = visual.forward_intermediates(images, indices=indices, output_fmt="NLC", intermediates_only=True)
    return [visual.ln_post(t) @ visual.proj for t in out["image_intermediates"]]


def best_per_image(fn, images: torch.Tensor, rounds: int) -> list[float]:
    """Seconds per image of ``fn(images)``, once per round (after one warm-up call)."""
    fn(images)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn(images)
        times.append((time.perf_counter() - start) / images.shape[0])
    return times


def main() -> None:
    """Time both sides per model and batch size, print the ratios and write the CSV."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the tiny model only (make bench)")
    ap.add_argument("--full", action="store_true", help="also ViT-L-14-336 at 518 px (minutes)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        register_bench_models(Path(tmp))
    for name, size, batches in models(args.quick, args.full):
        clip = load_clip(name, None, size, seed=0)  # seeded random weights, open_clip's own blocks
        visual = clip.visual
        n = len(visual.transformer.resblocks)
        indices = [max(1, round(b * n / 24)) - 1 for b in (6, 12, 18, 24)]
        x = torch.randn(max(batches), 3, size, size, generator=torch.Generator().manual_seed(0))
        theirs = functools.partial(open_clip_patches, visual, indices)

        reference = {b: best_per_image(theirs, x[:b], args.rounds) for b in batches}  # before the blocks are swapped
        expected = theirs(x)
        backbone = Backbone(clip, name, tuple(i + 1 for i in indices))  # swaps the vision blocks to SDPA
        ours = {b: best_per_image(backbone.encode_image, x[:b], args.rounds) for b in batches}
        diff = max(float((a - b).abs().max()) for a, b in zip(expected, backbone.encode_image(x).patches))
        for b in batches:
            row = {"model": name, "image_size": size, "tokens": 1 + backbone.grid_size ** 2, "batch": b,
                   "open_clip_s_per_image": round(min(reference[b]), 4), "tpslab_s_per_image": round(min(ours[b]), 4),
                   "speedup": round(min(reference[b]) / min(ours[b]), 2), "max_abs_diff": f"{diff:.1e}",
                   "threads": args.threads}
            rows.append(row)
            print(f"{name} at {size} px, batch {b}: open_clip {row['open_clip_s_per_image']:.3f} s/image, tpslab "
                  f"{row['tpslab_s_per_image']:.3f} s/image -> {row['speedup']:.2f}x (patch tokens differ by "
                  f"at most {diff:.1e})", flush=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} torch "
          f"threads, torch {torch.__version__}")
    write_rows(Path(args.out) / ("forward_quick.csv" if args.quick else "forward.csv"), rows)


if __name__ == "__main__":
    main()
