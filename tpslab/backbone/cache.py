"""Frozen CLIP features kept on disk across runs, keyed by what they depend on.

CLIP is frozen and TPS (and AnomalyCLIP) use no augmentation, so an image's features depend
only on the model's frozen part and the image file. Training with ``cache_features`` looks
them up here first (the notebooks' ablation rows and repeated runs then encode each image
once). Layout under :func:`cache_root` (``$TPSLAB_CACHE``, else ``~/.cache/tpslab``)::

    <model key>/spec.json          what the key stands for (backbone, weights, size, kind, ...)
    <model key>/<k[:2]>/<k>.pt     one image: embedding, patches, mask (bits), label, has_mask

The model key hashes the backbone name, the weights (tag, or a file's path, size and mtime;
random weights: their seed), the image size, the position-grid resize, the selected blocks,
the feature kind (the method's encoder: TPS patch tokens or AnomalyCLIP's DPAM V-V tokens,
the image embedding, DPAM's first block), the preprocessing and the versions of tpslab's
feature code and open_clip. An image's key hashes its file's and its mask's path, size and
mtime, and its label. Entries are written atomically (a reader never sees half a file) and
evicted least recently used first beyond the size limit (``$TPSLAB_CACHE_LIMIT_GB``, default
80: what the ``paper`` profile's comparison holds, see :func:`entry_bytes`). Features are
stored as float16 when an image's features take 1 MiB or more (CLIP sizes) and as float32
below (small test models, where the rounding would show), or as chosen.

Entries are read back memory-mapped (:class:`MappedFeatures`): a data set's features stay on
disk (and in the page cache), and each batch is converted to float32 as it is used, so
training on MVTec AD's 1725 test images at 518 px (about 8.4 MB per image, 14.5 GB) needs no
more memory than a batch. Before encoding, :func:`encode_cached` checks that the disk has the
room and that the set fits the size limit; if not (or a write fails), it raises
:class:`CacheRoomError` and training goes on without the cache.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tpslab.backbone import loading
from tpslab.backbone.core import ImageFeatures
from tpslab.configs import CACHE_DTYPES  # noqa: F401 - re-exported
from tpslab.store import digest, read_spec, write_spec
from tpslab.utils import TPSLabError, atomic_path

FEATURE_VERSION = 2  # bump when the feature code changes what it computes (FEATURE_CODE catches the rest)
# The modules whose code computes the frozen features: their source is part of the key, so features
# written by other code (an older checkout sharing ~/.cache/tpslab) are never read back as this code's.
FEATURE_MODULES = ("backbone/core.py", "backbone/loading.py", "methods/tps/model.py", "methods/anomalyclip.py",
                   "data/images.py", "data/dataset.py")


def feature_code_digest() -> str:
    """A digest of the source of :data:`FEATURE_MODULES` (part of every cache key)."""
    here = Path(__file__).parents[1]  # tpslab/
    return hashlib.sha256(b"".join((here / m).read_bytes() for m in FEATURE_MODULES)).hexdigest()[:16]
SPEC = "spec.json"  # in each model folder: what its key stands for
DEFAULT_LIMIT_GB = 80.0  # the paper comparison needs about 61 GB (tpslab cache info --profile paper)
HALF_FROM_BYTES = 1 << 20  # "auto": float16 when an image's float32 features take at least this
SPARE_BYTES = 1 << 30  # disk space left free when the cache is filled


class CacheRoomError(TPSLabError):
    """The feature cache cannot hold a data set (disk space, size limit, or a failed write)."""


def entry_bytes(layers: int, grid: int, dim: int, image_size: int, dtype: str = "auto") -> int:
    """Bytes on disk of one image's entry: ``layers x grid^2 x dim`` patch features, embedding, mask bits.

    ViT-L-14-336 at 518 px (4 blocks of 37 x 37 tokens, D = 768, float16): about 8.4 MB.

    >>> round(entry_bytes(4, 37, 768, 518) / 1e6, 2)
    8.45
    """
    floats = layers * grid * grid * dim
    itemsize = 4 if dtype == "float32" or (dtype == "auto" and floats * 4 < HALF_FROM_BYTES) else 2
    return (floats + dim) * itemsize + math.ceil(image_size * image_size / 8) + 4096  # + zip/pickle overhead


def arch_entry_bytes(backbone: str, image_size: int | None, layers: int | None = None,
                     dtype: str = "auto") -> int | None:
    """:func:`entry_bytes` from an open_clip architecture name without building it (None if unknown).

    ``layers`` defaults to 4 (TPS and AnomalyCLIP read 4 blocks).
    """
    import open_clip

    cfg = open_clip.get_model_config(backbone) if backbone else None
    if not cfg:
        return None
    vision = cfg["vision_cfg"]
    size = image_size or vision["image_size"]
    size = size if isinstance(size, int) else size[0]
    patch = vision.get("patch_size")
    if not patch:
        return None
    return entry_bytes(layers or 4, size // patch, cfg["embed_dim"], size, dtype)


def free_bytes(root: Path) -> int:
    """Free bytes on the disk that holds ``root`` (or would: its nearest existing parent)."""
    path = Path(root).resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def cache_root() -> Path:
    """The cache folder: ``$TPSLAB_CACHE``, else ``~/.cache/tpslab``."""
    return Path(os.environ.get("TPSLAB_CACHE") or Path.home() / ".cache" / "tpslab").expanduser()


def cache_limit() -> int:
    """The size limit in bytes: ``$TPSLAB_CACHE_LIMIT_GB`` (GiB, default 80)."""
    text = os.environ.get("TPSLAB_CACHE_LIMIT_GB") or str(DEFAULT_LIMIT_GB)
    try:
        return int(float(text) * 2**30)
    except ValueError as err:
        raise TPSLabError(f"TPSLAB_CACHE_LIMIT_GB={text!r}: expected a number of GiB") from err


def _stamp(path: Path) -> list[Any]:
    """A file's identity for the key: absolute path, size and mtime (ns)."""
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def model_spec(model: Any) -> dict[str, Any]:
    """What a model's frozen image features depend on (the model part of the key)."""
    import open_clip

    cfg = model.config.to_dict()
    pretrained = loading.resolve_pretrained(cfg.get("backbone"), cfg.get("pretrained"))
    weights: Any = pretrained or f"random, seed {cfg.get('seed')}"
    if pretrained and Path(pretrained).is_file():
        weights = _stamp(Path(pretrained))
    return {"version": FEATURE_VERSION, "code": feature_code_digest(), "open_clip": open_clip.__version__,
            "torch": torch.__version__, "backbone": cfg.get("backbone"),
            "weights": weights, "image_size": model.image_size, "pos_resize": cfg.get("pos_resize"),
            "quick_gelu": cfg.get("quick_gelu"), "layers": list(model.backbone.layers),
            "kind": f"{type(model).__module__}.{type(model).__qualname__}.encode_images",
            "image_embedding": cfg.get("image_embedding"), "dpam_start": cfg.get("dpam_start"),
            "preprocess": repr(model.preprocess)}


def sample_of(dataset: Any, index: int) -> tuple[Any, dict[str, Any]] | None:
    """(meta, sample) behind item ``index`` of an AnomalyDataset or a Subset of one; None for other data sets."""
    from torch.utils.data import Subset

    while isinstance(dataset, Subset):
        dataset, index = dataset.dataset, dataset.indices[index]
    if not (hasattr(dataset, "samples") and hasattr(dataset, "meta")):
        return None
    return dataset.meta, dataset.samples[index]


@dataclass
class Entry:
    """One image's cached features and targets (CPU tensors)."""

    embedding: torch.Tensor  # (D,)
    patches: torch.Tensor  # (layers, L, D)
    mask: torch.Tensor  # (S, S) bool
    label: int
    has_mask: bool


class FeatureStore:
    """The on-disk features of one model (one model key) under a cache root.

    Args:
        model: a detector with ``config``, ``backbone``, ``image_size``, ``preprocess`` (TPS, AnomalyCLIP).
        root: the cache folder (default :func:`cache_root`).
        dtype: ``"auto"``, ``"float16"`` or ``"float32"``: how features are stored.
    """

    def __init__(self, model: Any, root: Path | None = None, dtype: str = "auto") -> None:
        if dtype not in CACHE_DTYPES:
            raise TPSLabError(f"cache dtype must be one of {CACHE_DTYPES}, got {dtype!r}")
        self.root = Path(root) if root else cache_root()
        self.spec = model_spec(model)
        self.dir = self.root / digest(self.spec)[:24]
        self.dtype = dtype
        self.hits = self.misses = 0

    def key(self, meta: Any, sample: dict[str, Any]) -> str:
        """An image's key: its file's and mask's path, size and mtime, and its label."""
        parts = [_stamp(meta.path(sample["img_path"])), int(sample["anomaly"])]
        if sample.get("mask_path"):
            parts.append(_stamp(meta.path(sample["mask_path"])))
        return digest(parts)

    def path(self, key: str) -> Path:
        """Where an image's entry lives."""
        return self.dir / key[:2] / f"{key}.pt"

    def load(self, key: str) -> Entry | None:
        """The entry of ``key`` (marked as recently used), or None if absent or unreadable."""
        entry = self._read(key)
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    def _read(self, key: str) -> Entry | None:
        """The entry as stored, its features memory-mapped (dtype of storage), or None."""
        path = self.path(key)
        try:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            os.utime(path)  # least recently used = oldest mtime
            side = int(data["mask_side"])
            bits = np.unpackbits(data["mask"].numpy(), count=side * side)
        except (OSError, RuntimeError, EOFError, ValueError, KeyError):
            return None
        mask = torch.from_numpy(bits.astype(bool)).view(side, side)
        return Entry(data["embedding"], data["patches"], mask, int(data["label"]), bool(data["has_mask"]))

    def entry_bytes(self, layers: int, grid: int, dim: int, image_size: int) -> int:
        """Bytes of one entry of this store (:func:`entry_bytes` with its storage dtype)."""
        return entry_bytes(layers, grid, dim, image_size, self.dtype)

    def check_room(self, n_new: int, n_total: int, per_entry: int) -> None:
        """Raise :class:`CacheRoomError` unless ``n_new`` entries fit the disk and ``n_total`` the size limit."""
        need, limit = n_new * per_entry, cache_limit()
        free = free_bytes(self.root) if n_new else 0
        if n_new and need > free - SPARE_BYTES:
            raise CacheRoomError(f"feature cache: {n_new} image(s) need {need / 1e9:.1f} GB "
                                 f"({per_entry / 1e6:.1f} MB each) but {self.root} has {free / 1e9:.1f} GB free")
        if n_total * per_entry > limit:
            raise CacheRoomError(f"feature cache: {n_total} image(s) take {n_total * per_entry / 1e9:.1f} GB, over "
                                 f"the limit of {limit / 2**30:.0f} GiB (TPSLAB_CACHE_LIMIT_GB)")

    def storage_dtype(self, patches: torch.Tensor) -> torch.dtype:
        """The dtype features are stored in (see the module docstring)."""
        if self.dtype == "auto":
            return torch.float16 if patches.numel() * 4 >= HALF_FROM_BYTES else torch.float32
        return getattr(torch, self.dtype)

    def save(self, key: str, entry: Entry) -> Entry:
        """Write an entry atomically; return it as it reads back (rounded to the storage dtype)."""
        if read_spec(self.dir, SPEC) is None:
            write_spec(self.dir, self.spec, SPEC)
        dtype = self.storage_dtype(entry.patches)
        # clone: an entry is often a view into a whole batch, and torch.save writes a view's entire storage
        mask = entry.mask.cpu().bool()
        data = {"embedding": entry.embedding.to("cpu", dtype).clone(),
                "patches": entry.patches.to("cpu", dtype).clone(),
                "mask": torch.from_numpy(np.packbits(mask.numpy().ravel())), "mask_side": mask.shape[-1],
                "label": entry.label, "has_mask": entry.has_mask}
        try:
            with atomic_path(self.path(key)) as tmp:
                torch.save(data, tmp)
        except OSError as err:
            raise CacheRoomError(f"feature cache: writing {self.path(key)} failed ({err})") from err
        return Entry(data["embedding"], data["patches"], mask, entry.label, entry.has_mask)


def entries(root: Path | None = None) -> list[tuple[Path, os.stat_result]]:
    """Every cached image file under ``root`` with its stat (temporary files excluded)."""
    root = Path(root) if root else cache_root()
    if not root.is_dir():
        return []
    return [(p, p.stat()) for p in root.glob("*/*/*.pt") if not p.name.startswith(".")]


def evict(limit: int | None = None, root: Path | None = None) -> int:
    """Delete least recently used entries until the cache is within ``limit`` bytes; return how many."""
    limit = cache_limit() if limit is None else limit
    files = sorted(entries(root), key=lambda e: e[1].st_mtime_ns)
    total = sum(st.st_size for _, st in files)
    removed = 0
    for path, st in files:
        if total <= limit:
            break
        path.unlink(missing_ok=True)
        total -= st.st_size
        removed += 1
    return removed


class MappedFeatures:
    """A data set's cached features, one entry per image (memory-mapped when read from disk).

    :meth:`index` gathers a batch as float32 :class:`~tpslab.backbone.core.ImageFeatures`, the same
    numbers as the stored ones; ``embedding`` and ``patches`` give the whole set at once.
    """

    def __init__(self, rows: list[Entry]) -> None:
        self.rows = rows

    def index(self, idx: torch.Tensor) -> ImageFeatures:
        """The features of the images ``idx`` lists, in float32."""
        rows = [self.rows[int(i)] for i in idx]
        patches = torch.stack([e.patches for e in rows]).float()  # (B, layers, L, D)
        return ImageFeatures(torch.stack([e.embedding for e in rows]).float(), list(patches.unbind(1)))

    def to(self, device: torch.device | str) -> ImageFeatures:
        """All features on ``device`` (float32)."""
        return self.index(torch.arange(len(self.rows))).to(device)

    @property
    def embedding(self) -> torch.Tensor:
        """(N, D) embeddings of every image."""
        return self.index(torch.arange(len(self.rows))).embedding

    @property
    def patches(self) -> list[torch.Tensor]:
        """Per block, (N, L, D) patch features of every image."""
        return self.index(torch.arange(len(self.rows))).patches


def encode_cached(model: Any, dataset: Any, batch_size: int, device: torch.device, store: FeatureStore,
                  progress: bool = False) -> tuple[MappedFeatures, torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Features, masks, labels and has_mask of every item, from ``store`` where cached, else encoded and stored.

    Cold and warm runs give identical features: fresh ones are rounded to the storage dtype as
    they are stored, and both are read back memory-mapped. Masks come back as bool (N, S, S).
    Returns None if ``dataset`` is not an AnomalyDataset (or a Subset of one) or a file cannot be read.
    Evicts beyond the limit at the end.

    Raises:
        CacheRoomError: the disk lacks the room for the missing entries, the set exceeds the
            size limit, or a write failed (checked before encoding; nothing is left half-done).
    """
    from torch.utils.data import DataLoader, Subset
    from tqdm.auto import tqdm

    samples = [sample_of(dataset, i) for i in range(len(dataset))]
    if any(s is None for s in samples):
        return None
    try:
        keys = [store.key(meta, sample) for meta, sample in samples]  # type: ignore[misc]
    except OSError:
        return None  # a missing file: the plain path reports it as loading does
    got: list[Entry | None] = [store.load(k) for k in keys]
    missing = [i for i, e in enumerate(got) if e is None]
    backbone = model.backbone
    per_entry = store.entry_bytes(len(backbone.layers), backbone.grid_size, backbone.embed_dim, model.image_size)
    store.check_room(len(missing), len(keys), per_entry)
    loader = DataLoader(Subset(dataset, missing), batch_size=batch_size, shuffle=False)
    done = 0
    for item in tqdm(loader, desc="caching CLIP features", disable=not progress or not missing, leave=False):
        with torch.no_grad():
            feats = model.encode_images(item["image"].to(device))
        patches = torch.stack(feats.patches, dim=1)  # (B, layers, L, D)
        for j in range(len(item["image"])):
            i = missing[done + j]
            fresh = Entry(feats.embedding[j], patches[j], item["mask"][j] > 0.5, int(item["label"][j]),
                          bool(item["has_mask"][j]))
            store.save(keys[i], fresh)
            got[i] = store._read(keys[i])  # memory-mapped, as a warm run reads it
            if got[i] is None:
                raise CacheRoomError(f"feature cache: {store.path(keys[i])} cannot be read back")
        done += len(item["image"])
    evict()
    ready = [e for e in got if e is not None]
    return (MappedFeatures(ready), torch.stack([e.mask for e in ready]), torch.tensor([e.label for e in ready]),
            torch.tensor([e.has_mask for e in ready]))
