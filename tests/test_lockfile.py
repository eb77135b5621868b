"""requirements/lock.txt pins every pyproject requirement within its specifier; environment.yml repeats the pins."""

from __future__ import annotations

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tpslab.dev import lockfile
from tpslab.utils import TPSLabError


def test_committed_lock_satisfies_pyproject():
    problems = lockfile.lock_problems(lockfile.project_requirements(), lockfile.read_lock())
    assert problems == []


def test_environment_yml_names_the_lock_versions():
    assert lockfile.environment_pins() == lockfile.read_lock()


def test_lock_pins_torch_and_the_new_extras():
    pins = lockfile.read_lock()
    for name in ("torch", "torchvision", "playwright", "django-static-mathjax", "pytest"):
        assert name in pins, name


def test_missing_and_violating_pins_are_reported():
    reqs = [Requirement("torch>=2.2"), Requirement("open_clip_torch>=3,<4"), Requirement("numpy")]
    pins = {"torch": Version("2.1.0"), "open-clip-torch": Version("3.3.0")}
    problems = lockfile.lock_problems(reqs, pins)
    assert len(problems) == 2
    assert "torch==2.1.0" in problems[0] and "numpy" in problems[1]


def test_lock_parser_rejects_unpinned_lines(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text("# comment\nNumPy==2.0.1\nscipy>=1\n")
    with pytest.raises(TPSLabError, match="lock.txt:3"):
        lockfile.read_lock(lock)
    lock.write_text("Open_Clip.Torch==3.3.0\n")
    assert lockfile.read_lock(lock) == {"open-clip-torch": Version("3.3.0")}


def test_generated_environment_round_trips(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text("torch==2.14.1\nopen_clip_torch==3.3.0\n")
    env = tmp_path / "environment.yml"
    env.write_text(lockfile.environment_yml(lockfile.read_lock(lock), lock))
    assert lockfile.environment_pins(env) == lockfile.read_lock(lock)
