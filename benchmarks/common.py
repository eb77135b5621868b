"""What the benchmark scripts share: CSV rows, and the benchmark-only architecture ``bench-ref24-p14``.

Rows are written atomically, columns in first-seen order.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from tpslab.utils import atomic_write_text


def write_rows(path: str | Path, rows: list[dict]) -> Path:
    """Write ``rows`` (dicts) to ``path`` as CSV, creating its folder; print and return the path."""
    path = Path(path)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())
    print(f"wrote {path}")
    return path


# tpslab-ref24 (24 blocks, width 128) with 14 px patches from 224 px: 37 x 37 tokens at 518 px, as ViT-L-14-336
# (tpslab-ref24's 8 px patches give 64 x 64 tokens there, and a forward 30x the issue's 9.7 s)
REF24_P14 = {"embed_dim": 64, "vision_cfg": {"image_size": 224, "layers": 24, "width": 128, "head_width": 64,
                                             "patch_size": 14},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 12}}


def register_bench_models(folder: Path) -> None:
    """Register the benchmark-only architectures with open_clip (``bench-ref24-p14``)."""
    import open_clip

    (folder / "bench-ref24-p14.json").write_text(json.dumps(REF24_P14))
    open_clip.add_model_config(folder)
