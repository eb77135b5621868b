"""How the command line settles a run's settings: profile < ``--set`` < flags, and what a checkpoint fixes.

* :func:`settings`: the method's, training's and evaluation's settings and the device.
* :func:`resume_settings`: a resumed run takes its settings from its checkpoint; a flag (or
  profile value) that contradicts one that changes results is named in the error, one that
  does not (device, workers, feature cache) is accepted, and ``--epochs`` may extend the run.
* :func:`checkpoint_conflicts`: the model flags that contradict a checkpoint given to
  ``evaluate`` or ``predict``.
* :func:`split_samples`: a split (and classes) that holds images, or a one-line error.

Nothing here imports torch at module level.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tpslab.cli.args import FLAGS
from tpslab.configs import NO_EFFECT_ON_RESULTS as NO_EFFECT
from tpslab.configs import EvalConfig, TPSConfig, TrainConfig
from tpslab.utils import TPSLabError

FIXED_BY_CHECKPOINT = ("backbone", "variant", "seed")  # model flags a checkpoint fixes (image size, weights may move)


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The explicit flags of dataclass ``cls`` that were given."""
    prefix = f"{cls.__name__}."
    got = {k[len(prefix):]: v for k, v in vars(args).items() if k.startswith(prefix) and v is not None}
    if got.get("pretrained") == "":  # --pretrained none (see tpslab.utils.weights_arg): random weights
        got["pretrained"] = None
    return got


def profile_settings(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], str]:
    """(method, train, evaluate settings, device) of ``--profile`` and ``--set`` alone (empty without a profile)."""
    from tpslab.profiles import load_profile

    if args.profile:
        prof = load_profile(args.profile, args.overrides)
        prof.apply_threads()
        train_ = {**({"threads": prof.threads} if prof.threads else {}), **prof.train}  # stored in checkpoints
        return prof.method_settings(args.method), train_, asdict(prof.evaluate), prof.device
    if args.overrides and args.command in ("evaluate", "predict"):
        return _sets_without_profile(args)
    if args.overrides:
        raise TPSLabError("--set changes a profile's settings: give --profile too")
    return {}, {}, {}, "auto"


def _sets_without_profile(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], str]:
    """``--set`` without ``--profile`` (evaluate, predict): ``evaluate.*`` and the method's own settings."""
    from tpslab.methods import method_module
    from tpslab.profiles import parse_override
    from tpslab.utils import check_types

    own = "model" if args.method == "tps" else f"methods.{args.method}"
    model: dict[str, Any] = {}
    ev: dict[str, Any] = {}
    for text in args.overrides:
        section, key, value = parse_override(text)
        if section == "evaluate":
            ev[key] = value
        elif f"{section}.{key}".startswith(f"{own}.") or section == own:
            model[key.rpartition(".")[2]] = value
        else:
            raise TPSLabError(f"--set {text}: without --profile, {args.command} takes evaluate.KEY=VALUE and "
                              f"{own}.KEY=VALUE (the settings of --method {args.method})")
    ev = check_types(EvalConfig, ev, "evaluate")
    EvalConfig.from_dict(ev)
    Settings = TPSConfig if args.method == "tps" else method_module(args.method).Settings
    model = check_types(Settings, model, own)
    return model, {}, ev, "auto"


def settings(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any], EvalConfig, str]:
    """(method, train, evaluate settings, device) from profile < --set < flags.

    The method's settings are the profile's ``model`` section for TPS and its
    ``methods.<name>`` section for a baseline; the model flags (--backbone, --pretrained,
    --image-size, --seed) apply to any method, --variant to TPS only.
    """
    model, train_, ev, device = profile_settings(args)
    flags = given(args, TPSConfig)
    if args.method != "tps" and "variant" in flags:
        raise TPSLabError(f"--variant is a TPS setting; {args.method} has none")
    device = args.device or device
    ev = EvalConfig.from_dict({**ev, **given(args, EvalConfig), "device": device})
    model = {**model, **flags}
    if str(model.get("backbone", "")).startswith("tpslab-") and "pretrained" not in model:
        model["pretrained"] = None  # a tpslab-* test backbone has no released weights: every method takes random ones
    return model, {**train_, **given(args, TrainConfig)}, ev, device


def _named(cls: type, key: str, value: Any, flags: dict[str, Any]) -> str:
    """How a setting was asked for: ``--epochs 5``, or ``train.epochs=5 (from --profile/--set)``."""
    if key in flags:
        return f"{FLAGS[f'{cls.__name__}.{key}']} {value}"
    section = "train" if cls is TrainConfig else "model"
    return f"{section}.{key}={value} (from --profile/--set)"


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def resume_settings(args: argparse.Namespace, ckpt: dict[str, Any], where: str | Path) -> tuple[dict[str, Any],
                                                                                                   dict[str, Any]]:
    """The model and training settings of a resumed run: the checkpoint's, with what may change.

    Args:
        args: the parsed ``tpslab train`` arguments (``args.method`` is the checkpoint's already).
        ckpt: the checkpoint (:func:`tpslab.methods.checkpoint.read_checkpoint`).
        where: its path, for messages.

    Returns:
        (model settings, training settings); the device is left to the caller.

    Raises:
        TPSLabError: one line naming every flag or profile value that contradicts the checkpoint.
    """
    from tpslab.methods import method_module

    prof_model, prof_train, _, _ = profile_settings(args)
    saved_model, saved_train = ckpt["model_config"], dict(ckpt.get("train_config") or asdict(TrainConfig()))
    problems = []
    flags = given(args, TPSConfig)
    wanted = {**prof_model, **flags}
    resolved = method_module(args.method).Settings.from_dict({**saved_model, **wanted}).to_dict()
    for key, value in wanted.items():
        if _plain(resolved.get(key)) != _plain(saved_model.get(key)):
            problems.append(f"{_named(TPSConfig, key, value, flags)} differs from the checkpoint's {saved_model[key]}")
    tflags = given(args, TrainConfig)
    twanted = {**prof_train, **tflags}
    for key, value in twanted.items():
        if key not in NO_EFFECT and key != "epochs" and _plain(value) != _plain(saved_train.get(key)):
            problems.append(f"{_named(TrainConfig, key, value, tflags)} differs from the checkpoint's "
                            f"{saved_train.get(key)}")
    epochs = twanted.get("epochs", saved_train["epochs"])
    if epochs < saved_train["epochs"]:
        problems.append(f"{_named(TrainConfig, 'epochs', epochs, tflags)} differs from the checkpoint's "
                        f"{saved_train['epochs']} (a resumed run can only be extended)")
    problems += _data_differences(args, ckpt.get("data"))
    if problems:
        raise TPSLabError(f"cannot resume {where}: {'; '.join(problems)} (drop them, or train into another --out)")
    saved_train.update({k: v for k, v in twanted.items() if k in NO_EFFECT}, epochs=epochs)
    saved_train.pop("device", None)
    return dict(saved_model), saved_train


def _data_differences(args: argparse.Namespace, saved: dict[str, Any] | None) -> list[str]:
    """How the data of a resumed run differs from the data its checkpoint was trained on (none if not recorded)."""
    from tpslab.data.meta import load_meta

    if not saved:
        return []
    meta = load_meta(args.data, check_files=False)
    problems = []
    if Path(saved["root"]).resolve() != meta.root.resolve():
        problems.append(f"data {meta.root} differs from the checkpoint's {saved['root']}")
    if saved.get("split") and args.split != saved["split"]:
        problems.append(f"--split {args.split} differs from the checkpoint's {saved['split']}")
    elif args.split in meta.splits:
        classes = sorted(args.classes or meta.classes(args.split))
        if classes != saved.get("classes", classes):
            problems.append(f"--classes {','.join(classes)} differs from the checkpoint's {','.join(saved['classes'])}")
    return problems


def checkpoint_conflicts(args: argparse.Namespace, ckpt: dict[str, Any], where: str) -> None:
    """Refuse model flags that contradict the checkpoint given to evaluate or predict.

    Raises:
        TPSLabError: naming the flag, its value and the checkpoint's.
    """
    saved = ckpt["model_config"]
    for key, value in given(args, TPSConfig).items():
        if key in FIXED_BY_CHECKPOINT and key in saved and value != saved[key]:
            flag = FLAGS[f"TPSConfig.{key}"]
            raise TPSLabError(f"{flag} {value} contradicts {where}, made with {key} {saved[key]}: the checkpoint "
                              f"fixes it (drop {flag})")


def checkpoint_overrides(args: argparse.Namespace, model_settings: dict[str, Any], ckpt: dict[str, Any],
                         where: str) -> dict[str, Any]:
    """The weights and size a given checkpoint is loaded with, beside its own settings.

    Refuses flags that contradict the checkpoint (:func:`checkpoint_conflicts`). A profile's
    ``pretrained`` and ``image_size`` are for the profile's backbone: they apply to a checkpoint of
    that backbone only; flags given on the command line apply to any checkpoint.
    """
    checkpoint_conflicts(args, ckpt, where)
    own = model_settings.get("backbone") == ckpt["model_config"].get("backbone")
    flags = given(args, TPSConfig)
    return {k: v for k, v in model_settings.items() if k in ("pretrained", "image_size") and v and (own or k in flags)}


def split_samples(data: str | Path, split: str, classes: list[str] | None) -> list[dict[str, Any]]:
    """The samples of ``split`` (and ``classes``) of a prepared data set; an error if there are none.

    Raises:
        TPSLabError: no meta.json, no such split or class, or no image in them.
    """
    from tpslab.data.meta import load_meta, meta_file

    meta = load_meta(data)
    if not meta.splits.get(split):
        present = ", ".join(f"{s} ({sum(len(v) for v in c.values())} images)" for s, c in meta.splits.items())
        raise TPSLabError(f"{meta_file(data)}: split {split!r} has no images (it has: {present or 'nothing'}); "
                          "choose another --split")
    samples = meta.samples(split, classes)
    if not samples:
        raise TPSLabError(f"{meta_file(data)}: classes {', '.join(classes or [])} of split {split!r} have no images")
    return samples


def training_data_warnings(samples: list[dict[str, Any]]) -> list[str]:
    """What is odd about training samples: all normal, or anomalous images without masks."""
    anomalous = [s for s in samples if s["anomaly"]]
    if samples and not anomalous:
        return [f"all {len(samples)} training images are normal: the losses see no defect to learn from (train on "
                "a split with anomalous images and masks, e.g. the auxiliary data set's test split)"]
    no_mask = [s for s in anomalous if not s.get("mask_path")]
    if no_mask:
        return [f"{len(no_mask)} of {len(anomalous)} anomalous training images have no mask (e.g. "
                f"{no_mask[0]['img_path']}): they train the image score only, not the maps"]
    return []
