"""Linear probe and k-NN on tiny synthetic features: learnable signal, chance on noise, selection hygiene."""

import numpy as np
import pytest
import torch

import xkd.eval.linear as linear_module
from xkd.eval.features import FeatureSet
from xkd.eval.knn import knn_classify, knn_scores
from xkd.eval.linear import LINEAR_WDS, LinearHead, linear_probe

from feature_fixtures import CLASS_NAMES, blobs, random_set
FAST = dict(epochs=15, batch_size=64, warmup_epochs=2)


pytestmark = pytest.mark.usefixtures("single_thread")


def multilabel_blobs(n_videos, seed, first_id=0, dim=16):
    """Each video has a random subset of 4 tags; its features are the sum of its tags' directions plus noise."""
    rng = np.random.default_rng(seed)
    directions = np.random.default_rng(99).normal(size=(len(CLASS_NAMES), dim)) * 2.0
    tags = (rng.random((n_videos, len(CLASS_NAMES))) < 0.4).astype(int)
    tags[np.arange(n_videos), rng.integers(0, len(CLASS_NAMES), n_videos)] = 1
    features = tags @ directions + 0.5 * rng.normal(size=(n_videos, dim))
    return FeatureSet(np.repeat(features, 2, axis=0) + 0.3 * rng.normal(size=(2 * n_videos, dim)),
                      np.repeat(np.arange(n_videos) + first_id, 2), np.repeat(tags, 2, axis=0), CLASS_NAMES)


# ---- linear probe ----

def test_linear_probe_separable_classes_far_above_chance():
    result = linear_probe(blobs(60, 4, seed=1), blobs(40, 3, seed=2, first_id=1000), **FAST)
    assert result["metrics"]["top1"] > 0.9
    assert result["protocol"] == "linear probe, wd selected on val"
    assert set(result["val_top1"]) == {f"{w:g}" for w in LINEAR_WDS} and result["hparams"] == {"wd": result["wd"]}
    assert result["confusion"].sum() == 40


def test_linear_probe_random_labels_near_chance():
    result = linear_probe(random_set(80, 3, seed=3), random_set(120, 3, seed=4, first_id=1000), **FAST)
    assert abs(result["metrics"]["top1"] - 0.25) < 0.12


def test_linear_probe_multilabel_map():
    train, test = multilabel_blobs(120, seed=5), multilabel_blobs(60, seed=6, first_id=1000)
    result = linear_probe(train, test, **FAST)
    assert result["metrics"]["mAP"] > 0.9
    assert "val_mAP" in result and "top1" not in result["metrics"]
    shuffled = FeatureSet(train.features, train.video_ids, np.random.default_rng(0).permutation(train.labels),
                          CLASS_NAMES)
    assert linear_probe(shuffled, test, wd=0.0, **FAST)["metrics"]["mAP"] < 0.7


def test_linear_probe_multilabel_defaults_to_dropout_03(monkeypatch):
    seen = []
    original = linear_module.train_head

    def spy(train, epochs, lr, wd, batch_size, warmup_epochs, batchnorm, dropout, seed, device):
        seen.append(dropout)
        return original(train, epochs, lr, wd, batch_size, warmup_epochs, batchnorm, dropout, seed, device)

    monkeypatch.setattr(linear_module, "train_head", spy)
    linear_probe(multilabel_blobs(30, seed=7), multilabel_blobs(10, seed=8, first_id=100), wd=0.0, epochs=1)
    linear_probe(blobs(12, 2, seed=9), blobs(8, 2, seed=10, first_id=100), wd=0.0, epochs=1)
    assert seen == [0.3, 0.0]


def test_linear_probe_wd_selection_never_sees_test(monkeypatch):
    train, test = blobs(40, 3, sep=0.5, clip_noise=2.0, seed=11), blobs(20, 3, seed=12, first_id=1000)
    events = []
    train_head, head_scores = linear_module.train_head, linear_module.head_scores

    def spy_train(fs, *args):
        events.append(("train", fs))
        return train_head(fs, *args)

    def spy_scores(head, fs, *args):
        events.append(("score", fs))
        return head_scores(head, fs, *args)

    monkeypatch.setattr(linear_module, "train_head", spy_train)
    monkeypatch.setattr(linear_module, "head_scores", spy_scores)
    reference = linear_probe(train, test, **FAST)

    test_ids = set(test.video_ids.tolist())
    touches_test = [bool(test_ids & set(fs.video_ids.tolist())) for _, fs in events]
    assert [kind for kind, _ in events] == ["train", "score"] * (len(LINEAR_WDS) + 1)
    assert touches_test == [False] * (2 * len(LINEAR_WDS) + 1) + [True]
    assert [len(fs) for kind, fs in events if kind == "train"][-1] == len(train)

    permuted = FeatureSet(np.random.default_rng(0).normal(size=test.features.shape), test.video_ids,
                          (test.labels + 1) % 4, CLASS_NAMES)
    result = linear_probe(train, permuted, **FAST)
    assert result["wd"] == reference["wd"] and result["val_top1"] == reference["val_top1"]


def test_linear_probe_single_wd_skips_validation_and_is_seeded():
    train, test = blobs(30, 2, seed=13), blobs(10, 2, seed=14, first_id=1000)
    a = linear_probe(train, test, wd=1e-4, **FAST)
    b = linear_probe(train, test, wd=1e-4, **FAST)
    assert a["protocol"] == "linear probe, fixed hyper-parameters" and "val_top1" not in a
    assert a["wd"] == 1e-4
    assert np.array_equal(a["predictions"]["preds"], b["predictions"]["preds"])


def test_linear_head_and_schedule():
    head = LinearHead(16, 4, batchnorm=True)
    assert not any(p.requires_grad for p in head.norm.parameters())  # BatchNorm without affine
    w = head.fc.weight.detach()
    assert torch.allclose(w @ w.T, torch.eye(4), atol=1e-5)  # orthogonal rows
    assert head(torch.randn(8, 16)).shape == (8, 4)


# ---- k-NN ----

def test_knn_separable_classes_far_above_chance():
    result = knn_classify(blobs(60, 4, seed=21), blobs(40, 3, seed=22, first_id=1000), k=10)
    assert result["metrics"]["top1"] > 0.9 and result["metrics"]["nn1_top1"] > 0.9
    assert result["protocol"] == "10-NN (T=0.07)"


def test_knn_random_labels_near_chance():
    result = knn_classify(random_set(80, 3, seed=23), random_set(120, 3, seed=24, first_id=1000))
    assert abs(result["metrics"]["top1"] - 0.25) < 0.12


def test_knn_score_averaging_over_clips_beats_single_clips():
    train = blobs(80, 4, sep=1.0, clip_noise=0.5, seed=25)
    test = blobs(60, 8, sep=1.0, clip_noise=4.0, seed=26, first_id=1000)
    metrics = knn_classify(train, test)["metrics"]
    assert metrics["top1"] > metrics["clip_top1"] + 0.15


def test_knn_weighted_vote_matches_hand_computation():
    train = FeatureSet([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]], [0, 1, 2, 3], [0, 1, 1, 2], ["x", "y", "z"])
    test = FeatureSet([[2.0, 0.0]], [9], [0], ["x", "y", "z"])
    votes = knn_scores(train, test, k=3, temperature=0.5)
    # cosine similarities to the 3 nearest: 1.0 (x), 0.8 (y), 0.0 (y); weights exp(s / T)
    w = np.exp(np.array([1.0, 0.8, 0.0]) / 0.5)
    expected = np.array([w[0], w[1] + w[2], 0.0]) / w.sum()
    np.testing.assert_allclose(votes[0], expected, rtol=1e-6)
    assert knn_scores(train, test, k=1)[0].tolist() == [1.0, 0.0, 0.0]
