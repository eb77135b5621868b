"""The prediction store (tpslab.evaluation.predictions) and the spec-keyed store it is built on (tpslab.store)."""

from __future__ import annotations

import numpy as np
import pytest

from tpslab import store
from tpslab.evaluation import predictions
from tpslab.evaluation.predictions import ClassPredictions
from tpslab.utils import TPSLabError


def one_class(n: int = 3, size: int = 8) -> ClassPredictions:
    rng = np.random.default_rng(0)
    return ClassPredictions(rng.random(n).astype(np.float32), rng.random((n, size, size)).astype(np.float16),
                            np.array([0, 1, 1]), np.array([True, True, False]), [f"{i}.png" for i in range(n)],
                            ["good", "scratch", "hole"])


def test_a_run_is_stored_resumed_and_finished(tmp_path):
    folder, spec = tmp_path / "run", {"method": "clip", "layers": (6, 12)}
    predictions.start(folder, spec)
    assert not predictions.is_done(folder, spec) and not predictions.has_class(folder, "a b")
    predictions.save_class(folder, "a b", one_class())
    predictions.start(folder, spec)  # an interrupted run keeps the classes it finished
    assert predictions.has_class(folder, "a b")
    got = predictions.load_class(folder, "a b")
    want = one_class()
    assert np.array_equal(got.maps, want.maps) and got.maps.dtype == np.float16
    assert got.paths == want.paths and got.defect_types == want.defect_types and got.masks is None
    predictions.finish(folder, {"a b": 3}, 8, 0.5, "gt_half")
    assert predictions.is_done(folder, {"method": "clip", "layers": [6, 12]})  # tuples and lists are one spec
    assert predictions.done_classes(folder) == {"a b": 3} and predictions.done_info(folder)["sigma"] == 0.5


def test_another_spec_clears_a_stale_run(tmp_path):
    folder = tmp_path / "run"
    predictions.start(folder, {"method": "clip"})
    predictions.save_class(folder, "c", one_class())
    predictions.start(folder, {"method": "winclip"})
    assert not predictions.has_class(folder, "c")
    assert store.read_spec(folder, predictions.SPEC)["method"] == "winclip"


def test_unreadable_files_are_one_line_errors(tmp_path):
    folder = tmp_path / "run"
    predictions.start(folder, {"method": "clip"})
    predictions.class_file(folder, "c").write_bytes(b"not an npz")
    with pytest.raises(TPSLabError, match="cannot be read"):
        predictions.load_class(folder, "c")
    (folder / predictions.DONE).write_text("{broken")
    with pytest.raises(TPSLabError, match="not a complete prediction run"):
        predictions.done_info(folder)


def test_first_with_needs_the_same_spec_and_the_files(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    store.write_spec(a, {"x": (1, 2)}, "run.json")
    store.write_spec(b, {"x": [1, 2]}, "run.json")
    (b / "checkpoint.pt").write_bytes(b"")
    assert store.first_with([a, b], {"x": (1, 2)}, "run.json", needs=("checkpoint.pt",)) == b
    assert store.first_with([a, b], {"x": [1, 3]}, "run.json") is None
    assert store.first_with([a, b], {"x": [1, 2]}, "run.json") == a
    assert store.digest({"x": (1, 2)}) == store.digest({"x": [1, 2]}) != store.digest({"x": [2, 1]})
