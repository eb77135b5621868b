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
# # 01 · Data: make or locate the data sets, check them, look at them
#
# **What you will learn.** How every data set reaches tpslab: one `meta.json` beside the
# data, listing each image with its class, its label (0 normal, 1 anomalous) and its mask;
# how it is checked; what the data look like, per class.
#
# **What this reproduces.** The data side of the paper's protocol: TPS trains on the *test*
# split of an auxiliary data set (MVTec AD; VisA when MVTec AD is evaluated) and is evaluated
# zero-shot on the test split of every other set. The `smoke` profile replaces them with two
# synthetic domains made here from images that ship with scikit-image (disjoint sources,
# painted defects with exact masks): a *training* domain and a *held-out* domain.
#
# **Before you start.** Prerequisites: notebook 00. Study time: 20 min. Compute time on the `smoke`
# profile: 32 s, measured on a 2-core CPU by `make notebooks`.

# %% tags=["parameters"]
profile = "smoke"  # smoke | course | paper, or the path of a profile YAML
results_dir = None  # None: $TPSLAB_RESULTS or results/, then /<profile>
data_dir = None  # None: $TPSLAB_DATA or data/

# %%
# NBVAL_IGNORE_OUTPUT
import json

import seaborn as sns

import tpslab.lab
from tpslab import viz
from tpslab.data.meta import load_meta
from tpslab.data.prepare import summarize
from tpslab.data.validate import validate
from tpslab.utils import shown

lab = tpslab.lab.setup(profile, results_dir, data_dir)

# %% [markdown]
# ## 1. Make or locate the data sets
#
# For synthetic data this generates both domains (deterministic: the same settings give
# byte-identical files, and a second run reuses them). For real data it only *checks*:
# each data set must have been downloaded by you and described with
# `tpslab prepare NAME ROOT` (see `data/README.md`); nothing is downloaded here. The list is
# saved as `data.json` in the results folder, which is how the later notebooks find the data.

# %%
# NBVAL_IGNORE_OUTPUT
metas = tpslab.lab.prepare_data(lab)
for name, path in metas.items():
    print(f"{name}: {shown(path)}")

# %% [markdown]
# ## 2. What `meta.json` holds
#
# Two splits, `train` and `test`, each mapping class names to samples. Paths are relative to
# the file's folder; a normal sample has no mask (all zero), an anomalous one names its mask.
# This is the authors' (and AnomalyCLIP's) format, so their files load here too.

# %%
# NBVAL_CHECK_OUTPUT
meta = load_meta(next(iter(metas.values())))
samples = meta.samples("test")
print(json.dumps({"normal": samples[0] if not samples[0]["anomaly"] else next(s for s in samples if not s["anomaly"]),
                  "anomalous": next(s for s in samples if s["anomaly"])}, indent=1))

# %% [markdown]
# ## 3. Check every file
#
# `validate` opens every image and mask: a missing file, a mask of another size than its
# image, a mask that is not binary, an anomalous mask that marks nothing or a normal one that
# marks something are each reported on a line of their own, naming the file.

# %%
# NBVAL_CHECK_OUTPUT
for name, path in metas.items():
    validate(path)
    print(f"{name}: every image and mask checked, no problem")

# %% [markdown]
# ## 4. Counts per class
#
# The test split is what TPS trains on (auxiliary set) and what it is evaluated on (the
# others). The `with mask` column counts the anomalous images that pixel metrics can use.

# %%
# NBVAL_CHECK_OUTPUT
for name, path in metas.items():
    print(f"== {name}\n{summarize(path)}")
counts = tpslab.lab.class_counts(metas)

# %%
lab.save_table(counts, "01_counts", "Test-split images per class")

# %% [markdown]
# **What to see:** one panel per data set, normal and anomalous test images per class. The
# synthetic domains are balanced by construction (half anomalous); real data sets are not
# (MVTec AD's test split is about 3 anomalous to 1 normal, some medical sets all anomalous).

# %%
long = counts.melt(id_vars=["dataset", "class"], value_vars=["normal", "anomalous"], var_name="label",
                   value_name="images")
grid = sns.catplot(data=long, y="class", x="images", hue="label", col="dataset", kind="bar", sharey=False,
                   height=3, aspect=1.2)
grid.figure.suptitle(f"Test images per class\n({lab.label})", fontsize=9)
lab.save_figure(grid.figure, "01_counts")

# %% [markdown]
# ## 5. Sample images with their masks
#
# A few anomalous and normal test images of each data set, spread over its classes
# (`tpslab.data.dataset.pick_examples`), the defect outlined in red above the mask itself.

# %%
# NBVAL_CHECK_OUTPUT
batches = {name: lab.examples(name, 8) for name in metas}
for name, b in batches.items():
    areas = [100 * m.mean() for m, y in zip(b.masks, b.labels) if y]
    print(f"{name}: defect area of the anomalous samples shown: {', '.join(f'{a:.1f}%' for a in areas)}")

# %% [markdown]
# **What to see:** the defects are small (a few percent of the image, as printed above) and
# the masks follow them exactly; normal images have empty masks. On the synthetic domains the
# two sets of classes share no source photograph: what TPS learns on one must transfer.

# %%
for name, b in batches.items():
    lab.save_figure(viz.plot_samples(b, f"Test samples of {name}", lab.label), f"01_samples_{name}")

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
# **E1.1.** Corrupt a mask in a scratch copy and read `validate`'s message (`tpslab.data.validate.mask_problem`).

# %% tags=["exercise"]
def corrupt_mask(mask):
    """Return a copy of a binary (H, W) mask that `validate` rejects as not binary; keep `mask` as it is."""
    ### BEGIN SOLUTION
    bad = mask.copy()
    bad[: bad.shape[0] // 2] = 0.5  # half the pixels mid-grey
    return bad
    ### END SOLUTION

# %%
# NBVAL_CHECK_OUTPUT
_ = check("e1.1", corrupt_mask)

# %% [markdown]
# **E1.2.** Write `validate`'s label agreement rule: an anomalous sample must mark a pixel (value >= 0.5), a normal one none.

# %% tags=["exercise"]
def label_problem(mask, anomaly):
    """validate's label rule for a binary mask: the message for a label/mask disagreement, or None."""
    ### BEGIN SOLUTION
    marked = int((mask >= 0.5).sum())
    if anomaly == 1 and marked == 0:
        return "mask of an anomalous sample marks no pixel"
    if anomaly == 0 and marked > 0:
        return f"mask of a normal sample marks {marked} pixel(s)"
    return None
    ### END SOLUTION

# %%
# NBVAL_CHECK_OUTPUT
_ = check("e1.2", label_problem)

# %% [markdown]
# ## Check your understanding
#
# Put your answer in the cell (a letter for multiple choice, a number otherwise) and run it.

# %% [markdown]
# **Q1.1.** `validate` rejects a mask when more than what fraction of its pixels are mid-grey? (a number, e.g. 0.5)

# %% tags=["exercise"]
# NBVAL_CHECK_OUTPUT
### BEGIN SOLUTION
q1_1 = 0.05
### END SOLUTION
_ = answer("q1.1", q1_1)

# %% [markdown]
# **Q1.2.** A normal sample's mask marks 3 pixels. `validate` (a) reports that the mask of a normal sample marks pixels (b) accepts it (c) binarises it silently

# %% tags=["exercise"]
# NBVAL_CHECK_OUTPUT
### BEGIN SOLUTION
q1_2 = 'a'
### END SOLUTION
_ = answer("q1.2", q1_2)
