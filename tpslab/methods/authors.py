"""Loading the authors' released TPS checkpoint (``epoch_15.pth`` of majitao-xd/TPS).

Their file is a torch dict of three state dicts:

* ``prompt_learner`` (the global prompts) and ``class_learner`` (the shunt prompts), each
  AnomalyCLIP's prompt learner: ``ctx_pos`` / ``ctx_neg`` of shape (1, 1, 12, W),
  ``compound_prompts_text.0..7`` of (4, W), unused ``compound_prompt_projections.*``
  (Linear(W, 896)), and token buffers (``token_prefix_pos`` ...) that we recompute;
* ``former``, their single pathway: ``ln_0..ln_4``, ``text_attention`` (MHA_eta),
  ``cross_attention`` (MHA_psi), ``text_feed.0/2`` (the MLP), unused ``ln_5``,
  ``img_attention``, ``img_feed``, and the fine-tuned ``text_projection`` plus the
  untouched ``img_projection`` (CLIP's ``visual.proj``).

Their pathway is called as ``former(global, shunt, patches)``; inside, ``ln_0`` normalises
the shunt features and ``ln_1`` the global ones. Into a ``"paper"`` model (one pathway per
layer) the shared pathway is copied to every layer.

AnomalyCLIP's released ``epoch_15.pth`` (zqhang/AnomalyCLIP) holds one such prompt learner,
``{"prompt_learner": ...}``; :func:`load_anomalyclip_checkpoint` loads it with the same helpers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from tpslab.methods.checkpoint import torch_load
from tpslab.methods.tps.model import TPS
from tpslab.utils import TPSLabError

if TYPE_CHECKING:
    from tpslab.methods.anomalyclip import AnomalyCLIP

# their pathway's names -> ours (tpslab.methods.tps.pathway.Pathway)
PATHWAY_NAMES = {
    "ln_0": "ln_shunt", "ln_1": "ln_global", "ln_4": "ln_patches", "ln_2": "ln_mid", "ln_3": "ln_mlp",
    "text_attention": "customise", "cross_attention": "depend", "text_feed.0": "mlp.0", "text_feed.2": "mlp.2",
}
UNUSED_PATHWAY = ("ln_5", "img_attention", "img_feed", "img_projection")


def _prompt_state(theirs: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """Their prompt-learner state -> ours: ctx (2, n, W), deep.k, unused_projections.k."""
    for key in ("ctx_pos", "ctx_neg"):
        if key not in theirs:
            raise TPSLabError(f"'{name}' has no {key!r}: not a TPS/AnomalyCLIP prompt learner")
    pos, neg = theirs["ctx_pos"], theirs["ctx_neg"]  # (1, 1, n, W) each
    ours = {"ctx": torch.cat([pos.reshape(-1, pos.shape[-1])[None], neg.reshape(-1, neg.shape[-1])[None]])}
    for key, value in theirs.items():
        if key.startswith("compound_prompts_text."):
            ours["deep." + key.split(".", 1)[1]] = value
        elif key.startswith("compound_prompt_projections."):
            ours["unused_projections." + key.split(".", 1)[1]] = value
    return ours


def _pathway_state(former: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    ours = {}
    for key, value in former.items():
        head = next((h for h in PATHWAY_NAMES if key == h or key.startswith(h + ".")), None)
        if head is not None:
            ours[PATHWAY_NAMES[head] + key[len(head):]] = value
        elif not key.startswith(UNUSED_PATHWAY) and key != "text_projection":
            raise TPSLabError(f"'former' has an unexpected entry {key!r}")
    return ours


def _check_and_copy(target: dict[str, torch.Tensor], source: dict[str, torch.Tensor], where: str,
                    backbone: str) -> None:
    """Copy ``source`` into the ``target`` parameters, refusing any entry without a place or of another shape."""
    for key, value in source.items():
        if key not in target:
            if key.startswith("unused_projections"):
                continue
            raise TPSLabError(f"{where}: {key} has no place in this model")
        if tuple(target[key].shape) != tuple(value.shape):
            raise TPSLabError(f"{where}: {key} is {tuple(value.shape)}, this model ({backbone}) needs "
                              f"{tuple(target[key].shape)}: the checkpoint was made for another backbone or "
                              "prompt size")
        with torch.no_grad():
            target[key].copy_(value.to(target[key].dtype))
    missing = [k for k in target if k not in source and not k.startswith("unused_projections")]
    if missing:
        raise TPSLabError(f"{where}: the checkpoint lacks {missing[0]}")


def load_authors_checkpoint(model: TPS, path: str | Path) -> TPS:
    """Load the authors' released checkpoint into ``model`` (either variant), in place.

    Applies their fine-tuned ``text_projection`` (their code trains it; the paper says
    CLIP is frozen). Every shape is checked; a file made for another backbone is refused
    with a one-line reason. Loaded with ``weights_only=True``.

    Raises:
        TPSLabError: unreadable file, wrong structure, or a shape that does not fit.
    """
    path = Path(path)
    ckpt = torch_load(path)
    if not isinstance(ckpt, dict) or not {"prompt_learner", "class_learner", "former"} <= set(ckpt):
        raise TPSLabError(f"{path}: expected a dict with 'prompt_learner', 'class_learner' and 'former' "
                          "(the authors' format)")
    if model.config.prompts != "learned":
        raise TPSLabError(f"{path}: the authors' checkpoint holds learned prompts; build the model with "
                          "prompts='learned'")
    bb = model.config.backbone
    for theirs, learner in (("prompt_learner", model.global_prompts), ("class_learner", model.shunt_prompts)):
        params = dict(learner.named_parameters())
        _check_and_copy(params, _prompt_state(ckpt[theirs], theirs), f"{path}: {theirs}", bb)
    former = ckpt["former"]
    if "text_projection" not in former:
        raise TPSLabError(f"{path}: 'former' has no text_projection")
    if not model.pathways:
        raise TPSLabError(f"{path}: this model has no pathway (ablation A1); the checkpoint's cannot be loaded")
    state = _pathway_state(former)
    for pathway in model.pathways:  # one shared (authors-code) or one per layer (paper): same weights
        _check_and_copy(dict(pathway.named_parameters()), state, f"{path}: former", bb)
    _check_and_copy({"text_projection": model.text_projection}, {"text_projection": former["text_projection"]},
                    f"{path}: former", bb)
    return model


# -- AnomalyCLIP's released checkpoints ------------------------------------------------
def load_anomalyclip_checkpoint(model: AnomalyCLIP, path: str | Path) -> AnomalyCLIP:
    """Load AnomalyCLIP's released ``epoch_15.pth`` (zqhang/AnomalyCLIP) into ``model``, in place.

    Their file is ``{"prompt_learner": state}``, the same prompt-learner layout as the TPS
    authors' (``ctx_pos`` / ``ctx_neg`` (1, 1, 12, W), ``compound_prompts_text.k`` (4, W), unused
    ``compound_prompt_projections.*``, recomputed ``token_prefix/suffix_*``). Its
    ``tokenized_prompts_pos/neg`` must equal the token ids of ``model``'s sentences, else the
    file was made for other sentences and is refused.

    Raises:
        TPSLabError: unreadable file, wrong structure, other sentences, or a shape that does not fit.
    """
    path = Path(path)
    ckpt = torch_load(path)
    if not isinstance(ckpt, dict) or "prompt_learner" not in ckpt or "former" in ckpt:
        raise TPSLabError(f"{path}: expected a dict with 'prompt_learner' only (AnomalyCLIP's format)")
    theirs = ckpt["prompt_learner"]
    tokens = model.prompts.tokens  # (2, T): normal, anomalous
    for row, key in enumerate(("tokenized_prompts_pos", "tokenized_prompts_neg")):
        if key in theirs and not torch.equal(theirs[key].reshape(-1).to(tokens.dtype).cpu(), tokens[row].cpu()):
            raise TPSLabError(f"{path}: {key} is not this model's sentence {model.prompts.sentences[row]!r}")
    params = dict(model.prompts.named_parameters())
    _check_and_copy(params, _prompt_state(theirs, "prompt_learner"), f"{path}: prompt_learner", model.config.backbone)
    return model
