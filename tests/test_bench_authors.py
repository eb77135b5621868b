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
