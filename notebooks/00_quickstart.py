# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 00 · Quickstart: build TPS, score images, look at the maps
#
# **What you will learn.** How a TPS model is put together (a frozen CLIP, two prompt
# learners and the pathway modules), every sentence it is given, how it scores a whole
# image (paper Eq. 9, `tpslab.methods.tps.model.image_logits`) and each pixel (Eq. 10,
# `tpslab.methods.tps.model.patch_logits`), and how the lab's two variants differ: `"paper"` (what the
# paper describes) and `"authors-code"` (what the released code does).
#
# **What this reproduces.** Nothing numeric yet: the model here is *untrained*. With the
# default `smoke` profile its CLIP is `tpslab-mini`, a small CLIP trained here on generated
# captions (notebook 07 shows what it knows), but TPS's prompts and pathways are still at their
# random start, so its scores mean nothing until notebook 02 trains them; every figure says
# so under its title.
#
# **Before you start.** Prerequisites: Python and PyTorch; what CLIP's image and text encoders are. Study time: 30 min. Compute time on the `smoke`
# profile: 13 s, measured on a 2-core CPU by `make notebooks`.
#
# **The two scores.** With $\langle a, b\rangle$ the cosine of two vectors and $\tau = 0.07$, the
# image score is the anomalous entry of (Eq. 9)
#
# $$C_x = \mathrm{softmax}\big(\langle v_x, t_g^n\rangle/\tau,\ \langle v_x, t_g^a\rangle/\tau\big),$$
#
# and each selected layer $i$ gives every patch $p$ the probabilities (Eq. 10, per layer)
#
# $$S_x^i(p) = \mathrm{softmax}\big(\langle z_x^i(p), \ddot t_s^{n,i}\rangle/\tau,\
#   \langle z_x^i(p), \ddot t_s^{a,i}\rangle/\tau\big),$$
#
# upsampled to the image; the anomaly map is $\sum_i \tfrac12\big(S_x^{i,a} + 1 - S_x^{i,n}\big)$.

# %% tags=["parameters"]
profile = "smoke"  # smoke | course | paper, or the path of a profile YAML
results_dir = None  # None: $TPSLAB_RESULTS or results/, then /<profile>
data_dir = None  # None: $TPSLAB_DATA or data/

# %%
# NBVAL_IGNORE_OUTPUT
import numpy as np
import pandas as pd
import torch
from PIL import Image

import tpslab.lab
from tpslab import viz
from tpslab.data.dataset import mask_to_tensor, to_rgb
from tpslab.data.synthetic_sample import HELDOUT_CLASSES, render_sample, sample_rng
from tpslab.methods.tps.model import build_model

lab = tpslab.lab.setup(profile, results_dir, data_dir)

# %% [markdown]
# ## 1. Build the model
#
# `build_model` takes the profile's model settings: the open_clip architecture, its weights
# (`None` = seeded random, `"openai"`, or a file) and the input size (518 in the paper).
# CLIP is frozen; TPS learns only the prompts, the pathways and (authors' code only) CLIP's
# text projection.

# %%
# NBVAL_CHECK_OUTPUT
model = build_model(**lab.profile.model).to(lab.device)
bb = model.backbone
parts = {"CLIP (frozen)": bb, "global prompts": model.global_prompts, "shunt prompts": model.shunt_prompts,
         "pathways": model.pathways}
for name, module in parts.items():
    n = sum(p.numel() for p in module.parameters() if p.requires_grad or name.startswith("CLIP"))
    print(f"{name:>15}: {n:>11,} parameters")
print(f"input {bb.image_size} px, patch grid {bb.grid_size}x{bb.grid_size}, patch tokens of blocks {bb.layers}"
      f" of {bb.num_blocks}, joint space D = {bb.embed_dim}")

# %% [markdown]
# ## 2. Every sentence the model is given
#
# Two prompt learners, each with a *normal* and an *anomalous* sentence. The **global**
# prompts describe the whole image (classification, Eq. 2); the **shunt** prompts describe a
# part of it (segmentation, Eq. 3). Each `X` is a learnable context vector; `object` makes
# the prompts object-agnostic (AnomalyCLIP's idea). In the paper's notation:
#
# $$T_g^n = [\text{prefix}][\text{object}][\text{with all parts flawless}],\quad
#   T_g^a = [\text{prefix}][\text{object}][\text{with damaged parts}] \qquad \text{(Eq. 2)}$$
#
# $$T_s^n = [\text{prefix}][\text{flawless}][\text{part}],\quad
#   T_s^a = [\text{prefix}][\text{damaged}][\text{part}] \qquad \text{(Eq. 3)}$$

# %%
# NBVAL_CHECK_OUTPUT
for name, learner in (("global", model.global_prompts), ("shunt", model.shunt_prompts)):
    for kind, sentence in zip(("normal", "anomalous"), learner.sentences):
        print(f"{name:>6} {kind:>9}: {sentence}")

# %% [markdown]
# ## 3. Score a few images
#
# Six crops of photographs that ship with scikit-image, three with a painted-in defect
# (the same generator as the synthetic data sets, made here in memory). `model.predict`
# returns one **image score** per image, `softmax([<v, t_g^n>, <v, t_g^a>] / 0.07)[anomalous]`
# (Eq. 9), and one **anomaly map** per image: for each of the 4 layers the per-patch
# probability of "anomalous" against the shunt features (Eq. 10), upsampled and summed.

# %%
# NBVAL_CHECK_OUTPUT
kinds = [None, "scratch", "spot", None, "scratch", "spot"]
samples = [render_sample(c, d, sample_rng(0, c, 0), 256) for c, d in zip(HELDOUT_CLASSES, kinds)]
images = torch.stack([model.preprocess(Image.fromarray(img)) for _, img, _ in samples])
masks = [mask_to_tensor(m / 255.0, bb.image_size).numpy() for _, _, m in samples]
pred = model.predict(images.to(lab.device), return_layers=True)
print("images", tuple(images.shape), "-> image_scores", tuple(pred.image_scores.shape),
      "and anomaly_maps", tuple(pred.anomaly_maps.shape))
print("image scores:", np.round(pred.image_scores.cpu().numpy(), 3))
print(f"map values from {pred.anomaly_maps.min():.3f} to {pred.anomaly_maps.max():.3f} (4 layers, each in [0, 1])")

# %% [markdown]
# The paper writes the map as the sum over layers of `(S_a + 1 - S_n) / 2`. With a two-way
# softmax `S_n = 1 - S_a`, so each term is just `S_a`: the check below shows the two agree.

# %%
# NBVAL_CHECK_OUTPUT
probs = pred.extras["layer_probs"]  # per layer (B, 2, S, S): [normal, anomalous]
gap = max(((p[:, 1] + 1 - p[:, 0]) / 2 - p[:, 1]).abs().max().item() for p in probs)
print(f"max |(S_a + 1 - S_n)/2 - S_a| over layers and pixels below 1e-6: {gap < 1e-6}")

# %% [markdown]
# **What to see:** each column is one image (top), its defect mask (middle) and the anomaly
# map laid over it (bottom, red = more anomalous, one colour scale for the row). Untrained,
# the maps follow image content (edges, dark regions), not the defects, and the scores are
# arbitrary: a normal image can score higher than a damaged one.

# %%
rgb = [to_rgb(x) for x in images]
captions = [f"{c}\n{d or 'normal'}, score {s:.2f}" for c, d, s in zip(HELDOUT_CLASSES, kinds, pred.image_scores)]
lab.save_figure(viz.plot_examples(rgb, list(pred.anomaly_maps.cpu().numpy()), masks, captions,
                                  "Untrained TPS (paper variant)", lab.label), "00_untrained_maps_paper")

# %% [markdown]
# ## 4. The two variants
#
# The authors' released code differs from the paper in five ways (spec: `[code]` items).
# Each is a field of `TPSConfig`, and `variant="authors-code"` switches all of them on:
# one pathway shared by all layers, *discarded at inference*; the image embedding without
# CLIP's final LayerNorm; deep prompts cast through fp16; CLIP's text projection fine-tuned.

# %%
# NBVAL_CHECK_OUTPUT
code = build_model(**lab.profile.model, variant="authors-code").to(lab.device)
fields = ["shared_pathway", "pathway_at_inference", "image_embedding", "fp16_deep_prompts", "train_text_projection"]
table = pd.DataFrame({v: [getattr(m.config, f) for f in fields] + [len(m.pathways),
                                                                    sum(p.numel() for p in m.parameters() if p.requires_grad)]
                      for v, m in (("paper", model), ("authors-code", code))},
                     index=fields + ["pathway modules", "learned parameters"])
print(table.to_string())

# %% [markdown]
# Same images, same seed, the authors'-code variant. Its prompts start from the same values,
# so the differences come from the variant alone: no pathway in the maps, another image embedding.

# %%
# NBVAL_CHECK_OUTPUT
pred_code = code.predict(images.to(lab.device))
print("image scores:", np.round(pred_code.image_scores.cpu().numpy(), 3))
diff = (pred_code.anomaly_maps - pred.anomaly_maps).abs().mean().item()
print(f"mean |map difference| paper vs authors-code: {diff:.3f}")

# %% [markdown]
# **What to see:** compared with the figure above, the maps change although both models are
# untrained and share their prompts: the authors' code scores the patches with the plain shunt
# features, without the pathway's image-specific adjustment.

# %%
lab.save_figure(viz.plot_examples(rgb, list(pred_code.anomaly_maps.cpu().numpy()), masks, captions,
                                  "Untrained TPS (authors'-code variant)", lab.label), "00_untrained_maps_authors_code")

# %% [markdown]
# **Next:** 01 makes (or checks) the data sets, 02 trains the prompts and the pathways.

# %% [markdown]
# ## Exercises
#
# Write the body of each function between the markers (in the student build it raises
# `NotImplementedError`), then run the check cell below it: it prints `passed`, `not attempted`
# or `failed:` with a hint. The checks build their own seeded inputs and compare your function
# with the library's; `tpslab course grade` runs them again with hidden cases.

# %%
from tpslab.course import answer, check  # noqa: F401

# %% [markdown]
# **E0.1.** Eq. 9 by hand: $C = \mathrm{softmax}([\cos(v, t_g^n), \cos(v, t_g^a)] / \tau)$; return $C$'s anomalous column.

# %% tags=["exercise"]
def image_score(embedding, global_text, temperature=0.07):
    """Eq. 9: (B, D) image embeddings, (2, D) global text [normal, anomalous] -> (B,) P(anomalous)."""
    import torch.nn.functional as F
    ### BEGIN SOLUTION
    v, t = F.normalize(embedding, dim=-1), F.normalize(global_text, dim=-1)
    return (v @ t.T / temperature).softmax(dim=-1)[:, 1]
    ### END SOLUTION

# %%
# NBVAL_CHECK_OUTPUT
_ = check("e0.1", image_score)

# %% [markdown]
# **E0.2.** Eq. 10 for one layer: every patch token against the normal and the anomalous sentence.

# %% tags=["exercise"]
def layer_map(patches, text, temperature=0.07):
    """Eq. 10 for one layer: (B, L, D) patch tokens, (2, D) text -> (B, L) P(anomalous) per patch."""
    import torch.nn.functional as F
    ### BEGIN SOLUTION
    z, s = F.normalize(patches, dim=-1), F.normalize(text, dim=-1)
    return (z @ s.T / temperature).softmax(dim=-1)[..., 1]
    ### END SOLUTION

# %%
# NBVAL_CHECK_OUTPUT
_ = check("e0.2", layer_map)

# %% [markdown]
# ## Check your understanding
#
# Put your answer in the cell (a letter for multiple choice, a number otherwise) and run it.

# %% [markdown]
# **Q0.1.** With a two-way softmax $S_n = 1 - S_a$. The paper's per-layer map term $(S_a + 1 - S_n)/2$ is then (a) $S_n$ (b) $S_a$ (c) $1/2$ (d) $S_a - S_n$.

# %% tags=["exercise"]
# NBVAL_CHECK_OUTPUT
### BEGIN SOLUTION
q0_1 = 'b'
### END SOLUTION
_ = answer("q0.1", q0_1)

# %% [markdown]
# **Q0.2.** On the `smoke` profile, what do this notebook's image scores tell you about the defects? (a) the damaged images score higher (b) the normal images score higher (c) nothing: the model is untrained (its prompts and pathways are at their random start)

# %% tags=["exercise"]
# NBVAL_CHECK_OUTPUT
### BEGIN SOLUTION
q0_2 = 'c'
### END SOLUTION
_ = answer("q0.2", q0_2)
