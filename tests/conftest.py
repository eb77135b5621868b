"""Shared fixtures: a small synthetic data set and a one-epoch checkpoint, made once; shared helpers."""

from __future__ import annotations

import pytest
import torch

from tpslab.utils import configure_logging

torch.set_num_threads(1)  # the tiny model is faster on one thread, and CI has two cores
configure_logging()  # progress lines go to stdout, as in the CLI and the notebooks (capsys reads them)


@pytest.fixture(scope="session", autouse=True)
def feature_cache_in_tmp(tmp_path_factory):
    """Training's on-disk feature cache goes to a temporary folder, never to ~/.cache/tpslab."""
    import os

    old = os.environ.get("TPSLAB_CACHE")
    os.environ["TPSLAB_CACHE"] = str(tmp_path_factory.mktemp("feature-cache"))
    yield
    if old is None:
        del os.environ["TPSLAB_CACHE"]
    else:
        os.environ["TPSLAB_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """Both synthetic domains, 6 images per class, 64 px: {"train": meta, "heldout": meta}."""
    from tpslab.data.synthetic import make_synthetic_pair

    return make_synthetic_pair(tmp_path_factory.mktemp("synthetic"), n_per_class=6, image_size=64, progress=False)


@pytest.fixture
def images():
    """Four random preprocessed 64 px images (seeded)."""
    return torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="session")
def checkpoint(tiny_data, tmp_path_factory):
    """A TPS checkpoint trained one epoch on the tiny training domain (the tiny model, seed 0)."""
    import tpslab
    from tpslab.data.dataset import AnomalyDataset
    from tpslab.methods.train import TrainConfig, train

    out = tmp_path_factory.mktemp("ckpt")
    train(tpslab.build_model(seed=0), AnomalyDataset(tiny_data["train"], 64),
          TrainConfig(epochs=1, cache_features=True, device="cpu"), out, progress=False)
    return out / "checkpoint.pt"


def one_line_error(capsys, argv: list[str]) -> str:
    """Run the CLI expecting exit status 2 and a one-line ``tpslab: error: ...`` (no traceback); return it."""
    from tpslab.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("tpslab: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err
