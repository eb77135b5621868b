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
# # 03 · Evaluate: per-class tables and example anomaly maps
#
# **What you will learn.** The paper's four metrics and how they are computed per class:
# image AUROC and AP (is the image anomalous?), pixel AUROC and AUPRO (where?), each in
# percent, the data set's figure being the mean over its classes; and how to look at the
# best and the worst localised images to see what a number hides.
#
# **What this reproduces.** The per-data-set, per-class results behind Tables 1-3 (the
# paper's appendix has such per-class tables). Maps are smoothed with a Gaussian of
# sigma 4 px at 518 px (in proportion at other sizes); AUPRO is integrated up to a false
# positive rate of 0.3. On `smoke`: the held-out synthetic domain, which shares no source
# image with the training domain, scored before and after training.
#
# **Before you start.** Prerequisites: notebook 02 (its checkpoint); ROC curves. Study time: 45 min. Compute time on the `smoke`
# profile: 28 s (with 02's checkpoint), measured on a 2-core CPU by `make notebooks`.
#
# **The metrics.** Image AUROC is the probability that an anomalous image scores above a normal one,
# ties counting one half (the Mann-Whitney statistic), with $s^+$ the anomalous and $s^-$ the normal
# images' scores:
#
# $$\mathrm{AUROC} = \frac{1}{|s^+|\,|s^-|}\sum_{a \in s^+}\sum_{b \in s^-}
#   \Big(\mathbf 1[a > b] + \tfrac12\,\mathbf 1[a = b]\Big).$$
#
# Pixel AUROC is the same over all pixels of the class. For AUPRO, at each threshold $\theta$ the
# per-region overlap is averaged over all defect regions $R_k$ (connected components of the masks),
#
# $$\mathrm{PRO}(\theta) = \frac{1}{K}\sum_{k=1}^{K} \frac{|R_k \cap \{\text{map} > \theta\}|}{|R_k|},$$
#
# plotted against the false-positive rate $\mathrm{FPR}(\theta)$ over the normal pixels; AUPRO is the area
# under that curve for $\mathrm{FPR} \le 0.3$, divided by $0.3$.

# %% tags=["parameters"]
profile = "smoke"  # smoke | course | paper, or the path of a profile YAML
results_dir = None  # None: $TPSLAB_RESULTS or results/, then /<profile>
data_dir = None  # None: $TPSLAB_DATA or data/

# %%
# NBVAL_IGNORE_OUTPUT
import pandas as pd

import tpslab.lab
from tpslab import viz
from tpslab.methods.checkpoint import load_checkpoint
from tpslab.methods.tps.model import TPS, TPSConfig
from tpslab.profiles import evaluation_plan, training_runs

lab = tpslab.lab.setup(profile, results_dir, data_dir)

# %% [markdown]
# ## 1. What is evaluated with which model
#
# Every test data set with the model of the run that did not see it: `main` (trained on the
# auxiliary set), or, in the `paper` profile, the VisA-trained model for MVTec AD and the
# medical models for Table 3.

# %%
# NBVAL_CHECK_OUTPUT
plan = evaluation_plan(lab.profile)
models = {run: load_checkpoint(lab.checkpoint(run)).to(lab.device) for run in dict.fromkeys(r for _, r in plan)}
for dataset, run in plan:
    print(f"{dataset}: model of run {run!r} (trained on {training_runs(lab.profile)[run]})")

# %% [markdown]
# ## 2. Evaluate
#
# One pass per data set: per-class metrics, and the images whose maps localise best and
# worst (an anomalous image is ranked by the pixel AUROC of its own map, a normal one by how
# low its map stays). On `smoke` the untrained model is scored too, as the floor to beat.

# %%
# NBVAL_IGNORE_OUTPUT
tables, cases = [], {}
for dataset, run in plan:
    table, cases[dataset, run] = tpslab.lab.evaluate_with_cases(lab, models[run], dataset, lab.profile.notebooks.examples)
    tables.append(table.assign(run=run))
if lab.profile.notebooks.untrained_baseline:
    untrained = TPS(TPSConfig.from_dict(lab.profile.model))
    tables += [lab.evaluate(untrained, d).assign(run="untrained") for d in dict.fromkeys(d for d, _ in plan)]
metrics = pd.concat(tables, ignore_index=True)
lab.save_table(metrics, "03_metrics", "All per-class metrics (percent); run = the model")

# %% [markdown]
# ## 3. Per-class tables
#
# Rounded to one decimal as in the paper; the `mean` row is the data set's figure.

# %%
columns = ["class", "images", "anomalous", "image_auroc", "image_ap", "pixel_auroc", "pixel_aupro"]
for (dataset, run), part in metrics.groupby(["dataset", "run"], sort=False):
    print(f"== {dataset}, model {run}")
    tpslab.lab.show_table(part[columns])
    lab.save_table(part[columns], f"03_{dataset}_{run}", f"{dataset}, model {run}: per-class metrics (percent)")

# %% [markdown]
# **What to see:** one bar per class and model; the dashed line at 50 % is chance for the
# two AUROCs (AUPRO's chance level is lower). On
# `smoke`, training lifts every metric on every held-out class: the maps find defects in
# photographs the model never saw (pixel AUROC from below chance to the high 90s), and the image
# AUROC rises with them to the 90s. The untrained model sits at or below chance: its prompts are
# random vectors, so which sentence an image is closer to says nothing yet.
#
# **Why the image score works here:** it reads CLIP's class token against the global prompts,
# and tpslab-mini's class token does describe a defect (it was trained on captions that name
# one). With the random `tpslab-tiny` that lifted the pixel metrics just as much, the image AUROC
# stayed near 0.55: a random class token carries little about a small defect.

# %%
for dataset in dict.fromkeys(d for d, _ in plan):
    part = metrics[(metrics["dataset"] == dataset) & (metrics["class"] != "mean")]
    part = part.sort_values("run", key=lambda r: r != "untrained", kind="stable")  # untrained first
    lab.save_figure(viz.plot_metric_bars(part, x="class", hue="run", metrics=["image_auroc", "pixel_auroc", "pixel_aupro"],
                                         title=f"{dataset}: per-class metrics", label=lab.label), f"03_{dataset}_per_class")

# %% [markdown]
# ## 4. Good and bad cases
#
# The quality printed under each image: for an anomalous image, the pixel AUROC of its own
# map (1 = every defect pixel scores above every other pixel); for a normal one, one minus the
# map's peak per layer (low = a false alarm).

# %%
for (dataset, run), found in cases.items():
    for kind, chosen in found.items():
        print(f"{dataset} {kind}: " + ", ".join(f"{it['cls_name']} {it['quality']:.2f}" for it in chosen.items))

# %% [markdown]
# **What to see:** in the good cases the map's hot spot sits on the defect and normal images
# stay cool. In the bad cases look for *why*: a defect whose colour is close to its
# surroundings (on `smoke`: dark blue paint on a dark region), or a normal image whose strong
# edges or borders light up like a defect.

# %%
for (dataset, run), found in cases.items():
    for kind, chosen in found.items():
        fig = viz.example_figure(models[run], chosen, f"{dataset}: {kind} cases (model {run})", lab.label,
                                 [f"quality {it['quality']:.2f}" for it in chosen.items], lab.device)
        lab.save_figure(fig, f"03_{dataset}_{kind}_cases")

# %% [markdown]
# ## 5. TPS beside the baselines
#
# The four methods the paper's Tables 1-2 compare with (CLIP, WinCLIP, AnomalyCLIP, MuSc) are
# scored beside TPS in notebook 06, on the same images and by the same metric code, each under
# its reference protocol and under one harmonised protocol, with bootstrap intervals
# (`tpslab compare`); notebook 07 steps through what each of them computes.

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
# **E3.1.** AUROC $= \frac{1}{|A||N|}\sum_{a \in A}\sum_{n \in N} [s_a > s_n] + \tfrac12 [s_a = s_n]$.

# %% tags=["exercise"]
def auroc(labels, scores):
    """Image AUROC as a Mann-Whitney count: P(anomalous scores higher than normal), ties count 1/2."""
    import numpy as np
    ### BEGIN SOLUTION
    a, n = scores[labels > 0.5], scores[labels <= 0.5]
    return float(np.mean((a[:, None] > n[None]) + 0.5 * (a[:, None] == n[None])))
    ### END SOLUTION

# %%
# NBVAL_CHECK_OUTPUT
_ = check("e3.1", auroc)

# %% [markdown]
# **E3.2.** PRO/AUPRO on a two-image toy: PRO is the mean over all regions of the fraction of each region predicted ($\text{map} \ge t$); integrate PRO against the FPR of the normal pixels from 0 to 0.3 and divide by 0.3.

# %% tags=["exercise"]
def aupro_toy(masks, maps, fpr_limit=0.3):
    """AUPRO up to `fpr_limit` on (N, H, W) masks and maps, thresholds at every distinct map value."""
    import numpy as np
    from scipy import ndimage
    ### BEGIN SOLUTION
    regions = [(i, lab == k) for i, m in enumerate(masks) for lab, n in [ndimage.label(m > 0.5, np.ones((3, 3)))]
               for k in range(1, n + 1)]
    fpr, pro = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        pred = maps >= t
        fpr.append(pred[masks <= 0.5].mean())
        pro.append(np.mean([pred[i][r].mean() for i, r in regions]))
    x = np.append(np.array(fpr)[np.array(fpr) < fpr_limit], fpr_limit)
    return float(np.trapezoid(np.interp(x, fpr, pro), x) / fpr_limit)
    ### END SOLUTION

# %%
# NBVAL_CHECK_OUTPUT
_ = check("e3.2", aupro_toy)

# %% [markdown]
# ## Check your understanding
#
# Put your answer in the cell (a letter for multiple choice, a number otherwise) and run it.

# %% [markdown]
# **Q3.1.** An image AUROC of 0.5 means (a) half the images are anomalous (b) half the anomalous pixels are found (c) the threshold is 0.5 (d) the scores rank anomalous images above normal ones no better than chance

# %% tags=["exercise"]
# NBVAL_CHECK_OUTPUT
### BEGIN SOLUTION
q3_1 = 'd'
### END SOLUTION
_ = answer("q3.1", q3_1)

# %% [markdown]
# **Q3.2.** AUPRO integrates up to FPR 0.3 and divides by 0.3. What does a perfect detector score? (a number)

# %% tags=["exercise"]
# NBVAL_CHECK_OUTPUT
### BEGIN SOLUTION
q3_2 = 1
### END SOLUTION
_ = answer("q3.2", q3_2)
