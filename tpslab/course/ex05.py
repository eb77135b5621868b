"""Checks of notebook 05's exercises: one Eq. 6 step and MHA_eta's attention, with the module's own weights."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from tpslab.course.checks import Mistake, exercise, expect, seeds
from tpslab.methods.tps.pathway import Pathway

DIM, HEADS = 32, 4


def _inputs(seed: int) -> tuple[Pathway, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    pathway = Pathway(DIM, HEADS).eval()
    g = torch.Generator().manual_seed(seed)
    shunt, global_ = torch.randn(2, 2, DIM, generator=g), torch.randn(2, 2, DIM, generator=g)  # (B, 2, D)
    return pathway, shunt, global_, torch.randn(2, 16, DIM, generator=g)  # patches (B, L, D)


def _eq6_reference(pathway: Pathway, shunt: torch.Tensor, global_: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
    seen = {}
    handle = pathway.ln_mid.register_forward_hook(lambda _m, _i, out: seen.setdefault("s", out))
    try:
        pathway(shunt, global_, patches)  # the module's own forward; Eq. 6 ends with ln_mid
    finally:
        handle.remove()
    return seen["s"]


@exercise("e5.1", "one Eq. 6 step")
def eq6(fn: Callable[..., Any], hidden: bool) -> int:
    """``fn(pathway, shunt (B, 2, D), patches (B, L, D)) -> (B, 2, D)``, the shunt features after Eq. 6."""
    for seed in seeds(hidden):
        pathway, shunt, global_, patches = _inputs(seed)
        with torch.no_grad():
            want = _eq6_reference(pathway, shunt, global_, patches)
            try:
                got = fn(pathway, shunt.clone(), patches.clone())
            except NotImplementedError:
                raise
            except (AssertionError, RuntimeError) as err:
                raise Mistake("t_s as the value in Eq. 6? The values are the patches (as many as the keys); "
                              f"torch said: {str(err)[:80]}") from err
            s, z = pathway.ln_shunt(shunt), pathway.ln_patches(patches)
            expect(got, want, {
                "apply the module's own layer norms first: ln_shunt to t_s, ln_patches to the patches":
                    pathway.ln_mid(shunt + pathway.customise(shunt, patches, patches)[0]),
                "add the residual (the normed shunt features) before ln_mid":
                    pathway.ln_mid(pathway.customise(s, z, z)[0]),
                "Eq. 6 ends with ln_mid (LN2) on the sum": s + pathway.customise(s, z, z)[0],
            }, "expected ln_mid(s + customise(s, z, z)), s = ln_shunt(t_s), z = ln_patches(patches)")
    return len(seeds(hidden))


@exercise("e5.2", "where MHA_eta looks")
def attention(fn: Callable[..., Any], hidden: bool) -> int:
    """``fn(pathway, shunt, patches) -> (B, 2, L)``: MHA_eta's attention over the patches, averaged over heads."""
    for seed in seeds(hidden):
        pathway, shunt, global_, patches = _inputs(seed)
        with torch.no_grad():
            want = pathway(shunt, global_, patches, return_attention=True)[1]
            got = fn(pathway, shunt.clone(), patches.clone())
            if tuple(torch.as_tensor(got).shape) != tuple(want.shape):
                raise Mistake(f"expected shape {tuple(want.shape)} (one weight per sentence and patch, heads "
                              f"averaged), got {tuple(torch.as_tensor(got).shape)}")
            expect(got, want, {
                "the attention is computed on the normed inputs: ln_shunt(t_s) and ln_patches(patches)":
                    pathway.customise(shunt, patches, patches)[1],
            }, "expected customise(ln_shunt(t_s), z, z, need_weights=True)[1] with z = ln_patches(patches)")
    return len(seeds(hidden))
