"""The pathway module of TPS (the paper's pathway equations are in :meth:`Pathway.forward`).

For one selected vision layer it customises the two shunt text features to the image
at hand, then lets them depend on the global text features::

    s = LN0(t_s);  g = LN1(t_g);  z = LN4(z_i)
    s = s + MHA_eta(query=s, key=z, value=z)   # text customisation by the patches
    s = LN2(s)
    s = s + MHA_psi(query=s, key=g, value=s)   # dependency on the global prompts
    s = s + MLP(LN3(s))
    return s

The residuals are taken on the layer-normed inputs, as in the authors' code. The paper
writes ``value = t_s`` for ``MHA_eta``, which cannot be (the keys are L patches); the code,
and this module, use the patches as values.

This is what makes each patch judged against the rest of its own image: ``MHA_eta``
pools the image's patches into the text query, so the features a patch is compared with
depend on the whole image.
"""

from __future__ import annotations

import torch
from torch import nn


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x), the activation of OpenAI's CLIP."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the activation elementwise."""
        return x * torch.sigmoid(1.702 * x)


class Pathway(nn.Module):
    """One pathway: (shunt text, global text, patches) -> customised shunt text features.

    Args:
        dim: joint embedding width D.
        heads: attention heads (8 in the paper).
    """

    def __init__(self, dim: int, heads: int = 8):
        super().__init__()
        self.ln_shunt = nn.LayerNorm(dim)  # LN0
        self.ln_global = nn.LayerNorm(dim)  # LN1
        self.ln_patches = nn.LayerNorm(dim)  # LN4
        self.customise = nn.MultiheadAttention(dim, heads, batch_first=True)  # MHA_eta
        self.ln_mid = nn.LayerNorm(dim)  # LN2
        self.depend = nn.MultiheadAttention(dim, heads, batch_first=True)  # MHA_psi
        self.ln_mlp = nn.LayerNorm(dim)  # LN3
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), QuickGELU(), nn.Linear(4 * dim, dim))

    def forward(
        self, shunt: torch.Tensor, global_: torch.Tensor, patches: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Customise the shunt features to each image: paper Eq. 6-8.

        Eq. 6 (``MHA_eta``, with the patches as values, as in the authors' code), Eq. 7
        (``MHA_psi`` over the global features), Eq. 8 (the MLP), each with its residual.

        Args:
            shunt: (B, 2, D) shunt text features (normal, anomalous).
            global_: (B, 2, D) global text features.
            patches: (B, L, D) patch tokens of this layer (class token removed).
            return_attention: also return MHA_eta's attention, (B, 2, L), averaged over heads.

        Returns:
            (B, 2, D) customised shunt features (and the attention if asked).
        """
        s, g, z = self.ln_shunt(shunt), self.ln_global(global_), self.ln_patches(patches)
        attended, attention = self.customise(s, z, z, need_weights=return_attention)  # (B, 2, D), (B, 2, L)
        s = self.ln_mid(s + attended)  # Eq. 6
        s = s + self.depend(s, g, s, need_weights=False)[0]  # Eq. 7: (B, 2, D)
        s = s + self.mlp(self.ln_mlp(s))  # Eq. 8
        return (s, attention) if return_attention else s
