"""tpslab.methods.authors: loading a checkpoint in the authors' released format."""

from __future__ import annotations

import pytest
import torch

import tpslab
from tpslab.utils import TPSLabError

W = D = 64  # tiny model: text width and joint dim


def learner_state(seed: int, width: int = W, deep: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {"ctx_pos": torch.randn(1, 1, 12, width, generator=g), "ctx_neg": torch.randn(1, 1, 12, width, generator=g),
             "token_prefix_pos": torch.zeros(1, 1, 1, width), "tokenized_prompts_pos": torch.zeros(1, 1, 77)}
    for k in range(deep):
        state[f"compound_prompts_text.{k}"] = torch.randn(4, width, generator=g)
        state[f"compound_prompt_projections.{k}.weight"] = torch.randn(896, width, generator=g)
        state[f"compound_prompt_projections.{k}.bias"] = torch.randn(896, generator=g)
    return state


def former_state(seed: int, dim: int = D) -> dict[str, torch.Tensor]:
    """Their PathWay's state dict names and shapes."""
    g = torch.Generator().manual_seed(seed)
    state = {"text_projection": torch.randn(W, dim, generator=g), "img_projection": torch.randn(64, dim, generator=g)}
    for i in range(6):
        state[f"ln_{i}.weight"] = torch.randn(dim, generator=g)
        state[f"ln_{i}.bias"] = torch.randn(dim, generator=g)
    for name in ("text_attention", "cross_attention", "img_attention"):
        state[f"{name}.in_proj_weight"] = torch.randn(3 * dim, dim, generator=g)
        state[f"{name}.in_proj_bias"] = torch.randn(3 * dim, generator=g)
        state[f"{name}.out_proj.weight"] = torch.randn(dim, dim, generator=g)
        state[f"{name}.out_proj.bias"] = torch.randn(dim, generator=g)
    for name in ("text_feed", "img_feed"):
        state[f"{name}.0.weight"] = torch.randn(4 * dim, dim, generator=g)
        state[f"{name}.0.bias"] = torch.randn(4 * dim, generator=g)
        state[f"{name}.2.weight"] = torch.randn(dim, 4 * dim, generator=g)
        state[f"{name}.2.bias"] = torch.randn(dim, generator=g)
    return state


@pytest.fixture
def ckpt_path(tmp_path):
    path = tmp_path / "epoch_15.pth"
    torch.save({"prompt_learner": learner_state(1), "class_learner": learner_state(2), "former": former_state(3)}, path)
    return path


@pytest.mark.parametrize("variant", ["paper", "authors-code"])
def test_loads_into_both_variants(ckpt_path, variant, images):
    model = tpslab.build_model(variant=variant, seed=0)
    before = model.predict(images).anomaly_maps
    tpslab.load_authors_checkpoint(model, ckpt_path)
    theirs = torch.load(ckpt_path, weights_only=True)
    torch.testing.assert_close(model.global_prompts.ctx[0], theirs["prompt_learner"]["ctx_pos"][0, 0])
    torch.testing.assert_close(model.global_prompts.ctx[1], theirs["prompt_learner"]["ctx_neg"][0, 0])
    torch.testing.assert_close(model.shunt_prompts.deep[1], theirs["class_learner"]["compound_prompts_text.1"])
    torch.testing.assert_close(model.text_projection, theirs["former"]["text_projection"])
    for pw in model.pathways:  # the shared pathway is copied to every layer of the paper variant
        torch.testing.assert_close(pw.ln_shunt.weight, theirs["former"]["ln_0.weight"])
        torch.testing.assert_close(pw.ln_global.weight, theirs["former"]["ln_1.weight"])
        torch.testing.assert_close(pw.customise.in_proj_weight, theirs["former"]["text_attention.in_proj_weight"])
        torch.testing.assert_close(pw.mlp[2].weight, theirs["former"]["text_feed.2.weight"])
    assert len(model.pathways) == (4 if variant == "paper" else 1)
    assert not torch.allclose(model.predict(images).anomaly_maps, before)


def test_checkpoint_for_another_backbone_is_refused(tmp_path):
    path = tmp_path / "vitl.pth"
    torch.save({"prompt_learner": learner_state(1, width=768, deep=8), "class_learner": learner_state(2, 768, 8),
                "former": former_state(3, 768)}, path)
    with pytest.raises(TPSLabError, match="another backbone"):
        tpslab.load_authors_checkpoint(tpslab.build_model(), path)


def test_malformed_files_are_refused(tmp_path):
    model = tpslab.build_model()
    with pytest.raises(TPSLabError, match="not found"):
        tpslab.load_authors_checkpoint(model, tmp_path / "none.pth")
    torch.save({"prompt_learner": {}}, tmp_path / "partial.pth")
    with pytest.raises(TPSLabError, match="authors' format"):
        tpslab.load_authors_checkpoint(model, tmp_path / "partial.pth")
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(TPSLabError, match="cannot read"):
        tpslab.load_authors_checkpoint(model, tmp_path / "text.pth")
    with pytest.raises(TPSLabError, match="learned prompts"):
        torch.save({"prompt_learner": learner_state(1), "class_learner": learner_state(2), "former": former_state(3)},
                   tmp_path / "ok.pth")
        tpslab.load_authors_checkpoint(tpslab.build_model(prompts="fixed", pathway=False), tmp_path / "ok.pth")


def test_weights_only_loading_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("boom",))

    torch.save({"prompt_learner": Evil(), "class_learner": {}, "former": {}}, tmp_path / "evil.pth")
    with pytest.raises(TPSLabError, match="cannot read"):
        tpslab.load_authors_checkpoint(tpslab.build_model(), tmp_path / "evil.pth")
