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
# # 02 · Train TPS on the auxiliary data
#
# **What you will learn.** What TPS trains (the prompts and the pathways; CLIP stays frozen),
# the loss it minimises (paper Eq. 11: cross-entropy on the image score, plus focal and Dice
# losses on the anomaly maps of every layer), and how to read the loss curves.
#
# **The loss (Eq. 11)**, for a batch with image logits $C$, labels $y$, and per selected layer
# $i$ the patch probabilities $S_i$ upsampled to the image, $(B, 2, H, W)$, with masks $M$:
#
# $$\mathcal{L} = \mathrm{CE}(C, y) + \sum_i \Big[\mathrm{Focal}(S_i, M) + \mathrm{Dice}(S_i^{a}, M)
#   + \mathrm{Dice}(S_i^{n}, 1 - M)\Big],\qquad
#   \mathrm{Dice}(p, m) = 1 - \frac{2\sum p\,m + 1}{\sum p + \sum m + 1}$$
#
# with the focal loss at $\gamma = 2$ on probabilities. Images without a mask count for the
# cross-entropy only. It is implemented, upsampling included, in `tpslab.methods.tps.losses.tps_loss`
# (the training loop only calls it).
#
# **What this reproduces.** The training of the paper ("Training and Detection"), with the
# recipe of the profile: for `paper` the spec's (15 epochs, batch 8, Adam with lr 1e-3 for the
# prompts and 1e-4 for the pathways, betas (0.5, 0.999), seed 111, on MVTec AD's test split,
# plus the VisA model for the MVTec AD evaluation and the medical models of Table 3). For
# `smoke`: the synthetic training domain, 10 epochs, a higher pathway lr (10 short epochs at
# 1e-4 leave the pathways barely moved).
#
# CLIP is frozen and TPS uses no augmentation, so the image features of every epoch are the
# same: with `cache_features: true` (every built-in profile) they are computed once, kept on
# disk in float16 and shared by the seeds and ablation rows, which is what makes CPU training
# of the small profiles take minutes (`tpslab cache info --profile paper`: the disk it needs).
#
# **Before you start.** Prerequisites: notebooks 00-01; cross-entropy and gradient descent. Study time: 40 min. Compute time on the `smoke`
# profile: 2.3 min, measured on a 2-core CPU by `make notebooks`.

# %% tags=["parameters"]
profile = "smoke"  # smoke | course | paper, or the path of a profile YAML
results_dir = None  # None: $TPSLAB_RESULTS or results/, then /<profile>
data_dir = None  # None: $TPSLAB_DATA or data/

# %%
# NBVAL_IGNORE_OUTPUT
import pandas as pd

import tpslab.lab
from tpslab import viz
from tpslab.methods.checkpoint import read_checkpoint
from tpslab.methods import TRAINED
from tpslab.methods.tps.model import TPSConfig
from tpslab.profiles import training_runs
from tpslab.methods.train import TrainConfig

lab = tpslab.lab.setup(profile, results_dir, data_dir)

# %% [markdown]
# ## 1. The recipe
#
# Every setting, printed in full: the model (`TPSConfig`), the training (`TrainConfig`) and
# which auxiliary data set each training run uses. Run `main` is the profile's TPS; the
# others exist only in the `paper` profile.

# %%
# NBVAL_CHECK_OUTPUT
runs = training_runs(lab.profile)
print(TPSConfig.from_dict(lab.profile.model))
print(TrainConfig.from_dict(lab.profile.train))
print("runs (name: auxiliary data set):", runs)

# %% [markdown]
# ## 2. Train
#
# One line per epoch: the mean loss per batch and its two parts. The checkpoint is written
# after every epoch (atomically), with `history.csv` and `train.log`, under
# `train/<run>/` of the results folder. A run that already finished with the same settings
# is reused instead of trained again (delete its folder to retrain).

# %%
# NBVAL_IGNORE_OUTPUT
histories = {}
for run, dataset in runs.items():
    _, histories[run] = tpslab.lab.train_run(lab, lab.out / "train" / run, dataset,
                                             per_class=lab.profile.notebooks.train_per_class)

# %% [markdown]
# ## 3. Loss curves
#
# The final losses, rounded (these are regression-checked):

# %%
last = pd.DataFrame({run: h.iloc[-1] for run, h in histories.items()}).T
print(last[["epoch", "loss", "image_loss", "seg_loss"]].round(3).astype({"epoch": int}).to_string())

# %% [markdown]
# **What to see:** the segmentation loss (focal + Dice, summed over the layers) falls
# steadily: the shunt prompts and the pathways learn to mark defect pixels. The image loss
# (cross-entropy, chance level ln 2 = 0.69) starts below chance on `smoke` and keeps falling:
# tpslab-mini's image embedding already tells a damaged image from a flawless one (notebook 07,
# section 0), and the global prompts learn to read it. 03 shows where both lead on the held-out
# domain.

# %%
for run, history in histories.items():
    lab.save_figure(viz.plot_history(history, lab.label), f"02_loss_{run}")

# %% [markdown]
# ## 4. AnomalyCLIP, trained the same way
#
# AnomalyCLIP (Zhou et al., ICLR 2024) is TPS without shunt prompts and pathway, plus DPAM
# (patch tokens from a V-V attention stream beside CLIP's own): one pair of learned sentences,
# `X1..X12 object.` / `X1..X12 damaged object.`, scores both the image and every patch. It is
# trained here by the *same* loop, losses and recipe as TPS, on the same auxiliary data
# (`tpslab.methods.anomalyclip`; its only extra number is the loss weight 4 on its one layer,
# what its published runs used), so notebook 03 can put the two side by side. Notebook 07
# steps through what DPAM changes.

# %%
# NBVAL_IGNORE_OUTPUT
trained_baselines = [m for m in lab.profile.methods if m in TRAINED]
for method in trained_baselines:
    for run, dataset in runs.items():
        if not run.startswith("medical-"):
            _, histories[f"{method}-{run}"] = tpslab.lab.train_run(
                lab, lab.out / "train" / f"{method}-{run}", dataset, per_class=lab.profile.notebooks.train_per_class,
                method=method)

# %%
baseline_runs = [run for run in histories if run not in runs]
last = pd.DataFrame({run: histories[run].iloc[-1] for run in baseline_runs}, index=["epoch", "loss", "image_loss",
                                                                                     "seg_loss"]).T
print(last.round(3).astype({"epoch": int}).to_string() if baseline_runs else "no trained baseline in this profile")

# %% [markdown]
# ## 5. The checkpoint
#
# A checkpoint holds only what TPS learned (prompts, pathways, and its copy of CLIP's text
# projection, which only the authors'-code variant trains), the model and training settings,
# the optimiser state and the history: `tpslab.load_checkpoint(path)` rebuilds the model (in
# eval mode), and notebooks 03 and 05 read it. An AnomalyCLIP checkpoint holds its prompt
# learner, and says which method it is.

# %%
# NBVAL_CHECK_OUTPUT
for run in [*runs, *baseline_runs]:
    ckpt = read_checkpoint(lab.checkpoint(run))
    groups = pd.Series({k: v.numel() for k, v in ckpt["state"].items()}).groupby(lambda k: k.split(".")[0]).sum()
    kind = f"variant {ckpt['model_config']['variant']}" if ckpt.get("method", "tps") == "tps" else ckpt["method"]
    print(f"{lab.checkpoint(run).relative_to(lab.out)}: epoch {ckpt['epoch']}, {kind}; learned numbers per part: "
          f"{groups.to_dict()}")

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
# **E2.1.** The Dice loss of Eq. 11: $1 - \frac{2\sum p\,m + 1}{\sum p + \sum m + 1}$ per image, averaged.

# %% tags=["exercise"]
def dice(prob, target):
    """Soft Dice loss: (B, H, W) foreground probabilities and masks -> scalar, per image then averaged."""
    ### BEGIN SOLUTION
    p, m = prob.flatten(1), target.flatten(1)
    return (1 - (2 * (p * m).sum(1) + 1) / (p.sum(1) + m.sum(1) + 1)).mean()
    ### END SOLUTION

# %%
# NBVAL_CHECK_OUTPUT
_ = check("e2.1", dice)

# %% [markdown]
# **E2.2.** The focal loss of Eq. 11: $-(1 - p_t)^\gamma \log p_t$ averaged over pixels, $p_t$ the true class's probability.

# %% tags=["exercise"]
def focal(probs, target, gamma=2.0):
    """Focal loss: (B, 2, H, W) probabilities, (B, H, W) class map -> scalar mean over pixels."""
    ### BEGIN SOLUTION
    pt = probs.gather(1, target.long()[:, None])[:, 0]  # probability of the true class
    return (-(1 - pt) ** gamma * pt.log()).mean()
    ### END SOLUTION

# %%
# NBVAL_CHECK_OUTPUT
_ = check("e2.2", focal)

# %% [markdown]
# ## Check your understanding
#
# Put your answer in the cell (a letter for multiple choice, a number otherwise) and run it.

# %% [markdown]
# **Q2.1.** Why is training on MVTec AD (its test split) and testing on VisA still zero-shot? (a) the two data sets share their classes (b) the test masks are never used (c) the model never sees an image or a class of the data set it is tested on

# %% tags=["exercise"]
# NBVAL_CHECK_OUTPUT
### BEGIN SOLUTION
q2_1 = 'c'
### END SOLUTION
_ = answer("q2.1", q2_1)

# %% [markdown]
# **Q2.2.** The Dice loss with the +1 of an image whose mask is empty and whose predicted probabilities are all 0 (a number).

# %% tags=["exercise"]
# NBVAL_CHECK_OUTPUT
### BEGIN SOLUTION
q2_2 = 0
### END SOLUTION
_ = answer("q2.2", q2_2)
