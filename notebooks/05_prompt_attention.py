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
# # 05 · Inside TPS: what the prompts and the pathway do
#
# **What you will learn.** How a trained TPS turns patch features into an anomaly map, layer
# by layer: what the *global* prompts (made for the whole image) and the *shunt* prompts (made
# for parts) each say about every patch, where the pathway's two shunt tokens look in the
# image (the attention of Eq. 6), and how the map changes before and after the pathway.
#
# **The key lesson.** With prompts alone, each patch is scored by a *fixed* read-out of its
# own features: the same two text vectors for every image, so a patch is called anomalous or
# not whatever the rest of its image looks like. The pathway builds the shunt features from the
# image's own patches (cross-attention, Eq. 6), so each patch is judged *against the rest of
# its image*. That is what a defect is: a part that does not fit its surroundings.
#
# **What this reproduces.** The paper's argument for shunt prompts and the pathway (sections
# "Fine-grained Text Prompts" and "Pathway Module"), made visible on 02's model, with the
# ablation numbers of 04. On `smoke` all of it is on synthetic data with `tpslab-mini`, a small
# CLIP trained here on generated captions (not CLIP).
#
# **Before you start.** Prerequisites: notebooks 00, 02; attention (queries, keys, values). Study time: 45 min. Compute time on the `smoke`
# profile: 14 s, measured on a 2-core CPU by `make notebooks`.

# %% tags=["parameters"]
profile = "smoke"  # smoke | course | paper, or the path of a profile YAML
results_dir = None  # None: $TPSLAB_RESULTS or results/, then /<profile>
data_dir = None  # None: $TPSLAB_DATA or data/

# %%
# NBVAL_IGNORE_OUTPUT
import pandas as pd
import seaborn as sns

import tpslab.lab
from tpslab import viz
from tpslab.methods.checkpoint import load_checkpoint
from tpslab.methods.tps.explain import explain, layer_summary, patch_table
from tpslab.profiles import evaluation_plan

lab = tpslab.lab.setup(profile, results_dir, data_dir)

# %% [markdown]
# ## The pathway, in equations
#
# For one selected layer $i$, with the shunt text features $t_s$ and the global ones $t_g$
# (each $2 \times D$: normal, anomalous) and the layer's patch tokens $z_i$ ($L \times D$), the
# pathway computes the customised shunt features $s_i$, each step with its residual on the
# layer-normed input:
#
# $$\hat s = \mathrm{LN}_0(t_s) + \mathrm{MHA}_\eta\big(Q{=}\mathrm{LN}_0(t_s),\ K{=}\mathrm{LN}_4(z_i),\
#   V{=}\mathrm{LN}_4(z_i)\big) \qquad \text{(Eq. 6)}$$
#
# $$\tilde s = \mathrm{LN}_2(\hat s) + \mathrm{MHA}_\psi\big(Q{=}\mathrm{LN}_2(\hat s),\ K{=}\mathrm{LN}_1(t_g),\
#   V{=}\mathrm{LN}_2(\hat s)\big) \qquad \text{(Eq. 7)}$$
#
# $$s_i = \tilde s + \mathrm{MLP}\big(\mathrm{LN}_3(\tilde s)\big) \qquad \text{(Eq. 8)}$$
#
# The paper writes the value of $\mathrm{MHA}_\eta$ as $t_s$, which cannot be (its keys are the
# $L$ patches); the code, like the authors', uses the patches as the value. All three are
# `tpslab.methods.tps.pathway.Pathway.forward`. Each patch is then scored against $s_i$ by
# `tpslab.methods.tps.model.patch_logits` (Eq. 10): $S_i = \mathrm{softmax}\big([\langle z_p, s_i^n\rangle,
# \langle z_p, s_i^a\rangle] / 0.07\big)$.
#
# ## 1. Three read-outs and the pathway's attention, for every layer
#
# 02's trained model (paper variant) and held-out images, mostly anomalous. For every
# selected layer `tpslab.methods.tps.explain.explain` takes, from one pass of the model, the probability
# of "anomalous" of every patch against three pairs of text features: the **global** prompts,
# the **plain shunt** prompts, and the **shunt prompts customised by the pathway** (what TPS
# really uses: the model's own maps, as `tests/test_explain.py` checks); and the pathway's
# attention of the normal and the anomalous shunt token over the patches.

# %%
# NBVAL_CHECK_OUTPUT
model = load_checkpoint(lab.checkpoint("main")).to(lab.device)
test_set = next(d for d, run in evaluation_plan(lab.profile) if run == "main")  # one main did not see
n = lab.profile.notebooks.explain_images
batch = lab.examples(test_set, n, n_anomalous=n * 3 // 4, image_size=model.backbone.image_size)
expl = explain(model, batch.images)
print(f"{test_set}: {n} images ({sum(batch.labels)} anomalous); per layer {tuple(expl.pathway_maps.shape[1:])} maps")
layers = model.backbone.layers

# %% [markdown]
# **What to see:** one anomalous image, one row per layer. Columns 2-4 are the three
# read-outs on one scale (P(anomalous) from 0, blue, to 1, red): the global and the plain
# shunt prompts light up edges and dark regions all over the image; only *shunt + pathway*
# puts its heat on the outlined defect. Columns 5-6 are where the two shunt tokens attend
# (Eq. 6): each token gathers a few patches that stand out, often the defect (here mostly the
# normal token). What they gather is added to the text features, so the pair of features that
# scores this image's patches is made *from this image*.

# %%
j = next(i for i, (m, y) in enumerate(zip(batch.masks, batch.labels)) if y and m.mean() > 0.03)
fig = viz.plot_layers(batch, expl, j, layers, lab.label)
lab.save_figure(fig, "05_layers")

# %% [markdown]
# ## 2. The same, in numbers, over all the images
#
# Per layer: the pixel AUROC of each read-out; the attention **lift** of each shunt token
# (the share of its attention that falls on defect pixels, divided by the defects' share of
# the image: 1 = no preference, above 1 = it looks at the defect); and the **read-out
# agreement**, the mean cosine between each image's read-out direction `s_a - s_n` after the
# pathway and their mean direction (without the pathway it is 1: the same direction for all).

# %%
summary = layer_summary(expl, batch.masks, layers)
print(summary.round(2).to_string(index=False))
lab.save_table(summary, "05_layers", f"Per layer, {n} held-out images: read-outs, attention, agreement")

# %% [markdown]
# Reading the table on `smoke`: at every layer the pathway's read-out localises far better
# than the global or the plain shunt prompts, which stay near chance (tpslab-mini's patch tokens
# of these layers are not aligned with its words); in every layer at least one of the two tokens
# puts more than twice its fair share of attention on defect pixels (lift above 2, more in the
# early layers); and the read-out direction differs from image to image (agreement below 1).
#
# **What to see:** per layer (rows) and read-out (columns), how P(anomalous) is spread over
# normal patches and over defect patches (a patch counts as defect when the mask covers most
# of it). With the global or the plain shunt prompts the two distributions overlap: a fixed
# read-out cannot tell a defect from a normal patch that looks alike. After the pathway they
# separate: normal patches near 0, defect patches near 1.

# %%
patches = patch_table(expl, batch.masks, layers)
grid = sns.displot(data=patches, x="P(anomalous)", hue="patch", row="layer", col="read-out", kind="hist", bins=20,
                   stat="probability", common_norm=False, height=1.6, aspect=1.5, facet_kws={"margin_titles": True})
grid.figure.suptitle(f"P(anomalous) of defect and normal patches\n({lab.label})", fontsize=9)
lab.save_figure(grid.figure, "05_patch_scores")

# %% [markdown]
# **What to see:** per image, where the pathway's two tokens look at the last layer: four
# anomalous images (defect outlined), then two normal ones. The attention is sparse: a few
# patches that stand out in *this* image, the defect among them when there is one. Which
# token looks at the defect varies; both bring its features into the shunt text features.

# %%
few = lab.examples(test_set, 6, n_anomalous=4, image_size=model.backbone.image_size)
fig = viz.plot_attention(few, explain(model, few.images), len(layers) - 1, layers[-1], lab.label)
lab.save_figure(fig, "05_attention")

# %% [markdown]
# ## 3. The key lesson, in held-out numbers
#
# Notebook 04 trained the same recipe with learned prompts but no pathway ("prompts only":
# every patch scored by one fixed read-out) and with the pathway (A2, TPS). The difference in
# held-out pixel AUROC is what judging each patch against the rest of its image is worth.

# %%
ablation_file = lab.out / "tables" / "04_ablation.csv"
if ablation_file.is_file():
    ab = pd.read_csv(ablation_file).set_index("row")
    for row, what in (("prompts only", "fixed read-out"), ("A2 (TPS)", "with the pathway")):
        print(f"{row:>12} ({what}): held-out pixel AUROC {ab.loc[row, 'pixel_auroc'] / 100:.3f}, "
              f"AUPRO {ab.loc[row, 'pixel_aupro'] / 100:.3f}")
else:
    print(f"{ablation_file.name} not found: run notebooks/04_ablations first")

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
# **E5.1.** One Eq. 6 step, $s \leftarrow \mathrm{LN}_2(s + \mathrm{MHA}_\eta(s, z, z))$, with a `Pathway`'s own layers.

# %% tags=["exercise"]
def eq6(pathway, shunt, patches):
    """Eq. 6 with the module's own weights: (B, 2, D) shunt features, (B, L, D) patches -> (B, 2, D)."""
    ### BEGIN SOLUTION
    s, z = pathway.ln_shunt(shunt), pathway.ln_patches(patches)
    return pathway.ln_mid(s + pathway.customise(s, z, z)[0])
    ### END SOLUTION

# %%
# NBVAL_CHECK_OUTPUT
_ = check("e5.1", eq6)

# %% [markdown]
# **E5.2.** Where each sentence looks: the attention weights of $\mathrm{MHA}_\eta$ (each row sums to 1 over the patches).

# %% tags=["exercise"]
def attention(pathway, shunt, patches):
    """MHA_eta's attention over the patches, averaged over heads: (B, 2, L)."""
    ### BEGIN SOLUTION
    s, z = pathway.ln_shunt(shunt), pathway.ln_patches(patches)
    return pathway.customise(s, z, z, need_weights=True)[1]
    ### END SOLUTION

# %%
# NBVAL_CHECK_OUTPUT
_ = check("e5.2", attention)

# %% [markdown]
# ## Check your understanding
#
# Put your answer in the cell (a letter for multiple choice, a number otherwise) and run it.

# %% [markdown]
# **Q5.1.** In Eq. 6 the keys are the $L$ patch tokens. The values must then be (a) the shunt text features $t_s$ (b) the patch tokens (c) the global text features

# %% tags=["exercise"]
# NBVAL_CHECK_OUTPUT
### BEGIN SOLUTION
q5_1 = 'b'
### END SOLUTION
_ = answer("q5.1", q5_1)

# %% [markdown]
# **Q5.2.** For one sentence, what do $\mathrm{MHA}_\eta$'s attention weights sum to over the patches? (a number)

# %% tags=["exercise"]
# NBVAL_CHECK_OUTPUT
### BEGIN SOLUTION
q5_2 = 1
### END SOLUTION
_ = answer("q5.2", q5_2)
