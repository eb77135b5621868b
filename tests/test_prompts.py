"""The prompt learner: deep prompts cast through fp16 per sentence, as the authors' code does."""

from __future__ import annotations

import torch

from tpslab.backbone.core import build_backbone
from tpslab.methods.tps.prompts import PromptLearner, learned_sentences


def test_fp16_deep_prompts_round_each_sentences_gradient():
    """The shared deep prompts' gradient is the sum of each sentence copy's fp16-rounded gradient.

    (Casting once before the expand would round the *sum* instead: same forward values,
    a different update, as the AnomalyCLIP cross-check found.)
    """
    bb = build_backbone("tpslab-tiny", None, seed=0)
    torch.manual_seed(0)
    learner = PromptLearner(bb, learned_sentences(("{}", "damaged {}"), "object", 4), n_ctx=4, deep_layers=2,
                            deep_length=2, fp16_deep_prompts=True)
    weights = torch.randn(2, bb.embed_dim, generator=torch.Generator().manual_seed(1)) * 1e3  # large: fp16 matters
    (learner(bb) * weights).sum().backward()

    copies = [p.detach().unsqueeze(0).expand(2, -1, -1).clone().requires_grad_() for p in learner.deep]  # (S, n, W)
    (bb.encode_text(learner.embeddings().detach(), learner.tokens, [c.half().float() for c in copies])
     * weights).sum().backward()
    for shared, copy in zip(learner.deep, copies):
        assert shared.grad.shape == copy.grad.shape[1:]
        torch.testing.assert_close(shared.grad, copy.grad.sum(0), rtol=0, atol=0)
