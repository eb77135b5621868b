"""The grid's plan (tpslab.runs.plan): which jobs a profile makes, where each writes, and the seeds of replicates."""

from __future__ import annotations

import torch

from tpslab.methods.tps.model import TPS, TPSConfig
from tpslab.profiles import load_profile
from tpslab.runs.plan import Job, plan, train_folder, train_settings

FIVE = ["tps", "clip", "anomalyclip", "winclip", "musc"]


def test_plan_trains_before_predicting_and_replicates_only_trained_methods():
    prof = load_profile("smoke", ["compare.seeds=2"])
    jobs = plan(prof)
    kinds = [j.kind for j in jobs]
    assert kinds == sorted(kinds, key=lambda k: k != "train")  # every train job first
    predict = [j for j in jobs if j.kind == "predict" and not j.ablation]
    assert {j.entry for j in predict} == set(FIVE)
    assert {j.replicate for j in predict if j.method in ("tps", "anomalyclip")} == {0, 1}
    assert {j.replicate for j in predict if j.method in ("clip", "winclip", "musc")} == {0}
    assert {j.entry for j in jobs if j.ablation} == set(prof.ablation.runs)
    assert len(jobs) == len(set(jobs))


def test_replicate_zero_is_the_notebooks_run_and_others_shift_the_seeds(tmp_path):
    prof = load_profile("smoke", ["compare.seeds=2"])
    r0, r1 = Job("train", "tps", "tps", "train-domain", "main", 0), Job("train", "tps", "tps", "train-domain", "main", 1)
    assert train_folder(tmp_path, r0) == tmp_path / "train" / "main"  # notebook 02's folder: its run is reused
    assert train_folder(tmp_path, r1).parent == tmp_path / "compare" / "train"
    assert train_settings(prof, r0)["model_settings"] == {} and train_settings(prof, r0)["train_settings"] == {}
    s1 = train_settings(prof, r1)
    assert s1["model_settings"] == {"init_seed": prof.model_config.seed + 2}
    assert s1["train_settings"] == {"seed": prof.train_config.seed + 1}
    abl = Job("train", "A1", "tps", "train-domain", "main", 0, ablation=True)
    assert train_folder(tmp_path, abl) == tmp_path / "ablation" / "a1"  # notebook 04's folder


def test_init_seed_changes_the_learned_parameters_only():
    a, b = TPS(TPSConfig()), TPS(TPSConfig(init_seed=5))
    same = TPS(TPSConfig(init_seed=1))  # None means seed + 1
    for (name, pa), (_, pb), (_, ps) in zip(a.state_dict().items(), b.state_dict().items(),
                                            same.state_dict().items(), strict=True):
        assert torch_equal(pa, ps), name
        if name.startswith("backbone."):
            assert torch_equal(pa, pb), name  # the same CLIP in every replicate
    learned = [k for k in a.trainable_state_dict() if a.trainable_state_dict()[k].is_floating_point()]
    assert any(not torch_equal(a.state_dict()[k], b.state_dict()[k]) for k in learned)


def torch_equal(x, y) -> bool:
    return bool(torch.equal(x, y))
