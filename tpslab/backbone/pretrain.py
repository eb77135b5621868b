"""Contrastive pre-training of a small CLIP on generated defect captions (``tpslab pretrain-mini``).

Offline, tpslab's CLIP-based methods run on a CLIP whose words carry no meaning (random
weights), so every language-guided method sits at chance. This trains ``tpslab-mini`` (a small
open_clip architecture, ``model_configs/tpslab-mini.json``) on :class:`tpslab.data.captions.CaptionCorpus`
with open_clip's own contrastive loss (:class:`open_clip.loss.ClipLoss`), plus two things that
make the state word ("flawless" / "damaged") matter next to the class word:

* **hard negatives**: each image is also scored against its state-flipped caption, which the
  loss must rank below its own (``hard_negative_weight``; as NegCLIP does for word order);
* **twins**: half of every batch is pairs of the same crop with and without its defect.

Each step's pairs are a pure function of ``(corpus seed, step)``, and the weights of a fixed
number of steps are bit-identical for a seed and a thread count (never stop on a time limit).
A run checkpoints every ``save_every`` steps and resumes from there (``resume=True``). The
result is a float16 ``.safetensors`` file whose metadata hold the architecture, the corpus
and training settings, the tpslab version and the zero-shot numbers measured at the end
(:func:`zero_shot`).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

import tpslab
from tpslab.backbone import loading  # also registers tpslab's architectures with open_clip
from tpslab.data.captions import ANOMALOUS_WORDS, CLASSES, NORMAL_WORDS, CaptionCorpus, fill
from tpslab.data.dataset import image_transform
from tpslab.data.synthetic_sample import DEFAULT_DEFECTS, HELDOUT_CLASSES, render_sample, sample_rng
from tpslab.metrics import image_auroc
from tpslab.utils import SettingsDict, TPSLabError, atomic_path, atomic_torch_save, seed_everything

MINI = "tpslab-mini"
CHECKPOINT = "pretrain.pt"
log = logging.getLogger(__name__)


@dataclass
class PretrainConfig(SettingsDict):
    """The pre-training recipe."""

    SECTION: ClassVar[str] = "pretrain"

    architecture: str = MINI  # an open_clip architecture (tpslab's JSON configs included)
    steps: int = 2000  # optimisation steps (the weights depend on it: never a time limit); 2000 made the shipped file
    batch_size: int = 64  # images per step (half of them twins: one crop with and without a defect)
    lr: float = 1e-3  # AdamW peak learning rate (linear warm-up, cosine decay)
    warmup: int = 100  # warm-up steps
    weight_decay: float = 0.1
    hard_negative_weight: float = 3.0  # weight of the state-flipped captions' loss
    seed: int = 0  # initial weights
    corpus_seed: int = 0  # the corpus
    image_size: int = 64
    threads: int | None = 2  # torch threads (part of what makes a run reproducible)
    save_every: int = 250  # checkpoint interval in steps
    eval_images: int = 256  # images per zero-shot measurement
    eval_every: int = 100  # also measure zero-shot every this many steps (0: at the end only): the learning curve

    def __post_init__(self) -> None:
        """Check the counts."""
        if self.steps < 1 or self.batch_size < 4 or self.batch_size % 4:
            raise TPSLabError("pretrain: steps >= 1 and a batch size that is a multiple of 4 (>= 4) expected")


def _tensor(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 (S, S, 3) images -> (B, 3, S, S), preprocessed as every tpslab model's input (:func:`image_transform`)."""
    prep = image_transform(images[0].shape[0])
    return torch.stack([prep(Image.fromarray(img)) for img in images])


def batch(corpus: CaptionCorpus, step: int, size: int) -> tuple[torch.Tensor, list[str], list[str]]:
    """Step ``step``'s images, captions and state-flipped captions: ``size / 4`` twins, then single pairs."""
    base = step * size
    pairs = []
    for i in range(size // 4):
        pairs += list(corpus.twins(base + i))
    pairs += [corpus.pair(base + size // 4 + i) for i in range(size - len(pairs))]
    return _tensor([p.image for p in pairs]), [p.caption for p in pairs], [p.flipped for p in pairs]


def learning_rate(cfg: PretrainConfig, step: int) -> float:
    """Linear warm-up to ``lr``, then cosine decay to zero at ``steps``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)))


def contrastive_loss(model: torch.nn.Module, tokenizer: Any, images: torch.Tensor, texts: list[str],
                     flipped: list[str], hard_negative_weight: float) -> torch.Tensor:
    """open_clip's ClipLoss, plus each image against its own and every state-flipped caption."""
    out = model(images, tokenizer(texts + flipped))
    img, txt, scale = out["image_features"], out["text_features"], out["logit_scale"]
    n = len(texts)
    loss = open_clip.loss.ClipLoss()(img, txt[:n], scale)
    if hard_negative_weight:
        logits = scale * img @ txt.T  # (B, 2B): the captions, then the flipped ones
        loss = loss + hard_negative_weight * F.cross_entropy(logits, torch.arange(n))
    return loss


def new_model(cfg: PretrainConfig) -> torch.nn.Module:
    """The architecture with seeded random weights, trainable."""
    if cfg.architecture not in open_clip.list_models():
        raise TPSLabError(f"unknown architecture {cfg.architecture!r} for pre-training")
    torch.manual_seed(cfg.seed)
    with loading.quiet_open_clip():  # its "initialized randomly" warning: that is the point here
        model = open_clip.create_model(cfg.architecture, output_dict=True)
    model.train()
    return model


def pretrain(cfg: PretrainConfig, out_dir: str | Path, resume: bool = False, progress: bool = True) -> Path:
    """Train ``cfg.architecture`` on the caption corpus; write ``<out_dir>/<architecture>.safetensors``.

    Args:
        cfg: the recipe.
        out_dir: where the checkpoint (``pretrain.pt``), ``history.csv`` and the weights go.
        resume: continue from ``pretrain.pt`` (made with the same recipe; the learning-rate schedule
            depends on ``steps``, so a resumed run equals an uninterrupted one of the same length).
        progress: show a progress bar.

    Returns:
        The weights file.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    seed_everything(cfg.seed)
    model, tokenizer = new_model(cfg), open_clip.get_tokenizer(cfg.architecture)
    corpus = CaptionCorpus(cfg.corpus_seed, cfg.image_size)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": rest, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    start, history, curve = 0, [], []
    ckpt = out / CHECKPOINT
    if resume and ckpt.is_file():
        saved = torch.load(ckpt, map_location="cpu", weights_only=False)
        free = ("save_every", "eval_every", "eval_images")  # they do not change the weights
        same = {k: v for k, v in saved["config"].items() if k not in free}
        if same != {k: v for k, v in asdict(cfg).items() if k not in free}:
            raise TPSLabError(f"{ckpt}: made with another recipe; cannot resume (use another --out)")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        start, history, curve = int(saved["step"]), list(saved["history"]), list(saved.get("curve", []))
        log.info("resuming from %s after step %d", ckpt, start)
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="pretrain", disable=not progress)
    t0 = time.time()
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, step)
        images, texts, flipped = batch(corpus, step, cfg.batch_size)
        loss = contrastive_loss(model, tokenizer, images, texts, flipped, cfg.hard_negative_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        history.append({"step": step + 1, "loss": loss.item(), "seconds": round(time.time() - t0, 2)})
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.steps:
            curve.append({"step": step + 1, "pairs": (step + 1) * cfg.batch_size, **zero_shot(model, tokenizer, cfg)})
            model.train()
            _write_csv(out / "zero_shot.csv", curve)
            log.info("step %d: %s", step + 1, ", ".join(f"{k} {v:.1f}" for k, v in curve[-1].items() if k != "step"))
        if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
            atomic_torch_save({"config": asdict(cfg), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                               "step": step + 1, "history": history, "curve": curve}, ckpt)
            log.info("step %d/%d: loss %.4f", step + 1, cfg.steps, loss.item())
    model.eval()
    with torch.no_grad():  # measure what ships: the weights rounded to float16
        for p in model.parameters():
            p.copy_(p.half().float())
    numbers = zero_shot(model, tokenizer, cfg)
    log.info("zero-shot: %s", ", ".join(f"{k} {v:.1f}" for k, v in numbers.items()))
    _write_csv(out / "zero_shot.csv", [*curve, {"step": cfg.steps, "pairs": cfg.steps * cfg.batch_size, **numbers}])
    _write_csv(out / "history.csv", history)
    return write_weights(model, cfg, corpus, numbers, out / f"{cfg.architecture}.safetensors", curve)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows of equal keys as CSV, atomically."""
    keys = list(rows[0])
    lines = [",".join(keys)] + [",".join(f"{r[k]:.6g}" if isinstance(r[k], float) else str(r[k]) for k in keys)
                                for r in rows]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def write_weights(model: torch.nn.Module, cfg: PretrainConfig, corpus: CaptionCorpus, numbers: dict[str, float],
                  path: Path, curve: list[dict[str, float]] | None = None) -> Path:
    """The weights in float16 with what made them.

    The metadata (strings; JSON where structured) hold the architecture and its open_clip config, the
    recipe, the corpus settings, the tpslab version, the zero-shot numbers measured on these float16
    weights, the learning curve (``eval_every``) and a note on what the numbers are.
    """
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    config = open_clip.get_model_config(cfg.architecture)
    meta = {"architecture": cfg.architecture, "open_clip_config": json.dumps(config),
            "pretrain": json.dumps(asdict(cfg)),
            "corpus": json.dumps(corpus.settings()), "tpslab": tpslab.__version__, "zero_shot": json.dumps(numbers),
            "curve": json.dumps(curve or []),
            "note": "tpslab-mini, trained on generated captions: not CLIP, not paper numbers"}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return path


@torch.no_grad()
def _text(model: torch.nn.Module, tokenizer: Any, texts: list[str]) -> torch.Tensor:
    return F.normalize(model.encode_text(tokenizer(texts)), dim=-1)


@torch.no_grad()
def zero_shot(model: torch.nn.Module, tokenizer: Any, cfg: PretrainConfig) -> dict[str, float]:
    """What the model knows, in percent: class accuracy, retrieval, normal-vs-anomalous AUROC.

    * ``class_accuracy``: a held-out image of the corpus (another seed) against "a photo of a {class}."
      for every corpus class (chance: 1 / number of classes);
    * ``retrieval_r1``: each of those images finds its own caption among all of theirs (top 1);
    * ``state_auroc_corpus``: image AUROC of the state score (below) on those images;
    * ``state_auroc_heldout``: the same on the smoke profile's held-out domain (classes and images the
      corpus never shows; its default defects), per class and averaged over its classes as ``tpslab
      compare`` does, half of each class's images normal; the class word is the data set's class name.

    The state score is ``cos(v, t_a) - cos(v, t_n)`` for the mean anomalous and normal prompts of the
    image's class: it ranks images as the detectors' two-way softmax does, without that softmax's
    rounding to exactly 1.0 for confident images (which would tie them).
    """
    model.eval()
    n = cfg.eval_images
    corpus = CaptionCorpus(cfg.corpus_seed + 10_000, cfg.image_size)
    pairs = [corpus.pair(i) for i in range(n)]
    img = F.normalize(model.encode_image(_tensor([p.image for p in pairs])), dim=-1)
    classes = _text(model, tokenizer, [f"a photo of a {c}." for c in CLASSES])
    truth = torch.tensor([CLASSES.index(p.cls) for p in pairs])
    accuracy = float(((img @ classes.T).argmax(1) == truth).float().mean())
    captions = _text(model, tokenizer, [p.caption for p in pairs])
    r1 = float(((img @ captions.T).argmax(1) == torch.arange(n)).float().mean())
    labels = np.array([p.anomalous for p in pairs])
    corpus_auroc = image_auroc(labels, _state_scores(model, tokenizer, img, [p.cls for p in pairs]))
    held_auroc = float(np.mean([image_auroc(labels, scores) for _, labels, scores in
                                heldout_state_scores(model, tokenizer, cfg)]))
    return {"class_accuracy": 100 * accuracy, "retrieval_r1": 100 * r1, "state_auroc_corpus": 100 * corpus_auroc,
            "state_auroc_heldout": 100 * held_auroc}


@torch.no_grad()
def heldout_state_scores(model: torch.nn.Module, tokenizer: Any,
                         cfg: PretrainConfig) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Per class of the smoke held-out domain: (class, labels, state scores) of ``eval_images / 8`` images.

    Half of each class's images are normal, the other half carry the domain's default defects, all
    rendered from their own seeded generators (the same images every time).
    """
    per_class = max(2, cfg.eval_images // len(HELDOUT_CLASSES))
    out = []
    for cls in HELDOUT_CLASSES:
        defects = [DEFAULT_DEFECTS[i % len(DEFAULT_DEFECTS)] if i % 2 else None for i in range(per_class)]
        images = [render_sample(cls, d, sample_rng(cfg.corpus_seed + 20_000, cls, i), cfg.image_size, grey=True)[1]
                  for i, d in enumerate(defects)]
        img = F.normalize(model.encode_image(_tensor(images)), dim=-1)
        labels = np.array([int(d is not None) for d in defects])
        out.append((cls, labels, _state_scores(model, tokenizer, img, [cls] * per_class)))
    return out


def load_weights(path: str | Path | None = None) -> tuple[torch.nn.Module, Any, PretrainConfig, dict[str, Any]]:
    """A file written by :func:`write_weights` (default: the shipped ``tpslab-mini``), loaded as the methods load it.

    Returns:
        (model, tokenizer, the recipe that made it, its metadata with ``zero_shot`` and ``corpus`` as dicts).
    """
    path = Path(path) if path else loading.shipped_weights(MINI)
    if not path.is_file():
        raise TPSLabError(f"{path}: weights file not found")
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
    if "pretrain" not in meta:
        raise TPSLabError(f"{path}: not written by tpslab pretrain-mini (no recipe in its metadata)")
    cfg = PretrainConfig.from_dict(json.loads(meta["pretrain"]))
    model = loading.load_clip(cfg.architecture, str(path))  # as every method loads it (frozen, float32, eval)
    for key in ("zero_shot", "corpus", "open_clip_config", "pretrain", "curve"):
        meta[key] = json.loads(meta.get(key, "[]"))
    return model, open_clip.get_tokenizer(cfg.architecture), cfg, meta


def _state_scores(model: torch.nn.Module, tokenizer: Any, img: torch.Tensor, classes: list[str]) -> np.ndarray:
    """State score per image: cos to its class's mean anomalous prompt minus cos to the mean normal one."""
    scores = np.zeros(len(classes))
    for cls in dict.fromkeys(classes):
        normal = _text(model, tokenizer, [fill("a photo of a {state} {cls}.", w, cls) for w in NORMAL_WORDS]).mean(0)
        bad = _text(model, tokenizer, [fill("a photo of a {state} {cls}.", w, cls) for w in ANOMALOUS_WORDS]).mean(0)
        states = F.normalize(torch.stack([normal, bad]), dim=-1)
        idx = [i for i, c in enumerate(classes) if c == cls]
        scores[idx] = (img[idx] @ (states[1] - states[0])).numpy()
    return scores
