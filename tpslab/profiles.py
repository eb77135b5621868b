"""Profiles: one YAML file per scale of work (``tpslab/profiles/*.yaml``), and the runs they plan.

* ``smoke``: tiny random CLIP, synthetic data, CPU, minutes (the default; what CI runs);
* ``course``: ViT-B-16 ``openai`` at 224, small data, a laptop CPU;
* ``paper``: ViT-L-14-336 ``openai`` at 518, the paper's data sets and recipe, a GPU.

A profile names the model settings (:class:`tpslab.methods.tps.model.TPSConfig` fields), the training
recipe (:class:`tpslab.methods.train.TrainConfig` fields), the data (:class:`DataConfig`), the
evaluation (:class:`tpslab.evaluation.evaluate.EvalConfig`), and what the notebooks do
(:class:`NotebookConfig`, :class:`AblationConfig`), and the baselines' settings (``methods:``, one entry per
method of :mod:`tpslab.methods`, checked by its ``Settings``). Every section rejects unknown keys;
``overrides`` (``section.key=value``, as ``tpslab train --set`` takes them) change any value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from tpslab.configs import EvalConfig, TPSConfig, TrainConfig
from tpslab.methods import method_module
from tpslab.utils import SettingsDict, TPSLabError, check_types, shown

PROFILE_DIR = Path(__file__).parent / "profiles"
SYNTHETIC_LABEL = "synthetic data, tiny CLIP with random weights: not paper numbers"
MINI_LABEL = "synthetic data, tpslab-mini (trained on generated captions): not CLIP, not paper numbers"


@dataclass
class DataConfig(SettingsDict):
    """A profile's ``data:`` section: what is trained on and what is evaluated."""

    SECTION: ClassVar[str] = "data"

    kind: str = "synthetic"  # "synthetic" (made here) or "real" (prepared with `tpslab prepare`)
    train: str = "train-domain"  # the auxiliary data set (its test split is trained on)
    test: list[str] = field(default_factory=lambda: ["heldout-domain"])  # evaluated zero-shot
    root: str = "synthetic"  # synthetic data: its folder under the data root
    synthetic: dict[str, Any] = field(default_factory=dict)  # make_synthetic_pair arguments
    auxiliary_for: dict[str, str] = field(default_factory=dict)  # test set -> auxiliary set used for it instead
    medical: dict[str, dict[str, Any]] = field(default_factory=dict)  # task -> {train: set, test: [sets]}
    roots: dict[str, str] = field(default_factory=dict)  # real data set -> its folder under the data root

    def __post_init__(self) -> None:
        """Check the kind and the medical tasks."""
        if self.kind not in ("synthetic", "real"):
            raise TPSLabError(f"data kind must be 'synthetic' or 'real', got {self.kind!r}")
        for task, spec in self.medical.items():
            if set(spec) != {"train", "test"}:
                raise TPSLabError(f"data.medical.{task}: expected the keys train and test, got {sorted(spec)}")


    def folder(self, name: str) -> str:
        """A real data set's folder under the data root."""
        return self.roots.get(name, name)


@dataclass
class NotebookConfig(SettingsDict):
    """A profile's ``notebooks:`` section."""

    SECTION: ClassVar[str] = "notebooks"

    examples: int = 6  # images per example-map figure
    untrained_baseline: bool = False  # 03 also scores the untrained model
    explain_images: int = 64  # 05: held-out images behind the per-layer numbers
    train_per_class: int | None = None  # 02: train on the first N images of each class (None: all)


@dataclass
class AblationConfig(SettingsDict):
    """A profile's ``ablation:`` section (notebook 04)."""

    SECTION: ClassVar[str] = "ablation"

    test: list[str] = field(default_factory=list)  # data sets every row is evaluated on
    per_class: int | None = None  # auxiliary images per class (None: all)
    train: dict[str, Any] = field(default_factory=dict)  # overrides of the profile's train section
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)  # row name -> model settings that differ

    @classmethod
    def coerce(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Empty ``train`` and ``runs`` sections (``null`` in YAML) as empty dicts."""
        return {k: (v or {}) if k in ("train", "runs") else v for k, v in data.items()}


@dataclass
class CompareConfig(SettingsDict):
    """A profile's ``compare:`` section: ``tpslab compare`` and notebook 06 (Tables 1-3, Figure 3).

    Replicate ``k`` of a trained method uses training seed ``train.seed + k`` and ``init_seed``
    ``seed + 1 + k`` (replicate 0 is the profile's own run, which notebooks 02 and 04 train);
    the CLIP weights are the same in every replicate.
    """

    SECTION: ClassVar[str] = "compare"

    methods: list[str] | None = None  # columns; None: tps and every method of the profile's methods section
    seeds: int = 1  # replicates of each trained method (TPS, AnomalyCLIP, the ablation rows)
    ablation: bool = True  # also the ablation rows (Figure 3) on the ablation section's data sets
    n_boot: int = 1000  # bootstrap resamples of each class's images (stratified by label)
    boot_seed: int = 0  # seed of the resampling: every method is scored on the same resamples (paired)
    level: float = 0.95  # level of the bootstrap intervals
    harmonised_size: int = 518  # "harmonised" protocol: every map resized to this size, ...
    harmonised_sigma: float = 4.0  # ... smoothed with this sigma at 518 px (scaled), masks > 0.5, exact AUPRO

    def __post_init__(self) -> None:
        """Check the counts and the level."""
        if self.seeds < 1 or self.n_boot < 0 or not 0 < self.level < 1 or self.harmonised_size < 8:
            raise TPSLabError("compare: seeds >= 1, n_boot >= 0, 0 < level < 1 and harmonised_size >= 8 expected")


@dataclass
class Profile:
    """A parsed profile file."""

    name: str
    description: str
    model: dict[str, Any]  # TPSConfig fields
    train: dict[str, Any]  # TrainConfig fields
    data: DataConfig
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    notebooks: NotebookConfig = field(default_factory=NotebookConfig)
    ablation: AblationConfig = field(default_factory=AblationConfig)
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)  # baseline -> its settings (TPS: model)
    compare: CompareConfig = field(default_factory=CompareConfig)
    device: str = "auto"  # "auto", "cpu", "cuda" or "cuda:N"
    threads: int | None = None  # torch threads (None: torch's default)

    @property
    def model_config(self) -> TPSConfig:
        """The model section as a :class:`TPSConfig`."""
        return TPSConfig.from_dict(self.model)

    def method_settings(self, method: str) -> dict[str, Any]:
        """The settings a method runs with under this profile: ``model`` for TPS, ``methods.<name>`` otherwise."""
        return dict(self.model) if method == "tps" else dict(self.methods.get(method) or {})

    @property
    def compared_methods(self) -> list[str]:
        """The method columns of ``tpslab compare``: ``compare.methods``, else TPS and the profile's baselines."""
        return list(self.compare.methods or ["tps", *self.methods])

    @property
    def train_config(self) -> TrainConfig:
        """The train section as a :class:`TrainConfig`."""
        return TrainConfig.from_dict(self.train)

    @property
    def label(self) -> str:
        """What this profile's numbers are, printed under every figure title and atop every table."""
        synthetic = self.data.kind == "synthetic"
        if self.model_config.backbone == "tpslab-mini" and self.model_config.pretrained:
            return MINI_LABEL if synthetic else f"tpslab-mini (trained on generated captions), profile {self.name}: " \
                "not CLIP, not paper numbers"
        if synthetic and self.model_config.pretrained is None:
            if self.model_config.backbone.startswith("tpslab-"):
                return SYNTHETIC_LABEL
            return f"synthetic data, {self.model_config.backbone} with random weights: not paper numbers"
        if synthetic:
            return f"synthetic data, profile {self.name}: not paper numbers"
        return f"tpslab, profile {self.name}"

    def apply_threads(self) -> None:
        """Set torch's thread count if the profile names one (tiny models: more threads only add overhead)."""
        if self.threads:
            import torch

            torch.set_num_threads(int(self.threads))


SECTIONS = {"model": TPSConfig, "train": TrainConfig, "data": DataConfig, "evaluate": EvalConfig,
            "notebooks": NotebookConfig, "ablation": AblationConfig, "methods": dict, "compare": CompareConfig}


def check_methods(methods: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A profile's ``methods:`` section (baseline name -> settings), each checked by its method's ``Settings``."""
    checked = {}
    for name, settings in methods.items():
        if name == "tps":
            raise TPSLabError("methods.tps: TPS's settings are the profile's model section")
        method_module(name).Settings.from_dict(dict(settings or {}))  # unknown method or setting -> TPSLabError
        checked[name] = dict(settings or {})
    return checked


def available_profiles() -> list[str]:
    """The built-in profiles' names."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def synthetic_profiles() -> list[str]:
    """The built-in profiles whose data are synthetic (those ``tpslab demo`` runs), read without building them."""
    names = []
    for path in sorted(PROFILE_DIR.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text()) or {}
        if (raw.get("data") or {}).get("kind", DataConfig.kind) == "synthetic":
            names.append(path.stem)
    return names


def parse_override(text: str) -> tuple[str, str, Any]:
    """``"section.key=value"`` -> (section, key, value); the value is read as YAML (``3``, ``null``, ``[a, b]``).

    >>> parse_override("train.epochs=3")
    ('train', 'epochs', 3)
    >>> parse_override("methods.clip.image_size=224")  # a baseline's setting: methods.NAME.KEY
    ('methods', 'clip.image_size', 224)
    """
    target, sep, value = text.partition("=")
    section, dot, key = target.strip().partition(".")
    if not (sep and dot and key):
        raise TPSLabError(f"--set {text!r}: expected SECTION.KEY=VALUE, e.g. train.epochs=3")
    if section not in SECTIONS and section not in ("device", "threads"):
        raise TPSLabError(f"--set {text!r}: unknown section {section!r}; known: {', '.join(SECTIONS)}")
    try:
        return section, key, yaml.safe_load(value)
    except yaml.YAMLError as err:
        raise TPSLabError(f"--set {text!r}: the value is not valid YAML") from err


def load_profile(name_or_path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> Profile:
    """Load a built-in profile by name, or any profile YAML file by path, with ``section.key=value`` overrides.

    Raises:
        TPSLabError: unknown profile, bad YAML, a missing section, or an unknown or bad setting.
    """
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILE_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise TPSLabError(f"unknown profile {str(name_or_path)!r}; built in: {', '.join(available_profiles())}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise TPSLabError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from err
    missing = [k for k in ("name", "model", "train", "data") if k not in raw]
    if missing:
        raise TPSLabError(f"{path}: missing section(s) {', '.join(missing)}")
    unknown = sorted(set(raw) - set(SECTIONS) - {"name", "description", "device", "threads"})
    if unknown:
        raise TPSLabError(f"{path}: unknown section(s) {', '.join(unknown)}")
    sections = {k: dict(raw.get(k) or {}) for k in SECTIONS}
    for section, key, value in map(parse_override, overrides):
        if section == "methods":
            method, dot, field_ = key.partition(".")
            if not dot:
                raise TPSLabError(f"--set methods.{key}: expected methods.NAME.KEY=VALUE, e.g. methods.clip.seed=1")
            sections["methods"].setdefault(method, {})
            sections["methods"][method] = {**(sections["methods"][method] or {}), field_: value}
        else:
            sections[section][key] = value
    typed = {"model": TPSConfig, "train": TrainConfig, "evaluate": EvalConfig, "compare": CompareConfig,
             "data": DataConfig, "notebooks": NotebookConfig, "ablation": AblationConfig}
    for section, cls in typed.items():  # wrong types are one line naming the key, not a traceback later
        sections[section] = check_types(cls, sections[section], section)
    for method, values in sections["methods"].items():
        if method != "tps" and values:
            sections["methods"][method] = check_types(method_module(method).Settings, dict(values), f"methods.{method}")
    TPSConfig.from_dict(sections["model"])  # reject unknown or bad settings now, not at training time
    TrainConfig.from_dict(sections["train"])
    return Profile(name=raw["name"], description=raw.get("description", ""), model=sections["model"],
                   train=sections["train"], data=DataConfig.from_dict(sections["data"]),
                   evaluate=EvalConfig.from_dict(sections["evaluate"]),
                   notebooks=NotebookConfig.from_dict(sections["notebooks"]),
                   ablation=AblationConfig.from_dict(sections["ablation"]),
                   methods=check_methods(sections["methods"]), compare=CompareConfig.from_dict(sections["compare"]),
                   device=raw.get("device", "auto"),
                   threads=raw.get("threads"))


def data_root(override: str | os.PathLike | None = None) -> Path:
    """Where data sets live: ``override``, else ``$TPSLAB_DATA``, else ``./data``."""
    return Path(override or os.environ.get("TPSLAB_DATA") or "data")


def results_root(override: str | os.PathLike | None = None) -> Path:
    """Where results go: ``override``, else ``$TPSLAB_RESULTS``, else ``./results``."""
    return Path(override or os.environ.get("TPSLAB_RESULTS") or "results")


# ----------------------------------------------------------------------------- run planning


def training_runs(profile: Profile) -> dict[str, str]:
    """Run name -> auxiliary data set: "main", one per ``auxiliary_for`` entry, the medical ones."""
    data = profile.data
    runs = {"main": data.train}
    runs.update({f"aux-{aux}": aux for aux in data.auxiliary_for.values()})
    runs.update({f"medical-{task}": spec["train"] for task, spec in data.medical.items()})
    return runs


def evaluation_plan(profile: Profile) -> list[tuple[str, str]]:
    """(data set, run) pairs to evaluate: each test set with its model, then the medical ones."""
    data = profile.data
    plan = [(name, f"aux-{data.auxiliary_for[name]}" if name in data.auxiliary_for else "main") for name in data.test]
    plan += [(name, f"medical-{task}") for task, spec in data.medical.items() for name in spec["test"]]
    return plan


def industrial_runs(profile: Profile) -> dict[str, str]:
    """Data set -> the run of the paper's Tables 1-2 that evaluates it (every run but the medical ones)."""
    return {d: r for d, r in evaluation_plan(profile) if not r.startswith("medical-")}


def needed_datasets(profile: Profile) -> list[str]:
    """Every data set a profile's notebooks read, in order, without repeats."""
    names = list(training_runs(profile).values()) + [d for d, _ in evaluation_plan(profile)]
    return list(dict.fromkeys(names + profile.ablation.test))


def missing_datasets(profile: Profile, root: Path) -> list[str]:
    """The command that makes each missing ``meta.json`` of a real data set (none for synthetic data)."""
    if profile.data.kind == "synthetic":
        return []
    folders = {n: root / profile.data.folder(n) for n in needed_datasets(profile)}
    return [f"`tpslab prepare {n} {shown(f)}`" for n, f in folders.items() if not (f / "meta.json").is_file()]


def locate_datasets(profile: Profile, root: Path, progress: bool = False) -> dict[str, Path]:
    """Data set name -> meta.json: the synthetic domains made (or reused), or each prepared real set found.

    Raises:
        TPSLabError: a real data set is not prepared (naming the command that prepares it).
    """
    data = profile.data
    if data.kind == "synthetic":
        from tpslab.data.synthetic import make_synthetic_pair  # lazy: PIL and numpy only when data is made

        metas = make_synthetic_pair(root / data.root, progress=progress, **data.synthetic)
        return {path.parent.name: path for path in metas.values()}
    missing = missing_datasets(profile, root)
    if missing:
        raise TPSLabError(f"data sets not prepared (get them as data/README.md says, then run): {'; '.join(missing)}")
    return {n: root / data.folder(n) / "meta.json" for n in needed_datasets(profile)}
