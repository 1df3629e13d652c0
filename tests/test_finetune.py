"""Fine-tuning: layer-wise lr decay, mixup / cutmix, losses and views, then real runs on tiny media files.

The media fixture writes bright clips with white noise and dark clips with a low tone (H.264 + AAC), so a tiny random
encoder can learn the label from either modality in a few epochs. The video run is spied on: every call of
``predict`` and every forward pass of the classifier is recorded, to check that the test split is scored once, after
epoch selection, with clips x crops views.
"""

import copy
import hashlib
import json
import os
import socket
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

import xkd.eval.finetune as ft
from xkd.config import DataConfig, FinetuneConfig, LogMelConfig
from xkd.data.manifest import Manifest, ManifestRow
from xkd.datasets.media_writer import write_media
from xkd.engine.optim import layer_decay_groups
from xkd.engine.weights import list_parts, load_weights
from xkd.eval.mixup import mixup_cutmix, smooth_targets
from xkd.eval.report import to_jsonable
from xkd.models.encoder import audio_encoder, tiny_model_config, video_encoder

SECONDS, FPS, SR = 2.0, 8.0, 16000


def write_clip(path, bright: bool, rng):
    """A 2 s clip: noisy frames around a bright or dark grey level; white noise (bright) or a low tone (dark)."""
    level = rng.uniform(150, 220) if bright else rng.uniform(30, 100)
    frames = level + rng.uniform(-25, 25, size=(int(SECONDS * FPS), 48, 64, 1))
    t = np.arange(int(SECONDS * SR)) / SR
    if bright:
        sound = rng.uniform(0.2, 0.4) * rng.standard_normal(len(t)).clip(-2.5, 2.5)
    else:
        sound = rng.uniform(0.2, 0.4) * np.sin(2 * np.pi * rng.uniform(200, 400) * t)
    write_media(path, np.repeat(frames, 3, axis=-1).clip(0, 255).astype(np.uint8), FPS, sound, SR)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """(train, test) manifests: 8 + 8 train clips and 3 + 3 test clips, plus one missing train file."""
    root = tmp_path_factory.mktemp("finetune-media")
    rng = np.random.default_rng(0)
    manifests = {}
    for split, per_class in (("train", 8), ("test", 3)):
        rows = []
        for i in range(2 * per_class):
            bright = i % 2 == 0
            path = f"{split}/clip{i:02d}.mp4"
            write_clip(root / path, bright, rng)
            rows.append(ManifestRow(path, ("bright" if bright else "dark",), split,
                                    extra={"sound": "noise" if bright else "tone"}))
        manifests[split] = rows
    manifests["train"].append(ManifestRow("train/missing.mp4", ("dark",), "train", extra={"sound": "tone"}))
    return Manifest(manifests["train"], root), Manifest(manifests["test"], root)


@pytest.fixture(scope="module")
def data_cfg():
    return DataConfig(clip_duration=SECONDS, video_fps=FPS, resize_short=32, logmel=LogMelConfig(n_mels=40))


def tiny_video_encoder(seed=0):
    torch.manual_seed(seed)
    return video_encoder(tiny_model_config())


def tiny_audio_encoder(seed=0):
    torch.manual_seed(seed)
    return audio_encoder(tiny_model_config())


FAST = dict(epochs=4, batch_size=4, lr=2e-3, min_lr=1e-5, warmup_epochs=1, layer_decay=0.75, weight_decay=0.05,
            val_fraction=0.25, num_workers=0, device="cpu", seed=0)


# ---------------------------------------------------------------------------------------------------------------------
# parameter groups, mixup, loss, recipes


def test_layer_decay_lr_follows_beit_formula():
    classifier = ft.Classifier(tiny_video_encoder(), num_classes=5)
    base, decay, depth = 1e-3, 0.6, 2
    groups = layer_decay_groups(classifier, base, weight_decay=0.05, layer_decay=decay)
    layer_of, decay_of = {}, {}
    for g in groups:
        assert g["lr"] == pytest.approx(base * decay ** (depth + 1 - g["layer_id"]))
        assert g["lr_scale"] == pytest.approx(decay ** (depth + 1 - g["layer_id"]))
        assert g["weight_decay"] == (0.05 if g["apply_decay"] else 0.0)
        for name in g["param_names"]:
            layer_of[name], decay_of[name] = g["layer_id"], g["apply_decay"]
    assert sorted(layer_of) == sorted(n for n, _ in classifier.named_parameters())  # every parameter, once
    assert layer_of["encoder.tokenizer.proj.weight"] == layer_of["encoder.cls_token"] == 0
    assert layer_of["encoder.pos_embed"] == 0
    assert layer_of["encoder.blocks.blocks.0.attn.qkv.weight"] == 1
    assert layer_of["encoder.blocks.blocks.1.mlp.fc2.bias"] == 2
    assert layer_of["encoder.norm.weight"] == layer_of["head.weight"] == depth + 1
    assert decay_of["encoder.blocks.blocks.0.attn.qkv.weight"] and decay_of["head.weight"]
    for name in ("encoder.cls_token", "encoder.pos_embed", "head.bias", "encoder.norm.weight",
                 "encoder.blocks.blocks.1.norm1.weight"):
        assert not decay_of[name], name


def test_mixup_targets_are_the_same_mix_as_the_inputs():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 1, 8, 12)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    mixed, t = mixup_cutmix(x, y, 5, mixup_alpha=0.8, generator=g)
    assert torch.allclose(t.sum(1), torch.ones(6))
    lam = float(t[1, 1])  # sample 1 (class 1) is mixed with sample 4 (class 4)
    assert 0 < lam < 1 and torch.allclose(mixed, lam * x + (1 - lam) * x.flip(0), atol=1e-6)
    assert torch.equal(x, x.clone())  # the input is untouched (mixed is a new tensor)


@pytest.mark.parametrize("shape", [(5, 3, 4, 16, 20), (5, 1, 16, 24)])
def test_cutmix_box_area_matches_lambda(shape):
    smoothing, classes = 0.1, 5
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        x = torch.arange(shape[0], dtype=torch.float32).view(-1, *[1] * (len(shape) - 1)).expand(shape).clone()
        y = torch.arange(shape[0])
        mixed, t = mixup_cutmix(x, y, classes, cutmix_alpha=1.0, smoothing=smoothing, generator=g)
        assert torch.allclose(t.sum(1), torch.ones(shape[0]))
        pasted = mixed != x  # [B, ...]: where the partner's pixels landed
        if len(shape) == 5:  # video: one box for every frame and channel
            assert (pasted == pasted[:, :1, :1]).all()
        fraction = pasted[0].float().mean().item()
        # t[i, y_i] = lam (1 - s) + s / C when the partner has another class
        lam = (t[0, 0].item() - smoothing / classes) / (1 - smoothing)
        assert fraction == pytest.approx(1 - lam, abs=1e-6)
        assert t[0, y[-1]].item() == pytest.approx((1 - lam) * (1 - smoothing) + smoothing / classes, abs=1e-6)


def test_no_mixing_gives_smoothed_one_hot():
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 2, 1, 2])
    out, t = mixup_cutmix(x, y, 3, mixup_alpha=1.0, cutmix_alpha=1.0, smoothing=0.1, prob=0.0,
                          generator=torch.Generator().manual_seed(0))
    assert out is x
    expected = torch.full((4, 3), 0.1 / 3)
    expected[torch.arange(4), y] += 0.9
    assert torch.allclose(t, expected)
    multi = torch.tensor([[1, 0, 1], [0, 1, 0]])
    assert torch.allclose(smooth_targets(multi, 3, 0.0), multi.float())


def test_loss_matches_torch_label_smoothing_and_bce():
    logits, y = torch.randn(7, 4), torch.randint(0, 4, (7,))
    loss = ft.soft_target_loss(logits, smooth_targets(y, 4, 0.1))
    assert loss.item() == pytest.approx(F.cross_entropy(logits, y, label_smoothing=0.1).item(), rel=1e-5)
    hot = (torch.rand(7, 4) > 0.5).float()
    bce = ft.soft_target_loss(logits, hot, multilabel=True)
    assert bce.item() == pytest.approx(F.binary_cross_entropy_with_logits(logits, hot).item(), rel=1e-6)


def test_recipes_follow_the_spec():
    ucf, hmdb, esc, fsd = (ft.finetune_recipe(n) for n in ("ucf101", "hmdb51", "esc50", "fsd50k"))
    assert (ucf.lr, ucf.warmup_epochs, ucf.layer_decay, ucf.mixup, ucf.cutmix) == (5e-4, 5, 0.45, 0.6, 0.5)
    assert (hmdb.lr, hmdb.warmup_epochs, hmdb.layer_decay, hmdb.mixup, hmdb.cutmix) == (1e-4, 20, 0.75, 1.0, 1.0)
    assert (ucf.video_view.crop_size, ucf.test_clips, ucf.test_crops, ucf.label_smoothing, ucf.dropout) == (224, 3, 3, 0.1, 0.5)
    assert (ucf.weight_decay, ucf.betas, ucf.min_lr, ucf.epochs) == (0.05, (0.9, 0.999), 1e-6, 100)
    assert (esc.batch_size, esc.lr, esc.warmup_epochs, esc.weight_decay, esc.layer_decay) == (64, 1e-4, 10, 0.005, 0.65)
    assert esc.l2_normalize_features and esc.test_clips == 3 and esc.dropout == 0.5
    assert (fsd.batch_size, fsd.epochs, fsd.lr, fsd.min_lr, fsd.warmup_start_lr) == (128, 30, 1e-4, 1e-4, 1e-6)
    assert fsd.multilabel and (fsd.weight_decay, fsd.dropout, fsd.test_clips) == (1e-5, 0.3, 8)
    assert esc.video_view.crop_size == 0  # the encoder's frame size
    assert ft.finetune_recipe("k400", ["epochs=3", "warmup_epochs=1"]).epochs == 3
    with pytest.raises(ValueError, match="warmup_epochs"):
        ft.finetune_recipe("k400", ["epochs=3"])
    with pytest.raises(ValueError, match="test_crops"):
        FinetuneConfig(test_crops=2)
    with pytest.warns(FutureWarning, match="'crop_size' is deprecated; write 'video_view.crop_size'"):
        assert ft.finetune_recipe("ucf101", ["crop_size=112"]).video_view.crop_size == 112
    with pytest.raises(FileNotFoundError, match="recipes here: esc50, fsd50k, hmdb51, k400, ucf101"):
        ft.finetune_recipe("ucf-101")


# ---------------------------------------------------------------------------------------------------------------------
# real runs


def fingerprint(model) -> str:
    digest = hashlib.sha256()
    for p in model.parameters():
        digest.update(p.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


VAL_FAVOURITE = 3  # the spied val scores make epoch 3 of 4 the best, so the chosen epoch is not the last one


@pytest.fixture(scope="module")
def video_run(media, data_cfg, tmp_path_factory):
    """Fine-tune a tiny video encoder at 48x48 (its configured grid is 32x32), loading clips in a DataLoader worker,
    while recording every ``predict`` call (paths, samples through the model, clips per video, weights) and every
    forward pass. Val top-1 is overridden to 1 after epoch ``VAL_FAVOURITE`` and 0.5 after the others."""
    train, test = media
    encoder = tiny_video_encoder()
    before = copy.deepcopy(encoder.state_dict())
    cfg = FinetuneConfig(**{**FAST, "num_workers": 1}, video_view=replace(FinetuneConfig().video_view, crop_size=48),
                         test_clips=2, test_crops=3, mixup=0.6, cutmix=0.5)
    events = []  # ("predict", paths, samples, clips per video, weights fingerprint) or ("forward", batch size)
    predict, forward, score = ft.predict, ft.Classifier.forward, ft.score_predictions

    def spy_predict(model, dataset, **kwargs):
        start = len(events)
        out = predict(model, dataset, **kwargs)
        samples = sum(e[1] for e in events[start:] if e[0] == "forward")
        events.append(("predict", [r.path for r in dataset.manifest], samples, dataset.clips_per_video,
                       fingerprint(model)))
        return out

    def spy_forward(self, x):
        events.append(("forward", x.shape[0]))
        return forward(self, x)

    def spy_score(*args):
        out = score(*args)
        epoch = sum(e[0] == "predict" for e in events)
        if epoch <= cfg.epochs:  # a val call (the test call comes last)
            out["metrics"]["top1"] = 1.0 if epoch == VAL_FAVOURITE else 0.5
        return out

    out_dir = tmp_path_factory.mktemp("finetune-out")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ft, "predict", spy_predict)
        patch.setattr(ft, "score_predictions", spy_score)
        patch.setattr(ft.Classifier, "forward", spy_forward)
        result = ft.finetune(encoder, train, test, "label", "video", cfg, data_cfg, out_dir=out_dir, progress=False)
    return dict(result=result, encoder=encoder, before=before, events=events, cfg=cfg, test=test)


def test_video_finetune_learns_far_above_chance(video_run):
    result = video_run["result"]
    assert result["metrics"]["top1"] >= 5 / 6  # 2 classes: chance is 1/2
    assert result["loss"] < 0.5  # an untrained (near-zero) head scores log 2 = 0.69 whatever its top-1
    assert result["class_names"] == ["bright", "dark"]
    assert result["confusion"].sum() == 6
    assert result["history"][-1]["train_loss"] < result["history"][0]["train_loss"]


def test_epoch_is_chosen_on_val_and_test_is_scored_once_after(video_run):
    result, events, test = video_run["result"], video_run["events"], video_run["test"]
    predicts = [e for e in events if e[0] == "predict"]
    test_paths = [r.path for r in test]
    assert len(predicts) == video_run["cfg"].epochs + 1
    assert predicts[-1][1] == test_paths  # the test split is read once, by the last call
    for _, paths, _, _, _ in predicts[:-1]:
        assert not set(paths) & set(test_paths)
    history = result["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert [h["val_top1"] for h in history] == [0.5, 0.5, 1.0, 0.5]
    assert result["chosen_epoch"] == VAL_FAVOURITE
    # the test is scored with the weights the chosen epoch was validated with, not the last epoch's
    assert predicts[-1][4] == predicts[VAL_FAVOURITE - 1][4] != predicts[-2][4]
    assert result["splits"] == {"train": 13, "val": 4, "test": 6}
    assert result["protocol"] == "fine-tune (video), epoch chosen on val"


def test_test_scores_clips_times_crops_per_video(video_run):
    predicts = [e for e in video_run["events"] if e[0] == "predict"]
    _, paths, samples, clips, _ = predicts[-1]
    assert clips == 2 and samples == len(paths) * 2 * 3  # every test video: 2 clips x 3 crops through the model
    assert video_run["result"]["test_views_per_video"] == 6
    assert all(p[2] == len(p[1]) for p in predicts[:-1])  # val: 1 clip, 1 crop


def test_callers_encoder_is_untouched(video_run):
    after = video_run["encoder"].state_dict()
    assert all(torch.equal(after[k], v) for k, v in video_run["before"].items())


def test_best_weights_and_bad_media_are_reported(video_run):
    result = video_run["result"]
    assert list_parts(result["weights"]) == ["classifier"]
    parts, meta = load_weights(result["weights"])
    assert int(meta["chosen_epoch"]) == result["chosen_epoch"] and json.loads(meta["classes"]) == ["bright", "dark"]
    classifier = ft.Classifier(tiny_video_encoder(), 2)
    classifier.load_state_dict(parts["classifier"])  # strict: the file holds exactly the classifier
    assert not torch.equal(parts["classifier"]["encoder.pos_embed"], video_run["before"]["pos_embed"])
    assert list(result["bad_media"]["files"].values()) == ["not-found"]
    assert result["bad_media"]["counts"] == {"not-found": 1}


def test_audio_finetune_with_l2_features_learns_the_sound(media, data_cfg):
    train, test = media
    cfg = FinetuneConfig(**{**FAST, "lr": 1e-2}, l2_normalize_features=True, mixup=0.0, cutmix=0.0,
                            label_smoothing=0.0, test_clips=3)
    result = ft.finetune(tiny_audio_encoder(), train, test, "sound", "audio", cfg, data_cfg, progress=False)
    assert result["class_names"] == ["noise", "tone"]
    assert result["metrics"]["top1"] >= 5 / 6 and result["loss"] < 0.55
    assert result["test_views_per_video"] == 3


def test_multilabel_uses_map_and_no_val_split_tests_the_last_epoch(media, data_cfg):
    train, test = media

    def tags(m):
        return Manifest([ManifestRow(r.path, (r.label, r.extra["sound"]), r.split) for r in m], m.root)

    cfg = FinetuneConfig(**{**FAST, "epochs": 1, "val_fraction": 0.0, "warmup_epochs": 0}, multilabel=True,
                            test_clips=1, test_crops=1, mixup=0.0, cutmix=0.0)
    result = ft.finetune(tiny_audio_encoder(), tags(train), tags(test), "label", "audio", cfg, data_cfg,
                         progress=False)
    assert set(result["metrics"]) == {"mAP", "clip_mAP"}
    assert result["class_names"] == ["bright", "dark", "noise", "tone"]
    assert result["chosen_epoch"] == 1 and result["splits"]["val"] == 0
    assert set(result["history"][0]) == {"epoch", "train_loss", "lr"}
    assert result["protocol"] == "fine-tune (audio), last epoch (no val split)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, port, train, test, cfg, data_cfg, out):
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    result = ft.finetune(tiny_video_encoder(), train, test, "label", "video", cfg, data_cfg, progress=False)
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(to_jsonable(result), f)


@pytest.fixture(scope="module")
def reference_run(media, data_cfg):
    """One process, batch 4, no mixup and no dropout: every step then depends only on which clips it holds."""
    train, test = media
    common = {**FAST, "epochs": 2, "mixup": 0.0, "cutmix": 0.0, "dropout": 0.0, "test_clips": 1}
    result = ft.finetune(tiny_video_encoder(), train, test, "label", "video", FinetuneConfig(**common), data_cfg,
                         progress=False)
    return common, result


def assert_same_run(a, b):
    assert a["chosen_epoch"] == b["chosen_epoch"] and a["splits"] == b["splits"]
    for x, y in zip(a["history"], b["history"]):
        assert x == pytest.approx(y, rel=1e-4, abs=1e-6)
    assert a["metrics"] == pytest.approx(b["metrics"]) and a["loss"] == pytest.approx(b["loss"], rel=1e-4)


def test_gradient_accumulation_equals_the_large_batch(media, data_cfg, reference_run):
    train, test = media
    common, reference = reference_run
    cfg = FinetuneConfig(**{**common, "batch_size": 2, "accum_steps": 2})
    result = ft.finetune(tiny_video_encoder(), train, test, "label", "video", cfg, data_cfg, progress=False)
    assert_same_run(to_jsonable(result), to_jsonable(reference))


def test_two_process_ddp_equals_one_process(media, data_cfg, reference_run, tmp_path):
    """2 processes x batch 2 see the same clips per step as 1 process x batch 4."""
    train, test = media
    common, reference = reference_run
    cfg = FinetuneConfig(**{**common, "batch_size": 2})
    mp.spawn(_ddp_worker, args=(_free_port(), train, test, cfg, data_cfg, str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1]
    assert sum(map(sum, ranks[0]["confusion"])) == 6  # every test video scored once, across both processes
    assert_same_run(ranks[0], to_jsonable(reference))
