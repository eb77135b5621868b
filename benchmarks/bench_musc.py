"""MuSc's mutual scoring (MSM) at paper scale: time and peak memory, and the projected time per MVTec AD class.

One MSM call scores N images of L = 37x37 patches with C = 1024 channels (ViT-L-14-336 at
518 px) for one block and one LNAMD degree; MuSc makes 12 of them per class (4 blocks x 3
degrees). Tokens are random unit vectors: the cost does not depend on their values.

    python benchmarks/bench_musc.py                # N = 16, 64, 200 on the CPU (and on CUDA if present)
    python benchmarks/bench_musc.py --quick        # CI-sized: small grids, a few seconds
    python benchmarks/bench_musc.py --budget 150   # seconds of measuring per device before projecting
    python benchmarks/bench_musc.py --reference ~/src/MuSc   # also: best-of-N side by side with the reference MSM

The side-by-side comparison (issue 22's shape: 12 images x 24x24 patches x 1024 channels, on the
CPU) always times tpslab's ``msm``; with ``--reference PATH`` (a clone of xrli-U/MuSc, or its
``models/modules/_MSM.py``; default ``$TPSLAB_MUSC_REFERENCE``) it also times the reference's
``MSM`` on the same features and prints the ratio of the best times and the largest difference.
The reference's code is only imported from that path, never copied here. Writes
``results/benchmarks/musc_vs_reference.csv``.

Each case runs in its own process (peak memory = that process's peak RSS on CPU, or
``torch.cuda.max_memory_allocated`` on CUDA; ``base_mb`` is the CPU process's peak before
the features exist, mostly the imports). When a full call would not fit the time budget,
only the first q query images are scored (against all N) and the time is scaled by the ratio
of image pairs computed (MSM computes each unordered pair once): those rows say ``projected``.
Writes ``results/benchmarks/musc_msm.csv``.
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

# MVTec AD test images per class (bottle ... zipper), 1725 in all
MVTEC_TEST = {"bottle": 83, "cable": 150, "capsule": 132, "carpet": 117, "grid": 78, "hazelnut": 110, "leather": 124,
              "metal_nut": 115, "pill": 167, "screw": 160, "tile": 117, "toothbrush": 42, "transistor": 100,
              "wood": 79, "zipper": 151}
CALLS_PER_CLASS = 12  # 4 blocks x 3 degrees


def one_case(n: int, grid: int, c: int, device: str, chunk: int, precision: str, query: int) -> dict:
    """Time one MSM call (or ``query`` of its N query images) in this process; return the figures."""
    from tpslab.methods.musc_ops import msm

    torch.manual_seed(0)
    dev = torch.device(device)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MB before the features exist
    z = torch.randn(n, grid * grid, c, device=dev)  # (N, L, C)
    z /= z.norm(dim=-1, keepdim=True)  # in place: one copy of the features, as in MuSc
    if dev.type == "cuda":
        msm(torch.nn.functional.normalize(torch.randn(5, 4, c, device=dev), dim=-1), precision=precision)  # warm-up
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    msm(z, chunk=chunk, precision=precision, query=None if query >= n else list(range(query)))
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return dict(seconds_measured=seconds, peak_mb=peak, base_mb=0.0 if dev.type == "cuda" else base_rss)


def pairs(n: int, q: int) -> int:
    """Image pairs MSM computes when scoring the first ``q`` of ``n`` images (each unordered pair once)."""
    return q * (n - 1) - q * (q - 1) // 2


def run_case(args: argparse.Namespace, n: int, device: str, query: int) -> dict:
    """``one_case`` in a fresh process (so that each case has its own peak memory)."""
    cmd = [sys.executable, __file__, "--one", json.dumps(dict(n=n, grid=args.grid, c=args.channels, device=device,
                                                              chunk=args.chunk, precision=args.precision, query=query))]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_device(args: argparse.Namespace, device: str) -> list[dict]:
    """All sizes on one device, within the time budget; projections where a full call does not fit."""
    rows, rate, spent = [], None, 0.0
    length = args.grid * args.grid
    for n in args.sizes:
        block = length * length * args.channels  # multiply-adds of one pair of images
        macs = pairs(n, n) * block  # each unordered pair once
        left = max(args.budget - spent, 1.0)
        query = n
        if rate is not None and macs / rate > left:  # too slow in full: score q query images, scale by the pairs
            query = max(1, min(n, int(left * rate / ((n - 1) * block))))
        r = run_case(args, n, device, query)
        spent += r["seconds_measured"]
        seconds = r["seconds_measured"] * pairs(n, n) / pairs(n, query)
        rate = pairs(n, query) * block / r["seconds_measured"]
        features_mb = n * length * args.channels * 4 / 2**20
        rows.append(dict(device=device, precision=args.precision, N=n, L=length, C=args.channels, chunk=args.chunk,
                         mode="measured" if query == n else f"projected ({query}/{n} query images)",
                         seconds_per_call=round(seconds, 3), seconds_per_class=round(seconds * CALLS_PER_CLASS, 1),
                         gmacs=round(macs / 1e9, 1), gmac_per_s=round(rate / 1e9, 2), features_mb=round(features_mb, 1),
                         peak_mb=round(r["peak_mb"], 1), base_mb=round(r["base_mb"], 1)))
    return rows


def mvtec_projection(rows: list[dict], length: int, c: int) -> list[str]:
    """Per-class MSM time for MVTec AD from the throughput of the largest case of each device."""
    lines = []
    for device in dict.fromkeys(r["device"] for r in rows):
        rate = [r for r in rows if r["device"] == device][-1]["gmac_per_s"] * 1e9
        per_class = {k: CALLS_PER_CLASS * pairs(n, n) * length * length * c / rate for k, n in MVTEC_TEST.items()}
        total = sum(per_class.values())
        worst = max(per_class, key=per_class.get)
        lines.append(f"{device}: MVTec AD MSM (L={length}, C={c}) projected {total / 60:.1f} min for 15 classes "
                     f"(mean {total / 15:.0f} s/class; {worst} N={MVTEC_TEST[worst]}: {per_class[worst]:.0f} s), "
                     f"at {rate / 1e9:.1f} GMAC/s; backbone and LNAMD not included")
    return lines


def load_reference(path: str):
    """The reference's ``MSM`` function from a clone of xrli-U/MuSc or from its ``_MSM.py``."""
    import importlib.util

    file = Path(path).expanduser()
    if file.is_dir():
        file = file / "models" / "modules" / "_MSM.py"
    if not file.is_file():
        sys.exit(f"bench_musc: no reference MSM at {file} (give a clone of xrli-U/MuSc or its _MSM.py)")
    spec = importlib.util.spec_from_file_location("musc_reference_msm", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.MSM


def best_times(fns: dict, repeats: int) -> tuple[dict, dict]:
    """Best wall time of each of ``fns`` over ``repeats`` rounds, after one warm-up call each, and their results.

    The calls alternate (one of each per round), so that a change of the machine's load
    affects both sides alike.
    """
    import contextlib
    import io

    results = {name: fn() for name, fn in fns.items()}  # warm-up (first-touch allocations, thread pools)
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            with contextlib.redirect_stderr(io.StringIO()):  # the reference shows a progress bar per call
                t0 = time.perf_counter()
                results[name] = fn()
                best[name] = min(best[name], time.perf_counter() - t0)
    return best, results


def compare_reference(shape: list[int], repeats: int, reference: str | None) -> dict:
    """Time the ``msm`` of tpslab (and the reference ``MSM`` if given) on the same random unit features, on the CPU."""
    from tpslab.methods.musc_ops import msm

    n, length, c = shape
    z = torch.nn.functional.normalize(torch.randn(n, length, c, generator=torch.Generator().manual_seed(0)), dim=-1)
    fns = {"tpslab": lambda: msm(z)}
    if reference:
        ref_msm = load_reference(reference)
        fns["reference"] = lambda: ref_msm(z, "cpu", 0, 0.3)
    best, out = best_times(fns, repeats)
    row = dict(N=n, L=length, C=c, repeats=repeats, threads=torch.get_num_threads(), tpslab_s=round(best["tpslab"], 4),
               reference_s=None, speedup=None, max_abs_diff=None)
    if reference:
        row.update(reference_s=round(best["reference"], 4), speedup=round(best["reference"] / best["tpslab"], 2),
                   max_abs_diff=float((out["reference"].double() - out["tpslab"].double()).abs().max()))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 64, 200])
    ap.add_argument("--grid", type=int, default=37, help="patch grid side (37 for 518 px, patch 14)")
    ap.add_argument("--channels", type=int, default=1024)
    ap.add_argument("--chunk", type=int, default=2**24)
    ap.add_argument("--precision", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--budget", type=float, default=150.0, help="seconds of measuring per device")
    ap.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    ap.add_argument("--quick", action="store_true", help="CI-sized: N 8, 16 on a 12x12 grid, C 128")
    ap.add_argument("--out", default=None, help="CSV path (default results/benchmarks/musc_msm[_quick].csv)")
    ap.add_argument("--reference", default=os.environ.get("TPSLAB_MUSC_REFERENCE"),
                    help="a clone of xrli-U/MuSc (or its models/modules/_MSM.py) to time side by side")
    ap.add_argument("--compare-shape", type=int, nargs=3, default=[12, 576, 1024], metavar=("N", "L", "C"),
                    help="features of the side-by-side comparison (issue 22's: 12 576 1024)")
    ap.add_argument("--repeats", type=int, default=5, help="best of this many calls in the comparison")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_case(**json.loads(args.one))))
        return
    if args.quick:
        args.sizes, args.grid, args.channels, args.budget, args.repeats = [8, 16], 12, 128, 20.0, 3
    results = Path(os.environ.get("TPSLAB_RESULTS", Path(__file__).resolve().parents[1] / "results"))
    side = compare_reference(args.compare_shape, args.repeats, args.reference)
    n, length, c = args.compare_shape
    if side["speedup"] is not None:
        print(f"MSM {n}x{length}x{c} on the CPU, best of {args.repeats}: tpslab {side['tpslab_s']:.3f} s, reference "
              f"{side['reference_s']:.3f} s: {side['speedup']:.2f}x; largest difference {side['max_abs_diff']:.1e}")
    else:
        print(f"MSM {n}x{length}x{c} on the CPU, best of {args.repeats}: tpslab {side['tpslab_s']:.3f} s "
              "(no reference: --reference PATH or $TPSLAB_MUSC_REFERENCE for the ratio)")
    write_rows(results / "benchmarks" / "musc_vs_reference.csv", [side])
    rows = [row for device in args.devices for row in bench_device(args, device)]
    cols = ["device", "precision", "N", "L", "C", "mode", "seconds_per_call", "seconds_per_class", "gmac_per_s",
            "features_mb", "base_mb", "peak_mb"]
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(str(r[k]) for k in cols))
    for line in mvtec_projection(rows, args.grid * args.grid, args.channels):
        print(line)
    out = Path(args.out) if args.out else results / "benchmarks" / f"musc_msm{'_quick' if args.quick else ''}.csv"
    write_rows(out, rows)


if __name__ == "__main__":
    main()
