"""Loading CLIP through open_clip: architectures, weights, the position grid at another size.

Weights come in four ways, all through open_clip: a tag (``pretrained="openai"``), a file
path, ``local-dir:/path``, or the tag ``"tpslab"`` for the weights that ship inside tpslab
(``tpslab/weights/<architecture>.safetensors``: ``tpslab-mini``, pre-trained here on generated
captions by ``tpslab pretrain-mini``). Our test architectures (``tpslab-tiny``, ``tpslab-ref24``) are
JSON files in ``model_configs/``, registered on import (the file stem is the model name).
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from huggingface_hub import try_to_load_from_cache
from open_clip.pretrained import get_pretrained_cfg
from torch import nn

from tpslab.utils import TPSLabError

CONFIG_DIR = Path(__file__).parents[1] / "model_configs"
open_clip.add_model_config(CONFIG_DIR)  # registers "tpslab-tiny", "tpslab-mini", ... (file stem = model name)

POS_RESIZE = ("bilinear", "bicubic", "open_clip")  # how the position grid is resized (see load_clip)
WEIGHTS_DIR = Path(__file__).parents[1] / "weights"
SHIPPED = "tpslab"  # pretrained="tpslab": the weights file that ships in WEIGHTS_DIR for the architecture


def _shipped_path(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}.safetensors"


def shipped_weights(name: str) -> Path:
    """The weights file that ships with tpslab for architecture ``name`` (``pretrained="tpslab"``).

    Raises:
        TPSLabError: none ships for ``name``.
    """
    path = _shipped_path(name)
    if not path.is_file():
        there = ", ".join(sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors"))) or "none"
        raise TPSLabError(f"no weights ship with tpslab for {name!r} (pretrained='tpslab' exists for: {there})")
    return path


def resolve_pretrained(name: str, pretrained: str | None) -> str | None:
    """``pretrained`` as open_clip takes it: the tag ``"tpslab"`` becomes the shipped file's path."""
    return str(shipped_weights(name)) if pretrained == SHIPPED else pretrained


def load_clip(
    name: str = "tpslab-tiny",
    pretrained: str | None = None,
    image_size: int | None = None,
    pos_resize: str = "bilinear",
    quick_gelu: bool | None = None,
    seed: int = 0,
) -> nn.Module:
    """Create an open_clip CLIP model, frozen, in eval mode.

    Args:
        name: an open_clip architecture (``"ViT-L-14-336"``), our ``"tpslab-tiny"``, or
            ``"local-dir:/path"`` (a folder with ``open_clip_config.json`` and weights).
        pretrained: ``None`` (seeded random weights), a tag such as ``"openai"``, ``"tpslab"``
            (the weights shipped with tpslab, for ``tpslab-mini``), or a checkpoint file path.
        image_size: input size if different from the architecture's (518 for TPS).
        pos_resize: ``"bilinear"`` resizes the position grid as the authors do
            (bilinear, no antialias); ``"bicubic"`` as MuSc's reference does (bicubic, no
            antialias); ``"open_clip"`` uses ``force_image_size`` (bicubic with antialias).
        quick_gelu: force QuickGELU; default: on for the ``openai`` tag.
        seed: seed for random weights.

    Raises:
        TPSLabError: for an unknown architecture, a missing checkpoint file, or weights
            that cannot be fetched here.
    """
    if pos_resize not in POS_RESIZE:
        raise TPSLabError(f"pos_resize must be one of {POS_RESIZE}, got {pos_resize!r}")
    is_local_dir = name.startswith("local-dir:")
    if not is_local_dir and name not in open_clip.list_models():
        raise TPSLabError(f"unknown backbone {name!r}; try 'tpslab-tiny', 'ViT-B-16', 'ViT-L-14-336' or "
                          "'local-dir:PATH'")
    pretrained = resolve_pretrained(name, pretrained)
    is_file = pretrained and ("/" in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors")))
    if pretrained != "openai" and is_file:
        if not Path(pretrained).is_file():
            raise TPSLabError(f"{pretrained}: checkpoint file not found")
    if pretrained and not is_file and not is_local_dir:
        check_weights_reachable(name, pretrained)
    if quick_gelu is None:
        quick_gelu = pretrained == "openai"
    kwargs = {}
    if image_size and pos_resize == "open_clip":
        kwargs["force_image_size"] = image_size
    torch.manual_seed(seed)
    try:
        with quiet_open_clip(pretrained is None):  # it warns about random weights; for us they are the point
            clip = open_clip.create_model(name, pretrained=None if is_local_dir else pretrained,
                                          force_quick_gelu=quick_gelu, **kwargs)
    except Exception as err:  # noqa: BLE001 - open_clip raises many kinds; all mean "cannot load"
        msg = f"{err.__class__.__name__}: {str(err).splitlines()[0]}" if str(err) else err.__class__.__name__
        hint = (" (the weights could not be downloaded: without internet, pass a local checkpoint file as "
                "pretrained, or 'local-dir:PATH' as the backbone)") if is_download_failure(err) else ""
        raise TPSLabError(f"cannot load CLIP {name!r} (pretrained={pretrained!r}): {msg}{hint}") from err
    if image_size and pos_resize != "open_clip" and image_size != clip.visual.image_size[0]:
        resize_position_grid(clip.visual, image_size, mode=pos_resize)
    clip.eval()
    for p in clip.parameters():
        p.requires_grad_(False)
    return clip


HUB = ("huggingface.co", 443)  # where open_clip downloads weights from


def check_weights_reachable(name: str, pretrained: str, timeout: float = 3.0) -> None:
    """Fail fast, in one line, when weights named by a tag are neither cached nor downloadable here.

    Looks at the local caches; if the weights are not there, tries one connection to the hub
    (``timeout`` s) rather than letting the download retry for a minute.

    Raises:
        TPSLabError: not cached, and offline (``HF_HUB_OFFLINE``) or the hub cannot be reached.
    """
    if not get_pretrained_cfg(name, pretrained) or missing_weights_reason(name, pretrained) is None:
        return  # an unknown tag (open_clip names it) or weights at hand
    why = "HF_HUB_OFFLINE is set" if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false") else None
    if why is None:
        try:
            socket.create_connection(HUB, timeout=timeout).close()
            return
        except OSError:
            why = f"{HUB[0]} cannot be reached"
    raise TPSLabError(f"CLIP weights {name} '{pretrained}' are not cached here and {why}: download them once with "
                      "internet, or pass --pretrained FILE (a local checkpoint) or --pretrained none (random)")


def missing_weights_reason(name: str, pretrained: str | None, keys: list[str] | None = None) -> str | None:
    """Why one backbone's weights cannot be loaded here, or None; ``keys`` are the settings that name them."""
    keys = keys or ["model.pretrained"]
    if pretrained == SHIPPED:
        return None if _shipped_path(name).is_file() else \
            f"no weights ship with tpslab for {name!r} ({', '.join(keys)}='tpslab')"
    if name.startswith("local-dir:") or (pretrained and ("/" in pretrained or Path(pretrained).suffix)):
        path = Path(name.removeprefix("local-dir:") if name.startswith("local-dir:") else pretrained)
        return None if path.exists() else f"CLIP weights {path} not found ({', '.join(keys)})"
    if not pretrained:
        return None  # seeded random weights
    cfg = get_pretrained_cfg(name, pretrained)
    repo = cfg.get("hf_hub", "").rstrip("/")
    files = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
    if repo and any(isinstance(try_to_load_from_cache(repo, f), str) for f in files):
        return None
    if cfg.get("url") and (Path.home() / ".cache" / "clip" / os.path.basename(cfg["url"])).is_file():
        return None
    return (f"CLIP weights {name} '{pretrained}' ({', '.join(keys)}) are not cached (Hugging Face {repo or '-'}, or "
            f"~/.cache/clip): tpslab (open_clip) downloads them on first use, which needs internet; offline, fetch "
            f"them elsewhere and copy the cache, or set {keys[0]} to a local file (see data/README.md)")


class _FromPackage(logging.Filter):
    """Drops warnings (and below) logged from the source files under ``folder``."""

    def __init__(self, folder: str):
        super().__init__()
        self.folder = folder

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep the record unless it comes from the package and is below ERROR."""
        return record.levelno >= logging.ERROR or not record.pathname.startswith(self.folder)


DOWNLOAD_ERRORS = ("LocalEntryNotFoundError", "OfflineModeIsEnabled", "ConnectionError", "ConnectTimeout",
                   "ReadTimeout", "ProxyError", "URLError", "HTTPError", "HfHubHTTPError", "SSLError", "TimeoutError",
                   "gaierror")


def is_download_failure(err: BaseException) -> bool:
    """Whether an error (or one it was raised from) is a failed download, not, say, a wrong tag."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if any(cls.__name__ in DOWNLOAD_ERRORS for cls in type(err).__mro__):
            return True
        err = err.__cause__ or err.__context__
    return False


@contextmanager
def quiet_open_clip(active: bool = True) -> Iterator[None]:
    """Silence open_clip's warnings (not anyone else's) while it builds a model.

    ``logging.getLogger("open_clip")`` is raised to ERROR; open_clip 3 also logs through
    the root logger's functions (``logging.warning``), so those records are filtered by the
    file they come from, leaving the root logger's level alone.
    """
    if not active:
        yield
        return
    named = logging.getLogger("open_clip")
    level, only_open_clip = named.level, _FromPackage(str(Path(open_clip.__file__).parent))
    named.setLevel(logging.ERROR)
    logging.getLogger().addFilter(only_open_clip)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(only_open_clip)
        named.setLevel(level)


def resize_position_grid(visual: nn.Module, image_size: int, mode: str = "bilinear") -> None:
    """Resize a ViT's learned position grid for ``image_size`` inputs, without antialias.

    ``mode="bilinear"`` is what the TPS and AnomalyCLIP code do on the fly (24x24 -> 37x37 for
    518 px with patch 14). ``mode="bicubic"`` is MuSc's vendored ``resize_pos_embed``
    (models/backbone/open_clip/model.py:413-442), which declares ``antialias=True`` but never
    passes it on; it is not open_clip 3's resize (``pos_resize="open_clip"``): PyTorch's
    antialiased bicubic uses the cubic coefficient -0.5 instead of -0.75, so the two differ
    even when upsampling. The class token's position is kept as is.
    """
    pos = visual.positional_embedding.detach()  # (1 + g*g, W)
    patch = visual.patch_size[0]
    old, new = math.isqrt(pos.shape[0] - 1), image_size // patch
    grid = pos[1:].reshape(1, old, old, -1).permute(0, 3, 1, 2)  # (1, W, g, g)
    grid = F.interpolate(grid, size=(new, new), mode=mode, align_corners=False)  # (1, W, g', g')
    grid = grid.permute(0, 2, 3, 1).reshape(new * new, -1)  # (g'*g', W)
    visual.positional_embedding = nn.Parameter(torch.cat([pos[:1], grid]), requires_grad=False)
    visual.image_size = (image_size, image_size)
    visual.grid_size = (new, new)
