"""``--method`` at the command line: every detector evaluates, AnomalyCLIP trains and resumes, clear refusals."""

from __future__ import annotations

import pytest
from conftest import one_line_error

from tpslab import methods
from tpslab.cli import main
from tpslab.methods.checkpoint import read_checkpoint
from tpslab.profiles import load_profile
from tpslab.utils import TPSLabError


@pytest.mark.parametrize("method", ["clip", "winclip", "musc"])
def test_training_free_methods_evaluate(method, tiny_data, tmp_path, capsys):
    out = tmp_path / method
    assert main(["evaluate", str(tiny_data["heldout"]), "--method", method, "--profile", "smoke", "--quiet",
                 "--device", "cpu", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| mean |" in table and "image_auroc" in table
    assert len(list(out.glob("*_metrics.csv"))) == 1


def test_anomalyclip_trains_resumes_and_evaluates(tiny_data, tmp_path, capsys):
    run = tmp_path / "ac"
    base = ["train", str(tiny_data["train"]), "--method", "anomalyclip", "--profile", "smoke", "--quiet",
            "--device", "cpu", "--out", str(run), "--set", "train.cache_features=false"]
    assert main([*base, "--set", "train.epochs=1"]) == 0
    ckpt = read_checkpoint(run / "checkpoint.pt")
    assert ckpt["method"] == "anomalyclip" and ckpt["epoch"] == 1
    assert main([*base, "--set", "train.epochs=2", "--resume"]) == 0
    assert read_checkpoint(run / "checkpoint.pt")["epoch"] == 2
    capsys.readouterr()
    assert main(["evaluate", str(tiny_data["heldout"]), "--checkpoint", str(run / "checkpoint.pt"), "--quiet",
                 "--device", "cpu"]) == 0  # the method comes from the checkpoint
    assert "| mean |" in capsys.readouterr().out
    err = one_line_error(capsys, ["evaluate", str(tiny_data["heldout"]), "--checkpoint", str(run / "checkpoint.pt"),
                                  "--method", "tps", "--quiet"])
    assert "anomalyclip" in err


def test_refusals(tiny_data, capsys):
    data = str(tiny_data["heldout"])
    assert "--checkpoint" in one_line_error(capsys, ["evaluate", data, "--method", "anomalyclip", "--quiet"])
    assert "TPS setting" in one_line_error(capsys, ["evaluate", data, "--method", "clip", "--variant", "paper"])
    err = one_line_error(capsys, ["evaluate", data, "--method", "clip", "--authors-checkpoint", "x.pth"])
    assert "TPS's or AnomalyCLIP's" in err


def test_profile_methods_section():
    prof = load_profile("smoke", ["methods.clip.seed=3"])
    assert prof.method_settings("clip")["seed"] == 3 and prof.method_settings("tps") == prof.model
    with pytest.raises(TPSLabError, match="unknown"):
        load_profile("smoke", ["methods.clip.colour=red"])
    with pytest.raises(TPSLabError, match="methods.NAME.KEY"):
        load_profile("smoke", ["methods.clip=1"])


def test_trained_list_matches_the_classes():
    for name in methods.METHODS:
        module = methods.method_module(name)
        detector = next(v for v in vars(module).values() if isinstance(v, type) and getattr(v, "method", "") == name)
        assert detector.trains == (name in methods.TRAINED), name
