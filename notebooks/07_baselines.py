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
# # 07 · The baselines, step by step: CLIP, WinCLIP, AnomalyCLIP, MuSc
#
# **What you will learn.** What each method the paper compares TPS with actually computes,
# one image at a time: CLIP's two sentences, WinCLIP's window embeddings and their harmonic
# mean, AnomalyCLIP's DPAM (V-V attention in place of CLIP's q-k attention for the patch
# tokens) and MuSc's mutual scoring (each patch against the other test images of its class).
# Each is in `tpslab.methods`, made precise from its reference code
# (`docs/baselines.md`); notebook 06 scores them all on the test data.
#
# **What a small CLIP can and cannot show.** On `smoke` the CLIP underneath is `tpslab-mini`,
# a small open_clip model that `tpslab pretrain-mini` trained here on generated images and their
# captions ("a photo of a damaged clock", "a flawless marble"): its words mean something, so
# CLIP and WinCLIP already separate defective from normal images of classes it never saw, and
# the figures show the mechanics (which sentences, which windows, which attention, which
# distances) as they run on real weights. It is not CLIP: 64 px, 4 layers, a few defect kinds,
# so the numbers say how the methods behave on such a model, not what they achieve on real data.
# Section 0 measures what it knows. Run the `course` or `paper` profile for real CLIP. Nothing
# here is a paper number.
#
# **Before you start.** Prerequisites: notebooks 00, 03, 06. Study time: 60 min. Compute time on the `smoke`
# profile: 14 s, measured on a 2-core CPU by `make notebooks`.
#
# **Two equations to keep in mind.** WinCLIP gives patch $p$ at scale $k$ the harmonic mean of the scores
# $s_w$ of the windows $W_k(p)$ covering it, and its zero-shot map combines the two scales with the image
# score $s$:
#
# $$M_k(p) = \frac{|W_k(p)|}{\sum_{w \in W_k(p)} 1/s_w}, \qquad M(p) = \frac{3}{1/M_2(p) + 1/M_3(p) + 1/s}.$$
#
# MuSc scores patch $p$ of image $i$ in a set of $N$ images by its nearest distance to every other image,
# $d_j(p) = \min_q \lVert z_i(p) - z_j(q) \rVert_2$ for $j \ne i$, and averages the smallest
# $\lfloor 0.3\,(N-1) \rfloor$ of these $N-1$ distances (mutual scoring, MSM).

# %% tags=["parameters"]
profile = "smoke"  # smoke | course | paper, or the path of a profile YAML
results_dir = None  # None: $TPSLAB_RESULTS or results/, then /<profile>
data_dir = None  # None: $TPSLAB_DATA or data/
examples_per_figure = 4  # images in CLIP's and AnomalyCLIP's example figures

# %%
# NBVAL_IGNORE_OUTPUT
import torch
import torch.nn.functional as F

import tpslab.lab
from tpslab import metrics, viz
from tpslab.data.dataset import AnomalyDataset, Examples, load_examples
from tpslab.methods.anomalyclip import attention_weights
from tpslab.methods.clip import sentences
from tpslab.methods.musc_ops import lnamd, msm, nearest_distances
from tpslab.viz.baselines import (
    attention_summary,
    explain_windows,
    plot_attention,
    plot_mutual_scores,
    plot_what_it_knows,
    plot_windows,
    window_summary,
)
from tpslab.methods.winclip_prompts import prompt_ensemble
from tpslab.profiles import evaluation_plan

lab = tpslab.lab.setup(profile, results_dir, data_dir)
dataset, run = evaluation_plan(lab.profile)[0]  # the first test set, with the run that did not see it
meta = lab.datasets()[dataset]

# %% [markdown]
# ## 0. The CLIP underneath: what tpslab-mini knows
#
# Every method here reads a CLIP. On `smoke` it is `tpslab-mini`, whose weights ship with tpslab
# together with the recipe that made them and the numbers measured when they were written.
# Four of them: class accuracy (an image of the pre-training corpus against "a photo of a
# {class}." for its 20 classes, chance 5 %), caption retrieval (the image finds its own caption
# among 256, top 1), and the normal/anomalous AUROC of the *state score*
# $\cos(v, t_a) - \cos(v, t_n)$, with $t_n$ and $t_a$ the mean embeddings of "a photo of a
# flawless / damaged {class}." over ten state words each, on corpus images and on the smoke
# held-out domain, whose photographs and class names the pre-training never saw. The cell
# measures them again now and checks that they agree.

# %%
# NBVAL_CHECK_OUTPUT
from tpslab.backbone import pretrain

uses_mini = lab.profile.model_config.backbone == pretrain.MINI and lab.profile.model_config.pretrained == "tpslab"
if uses_mini:
    mini, tokenizer, recipe, recorded = pretrain.load_weights()  # the shipped file, its recipe and metadata
    now = pretrain.zero_shot(mini, tokenizer, recipe)
    for key, value in recorded["zero_shot"].items():
        print(f"{key:>20}: {value:5.1f} % when written; measured now within 1 point: {abs(now[key] - value) <= 1}")
    print(f"pre-trained on {recipe.steps * recipe.batch_size} generated pairs ({recipe.steps} steps of "
          f"{recipe.batch_size}); {recorded['note']}")
else:
    print(f"profile {lab.profile.name} runs {lab.profile.model_config.backbone}: this section is about tpslab-mini")

# %% [markdown]
# **What to see:** left, the learning curve: the class word is learnt first, the state word
# later, and the state carries over to the held-out photographs only late in training. Right,
# each held-out class's images by their state score: anomalous images (red) mostly above normal
# ones (blue) within each class, but the classes sit at different heights, so a single threshold
# over all classes would do worse than the per-class AUROC (how the benchmarks average it). Most
# scores are above zero, normal images' too: on these photographs the model leans to
# "anomalous", and by large margins, so CLIP's softmax at temperature 0.07 below rounds many
# images' P(anomalous) to 1.0 (ties that the AUROC cannot order).

# %%
if uses_mini:
    lab.save_figure(plot_what_it_knows(recorded["curve"], pretrain.heldout_state_scores(
        mini, tokenizer, recipe), lab.label), "07_what_tpslab_mini_knows")

# %% [markdown]
# ## 1. CLIP: two sentences, no training
#
# For a class `c`, CLIP embeds `a photo of a normal c.` and `a photo of an anomalous c.`;
# an image's score is the softmax of its cosine similarities to the two, at temperature
# 0.07 (`tpslab.methods.clip`). The map applies the same two sentences to every patch token
# of the last block (after `ln_post` and `proj`). No reference code exists for this baseline;
# the choices are recorded in the module's docstring. On real weights its pixel AUROC is
# near or below chance (38.4 on MVTec AD in Table 2): CLIP's last-layer patch tokens are not
# aligned with the text, which is what AnomalyCLIP and TPS set out to fix.

# %%
# NBVAL_CHECK_OUTPUT
clip = lab.method("clip", run)
shown = load_examples(meta, clip.image_size, examples_per_figure)
print(sentences(shown.classes[0]))
pred = clip.predict(shown.images.to(lab.device), shown.classes)
print("image scores:", [round(float(s), 3) for s in pred.image_scores])

# %% [markdown]
# **What to see:** each image, its mask and CLIP's map (as evaluated, smoothed). On real
# weights the map lights up on edges and textures more than on defects, and on `smoke` too:
# tpslab-mini's class token tells damaged from flawless (its image scores), but its last-layer
# patch tokens are not aligned with the sentences, so the map marks edges and dark textures and
# often misses the defect. The image scores round to 1.00 here for normal images too (section 0
# explains why); the ranking behind them is what the AUROC reads.

# %%
lab.save_figure(viz.example_figure(clip, shown, "CLIP: two sentences per class", lab.label, device=lab.device),
                "07_clip_examples")

# %% [markdown]
# **Try it: does the wording matter?** CLIP's score is only as good as its two sentences. Below,
# the image AUROC of one held-out class when "normal" / "anomalous" are replaced by other state
# words (the template stays "a photo of a {state} {class}."). Edit `wordings` and run the cell
# again. On `smoke` the answers come from tpslab-mini, which learnt ten normal and ten anomalous
# state words from its captions ("flawless", "damaged", ...), but never "scratched" or "dented"
# as a state: with such a word the sentence pair differs only in what the model does know
# ("good" against an unfamiliar word), and the AUROC drops.

# %%
wordings = [("normal", "anomalous"), ("flawless", "damaged"), ("perfect", "broken"), ("good", "scratched"),
            ("good", "dented")]
cls = shown.classes[0]
members = AnomalyDataset(meta, clip.image_size, "test", [cls])
batch = Examples([members[i] for i in range(len(members))])
with torch.no_grad():
    v = F.normalize(clip.backbone.encode_image(batch.images.to(lab.device)).embedding.float(), dim=-1)
    for good, bad in wordings:
        text = F.normalize(clip.backbone.encode_sentences([f"a photo of a {good} {cls}.",
                                                          f"a photo of a {bad} {cls}."]).float(), dim=-1)
        state = (v @ text.T)[:, 1] - (v @ text.T)[:, 0]  # ranks images as the two-way softmax does
        print(f"{good:>9} / {bad:<10} image AUROC {100 * metrics.image_auroc(batch.labels, state.cpu()):5.1f}")

# %% [markdown]
# ## 2. WinCLIP: a prompt ensemble and window embeddings
#
# WinCLIP averages the text embeddings of many sentences per state (7 normal and 4 anomalous
# state words times 21 templates, anomalib's list; the paper's 22 are an option), then embeds
# every 2x2 and 3x3 window of patches *as if it were a whole image*: the class token plus
# the window's tokens go through the full transformer. Each patch's score at a scale is the
# harmonic mean of the windows covering it, and the zero-shot map is the harmonic mean of the
# 2x2 map, the 3x3 map and the image score (`tpslab.methods.winclip`, equal to anomalib's
# `WinClipModel` on identical weights). The harmonic mean is pulled towards the *lowest*
# score: a patch counts as anomalous only if every window and scale agrees.

# %%
# NBVAL_CHECK_OUTPUT
winclip = lab.method("winclip")
one = load_examples(meta, winclip.image_size, 1, n_anomalous=1)
normal, anomalous = prompt_ensemble(one.classes[0], winclip.settings.templates)
print(f"{len(normal)} normal and {len(anomalous)} anomalous sentences, e.g. {normal[1]!r} / {anomalous[0]!r}")
parts = explain_windows(winclip, one.images[0].to(lab.device), one.classes[0])
print(window_summary(parts))

# %% [markdown]
# **What to see:** top left, one score per window at its centre, for each scale; below, the
# per-patch harmonic means; the image score as the coarsest scale; right, their harmonic mean
# (the zero-shot map) and the map upsampled over the image. All panels share one colour scale,
# so you can see the harmonic mean pulling every patch towards its lowest window.

# %%
lab.save_figure(plot_windows(winclip, one.images[0].to(lab.device), one.classes[0], parts, lab.label),
                "07_winclip_windows")

# %% [markdown]
# ## 3. AnomalyCLIP: DPAM's V-V attention
#
# In CLIP's last blocks a patch token attends mostly to a few "sink" tokens far away, so it
# describes the whole image rather than its own place. DPAM (diagonally prominent attention
# map) runs a second stream beside CLIP's from block 6 of 24 on, in which each block's
# attention is `softmax(v v^T)` instead of `softmax(q k^T)`: a token's value is most similar
# to itself and to tokens like it, so the attention map is diagonal-heavy and patch tokens
# stay local (`tpslab.backbone.core.Backbone.encode_image_vv`). The figure compares, in the last
# block, where one defect patch attends under each. Below it, the maps of the AnomalyCLIP
# trained in notebook 02.

# %%
# NBVAL_CHECK_OUTPUT
anomalyclip = lab.method("anomalyclip", run)
block = anomalyclip.backbone.num_blocks
one = load_examples(meta, anomalyclip.image_size, 1, n_anomalous=1)
grid = anomalyclip.backbone.grid_size
patch = int(F.adaptive_avg_pool2d(one.items[0]["mask"][None], grid).flatten().argmax())  # the most defective patch
att = attention_weights(anomalyclip.backbone, one.images.to(lab.device), block)
print(f"block {block}, patch {patch}:", attention_summary(att, patch))

# %% [markdown]
# **What to see:** with q-k attention the defect patch spreads its weight over the whole grid,
# its weight on itself (`qk_self`) about the uniform share $1/(N+1)$ of a grid of $N$ patches
# plus the class token; with V-V attention its weight on itself (`vv_self`) is several times
# that share. Most of the weight still lies elsewhere: V-V attention gives the patch itself a
# relative peak, which keeps its token closer to its own content, not a majority of the weight. Then AnomalyCLIP's maps after training, as evaluated.

# %%
lab.save_figure(plot_attention(one.images[0], att, patch, block, anomalyclip.backbone.mean_std, lab.label),
                "07_anomalyclip_attention")
shown = load_examples(meta, anomalyclip.image_size, examples_per_figure)
lab.save_figure(viz.example_figure(anomalyclip, shown, "AnomalyCLIP (trained in 02)", lab.label, device=lab.device),
                "07_anomalyclip_examples")

# %% [markdown]
# ## 4. MuSc: every patch against the other images of its class
#
# MuSc uses no text and no training. It takes the raw patch tokens of four blocks, averages
# each over its r x r neighbourhood (LNAMD, r = 1, 3, 5), and for every patch finds the
# nearest patch in *each other* test image of the class; the patch's score is the mean of the
# smallest 30 % of those distances (MSM). A normal patch has close matches in most other
# images; a defect patch has none. Image scores are the maps' maxima, smoothed over
# similar images (RsCIN). Below: one anomalous image, one block, r = 1, against the other
# images of its class (`tpslab.methods.musc_ops`, equal to MuSc's reference modules).

# %%
# NBVAL_CHECK_OUTPUT
musc = lab.method("musc")
cls = load_examples(meta, musc.image_size, 1, n_anomalous=1).classes[0]
ds = AnomalyDataset(meta, musc.image_size, "test", [cls])
members = Examples([ds[i] for i in range(len(ds))])
query = members.labels.index(1)  # the first anomalous image of the class
_, tokens = musc.features(members.images)
features = lnamd(tokens[-1].double(), 1)  # last block, r = 1
distances = nearest_distances(features, [query])[0]  # (L, N)
scores = msm(features, query=[query])[0]  # (L,)
inside = F.adaptive_avg_pool2d(members.items[query]["mask"][None], musc.backbone.grid_size).flatten() > 0.5
print(f"class {cls}: {len(members.items)} images; mean mutual score of the image's defect patches "
      f"{float(scores[inside].mean()):.3f}, of its other patches {float(scores[~inside].mean()):.3f}")

# %% [markdown]
# **What to see:** in the middle, one row per patch (most anomalous first), one column per other
# image: the defect's patches (top rows) are far from every image's nearest patch, normal
# patches find a close match in most images. On the right, each row's mean of the smallest 30 %
# as a map: it peaks on the outlined defect.

# %%
lab.save_figure(plot_mutual_scores(members.images[query], distances, scores, members.masks[query],
                                   musc.backbone.mean_std, lab.label), "07_musc_mutual_scores")

# %% [markdown]
# **What to take away.** CLIP and WinCLIP rely entirely on what CLIP's text and image
# embeddings share, so they need real weights and gain nothing from data; AnomalyCLIP and TPS
# learn prompts on auxiliary data (TPS adds shunt prompts and a pathway per layer, AnomalyCLIP
# changes the attention instead); MuSc needs neither text nor training but needs the other
# test images of a class, and fails where they are not mostly normal and alike (the paper's
# medical sets). Notebook 03 puts all five on the same test data.

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
# **E7.1.** WinCLIP's harmonic aggregation: $M(p) = |W_p| / \sum_{w \in W_p} 1/s_w$ over the windows $W_p$ that contain patch $p$.

# %% tags=["exercise"]
def harmonic(window_scores, windows, grid):
    """WinCLIP: per patch, the harmonic mean of the scores of the windows covering it; (B, g, g)."""
    import torch
    ### BEGIN SOLUTION
    cover = torch.zeros(windows.shape[0], grid * grid)
    cover[torch.arange(windows.shape[0])[:, None], windows] = 1.0  # (n_win, L)
    return (cover.sum(0) / ((1 / window_scores) @ cover)).reshape(-1, grid, grid)
    ### END SOLUTION

# %%
# NBVAL_CHECK_OUTPUT
_ = check("e7.1", harmonic)

# %% [markdown]
# **E7.2.** MuSc's mutual scoring: per patch, its nearest-patch distance to every other image, sorted; the mean of the smallest $\lfloor 0.3 (N-1) \rfloor$.

# %% tags=["exercise"]
def mutual_scores(features):
    """MuSc's MSM: (N, L, C) patch features -> (N, L), each patch against the N - 1 other images."""
    import torch
    ### BEGIN SOLUTION
    n, length, c = features.shape
    d = torch.cdist(features.reshape(-1, c), features.reshape(-1, c)).reshape(n, length, n, length).amin(-1)
    d[torch.arange(n), :, torch.arange(n)] = float("inf")  # leave each image's own patches out
    k = int(0.3 * (n - 1))
    return d.sort(dim=-1).values[..., :k].mean(-1)
    ### END SOLUTION

# %%
# NBVAL_CHECK_OUTPUT
_ = check("e7.2", mutual_scores)

# %% [markdown]
# ## Check your understanding
#
# Put your answer in the cell (a letter for multiple choice, a number otherwise) and run it.

# %% [markdown]
# **Q7.1.** WinCLIP's harmonic mean of the three maps 0.5, 0.25 and 1.0 at one pixel (two decimals).

# %% tags=["exercise"]
# NBVAL_CHECK_OUTPUT
### BEGIN SOLUTION
q7_1 = 0.43
### END SOLUTION
_ = answer("q7.1", q7_1)

# %% [markdown]
# **Q7.2.** MuSc is zero-shot without prompts or training. Each image is scored against (a) the other unlabelled test images of its class (b) normal training images (c) text prompts

# %% tags=["exercise"]
# NBVAL_CHECK_OUTPUT
### BEGIN SOLUTION
q7_2 = 'a'
### END SOLUTION
_ = answer("q7.2", q7_2)
