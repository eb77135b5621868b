"""Paper-scale timing and memory of TPS: ViT-L-14-336 at 518 px (random weights unless --pretrained).

Prints the shapes (37x37 = 1369 patch tokens per layer, D = 768), seconds per image for
inference and per training step (batch 8 by default), and peak memory. Run on a GPU for the
numbers that matter; on this CPU it costs about 7 s per image.

    python benchmarks/paper_scale.py [--device cuda] [--batch 8] [--steps 3] [--variant paper]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

import tpslab
from tpslab.methods.tps.losses import tps_loss
from tpslab.methods.train import TrainConfig, make_optimizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="ViT-L-14-336")
    ap.add_argument("--pretrained", default=None)
    ap.add_argument("--image-size", type=int, default=518)
    ap.add_argument("--variant", default="paper")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    dev = torch.device(args.device)
    t0 = time.time()
    model = tpslab.build_model(args.backbone, args.pretrained, args.image_size, args.variant).to(dev)
    print(f"built {args.backbone} @ {args.image_size} ({args.variant}) in {time.time() - t0:.1f} s on {dev}")
    x = torch.randn(args.batch, 3, args.image_size, args.image_size, device=dev)
    feats = model.encode_images(x[:1])
    print(f"patch tokens per layer: {tuple(feats.patches[0].shape)} x {len(feats.patches)} layers {model.backbone.layers}; "
          f"image embedding {tuple(feats.embedding.shape)}")

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    model.predict(x[:1])
    sync()
    t0 = time.time()
    out = model.predict(x)
    sync()
    print(f"inference: {(time.time() - t0) / args.batch:.3f} s/image (batch {args.batch}); maps {tuple(out.anomaly_maps.shape)}")
    opt = make_optimizer(model, TrainConfig())
    masks = (torch.rand(args.batch, args.image_size, args.image_size, device=dev) > 0.95).float()
    labels = torch.randint(0, 2, (args.batch,), device=dev)
    has = torch.ones(args.batch, dtype=torch.bool, device=dev)
    model.train()
    times = []
    for _ in range(args.steps):
        t0 = time.time()
        loss = tps_loss(model(x), masks, labels, has).total
        opt.zero_grad()
        loss.backward()
        opt.step()
        sync()
        times.append(time.time() - t0)
    print(f"training step (batch {args.batch}, CLIP forward included): {min(times):.3f} s (best of {args.steps})")
    if dev.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    print(f"peak host memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
