"""The locked environment: requirements/lock.txt pins every dependency, environment.yml repeats the pins.

``make lock`` writes the lock (``pip freeze`` of a throw-away venv with all extras installed);
``python -m tpslab.dev.lockfile check`` fails when pyproject.toml asks for a package the lock lacks or
pins at a version outside the requirement, and ``python -m tpslab.dev.lockfile environment`` rewrites
environment.yml from the lock.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

from tpslab.utils import TPSLabError

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements" / "lock.txt"
ENVIRONMENT = ROOT / "environment.yml"


def canonical(name: str) -> str:
    """Normalise a distribution name (PEP 503): lower case, runs of ``-_.`` become ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def project_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[Requirement]:
    """Every requirement of pyproject.toml, core dependencies first, then every extra's."""
    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = [Requirement(r) for r in project.get("dependencies", [])]
    for extra in project.get("optional-dependencies", {}).values():
        reqs += [Requirement(r) for r in extra]
    return reqs


def read_lock(lock: Path = LOCK) -> dict[str, Version]:
    """Canonical name -> pinned version of every ``name==version`` line of the lock (comments skipped)."""
    pins: dict[str, Version] = {}
    for number, raw in enumerate(lock.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        if match is None:
            raise TPSLabError(f"{lock.name}:{number}: expected name==version, got {line!r}")
        pins[canonical(match.group(1))] = Version(match.group(2))
    return pins


def lock_problems(reqs: list[Requirement], pins: dict[str, Version]) -> list[str]:
    """One message per requirement that the lock does not pin, or pins at a version it excludes."""
    problems = []
    for req in reqs:
        version = pins.get(canonical(req.name))
        if version is None:
            problems.append(f"{req.name} is required by pyproject.toml but not pinned in the lock")
        elif not req.specifier.contains(version, prereleases=True):
            problems.append(f"{req.name}=={version} in the lock violates pyproject.toml's {req}")
    return problems


def environment_yml(pins: dict[str, Version], lock: Path = LOCK) -> str:
    """environment.yml's text: conda's python and pip, then every pin of the lock in its pip section."""
    names = {canonical(line.split("==")[0]): line.split("==")[0]
             for line in lock.read_text().splitlines() if "==" in line and not line.startswith("#")}
    lines = [
        "# Conda environment for tpslab, generated from requirements/lock.txt"
        " (python -m tpslab.dev.lockfile environment);",
        "# tests/test_lockfile.py checks that it names the lock's versions.",
        "# conda env create -f environment.yml && conda activate tpslab",
        "name: tpslab",
        "channels:",
        "  - conda-forge",
        "dependencies:",
        "  - python>=3.10",
        "  - pip",
        "  - pip:",
    ]
    lines += [f"      - {names.get(name, name)}=={version}" for name, version in sorted(pins.items())]
    lines.append("      - -e .")
    return "\n".join(lines) + "\n"


def environment_pins(environment: Path = ENVIRONMENT) -> dict[str, Version]:
    """Canonical name -> version of every pinned entry in environment.yml's pip section."""
    import yaml

    env = yaml.safe_load(environment.read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pins = {}
    for entry in pip:
        if entry.startswith("-e"):
            continue
        if "==" not in entry:
            raise TPSLabError(f"environment.yml: {entry!r} is not pinned (name==version)")
        name, version = entry.split("==", 1)
        pins[canonical(name)] = Version(version)
    return pins


def main(argv: list[str] | None = None) -> int:
    """``check`` (pyproject vs lock vs environment.yml) or ``environment`` (rewrite environment.yml)."""
    parser = argparse.ArgumentParser(prog="python -m tpslab.dev.lockfile", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["check", "environment"])
    args = parser.parse_args(argv)
    pins = read_lock()
    if args.command == "environment":
        ENVIRONMENT.write_text(environment_yml(pins))
        return 0
    problems = lock_problems(project_requirements(), pins)
    if environment_pins() != pins:
        problems.append("environment.yml does not name the lock's versions (python -m tpslab.dev.lockfile environment)")
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
