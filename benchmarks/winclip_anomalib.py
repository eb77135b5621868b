"""tpslab's WinCLIP beside anomalib's ``WinClipModel``, same weights, same inputs (``bench_winclip.py --anomalib``).

Each side is a long-lived worker process that loads its model once, then answers each ``run``
line on its standard input with one timed pass over all the images (``RESULT {"seconds": ...}``
on its standard output); the caller alternates the two. The anomalib worker (:data:`ANOMALIB_WORKER`)
runs with the interpreter of another environment (anomalib is no dependency of tpslab): it builds
``WinClipModel`` with open_clip's weight download replaced by random weights, then loads the
state dict that tpslab's worker saved, so both hold the same ViT-B-16-plus-240.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import write_rows  # benchmarks/common.py (the script's folder is on sys.path)

BACKBONE, IMAGE_SIZE, CLASS = "ViT-B-16-plus-240", 240, "bottle"

# The loop shared by both workers: cfg (dict), model_pass (images -> (scores (B,), maps (B, S, S))) defined before.
LOOP = r'''
images = torch.load(cfg["images"])
torch.set_num_threads(int(cfg["threads"]))
print("RESULT " + json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    start = time.perf_counter()
    with torch.no_grad():
        outs = [model_pass(images[i:i + cfg["batch"]].to(device)) for i in range(0, len(images), cfg["batch"])]
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    torch.save({"scores": torch.cat([o[0] for o in outs]).cpu(), "maps": torch.cat([o[1] for o in outs]).cpu()},
               cfg["outputs"])
    print("RESULT " + json.dumps({"seconds": seconds}), flush=True)
'''

ANOMALIB_WORKER = r'''
import json, sys, time
import torch
import open_clip
cfg = json.loads(open(sys.argv[1]).read())
_create = open_clip.create_model_and_transforms
def _random_weights(name, pretrained=None, **kwargs):  # no download: the weights come from tpslab's worker
    return _create(name, pretrained=None, **kwargs)
open_clip.create_model_and_transforms = _random_weights
from anomalib.models.image.winclip.torch_model import WinClipModel
device = torch.device(cfg["device"])
model = WinClipModel()
model.clip.load_state_dict(torch.load(cfg["weights"]))
model.setup(cfg["class_name"])  # the text embeddings, with the loaded weights
transformer = model.clip.visual.transformer
if cfg["fix_layout"] and getattr(transformer, "batch_first", False):
    # anomalib's window pass permutes its tokens to (length, batch, width) for the transformer, but
    # open_clip >= 2.24 builds it batch-first: attention would then run across windows instead of
    # across each window's tokens. Told that its input is sequence-first during that pass (only: the
    # whole-image pass hands it batch-first tokens), open_clip transposes it back.
    _windows = model._get_window_embeddings
    def _sequence_first_windows(feature_map, masks):
        transformer.batch_first = False
        try:
            return _windows(feature_map, masks)
        finally:
            transformer.batch_first = True
    model._get_window_embeddings = _sequence_first_windows
model = model.eval().to(device)
def model_pass(x):
    out = model(x)
    return out.pred_score, out.anomaly_map
''' + LOOP

TPSLAB_WORKER = r'''
import json, sys, time
import torch
from tpslab.methods import build_method
cfg = json.loads(open(sys.argv[1]).read())
device = torch.device(cfg["device"])
model = build_method("winclip", backbone=cfg["backbone"], pretrained=None, image_size=cfg["image_size"]).eval()
torch.save(model.backbone.clip.state_dict(), cfg["weights"])
model = model.to(device)
model.text_embeddings(cfg["class_name"])  # computed once per class, as anomalib's setup does
def model_pass(x):
    pred = model.predict(x, [cfg["class_name"]] * len(x))
    return pred.image_scores, pred.anomaly_maps
''' + LOOP


class Worker:
    """One side's process: started with its settings, then asked for timed passes."""

    def __init__(self, python: str, code: str, cfg: dict, folder: Path, name: str) -> None:
        (folder / f"{name}_worker.py").write_text(code)  # not {name}.py: it would shadow the package
        (folder / f"{name}.json").write_text(json.dumps(cfg))
        env = {**os.environ, "OMP_NUM_THREADS": str(cfg["threads"]), "MKL_NUM_THREADS": str(cfg["threads"]),
               "PYTHONWARNINGS": "ignore"}
        self.name, self.log = name, folder / f"{name}.log"
        self.proc = subprocess.Popen([python, str(folder / f"{name}_worker.py"), str(folder / f"{name}.json")], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(self.log, "w"),
                                     text=True)
        self.result()  # ready

    def result(self) -> dict:
        """The worker's next ``RESULT`` line (other output is skipped); raise if it died."""
        for line in self.proc.stdout:
            if line.startswith("RESULT "):
                return json.loads(line[7:])
        raise SystemExit(f"{self.name} worker failed ({self.proc.wait()}): {self.log}\n"
                         + self.log.read_text()[-3000:])

    def run(self) -> float:
        """One timed pass over all the images; its seconds."""
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return self.result()["seconds"]

    def close(self) -> None:
        """End the worker (its standard input closes)."""
        self.proc.stdin.close()
        self.proc.wait()


def compare_with_anomalib(python: Path, images: int, rounds: int, batch: int, threads: int, device: str,
                          out: Path, fix_layout: bool = True) -> list[dict]:
    """Alternate timed passes of tpslab's WinCLIP and anomalib's WinClipModel; print and write the rows.

    ``fix_layout``: run anomalib's window pass as it was written (see :data:`ANOMALIB_WORKER`); without
    it, anomalib as installed with open_clip 3 (attention across windows: different maps).
    """
    rows, times = [], []
    with tempfile.TemporaryDirectory(prefix="bench-winclip-anomalib-") as name:
        tmp = Path(name)
        torch.manual_seed(0)
        torch.save(torch.randn(images, 3, IMAGE_SIZE, IMAGE_SIZE), tmp / "images.pt")  # preprocessed inputs
        common = {"images": str(tmp / "images.pt"), "weights": str(tmp / "weights.pt"), "threads": threads,
                  "batch": batch, "device": device, "class_name": CLASS, "backbone": BACKBONE,
                  "image_size": IMAGE_SIZE, "fix_layout": fix_layout}
        start = time.perf_counter()
        ours = Worker(sys.executable, TPSLAB_WORKER, {**common, "outputs": str(tmp / "tpslab_out.pt")}, tmp, "tpslab")
        theirs = Worker(str(python), ANOMALIB_WORKER, {**common, "outputs": str(tmp / "anomalib_out.pt")}, tmp,
                        "anomalib")
        print(f"both models loaded ({time.perf_counter() - start:.0f} s); {images} images of {IMAGE_SIZE} px, "
              f"batch {batch}, {threads} threads each, {rounds} alternating rounds", flush=True)
        try:
            theirs.run(), ours.run()  # one untimed pass each: first calls are slower (allocations, kernels)
            for rnd in range(1, rounds + 1):
                if rnd % 2:  # alternate which side goes first
                    a, t = theirs.run(), ours.run()
                else:
                    t, a = ours.run(), theirs.run()
                times.append((a, t))
                rows.append({"round": rnd, "backbone": BACKBONE, "image_size": IMAGE_SIZE, "images": images,
                             "batch": batch, "threads": threads, "device": device, "layout_fix": fix_layout,
                             "anomalib_s": round(a, 2),
                             "tpslab_s": round(t, 2), "speedup": round(a / t, 3)})
                print(f"round {rnd}: anomalib WinClipModel {a:.1f} s, tpslab WinCLIP {t:.1f} s -> "
                      f"{a / t:.2f}x", flush=True)
        finally:
            ours.close()
            theirs.close()
        mine, ref = torch.load(tmp / "tpslab_out.pt"), torch.load(tmp / "anomalib_out.pt")
    score_diff = (mine["scores"] - ref["scores"]).abs().max().item()
    map_diff = (mine["maps"] - ref["maps"]).abs().max().item()
    best = min(a for a, _ in times) / min(t for _, t in times)
    ratios = sorted(a / t for a, t in times)
    for r in rows:
        r.update(best_speedup=round(best, 3), max_abs_diff_scores=f"{score_diff:.1e}",
                 max_abs_diff_maps=f"{map_diff:.1e}")
    verdict = "at least on par" if best >= 1 else f"{100 * (1 - best):.1f} % slower"
    print(f"tpslab / anomalib speed: {best:.3f}x best of {rounds} ({verdict}), median of the rounds "
          f"{ratios[len(ratios) // 2]:.2f}x, range {ratios[0]:.2f}-{ratios[-1]:.2f}x; largest differences: image "
          f"scores {score_diff:.1e}, maps {map_diff:.1e}; torch {torch.__version__}")
    write_rows(out, rows)
    return rows
