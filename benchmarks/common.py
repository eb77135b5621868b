"""What the benchmark scripts share: writing their rows as a CSV (atomically, columns in first-seen order)."""

from __future__ import annotations

import csv
import io
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
