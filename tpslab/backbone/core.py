"""The frozen CLIP backbone, through open_clip's public API.

TPS needs three things from CLIP:

* patch tokens of a few vision blocks (6, 12, 18, 24 of ViT-L-14-336), each passed
  through ``ln_post`` and ``proj`` into the joint image-text space;
* an image embedding, either as open_clip computes it (``ln_post`` then ``proj`` on
  the final class token) or as the authors' code does (``proj`` without ``ln_post``);
* a text encoder that takes *embeddings* instead of token ids, so that learnable
  context vectors can stand in for words, and that swaps learnable "deep prompts"
  into the first positions of the sequence before chosen layers.

The whole CLIP is frozen (``requires_grad=False``, eval mode).
"""

from __future__ import annotations

import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torch import nn

from tpslab.backbone.attention import SDPABlock, use_sdpa_attention  # noqa: F401  (re-exported)
from tpslab.backbone.features import ImageFeatures, encode_in_groups
from tpslab.backbone.loading import CONFIG_DIR, load_clip, resize_position_grid  # noqa: F401  (re-exported)
from tpslab.utils import TPSLabError

PAPER_LAYERS = (6, 12, 18, 24)  # 1-based vision blocks whose patch tokens TPS uses (of 24)


def default_layers(num_blocks: int) -> tuple[int, ...]:
    """The paper's blocks 6/12/18/24 of 24, scaled to a model with ``num_blocks`` blocks.

    >>> default_layers(24), default_layers(12), default_layers(4)
    ((6, 12, 18, 24), (3, 6, 9, 12), (1, 2, 3, 4))
    """
    return tuple(max(1, round(b * num_blocks / 24)) for b in PAPER_LAYERS)


class Backbone(nn.Module):
    """A frozen open_clip CLIP with the encoders TPS needs.

    Wrapping turns ``clip``'s vision blocks into :class:`~tpslab.backbone.attention.SDPABlock` in
    place (the same math and state dict, attention through PyTorch's fused kernel), and on the CPU
    the image encoders take a batch in groups (:func:`~tpslab.backbone.features.encode_in_groups`).

    Args:
        clip: an open_clip ``CLIP`` model (ViT image tower, standard text tower).
        name: its architecture name (kept for checkpoints and error messages).
        layers: 1-based vision blocks whose patch tokens are used; default: the
            paper's 6/12/18/24, scaled to the model's depth.
    """

    def __init__(self, clip: nn.Module, name: str, layers: tuple[int, ...] | None = None):
        super().__init__()
        if not hasattr(clip.visual, "forward_intermediates") or not hasattr(clip, "token_embedding"):
            raise TPSLabError(f"{name}: TPS needs a ViT image tower and open_clip's standard text tower")
        self.clip = clip
        self.name = name
        self.num_blocks = len(clip.visual.transformer.resblocks)
        self.layers = tuple(layers) if layers else default_layers(self.num_blocks)
        if any(not 1 <= b <= self.num_blocks for b in self.layers):
            raise TPSLabError(f"layers {self.layers} out of range for {name} ({self.num_blocks} blocks)")
        self.tokenizer = open_clip.get_tokenizer(name)
        use_sdpa_attention(clip.visual.transformer)

    # -- sizes ---------------------------------------------------------------------
    @property
    def image_size(self) -> int:
        """Input size S (pixels per side)."""
        return self.clip.visual.image_size[0]

    @property
    def grid_size(self) -> int:
        """Patches per side g (L = g * g patch tokens)."""
        return self.clip.visual.grid_size[0]

    @property
    def num_tokens(self) -> int:
        """Tokens of an image in the vision transformer (1 + L: the class token and the patches)."""
        return 1 + self.grid_size ** 2

    @property
    def embed_dim(self) -> int:
        """Joint embedding width D."""
        return self.clip.visual.proj.shape[1]

    @property
    def text_width(self) -> int:
        """Width W of the text transformer."""
        return self.clip.ln_final.weight.shape[0]

    @property
    def num_text_layers(self) -> int:
        """Number of text transformer blocks."""
        return len(self.clip.transformer.resblocks)

    @property
    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The image normalisation (OpenAI's mean and std)."""
        return tuple(OPENAI_DATASET_MEAN), tuple(OPENAI_DATASET_STD)

    def train(self, mode: bool = True) -> Backbone:
        """Keep CLIP in eval mode whatever ``mode`` is."""
        super().train(False)  # CLIP stays in eval mode whatever the caller asks
        return self

    # -- image side ----------------------------------------------------------------
    @torch.no_grad()
    def encode_image(self, images: torch.Tensor, embedding: str = "open_clip") -> ImageFeatures:
        """Image embedding and projected patch tokens of the selected blocks.

        Args:
            images: (B, 3, S, S), preprocessed, S = ``image_size``.
            embedding: ``"open_clip"`` (ln_post then proj on the final class token) or
                ``"authors"`` (proj on the final class token without ln_post).
        """
        self._check_size(images)
        if embedding not in ("open_clip", "authors"):
            raise TPSLabError(f"image embedding must be 'open_clip' or 'authors', got {embedding!r}")
        return encode_in_groups(images, self.num_tokens, lambda group: self._encode_image(group, embedding))

    def _encode_image(self, images: torch.Tensor, embedding: str) -> ImageFeatures:
        visual = self.clip.visual
        last = self.num_blocks - 1
        indices = sorted({b - 1 for b in self.layers} | {last})
        out = visual.forward_intermediates(images, indices=indices, output_fmt="NLC",
                                           output_extra_tokens=True, intermediates_only=False)
        by_block = dict(zip(indices, out["image_intermediates"]))  # block -> (B, L, W)
        patches = [visual.ln_post(by_block[b - 1]) @ visual.proj for b in self.layers]  # (B, L, D)
        if embedding == "open_clip":
            emb = out["image_features"]  # (B, D)
        else:  # "authors"
            cls_last = dict(zip(indices, out["image_intermediates_prefix"]))[last][:, 0]  # (B, W)
            emb = cls_last @ visual.proj  # (B, D), no ln_post
        return ImageFeatures(emb.float(), [p.float() for p in patches])

    @torch.no_grad()
    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """The vision transformer's input sequence: patch embedding, class token, positions, ``ln_pre``.

        Needed by WinCLIP (it keeps a window's tokens before the transformer) and by
        AnomalyCLIP's DPAM (it runs the blocks itself). Equals what open_clip's
        ``VisionTransformer`` feeds its first block (patch dropout is off in eval mode).

        Args:
            images: (B, 3, S, S), preprocessed, S = ``image_size``.

        Returns:
            (B, 1 + L, W): the class token first, then the L = g*g patch tokens row by row.
        """
        self._check_size(images)
        visual = self.clip.visual
        x = visual.conv1(images)  # (B, W, g, g)
        x = x.flatten(2).transpose(1, 2)  # (B, L, W)
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # (B, 1, W)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)  # (B, 1+L, W)
        return visual.ln_pre(x)

    # -- AnomalyCLIP's DPAM: the V-V attention stream --------------------------------
    @torch.no_grad()
    def encode_image_vv(self, images: torch.Tensor, start_block: int | None = None,
                        out_blocks: tuple[int, ...] | None = None, embedding: str = "authors") -> ImageFeatures:
        """Image embedding and projected patch tokens of AnomalyCLIP's V-V stream (DPAM, docs/baselines.md#section-3).

        CLIP's own q-k stream ``h`` is untouched; a second stream ``z`` runs beside it from
        ``start_block`` on, never passes an MLP, and adds V-V attention of ``h``'s input::

            z_s = h_{s-1} + VV_s(ln_1(h_{s-1}))              s = start_block
            z_k = z_{k-1} + VV_k(ln_1(h_{k-1}))              k = s+1 .. last block
            VV(u) = out_proj(concat_heads softmax(v v^T / sqrt(d_head)) v),  v = u W_v^T + b_v

        ``W_v, b_v``: third slice of ``attn.in_proj_weight/bias``; ``ls_1`` applied (identity for
        CLIP). Tokens: ``ln_post(z_k) @ proj``; a block before ``start_block`` gives ``h``'s.

        Args:
            images: (B, 3, S, S), preprocessed, S = ``image_size``.
            start_block: 1-based first V-V block; None: 6 of 24 (``DPAM_layer=20``), scaled.
            out_blocks: 1-based blocks whose V-V tokens are returned; None: the last block.
            embedding: ``"authors"`` (final class token @ proj, no ln_post) or ``"open_clip"``.

        Returns:
            :class:`ImageFeatures`: embedding (B, D), one (B, L, D) tensor per out block.
        """
        self._check_size(images)
        n = self.num_blocks
        start = start_block or max(1, round(6 * n / 24))
        outs = tuple(out_blocks) if out_blocks else (n,)
        if not 1 <= start <= n or any(not 1 <= b <= n for b in outs):
            raise TPSLabError(f"V-V blocks (start {start}, out {outs}) out of range for {self.name} ({n} blocks)")
        if embedding not in ("authors", "open_clip"):
            raise TPSLabError(f"image embedding must be 'open_clip' or 'authors', got {embedding!r}")
        return encode_in_groups(images, self.num_tokens,
                                lambda group: self._encode_image_vv(group, start, outs, embedding))

    def _encode_image_vv(self, images: torch.Tensor, start: int, outs: tuple[int, ...],
                         embedding: str) -> ImageFeatures:
        visual = self.clip.visual  # open_clip 3: batch-first blocks
        h = self.tokens(images)  # (B, 1+L, W): the q-k stream
        z, kept = None, {}  # z: (B, 1+L, W), the V-V stream from block `start` on; kept: block -> tokens
        for k, block in enumerate(visual.transformer.resblocks, start=1):
            if k >= start:
                attn = block.attn
                if not isinstance(attn, nn.MultiheadAttention) or attn.in_proj_weight is None:
                    raise TPSLabError(f"{self.name}: DPAM needs nn.MultiheadAttention blocks with a packed in_proj")
                w = attn.embed_dim
                v = F.linear(block.ln_1(h), attn.in_proj_weight[2 * w:], attn.in_proj_bias[2 * w:])  # (B, 1+L, W)
                v = v.unflatten(-1, (attn.num_heads, -1)).transpose(1, 2)  # (B, heads, 1+L, d_head)
                o = F.scaled_dot_product_attention(v, v, v)  # softmax(v v^T / sqrt(d_head)) v
                vv = block.ls_1(attn.out_proj(o.transpose(1, 2).flatten(2)))  # (B, 1+L, W)
                z = (h if z is None else z) + vv
            h = block(h)  # (B, 1+L, W)
            if k in outs:
                kept[k] = z if k >= start else h
        patches = [visual.ln_post(kept[k][:, 1:]) @ visual.proj for k in outs]  # (B, L, D) each
        emb = (h[:, 0] if embedding == "authors" else visual.ln_post(h[:, 0])) @ visual.proj  # (B, D)
        return ImageFeatures(emb.float(), [p.float() for p in patches])

    @torch.no_grad()
    def raw_blocks(self, images: torch.Tensor, blocks: tuple[int, ...]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Raw residual-stream patch tokens of chosen blocks (no ``ln_post``, no ``proj``), for MuSc.

        Args:
            images: (B, 3, S, S), preprocessed.
            blocks: 1-based vision blocks (``(6, 12, 18, 24)`` for MuSc on ViT-L).

        Returns:
            ``(embedding, tokens)``: open_clip's image embedding (B, D) (``ln_post`` + ``proj``
            on the final class token, not normalised) and one (B, L, W) tensor of patch
            tokens per block, in the order of ``blocks`` (class token dropped).
        """
        self._check_size(images)
        if any(not 1 <= b <= self.num_blocks for b in blocks):
            raise TPSLabError(f"blocks {tuple(blocks)} out of range for {self.name} ({self.num_blocks} blocks)")
        indices = sorted({b - 1 for b in blocks})

        def encode(group: torch.Tensor) -> ImageFeatures:
            out = self.clip.visual.forward_intermediates(group, indices=indices, output_fmt="NLC",
                                                         intermediates_only=False)
            by_block = dict(zip(indices, out["image_intermediates"]))  # block index -> (B, L, W)
            return ImageFeatures(out["image_features"].float(), [by_block[b - 1].float() for b in blocks])

        features = encode_in_groups(images, self.num_tokens, encode)
        return features.embedding, features.patches

    def _check_size(self, images: torch.Tensor) -> None:
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            raise TPSLabError(f"images are {tuple(images.shape[-2:])}, the backbone expects "
                              f"{self.image_size}x{self.image_size}")

    # -- windows (WinCLIP) -----------------------------------------------------------
    @torch.no_grad()
    def encode_windows(self, images: torch.Tensor, windows: torch.Tensor,
                       max_tokens_per_call: int = 32768) -> torch.Tensor:
        """Embeddings of image windows by token selection (WinCLIP's window embeddings).

        For each image and each window, the transformer input keeps the class token and the
        window's patch tokens only, each with its own position embedding (so the window still
        "knows" where it lies), runs the whole vision transformer on that short sequence, and
        takes ``ln_post`` + ``proj`` of the class token: the image embedding the window alone
        would get. This is anomalib's ``torch_model.py:228-278`` (a ``patch_dropout`` hook, then
        ``ln_pre``, transformer, ``ln_post``, pool, ``proj``) and zqhang's
        ``src/open_clip/transformer.py:455-486``, through the public modules only. A window of
        all L patches gives open_clip's own image embedding.

        All (image, window) sequences share one length, so they are stacked and sent through
        the transformer ``max_tokens_per_call`` tokens at a time (a memory knob: the results do
        not depend on it), never one call per window.

        Args:
            images: (B, 3, S, S), preprocessed, S = ``image_size``.
            windows: (n_win, k) patch indices (row-major on the g x g grid) of each window;
                k = 4 for 2x2 windows, 9 for 3x3.
            max_tokens_per_call: at most this many tokens (sequences x (1 + k)) per transformer call;
                one sequence per call if it is smaller than one sequence.

        Returns:
            (B, n_win, D) window embeddings, not normalised.
        """
        visual = self.clip.visual
        if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok" \
                or visual.proj is None:
            raise TPSLabError(f"{self.name}: window embeddings need a ViT pooled by its class token, with a projection")
        n_patches = self.grid_size ** 2
        if windows.ndim != 2 or windows.numel() == 0 or int(windows.min()) < 0 or int(windows.max()) >= n_patches:
            raise TPSLabError(f"windows must be (n_win, k) patch indices in [0, {n_patches}), "
                              f"got shape {tuple(windows.shape)}")
        x = self.tokens(images)  # (B, 1+L, W)
        n_img, (n_win, k) = x.shape[0], windows.shape
        keep = torch.cat([windows.new_zeros(n_win, 1), windows + 1], dim=1).to(x.device, torch.long)  # (n_win, 1+k)
        pairs = torch.arange(n_img * n_win, device=x.device)  # image-major (image, window) pairs
        per_call = max(1, max_tokens_per_call // (1 + k))
        cls = []
        for chunk in pairs.split(per_call):
            seqs = x[(chunk // n_win)[:, None], keep[chunk % n_win]]  # (n, 1+k, W): CLS + the window's tokens
            cls.append(visual.transformer(seqs)[:, 0])  # (n, W): the class token after the last block
        emb = visual.ln_post(torch.cat(cls)) @ visual.proj  # (B*n_win, D)
        return emb.reshape(n_img, n_win, -1).float()  # (B, n_win, D)

    # -- text side -----------------------------------------------------------------
    @torch.no_grad()
    def encode_sentences(self, sentences: list[str]) -> torch.Tensor:
        """Text features (N, D) of plain sentences, not normalised (CLIP, WinCLIP).

        The same computation as open_clip's ``encode_text`` (no learnable parts).
        """
        tokens = self.tokenize(sentences).to(self.clip.token_embedding.weight.device)
        return self.encode_text(self.embed_tokens(tokens), tokens)

    def tokenize(self, sentences: list[str]) -> torch.Tensor:
        """Token ids (N, context_length) of plain sentences."""
        return self.tokenizer(sentences)

    @torch.no_grad()
    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Word embeddings (N, context_length, W) of token ids."""
        return self.clip.token_embedding(tokens.to(self.clip.token_embedding.weight.device))

    def encode_text(
        self,
        embeddings: torch.Tensor,
        tokens: torch.Tensor,
        deep_prompts: list[torch.Tensor] | None = None,
        projection: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Text features from word embeddings, with optional deep prompts.

        Args:
            embeddings: (N, T, W) word embeddings (learnable context already in place).
            tokens: (N, T) the token ids, used only to find the end-of-text position.
            deep_prompts: ``deep_prompts[k]`` of shape (n, W), or (N, n, W) per sentence, replaces
                positions ``1..n`` at the input of text layer ``k + 2`` (1-based; layer 1 sees ``embeddings``).
            projection: the (W, D) text projection; default CLIP's own.

        Returns:
            (N, D) text features, not normalised.
        """
        clip = self.clip
        deep_prompts = deep_prompts or []
        if len(deep_prompts) >= self.num_text_layers:
            raise TPSLabError(f"{len(deep_prompts)} deep prompt layers, but the text encoder has "
                              f"{self.num_text_layers} layers")
        # The mask is causal, so nothing after the last end-of-text token can change the
        # features: cut the sequence there (exact, and ~3x cheaper than 77 tokens).
        length = int(tokens.argmax(dim=-1).max()) + 1
        x = (embeddings + clip.positional_embedding)[:, :length]  # (N, T', W)
        attn_mask = None if clip.attn_mask is None else clip.attn_mask[:length, :length]
        batch_first = getattr(clip.transformer, "batch_first", True)
        for k, block in enumerate(clip.transformer.resblocks):
            if 1 <= k <= len(deep_prompts):
                prompt = deep_prompts[k - 1]  # (n, W) or (N, n, W)
                prompt = prompt if prompt.ndim == 3 else prompt.unsqueeze(0).expand(x.shape[0], -1, -1)
                n = prompt.shape[1]
                x = torch.cat([x[:, :1], prompt, x[:, 1 + n:]], dim=1)
            x = block(x if batch_first else x.transpose(0, 1), attn_mask=attn_mask)
            x = x if batch_first else x.transpose(0, 1)
        x = clip.ln_final(x)  # (N, T, W)
        eot = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)]  # (N, W): the EOT token has the largest id
        return eot @ (clip.text_projection if projection is None else projection)  # (N, D)


def build_backbone(
    name: str = "tpslab-tiny",
    pretrained: str | None = None,
    image_size: int | None = None,
    layers: tuple[int, ...] | None = None,
    pos_resize: str = "bilinear",
    seed: int = 0,
    quick_gelu: bool | None = None,
) -> Backbone:
    """Load CLIP (see :func:`load_clip`) and wrap it as a TPS :class:`Backbone`.

    ``quick_gelu`` is passed through (default: on for the ``openai`` tag); MuSc's reference
    runs the OpenAI weights with plain GELU at 518 px, so it sets ``quick_gelu=False``.
    """
    clip = load_clip(name, pretrained, image_size, pos_resize=pos_resize, quick_gelu=quick_gelu, seed=seed)
    return Backbone(clip, name, layers)
