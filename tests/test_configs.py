"""Settings dataclasses (tpslab.configs, the profiles' sections, the methods' settings): one from_dict for all."""

from __future__ import annotations

import dataclasses

import pytest

from tpslab.configs import EvalConfig, TPSConfig, TrainConfig
from tpslab.methods import METHODS, method_module
from tpslab.profiles import AblationConfig, CompareConfig, DataConfig, NotebookConfig
from tpslab.utils import SettingsDict, TPSLabError

SECTIONS = [TPSConfig, TrainConfig, EvalConfig, DataConfig, NotebookConfig, AblationConfig, CompareConfig]


@pytest.mark.parametrize("cls", SECTIONS + [method_module(m).Settings for m in METHODS])
def test_every_settings_class_is_built_by_the_one_from_dict(cls):
    assert issubclass(cls, SettingsDict) and "from_dict" not in vars(cls)  # no copy of its own
    assert cls.from_dict({}) == cls()
    with pytest.raises(TPSLabError, match=f"unknown {cls.SECTION} setting.*: batchsize"):
        cls.from_dict({"batchsize": 4})


def test_section_values_are_checked():
    assert EvalConfig.from_dict({"batch_size": 4, "aupro_method": "authors"}).batch_size == 4
    with pytest.raises(TPSLabError, match="aupro_method"):
        EvalConfig.from_dict({"aupro_method": "fast"})
    with pytest.raises(TPSLabError, match="data kind"):
        DataConfig.from_dict({"kind": "web"})


def test_coercions_turn_file_values_into_the_fields_types():
    assert TrainConfig.from_dict({"betas": [0.9, 0.99]}).betas == (0.9, 0.99)  # YAML and JSON give lists
    abl = AblationConfig.from_dict({"train": None, "runs": None})  # empty YAML sections
    assert abl.train == {} and abl.runs == {}


def test_from_dict_does_not_change_its_argument_and_round_trips():
    given = {"betas": [0.5, 0.999], "epochs": 2}
    cfg = TrainConfig.from_dict(given)
    assert given == {"betas": [0.5, 0.999], "epochs": 2}
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert all(not isinstance(v, tuple) for v in cfg.to_dict().values())  # plain JSON values


def test_section_names_are_the_profile_sections():
    assert [c.SECTION for c in (TrainConfig, EvalConfig, DataConfig, NotebookConfig, AblationConfig, CompareConfig)] \
        == ["training", "evaluate", "data", "notebooks", "ablation", "compare"]
    assert all(dataclasses.is_dataclass(c) for c in SECTIONS)
