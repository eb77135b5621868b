"""tpslab.profiles: typed sections that reject unknown keys, overrides, run planning."""

from __future__ import annotations

import pytest

from tpslab.evaluation.evaluate import EvalConfig
from tpslab.profiles import (
    evaluation_plan,
    load_profile,
    needed_datasets,
    parse_override,
    training_runs,
)
from tpslab.utils import TPSLabError


def test_built_in_profiles_load_typed():
    smoke = load_profile("smoke")
    assert smoke.evaluate == EvalConfig(batch_size=32, aupro_method="exact")
    assert smoke.data.kind == "synthetic" and smoke.data.synthetic["n_per_class"] == 250
    assert smoke.notebooks.explain_images == 96 and smoke.ablation.train == {"epochs": 5}
    paper = load_profile("paper")
    assert training_runs(paper) == {"main": "mvtec", "aux-visa": "visa", "medical-classification": "headct",
                                    "medical-segmentation": "isic"}
    assert ("mvtec", "aux-visa") in evaluation_plan(paper) and ("kvasir", "medical-segmentation") in evaluation_plan(paper)
    assert len(needed_datasets(paper)) == 13


def test_overrides():
    assert parse_override("train.epochs=3") == ("train", "epochs", 3)
    assert parse_override("model.pretrained=null") == ("model", "pretrained", None)
    assert parse_override("data.test=[a, b]") == ("data", "test", ["a", "b"])
    prof = load_profile("smoke", ["train.epochs=1", "evaluate.batch_size=4", "notebooks.examples=2"])
    assert prof.train["epochs"] == 1 and prof.evaluate.batch_size == 4 and prof.notebooks.examples == 2
    for bad, message in (("train.epochs", "SECTION.KEY=VALUE"), ("epochs=3", "SECTION.KEY=VALUE"),
                         ("training.epochs=3", "unknown section"), ("train.epoch=3", "unknown training setting"),
                         ("evaluate.sigmaa=1", "unknown evaluate setting")):
        with pytest.raises(TPSLabError, match=message):
            load_profile("smoke", [bad])
