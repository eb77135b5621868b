#!/usr/bin/env bash
# The GPU path end to end: the benchmarks, then every notebook with `tpslab reproduce --profile
# gpu-smoke` (ViT-L-14-336, random weights, 518 px, synthetic data), figures and a one-screen
# summary under OUT (default results/gpu_check). Target on one CUDA GPU: under 8 minutes.
#
#   benchmarks/gpu_check.sh [OUT]
#
# GPU_CHECK_SMALL=1 runs the same steps at CPU size (what CI and the tests run): the tiny
# model on the CPU, --quick benchmarks, a handful of images, and only the notebooks in
# GPU_CHECK_NOTEBOOKS (default "00 01"; "all" for every one). PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${1:-results/gpu_check}
SMALL=${GPU_CHECK_SMALL:-0}
BENCH="$OUT/benchmarks"
mkdir -p "$BENCH"
start=$(date +%s)
if [ "$SMALL" = 1 ]; then
    DEVICE=cpu; QUICK=--quick; BUDGET=${GPU_CHECK_BUDGET:-600}
    PROFILE="$OUT/gpu-smoke-small.yaml"
    "$PY" - "$PROFILE" <<'EOF'
import sys, yaml
from tpslab.profiles import PROFILE_DIR
p = yaml.safe_load((PROFILE_DIR / "gpu-smoke.yaml").read_text())
p.update(name="gpu-smoke-small", device="cpu", threads=1)
p["model"].update(backbone="tpslab-tiny", image_size=None)
p["methods"] = {m: {"backbone": "tpslab-tiny", "pretrained": None, "image_size": None} for m in p["methods"]}
p["compare"].update(n_boot=50)  # harmonised_size stays 518: the 64 -> 518 resize path is exercised too
p["data"]["synthetic"].update(n_per_class=6, image_size=64)  # MuSc needs >= 5 images per class
p["train"]["epochs"] = 1
p["evaluate"]["num_workers"] = 0
open(sys.argv[1], "w").write(yaml.safe_dump(p))
EOF
    NOTEBOOKS=${GPU_CHECK_NOTEBOOKS:-00 01}
    EVAL_ARGS="--models tiny@64"; TRAIN_ARGS="--models tiny@64"
else
    DEVICE=cuda; QUICK=; BUDGET=${GPU_CHECK_BUDGET:-480}
    PROFILE=gpu-smoke
    NOTEBOOKS=${GPU_CHECK_NOTEBOOKS:-all}
    EVAL_ARGS=; TRAIN_ARGS=
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: no CUDA GPU here (GPU_CHECK_SMALL=1 runs the CPU-sized check)')"
fi
echo "== benchmarks ($DEVICE)"
"$PY" benchmarks/bench_evaluate.py $QUICK --device "$DEVICE" $EVAL_ARGS --out "$BENCH"
"$PY" benchmarks/bench_train.py $QUICK --device "$DEVICE" $TRAIN_ARGS --out "$BENCH"
"$PY" benchmarks/bench_metrics.py --quick --device "$DEVICE" --out "$BENCH"
"$PY" benchmarks/plot_benchmarks.py --dir "$BENCH" $QUICK
echo "== tpslab reproduce --profile $PROFILE (notebooks: $NOTEBOOKS)"
ONLY=()
if [ "$NOTEBOOKS" != all ]; then ONLY=(--only $NOTEBOOKS); fi
TPSLAB_CACHE=${TPSLAB_CACHE:-$OUT/feature-cache} "$PY" -m tpslab reproduce --profile "$PROFILE" \
    --out "$OUT/reproduce" --data "$OUT/data" "${ONLY[@]}"
echo "== summary"
"$PY" benchmarks/gpu_summary.py "$OUT" "$(( $(date +%s) - start ))" "$BUDGET"
