"""Looking after the feature cache: what it holds (``tpslab cache info``) and emptying it (``tpslab cache clear``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tpslab.backbone.cache import SPEC, cache_limit, cache_root, entries
from tpslab.store import read_spec


def info(root: Path | None = None) -> dict[str, Any]:
    """Location, limit, size and, per model key, its spec summary, entries and bytes."""
    root = Path(root) if root else cache_root()
    models: dict[str, dict[str, Any]] = {}
    for path, st in entries(root):
        m = models.setdefault(path.parent.parent.name, {"entries": 0, "bytes": 0})
        m["entries"] += 1
        m["bytes"] += st.st_size
    specs = {}
    for key, m in models.items():
        spec = specs[key] = read_spec(root / key, SPEC) or {}
        m["what"] = (f"{spec.get('backbone')} {spec.get('weights')} @{spec.get('image_size')} "
                     f"{str(spec.get('kind', '?.?')).split('.')[-2]} blocks {spec.get('layers')}")
    _tell_apart(models, specs)
    return {"root": str(root), "limit_bytes": cache_limit(), "entries": sum(m["entries"] for m in models.values()),
            "bytes": sum(m["bytes"] for m in models.values()), "models": models}


def _tell_apart(models: dict[str, dict[str, Any]], specs: dict[str, dict[str, Any]]) -> None:
    """Entries with the same short description get the spec fields in which they differ (else their key)."""
    groups: dict[str, list[str]] = {}
    for key, m in models.items():
        groups.setdefault(m["what"], []).append(key)
    for keys in (g for g in groups.values() if len(g) > 1):
        fields = sorted({f for k in keys for f in specs[k]})
        differ = [f for f in fields if len({json.dumps(specs[k].get(f), sort_keys=True) for k in keys}) > 1]
        for k in keys:
            shown = [f"{f}={specs[k].get(f)}" for f in differ if f not in ("preprocess", "code")]
            if "code" in differ:
                shown.append(f"feature code {str(specs[k].get('code'))[:8]}")
            models[k]["what"] += f" ({', '.join(shown) if shown else 'key ' + k[:12]})"


def clear(root: Path | None = None) -> int:
    """Delete every model folder of the cache (those holding a ``spec.json`` or entries); return how many."""
    root = Path(root) if root else cache_root()
    if not root.is_dir():
        return 0
    removed = 0
    for folder in root.iterdir():
        if folder.is_dir() and ((folder / SPEC).is_file() or any(folder.glob("*/*.pt"))):
            shutil.rmtree(folder)
            removed += 1
    return removed
