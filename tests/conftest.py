"""Shared fixtures: the tiny model and a small synthetic data set, made once per session."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)  # the tiny model is faster on one thread, and CI has two cores


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
