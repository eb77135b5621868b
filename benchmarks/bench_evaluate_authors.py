"""Evaluation side by side: the authors' TPS ``test.py`` against ``tpslab evaluate``, end to end.

What it measures (issue 22's "Done when": evaluation at least 4x the authors' ``test.py``): the
wall-clock seconds of one whole evaluation, each side in its own subprocess with the same number
of torch threads (``--threads``, default 2), from start to the printed table (loading the model
included), on the same synthetic images (``tpslab.data.synthetic``, held-out domain, the first
``--classes`` classes, ``--images`` in all, 256 px files, each class with normal and anomalous
images), at 518 px, with the same random ViT-L-14-336 weights and the same random TPS checkpoint:

* the weights are made by the authors' own ``CLIP`` class (float16, OpenAI's format) and the
  checkpoint by their own modules as their ``train.py`` saves them, before any step (see
  :mod:`authors_launcher`; not timed);
* ``authors``: their ``test.py`` from a checkout given with ``--reference`` (never part of this
  repository), run unchanged through the launcher, at its defaults (batch 1, sigma 4) with
  ``--metrics image-pixel-level`` (the four metrics tpslab reports);
* ``tpslab``: ``python -m tpslab evaluate DATA --authors-checkpoint FILE --variant authors-code
  --backbone ViT-L-14-336 --pretrained openai --image-size 518 --sigma 4 --device cpu`` at its
  defaults otherwise (batch 8, exact AUPRO; sigma 4 px as theirs, also at other sizes), with a
  private ``HOME`` whose Hugging Face cache holds the random weights file where open_clip looks
  for OpenAI's, so it loads them as OpenAI's (QuickGELU, as the authors' model).

``--cheap`` puts both sides on a small random ViT instead (the authors' ``CLIP`` class at
tpslab-ref24's dims with 14 px patches: 24 blocks of width 128, 37 x 37 tokens at 518 px as
ViT-L-14-336; tpslab reads the same state dict as a ``local-dir:`` open_clip model with
QuickGELU): on the CPU, ViT-L's forward is ~all of both sides' time and the same work on both,
so the ratio would say nothing of the pipeline around it; with a cheap CLIP, as on a GPU, it does.
The authors' per-image loop (tqdm's elapsed time) is printed beside their total.

The per-class metrics of both sides are printed side by side (the authors print them rounded to
0.1; their AUPRO integrates 200 thresholds, tpslab's is exact, so AUPRO may differ a little).
``--rounds`` repeats the pair (authors first, then tpslab). Without ``--reference`` only the
tpslab side runs, an untrained TPS on seeded random weights (``--quick``: the tiny model at 64 px; ``make bench``;
with ``$TPSLAB_TPS_REFERENCE`` set, ``make bench`` compares at 224 px on 8 images).
Writes ``results/benchmarks/evaluate_authors[_quick].csv``.

    python benchmarks/bench_evaluate_authors.py [--reference PATH [--cheap]] [--images 16 --classes 2] [--quick]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import sys
import tempfile
from pathlib import Path

from authors_launcher import (  # benchmarks/
    AUTHORS_REF24_P14,
    AUTHORS_VIT_L,
    child_env,
    make_checkpoint,
    make_weights,
    run_script,
    timed,
)
from common import write_rows  # benchmarks/common.py (the script's folder is on sys.path)

RESULTS = Path(os.environ.get("TPSLAB_RESULTS", Path(__file__).resolve().parents[1] / "results")) / "benchmarks"
METRICS = ("pixel_auroc", "pixel_aupro", "image_auroc", "image_ap")  # the authors' column order


def make_data(root: Path, images: int, classes: int) -> Path:
    """Held-out synthetic images: the first ``classes`` classes, ``images`` in all; return the data root."""
    from tpslab.data.synthetic import make_synthetic

    per_class = max(2, images // classes)
    meta_path = make_synthetic(root, domain="heldout", n_per_class=per_class, image_size=256, progress=False)
    meta = json.loads(meta_path.read_text())
    meta["test"] = dict(list(meta["test"].items())[:classes])
    meta_path.write_text(json.dumps(meta, indent=2))
    return root


def authors_table(log: Path) -> dict[str, dict[str, float]]:
    """The per-class table their test.py printed (through the launcher's plain ``tabulate``), in percent."""
    lines = log.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("objects | "))
    heads = [h.strip() for h in lines[start].split("|")][1:]
    table = {}
    for line in lines[start + 1:]:
        cells = [c.strip() for c in line.split("|")]
        if len(cells) != len(heads) + 1 or not re.fullmatch(r"-?[\d.]+|nan", cells[1]):
            break
        table[cells[0]] = {h: float(v) for h, v in zip(heads, cells[1:], strict=True)}
    return table


def authors_split(log: Path) -> tuple[float, float]:
    """Seconds of their script (launcher's ``script_s``) and of its per-image loop (tqdm's last elapsed time).

    The rest of the script is loading the model and checkpoint, the text features and the metrics.
    """
    text = log.read_text()
    script = float(re.findall(r'"script_s": ([\d.]+)', text)[-1])
    parts = re.findall(r"\| \d+/\d+ \[([\d:]+)<", text)[-1].split(":")
    return script, float(sum(int(p) * 60 ** i for i, p in enumerate(reversed(parts))))


def tpslab_table(out: Path) -> dict[str, dict[str, float]]:
    """The per-class metrics (percent) of ``tpslab evaluate --out``."""
    (path,) = out.glob("*_metrics.csv")
    with open(path) as fh:
        return {r["class"]: {m: float(r[m]) for m in METRICS if r.get(m) not in (None, "")}
                for r in csv.DictReader(fh) if r.get("class") not in (None, "", "mean")}


def openai_home(home: Path, weights: Path, backbone: str) -> Path:
    """A private HOME whose Hugging Face cache holds ``weights`` where open_clip looks for OpenAI's (tag "openai")."""
    import open_clip

    repo = open_clip.get_pretrained_cfg(backbone, "openai")["hf_hub"].strip("/")
    folder = home / ".cache" / "huggingface" / "hub" / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("random")
    (folder / "snapshots" / "random").mkdir(parents=True)
    (folder / "snapshots" / "random" / "open_clip_pytorch_model.bin").symlink_to(weights)
    return home


def cheap_backbone(folder: Path, weights: Path) -> str:
    """``local-dir:`` backbone of the authors' small random weights (:data:`AUTHORS_REF24_P14`) for tpslab.

    open_clip's config of the same architecture (tpslab-ref24's dims with 14 px patches, QuickGELU as
    the authors' model) and their state dict, whose keys open_clip's CLIP shares.
    """
    embed, size, layers, width, patch, context, vocab, text_width, heads, text_layers = AUTHORS_REF24_P14
    cfg = {"embed_dim": embed, "quick_gelu": True,
           "vision_cfg": {"image_size": size, "layers": layers, "width": width, "head_width": 64, "patch_size": patch},
           "text_cfg": {"context_length": context, "vocab_size": vocab, "width": text_width, "heads": heads,
                        "layers": text_layers}}
    folder.mkdir(parents=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    (folder / "open_clip_pytorch_model.bin").symlink_to(weights)
    return f"local-dir:{folder}"


def random_tpslab_checkpoint(path: Path, backbone: str, image_size: int) -> Path:
    """A tpslab checkpoint of an untrained TPS on seeded random weights (the side alone, without the authors')."""
    import tpslab
    from tpslab.methods.checkpoint import save_checkpoint

    save_checkpoint(path, tpslab.build_model(backbone, None, image_size, seed=0), None, 0, None, [])
    return path


def run_tpslab(data: Path, out: Path, args: argparse.Namespace, checkpoint: Path, home: Path | None) -> float:
    """``tpslab evaluate`` end to end (the authors' checkpoint and weights where ``home``); return its seconds."""
    cmd = [sys.executable, "-m", "tpslab", "evaluate", str(data), "--out", str(out), "--device", "cpu", "--quiet"]
    if home is not None:
        cmd += ["--authors-checkpoint", str(checkpoint), "--variant", "authors-code", "--backbone", args.backbone,
                "--image-size", str(args.image_size), "--sigma", "4"]  # their sigma in px
        cmd += [] if args.backbone.startswith("local-dir:") else ["--pretrained", "openai"]
    else:
        cmd += ["--checkpoint", str(checkpoint)]
    if args.tpslab_batch:
        cmd += ["--batch-size", str(args.tpslab_batch)]
    env = child_env(args.threads)
    if home is not None:
        env.update(HOME=str(home), HF_HUB_OFFLINE="1")
    return timed(cmd, None, env, out.parent / f"{out.name}.log")


def main() -> None:
    """Prepare data (and the authors' weights and checkpoint), run the sides, print times, ratios, metrics."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", type=Path, default=os.environ.get("TPSLAB_TPS_REFERENCE") or None,
                    help="a checkout of the authors' TPS code (default $TPSLAB_TPS_REFERENCE)")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--classes", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=518)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of every measured run")
    ap.add_argument("--rounds", type=int, default=1, help="authors/tpslab pairs, back to back")
    ap.add_argument("--quick", action="store_true",
                    help="make bench: the tiny model at 64 px; with --reference: ViT-L-14-336 at 224 px, 8 images")
    ap.add_argument("--cheap", action="store_true",
                    help="with --reference: both sides on a small random 24-block ViT with 14 px patches "
                         "(tpslab-ref24's dims, 37 x 37 tokens at 518 px as ViT-L-14-336): CLIP cheap, as on a GPU, "
                         "so the time is the pipeline around it")
    ap.add_argument("--tpslab-batch", type=int, default=None,
                    help="tpslab evaluate's --batch-size (default: its own, 8; the authors' test.py runs batch 1)")
    ap.add_argument("--out", default=str(RESULTS), help="folder of the CSV")
    args = ap.parse_args()
    args.backbone = "ViT-L-14-336"
    if args.quick and args.reference:
        args.image_size, args.images = 224, 8
    elif args.quick:
        args.backbone, args.image_size = "tpslab-tiny", 64
    if args.cheap and not args.reference:
        ap.error("--cheap compares with the authors' code: give --reference (or $TPSLAB_TPS_REFERENCE)")
    stem = "evaluate_authors" + ("_quick" if args.quick else "") + ("_cheap" if args.cheap else "")
    csv_path = Path(args.out) / f"{stem}.csv"
    common = {"images": args.images, "classes": args.classes, "image_size": args.image_size,
              "threads": args.threads, "backbone": "authors-ref24-p14" if args.cheap else args.backbone,
              "tpslab_batch": args.tpslab_batch or 8}
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-evaluate-authors-") as name:
        tmp = Path(name)
        data = make_data(tmp / "data", args.images, args.classes)
        home = None
        if not args.reference:
            checkpoint = random_tpslab_checkpoint(tmp / "tpslab-random.pt", args.backbone, args.image_size)
        else:
            reference = args.reference.resolve()
            dims = AUTHORS_REF24_P14 if args.cheap else AUTHORS_VIT_L
            name = "ref24-p14" if args.cheap else "vit-l-14-336"
            weights = make_weights(reference, tmp / f"authors-{name}-random.pt", args.threads, dims)
            checkpoint = make_checkpoint(reference, tmp / "authors-checkpoint-random.pth", weights, data, args.threads)
            if args.cheap:
                args.backbone = cheap_backbone(tmp / "authors-ref24-p14", weights)
                home = tmp / "home"  # a private HOME all the same (nothing of the user's cache used)
                home.mkdir()
            else:
                home = openai_home(tmp / "home", weights, args.backbone)
        for rnd in range(1, args.rounds + 1):
            if args.reference:
                out = tmp / f"authors-{rnd}"
                argv = ["--data_path", str(data), "--save_path", str(out), "--checkpoint_path", str(checkpoint),
                        "--dataset", "synthetic", "--image_size", str(args.image_size), "--metrics",
                        "image-pixel-level"]
                sec = run_script(reference, "test.py", argv, weights, data, args.threads, tmp / f"authors-{rnd}.log")
                theirs = authors_table(tmp / f"authors-{rnd}.log")
                script, loop = authors_split(tmp / f"authors-{rnd}.log")
                rows.append({"round": rnd, "side": "authors test.py", **common, "seconds": round(sec, 1),
                             "script_s": round(script, 1), "image_loop_s": loop})
                print(f"round {rnd}: authors' test.py {sec:.1f} s (script {script:.1f} s, of which the per-image "
                      f"loop {loop:.0f} s; the rest loading and metrics)", flush=True)
            sec = run_tpslab(data, tmp / f"tpslab-{rnd}", args, checkpoint, home)
            ours = tpslab_table(tmp / f"tpslab-{rnd}")
            rows.append({"round": rnd, "side": "tpslab evaluate", **common, "seconds": round(sec, 1)})
            line = f"round {rnd}: tpslab evaluate {sec:.1f} s"
            if args.reference:
                ratio = rows[-2]["seconds"] / sec
                diff = max(abs(ours[c][m] - theirs[c][m]) for c in theirs for m in METRICS if c in ours)
                rows[-1].update(speedup=round(ratio, 2), max_abs_diff_metrics_pct=round(diff, 2))
                line += f" -> {ratio:.2f}x the authors' ({'meets' if ratio >= 4 else 'below'} the 4x target)"
                for c in (c for c in theirs if c in ours):  # their "mean" row too where tpslab has one
                    print(f"  {c}: " + ", ".join(f"{m} {theirs[c][m]:.1f} / {ours.get(c, {}).get(m, float('nan')):.1f}"
                                                 for m in METRICS) + " (authors / tpslab)")
                line += f"; metrics differ by at most {diff:.2f} points"
            print(line, flush=True)
            write_rows(csv_path, rows)  # after every pair: a run stopped later keeps what it measured
    import torch

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} torch "
          f"threads per run, torch {torch.__version__}")
    write_rows(csv_path, rows)


if __name__ == "__main__":
    main()
