"""The GPU path's pieces: the gpu-smoke profile, benchmarks/gpu_check.sh's guard, the summary, the figure.

The whole CPU-sized check (``GPU_CHECK_SMALL=1 benchmarks/gpu_check.sh``) takes about 1.5
minutes on a 2-core CPU, too long for a unit test: CI runs it (``make gpu-check-small``, in ``.ci/run``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tpslab.profiles import load_profile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_summary  # noqa: E402
import plot_benchmarks  # noqa: E402


def test_gpu_smoke_profile_is_the_paper_architecture_with_random_weights():
    prof = load_profile("gpu-smoke")
    cfg = prof.model_config
    assert (cfg.backbone, cfg.pretrained, cfg.image_size, prof.device) == ("ViT-L-14-336", None, 518, "cuda")
    assert prof.data.kind == "synthetic" and 100 <= 8 * prof.data.synthetic["n_per_class"] <= 500
    assert all(s.get("pretrained", "x") is None for s in prof.methods.values())
    assert prof.evaluate.precision == "auto" and prof.train_config.cache_features
    assert "ViT-L-14-336 with random weights" in prof.label and "not paper numbers" in prof.label


@pytest.mark.skipif(bool(os.environ.get("CI_HAS_GPU")), reason="checks the no-GPU refusal")
def test_gpu_check_refuses_without_a_gpu_unless_small(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_SMALL": "0",
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path)], env=env,
                          capture_output=True, text=True)
    assert done.returncode != 0 and "GPU_CHECK_SMALL=1" in done.stderr
    assert subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_check.sh")]).returncode == 0


def _fake_run(out: Path) -> None:
    bench = out / "benchmarks"
    bench.mkdir(parents=True)
    pd.DataFrame([{"case": "tiny@64", "device": "cpu", "precision": "fp32", "workers": 0, "images": 8,
                   "image_size": 64, "batch": 8, "clip_forward_s": 0.1, "evaluate_s": 0.2, "load_s": 0.05,
                   "forward_s": 0.1, "smoothing_s": 0.01, "metrics_s": 0.04, "images_per_s": 40.0,
                   "evaluate_over_forward": 2.0, "peak_mb": 900.0}]).to_csv(bench / "evaluate_quick.csv", index=False)
    pd.DataFrame([{"case": "tiny@64", "way": w, "step_ms": ms, "setup_s": 0.1, "speedup": 100 / ms}
                  for w, ms in (("no cache", 100.0), ("cache, cold", 20.0), ("cache, warm", 20.0))]
                 ).to_csv(bench / "train_quick.csv", index=False)
    pd.DataFrame([{"group": "aupro", "method": "exact", "speedup": 50.0}]).to_csv(bench / "metrics_quick.csv",
                                                                                     index=False)
    for sub, name in (("figures", "03_metrics.png"), ("tables", "03_heldout.md")):
        (out / "reproduce" / sub).mkdir(parents=True)
        (out / "reproduce" / sub / name).write_text("| heldout | mean | 1 |\n")


def test_summary_and_figure_of_a_finished_check(tmp_path, monkeypatch):
    _fake_run(tmp_path)
    monkeypatch.setattr(sys, "argv", ["plot_benchmarks.py", "--dir", str(tmp_path / "benchmarks"), "--quick"])
    plot_benchmarks.main()
    assert (tmp_path / "benchmarks" / "benchmarks.png").is_file()
    lines, problems = gpu_summary.summary(tmp_path, 100, 480)
    assert problems == [] and len(lines) <= 25
    assert any("2.00x CLIP forward" in ln for ln in lines) and any("5.0x" in ln for ln in lines)
    assert any("| heldout | mean" in ln for ln in lines)
    _, problems = gpu_summary.summary(tmp_path, 600, 480)
    assert problems == ["over the time budget: 600 s > 480 s"]
    (tmp_path / "benchmarks" / "evaluate_quick.csv").unlink()
    assert "no evaluate benchmark CSV" in gpu_summary.summary(tmp_path, 1, 480)[1]
