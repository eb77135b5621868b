"""The side-by-side benchmarks' own helpers (benchmarks/authors_launcher.py, bench_evaluate_authors.py).

No reference code is run or imported: the stand-in ``tabulate`` of the launcher prints a table
in a subprocess and the benchmark's parser reads it back. About 2 s.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import authors_launcher  # noqa: E402
import bench_evaluate_authors  # noqa: E402


def test_stand_in_table_is_read_back(tmp_path: Path) -> None:
    """The launcher's plain ``tabulate`` (where tabulate is missing) prints what the benchmark's parser reads."""
    blocker = tmp_path / "blocked"
    blocker.mkdir()
    (blocker / "tabulate.py").write_text("raise ImportError('not installed')\n")  # as on a machine without it
    code = f"import sys; sys.path.insert(0, {str(blocker)!r})\n" + authors_launcher.STUBS + (
        "import importlib.util, tabulate\n"
        "assert importlib.util.find_spec('tabulate') is not None  # torch looks modules up by name\n"
        "rows = [['bottle', '91.5', '70.25', '88.0', '90.1'], ['mean', '91.5', '70.25', '88.0', '90.1']]\n"
        "print('tqdm | 16/16')\n"
        "print(tabulate.tabulate(rows, headers=['objects', 'pixel_auroc', 'pixel_aupro', 'image_auroc', 'image_ap'],"
        " tablefmt='pipe'))\n"
        "print('after | the table')\n"
    )
    log = tmp_path / "authors.log"
    log.write_text(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    row = {"pixel_auroc": 91.5, "pixel_aupro": 70.25, "image_auroc": 88.0, "image_ap": 90.1}
    assert bench_evaluate_authors.authors_table(log) == {"bottle": row, "mean": row}


def test_authors_split_reads_script_and_loop_seconds(tmp_path: Path) -> None:
    """The launcher's ``script_s`` and tqdm's last elapsed time (minutes:seconds) are read back."""
    log = tmp_path / "authors.log"
    log.write_text("  2%|▏ | 1/60 [00:01<01:00,  1.0s/it]\r100%|██████████| 60/60 [01:27<00:00,  1.45s/it]\n"
                   'objects | pixel_auroc\n{"script_s": 135.25}\n')
    assert bench_evaluate_authors.authors_split(log) == (135.25, 87.0)


def test_cheap_backbone_loads_an_openai_format_state_dict(tmp_path: Path) -> None:
    """The ``--cheap`` local-dir folder: tpslab loads a float16 state dict of its architecture (24 blocks, 14 px
    patches, QuickGELU) unchanged (open_clip's CLIP here; the authors' has the same keys, checked by the benchmark)."""
    import open_clip
    import torch

    from tpslab.backbone.loading import load_clip

    folder = tmp_path / "cfg"
    folder.mkdir()
    name = bench_evaluate_authors.cheap_backbone(folder / "model", tmp_path / "weights.pt").removeprefix("local-dir:")
    cfg = __import__("json").loads((Path(name) / "open_clip_config.json").read_text())["model_cfg"]
    torch.manual_seed(1)
    source = open_clip.model.CLIP(**cfg)
    torch.save({k: v.half() for k, v in source.state_dict().items()}, tmp_path / "weights.pt")
    clip = load_clip(f"local-dir:{name}", None, image_size=518)
    assert isinstance(clip.visual.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU)
    assert len(clip.visual.transformer.resblocks) == 24 and clip.visual.conv1.kernel_size == (14, 14)
    assert torch.equal(clip.visual.proj, source.visual.proj.half().float())
