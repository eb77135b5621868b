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
# # 06 · The paper's tables and Figure 3: every column, with intervals
#
# **What you will learn.** How Tables 1-3 and Figure 3 are regenerated under one roof: the five
# methods (CLIP, WinCLIP, AnomalyCLIP, MuSc, TPS) and the ablation rows run on the same images,
# scored by the same metric code, under two protocols, each number with a 95% bootstrap
# interval, and how to read our numbers beside the published ones.
#
# **What this reproduces.** The layout of Table 1 (zero-shot classification: image AUROC, AP),
# Table 2 (zero-shot segmentation: pixel AUROC, AUPRO), Table 3 (TPS trained on medical data)
# and Figure 3 (ablation A1 vs A2), written as CSV, Markdown and LaTeX. The published numbers
# are **typed in as data** (`tpslab/reports/paper_numbers.py`), each baseline cell with where it comes
# from. Our columns come from `tpslab compare` (the same code as this notebook): every
# (method, data set, seed) run stores its predictions once under `predictions/`, and every
# table, interval and figure here is computed from those files. On `smoke` that is the
# synthetic held-out domain with `tpslab-mini` (a small CLIP trained here on generated captions,
# not CLIP), in a row of its own; every real data set
# says "not run". Only the `paper` profile fills the published rows.
#
# **Before you start.** Prerequisites: notebooks 02-04; the bootstrap. Study time: 45 min. Compute time on the `smoke`
# profile: 3.3 min (it runs `tpslab compare`), measured on a 2-core CPU by `make notebooks`.
#
# **The interval.** Each class's test images are resampled with replacement $B$ times, anomalous and
# normal images separately (stratified), whole images with all their pixels; each resample $b$ gives the
# data set's metric $\hat m^{*}_b$ (mean over classes), and the 95% interval is
# $\big[\hat m^{*}_{(2.5\%)},\ \hat m^{*}_{(97.5\%)}\big]$, the 2.5th and 97.5th percentiles of the $B$ values.

# %% tags=["parameters"]
profile = "smoke"  # smoke | course | paper, or the path of a profile YAML
results_dir = None  # None: $TPSLAB_RESULTS or results/, then /<profile>
data_dir = None  # None: $TPSLAB_DATA or data/

# %%
# NBVAL_IGNORE_OUTPUT
import tpslab.lab
from tpslab.runs import compare, plan, score
from tpslab.reports import paper_numbers
from tpslab.reports import paper_tables
from tpslab.utils import shown

lab = tpslab.lab.setup(profile, results_dir, data_dir)

# %% [markdown]
# ## 1. The run grid
#
# One job per (method, data set, replicate): a *train* job for each trained method (TPS,
# AnomalyCLIP, each ablation row) and replicate, then a *predict* job for each method and
# test data set. Replicate 0 of a trained method is the run notebooks 02 and 04 trained, so
# it is reused here; `compare.seeds` replicates (3 on `paper`) differ in the training seed
# and the learnable parameters' initialisation, never in CLIP's weights. The same jobs run on
# a cluster with `tpslab compare --executor slurm` (or `--executor local-parallel --jobs N`,
# one process per GPU); each job writes only its own files, so the tables are the same.

# %%
# NBVAL_CHECK_OUTPUT
ctx, prof = compare.context(profile, out=lab.out, data=lab.data)
jobs = plan.plan(prof)
print(f"{len(jobs)} jobs; replicates of the trained methods: {prof.compare.seeds}; "
      f"bootstrap: {prof.compare.n_boot} resamples per class, seed {prof.compare.boot_seed}")
for job in jobs:
    print(" ", job.name)

# %%
# NBVAL_IGNORE_OUTPUT
result = compare.run_compare(profile, out=lab.out, data=lab.data, progress=False)
summary = result.summary

# %% [markdown]
# ## 2. Two protocols
#
# The **reference** protocol evaluates each method as its own code does: its input size, its
# map smoothing and its mask rule (the paper's tables mix these, since each column was run by
# its own code). The **harmonised** protocol resizes every stored map to one size
# (`compare.harmonised_size`: 518 px on `paper`), smooths it with sigma 4 at 518 px and scores
# it with the exact AUPRO, so the columns differ only by method.

# %%
# NBVAL_CHECK_OUTPUT
for name, p in score.protocols(prof).items():
    sigma = "its own" if p.sigma is None else f"{p.sigma:.2f} px"
    print(f"{name}: input size {p.image_size or 'its own'}, sigma {sigma}, masks {p.mask_rule or 'its own rule'}, "
          f"AUPRO {p.aupro_method}")

# %% [markdown]
# ## 3. Table 1: zero-shot classification (image AUROC, AP)
#
# Each of our cells is "AUROC, AP" in percent, the mean over the data set's classes (with
# "±" the standard deviation over replicates when there are several). `*` marks a number whose
# 95% interval excludes the published one; † a published cell that traces to no source.
# Printed here: the rows this profile ran (all rows are in `compare/tables/table1_reference.md`).

# %%
# trained numbers: checked by tpslab.dev.portable (tests/notebook_numbers.csv), not by nbval
table1 = result.tables["table1_reference"]
print(paper_tables.rows_run(table1).to_string(index=False))

# %% [markdown]
# Every number with its interval, from the long table (`table1_reference_long.csv`):

# %%
# trained numbers: checked by tpslab.dev.portable (tests/notebook_numbers.csv), not by nbval
long1 = result.tables["table1_reference_long"]
print(long1[["dataset", "method", "metric", "ours", "ci_low", "ci_high", "published"]].round(1).to_string(index=False))

# %% [markdown]
# **What to see:** one bar per method and data set with its 95% interval (whiskers); black
# ticks are the published numbers where the paper has this data set. On `smoke` there are no
# published ticks (the synthetic domain is not in the paper). The image AUROCs are well above
# chance for every method: tpslab-mini's image embedding and its state words already tell a
# defective image from a normal one, and the trained methods (TPS, AnomalyCLIP) add to that.

# %%
lab.save_figure(result.figures["table1_reference"], "06_table1")

# %% [markdown]
# ## 4. Table 2: zero-shot segmentation (pixel AUROC, AUPRO)

# %%
# trained numbers: checked by tpslab.dev.portable (tests/notebook_numbers.csv), not by nbval
table2 = result.tables["table2_reference"]
print(paper_tables.rows_run(table2).to_string(index=False))
long2 = result.tables["table2_reference_long"]
print(long2[["dataset", "method", "metric", "ours", "ci_low", "ci_high", "published"]].round(1).to_string(index=False))

# %% [markdown]
# **What to see:** where the intervals of two methods do not overlap, the difference is not
# resampling noise of the test images. On `smoke` the paper's story shows at small scale: CLIP's
# last-layer patch tokens are poorly aligned with its sentences (its pixel AUROC is near or below
# chance although its image AUROC is high), WinCLIP's windows recover part of the localisation,
# AnomalyCLIP's learned prompts and V-V attention more, and TPS, whose pathway judges each patch
# against its own image, localises best. MuSc, which needs no language, localises well from the
# other images of a class.

# %%
lab.save_figure(result.figures["table2_reference"], "06_table2")

# %% [markdown]
# ## 5. Reference against harmonised
#
# How much of a column is its protocol: the same stored predictions scored both ways. On
# `smoke` every method runs at 64 px, so only the smoothing and the mask rule differ (WinCLIP
# and MuSc are not smoothed by their own code); at paper scale WinCLIP's 240 px maps are also
# upsampled to 518.

# %%
# trained numbers: checked by tpslab.dev.portable (tests/notebook_numbers.csv), not by nbval
both = summary[~summary["ablation"]].pivot_table(index=["dataset", "entry", "metric"], columns="protocol",
                                                 values="mean").round(1)
print(both.to_string())

# %% [markdown]
# ## 6. Table 3: TPS trained on medical data
#
# Classification rows are (AUROC, AP), segmentation rows (pixel AUROC, AUPRO); "industrial"
# is the model trained on MVTec AD, "medical" the one trained on HeadCT (classification) or
# ISIC (segmentation). Only the `paper` profile trains the medical models.

# %%
# trained numbers: checked by tpslab.dev.portable (tests/notebook_numbers.csv), not by nbval
print(result.tables["table3_reference"].to_string(index=False))

# %% [markdown]
# ## 7. Figure 3: the ablation rows, with intervals
#
# The paper's Figure 3 is a bar chart without printed values, so there is nothing published
# to type in; A2 is TPS itself. Ours: each row of the profile's `ablation` section (A1 = fixed
# words without pathway, A2 = TPS, and the steps between), trained as notebook 04 trains it.

# %%
# trained numbers: checked by tpslab.dev.portable (tests/notebook_numbers.csv), not by nbval
figure3 = result.tables.get("figure3_reference")
if figure3 is not None:
    print(figure3.pivot_table(index=["dataset", "row"], columns="metric", values="mean").round(1).to_string())

# %% [markdown]
# **What to see:** the paper's claim is that each module contributes (A2 above A1); an
# interval that overlaps the next row's says the data cannot tell the two apart. On `smoke` the
# pathway is what lifts the pixel metrics.

# %%
if "figure3_reference" in result.figures:
    lab.save_figure(result.figures["figure3_reference"], "06_figure3")

# %% [markdown]
# ## 8. Published cells that trace to no source
#
# TPS reprints the baselines' numbers without saying where each comes from; traced against
# AnomalyCLIP's, WinCLIP's and MuSc's papers (`docs/baselines.md#section-5`):

# %%
# NBVAL_CHECK_OUTPUT
prov = paper_numbers.provenance_table()
print(prov[prov["source"] == "no source"][["table", "dataset", "method", "published", "note"]].to_string(index=False))
print(prov["source"].value_counts().to_string())

# %% [markdown]
# ## 9. Where everything is
#
# `tpslab compare --profile <profile>` writes the same files from the command line.

# %%
# NBVAL_IGNORE_OUTPUT
print(f"{len(result.tables)} tables and {len(result.figures)} figures under {shown(result.out)}:")
for sub in ("tables", "figures"):
    print(f"  {sub}/: " + ", ".join(sorted(p.name for p in (result.out / sub).iterdir())))

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
# **E6.1.** The interval of one class: resample normal and anomalous images apart (`resample_counts`), score each resample, take the $\frac{1-\ell}{2}$ and $\frac{1+\ell}{2}$ percentiles.

# %% tags=["exercise"]
def auroc_interval(labels, scores, n_boot, seed, level=0.95):
    """Stratified percentile bootstrap interval (low, high) of one class's image AUROC."""
    import numpy as np
    from tpslab.metrics.bootstrap import resample_counts
    from tpslab.metrics import image_auroc
    ### BEGIN SOLUTION
    stats = [image_auroc(np.repeat(labels, c), np.repeat(scores, c)) for c in resample_counts(labels, n_boot, seed)]
    stats = np.array(stats)[~np.isnan(stats)]
    if stats.size == 0:
        return float("nan"), float("nan")
    return tuple(np.quantile(stats, [(1 - level) / 2, (1 + level) / 2]))
    ### END SOLUTION

# %%
# NBVAL_CHECK_OUTPUT
_ = check("e6.1", auroc_interval)

# %% [markdown]
# **E6.2.** The same for a pixel metric: the unit of resampling is still the image, not the pixel.

# %% tags=["exercise"]
def pixel_interval(masks, maps, n_boot, seed):
    """95% interval of the pixel AUROC, whole images resampled (stratified by image label)."""
    import numpy as np
    from tpslab.metrics.bootstrap import interval, resample_counts
    from tpslab.metrics import pixel_auroc
    ### BEGIN SOLUTION
    counts = resample_counts(masks.reshape(len(masks), -1).max(1), n_boot, seed)
    stats = [pixel_auroc(np.repeat(masks, c, 0), np.repeat(maps, c, 0)) for c in counts]
    return interval(np.array(stats), 0.95)
    ### END SOLUTION

# %%
# NBVAL_CHECK_OUTPUT
_ = check("e6.2", pixel_interval)

# %% [markdown]
# ## Check your understanding
#
# Put your answer in the cell (a letter for multiple choice, a number otherwise) and run it.

# %% [markdown]
# **Q6.1.** Which gaps in Table 1 are real? A gap between two methods is supported when (a) the means differ (b) it is more than one point (c) the bootstrap intervals (or the seeds' spread) leave no doubt about its sign

# %% tags=["exercise"]
# NBVAL_CHECK_OUTPUT
### BEGIN SOLUTION
q6_1 = 'c'
### END SOLUTION
_ = answer("q6.1", q6_1)

# %% [markdown]
# **Q6.2.** The bootstrap of a class resamples (a) pixels (b) images, normal and anomalous apart (c) classes

# %% tags=["exercise"]
# NBVAL_CHECK_OUTPUT
### BEGIN SOLUTION
q6_2 = 'b'
### END SOLUTION
_ = answer("q6.2", q6_2)
