"""The caption corpus (tpslab.data.captions) and tpslab-mini's pre-training (tpslab.backbone.pretrain)."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
from safetensors import safe_open

from tpslab.backbone.loading import shipped_weights
from tpslab.backbone.pretrain import (
    CHECKPOINT,
    MINI,
    PretrainConfig,
    contrastive_loss,
    load_weights,
    new_model,
    pretrain,
    zero_shot,
)
from tpslab.cli import main
from tpslab.data.captions import ANOMALOUS_WORDS, CLASSES, DEFECTS, NORMAL_WORDS, PICTURES, CaptionCorpus, add_defect
from tpslab.data.synthetic_sample import HELDOUT_CLASSES, TRAIN_CLASSES
from tpslab.utils import TPSLabError

TINY = {"steps": 3, "batch_size": 8, "warmup": 1, "save_every": 2, "eval_images": 16, "threads": 1}


def test_pairs_are_a_function_of_seed_and_index():
    a, b = CaptionCorpus(seed=1), CaptionCorpus(seed=1)
    for i in (0, 7, 123):
        pa, pb = a.pair(i), b.pair(i)
        assert np.array_equal(pa.image, pb.image) and pa.caption == pb.caption and pa.flipped == pb.flipped
    assert not np.array_equal(CaptionCorpus(seed=2).pair(0).image, a.pair(0).image)


def test_captions_say_the_state_and_the_flipped_caption_says_the_other():
    corpus = CaptionCorpus(seed=0)
    for i in range(60):
        p = corpus.pair(i)
        own, other = (ANOMALOUS_WORDS, NORMAL_WORDS) if p.anomalous else (NORMAL_WORDS, ANOMALOUS_WORDS)
        assert p.cls in p.caption and p.cls in p.flipped
        assert any(w in p.caption for w in own) and any(w in p.flipped for w in other)
        assert p.image.shape == (64, 64, 3) and p.image.dtype == np.uint8
        if not p.anomalous:
            assert np.array_equal(p.image, p.clean)


def test_twins_are_one_crop_with_and_without_its_defect():
    good, bad = CaptionCorpus(seed=0).twins(5)
    assert good.defect is None and bad.defect in DEFECTS and good.cls == bad.cls
    assert np.array_equal(good.image, bad.clean) and not np.array_equal(good.image, bad.image)


@pytest.mark.parametrize("defect", DEFECTS)
def test_each_defect_changes_only_its_mask(defect):
    img = np.full((64, 64, 3), 128, np.uint8)
    out, mask = add_defect(img, defect, np.random.default_rng(3))
    assert mask.any() and np.array_equal(out[~mask], img[~mask]) and not np.array_equal(out[mask], img[mask])


def test_the_smoke_domains_are_never_in_the_corpus():
    assert not set(PICTURES) & (set(TRAIN_CLASSES) | set(HELDOUT_CLASSES))
    assert not set(CLASSES) & (set(TRAIN_CLASSES) | set(HELDOUT_CLASSES))
    with pytest.raises(TPSLabError, match="unknown corpus"):
        CaptionCorpus(classes=("camera",))


def test_the_flipped_caption_is_a_hard_negative_in_the_loss():
    cfg = PretrainConfig(**TINY)
    model = new_model(cfg)
    import open_clip

    tok = open_clip.get_tokenizer(cfg.architecture)
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    texts, flipped = ["a damaged clock."] * 2 + ["a flawless clock."] * 2, ["a flawless clock."] * 2 + ["a damaged clock."] * 2
    plain = contrastive_loss(model, tok, images, texts, flipped, 0.0)
    hard = contrastive_loss(model, tok, images, texts, flipped, 3.0)
    assert hard.item() > plain.item() > 0


def test_a_short_run_is_deterministic_and_resumes_to_the_same_weights(tmp_path, monkeypatch):
    from tpslab.backbone import pretrain as module

    cfg = PretrainConfig(**TINY)
    a = pretrain(cfg, tmp_path / "a", progress=False)
    b = pretrain(cfg, tmp_path / "b", progress=False)
    real = module.batch

    def interrupted(corpus, step, size):
        if step == 2:
            raise KeyboardInterrupt
        return real(corpus, step, size)

    monkeypatch.setattr(module, "batch", interrupted)
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C during step 3: the checkpoint of step 2 stays
        pretrain(cfg, tmp_path / "c", progress=False)
    monkeypatch.setattr(module, "batch", real)
    c = pretrain(cfg, tmp_path / "c", resume=True, progress=False)  # resumes at step 2
    with safe_open(a, "pt") as fa, safe_open(b, "pt") as fb, safe_open(c, "pt") as fc:
        for key in fa.keys():
            assert torch.equal(fa.get_tensor(key), fb.get_tensor(key)), key
            assert torch.equal(fa.get_tensor(key), fc.get_tensor(key)), key
        meta = fa.metadata()
        assert fa.get_tensor("logit_scale").dtype == torch.float16
    assert json.loads(meta["pretrain"])["steps"] == 3 and json.loads(meta["corpus"])["seed"] == 0
    numbers = json.loads(meta["zero_shot"])
    assert set(numbers) == {"class_accuracy", "retrieval_r1", "state_auroc_corpus", "state_auroc_heldout"}
    assert all(0 <= v <= 100 for v in numbers.values()) and "not CLIP" in meta["note"]
    assert (tmp_path / "a" / "history.csv").read_text().count("\n") == 4
    loss = [line.split(",")[1] for line in (tmp_path / "a" / "history.csv").read_text().splitlines()[1:]]
    assert loss == [line.split(",")[1] for line in (tmp_path / "c" / "history.csv").read_text().splitlines()[1:]]


def test_the_learning_curve_is_measured_every_eval_every_steps(tmp_path):
    pretrain(PretrainConfig(**{**TINY, "steps": 4, "eval_every": 2}), tmp_path, progress=False)
    rows = (tmp_path / "zero_shot.csv").read_text().splitlines()
    assert rows[0].startswith("step,pairs,class_accuracy") and [r.split(",")[0] for r in rows[1:]] == ["2", "4"]


def test_resuming_another_recipe_is_refused(tmp_path):
    pretrain(PretrainConfig(**TINY), tmp_path, progress=False)
    with pytest.raises(TPSLabError, match="another recipe"):
        pretrain(PretrainConfig(**{**TINY, "lr": 0.5}), tmp_path, resume=True, progress=False)


def test_the_weights_load_as_a_clip_backbone(tmp_path):
    from tpslab.methods import build_method

    path = pretrain(PretrainConfig(**TINY), tmp_path, progress=False)
    method = build_method("clip", backbone="tpslab-mini", pretrained=str(path), image_size=None)
    out = method.predict(torch.randn(2, 3, 64, 64), ["clock", "clock"])
    assert out.image_scores.shape == (2,) and torch.isfinite(out.anomaly_maps).all()


def test_cli_refuses_to_replace_a_run_without_force(tmp_path, capsys):
    (tmp_path / CHECKPOINT).write_bytes(b"")
    assert main(["pretrain-mini", "--out", str(tmp_path), "--steps", "1", "--batch-size", "4", "--quiet"]) == 2
    assert "--resume" in capsys.readouterr().err


def test_the_shipped_weights_measure_what_they_record():
    model, tokenizer, cfg, meta = load_weights()  # tpslab/weights/tpslab-mini.safetensors
    assert shipped_weights(MINI).stat().st_size <= 10 * 2**20 and "not CLIP" in meta["note"]
    assert cfg == PretrainConfig(**{**asdict(PretrainConfig()), "save_every": cfg.save_every})  # today's recipe
    assert meta["curve"] and meta["curve"][-1]["step"] < cfg.steps
    now = zero_shot(model, tokenizer, cfg)
    # Another CPU or attention kernel changes the last bits and flips a few images: retrieval picks one of 256
    # captions, many nearly tied (measured 14.06-16.02 against 14.45 recorded: up to 4 images, 0.39 points each);
    # the AUROCs rank pairs and move less.
    for key, recorded in meta["zero_shot"].items():
        tolerance = 2.0 if key in ("class_accuracy", "retrieval_r1") else 1.0
        assert abs(now[key] - recorded) <= tolerance, (key, now[key], recorded)
    assert meta["zero_shot"]["state_auroc_heldout"] >= 80  # the words carry the state to unseen classes


def test_pretrained_tpslab_is_the_shipped_file():
    from tpslab.methods import build_method

    clip = build_method("clip", backbone=MINI, pretrained="tpslab", image_size=None)
    model = load_weights()[0]
    assert torch.equal(clip.backbone.clip.visual.conv1.weight, model.visual.conv1.weight)
    assert torch.equal(clip.backbone.clip.token_embedding.weight, model.token_embedding.weight)
    with pytest.raises(TPSLabError, match="no weights ship with tpslab for 'tpslab-tiny'"):
        build_method("clip", backbone="tpslab-tiny", pretrained="tpslab", image_size=None)
