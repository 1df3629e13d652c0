"""Metrics against hand computations, retrieval on constructed cases, and the FeatureSet helpers (fusion, npz)."""

import numpy as np
import pytest

from xkd.eval.features import FeatureSet, fuse, group_mean
from xkd.eval.metrics import (
    confusion_matrix,
    evaluate_clip_scores,
    mean_average_precision,
    mean_std,
    topk_accuracy,
)
from xkd.eval.retrieval import cross_modal_retrieval, retrieval_recall


# ---- metrics ----

def reference_average_precision(scores, targets):
    """AP by its definition: mean precision at the rank of each positive (no tied scores)."""
    order = np.argsort(-scores)
    hits = targets[order]
    precision_at_rank = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return precision_at_rank[hits == 1].mean()


def test_mean_average_precision_matches_hand_written_reference():
    rng = np.random.default_rng(0)
    scores = rng.random((40, 6))
    targets = (rng.random((40, 6)) < 0.3).astype(int)
    targets[:, 4] = 0  # a class without positives is skipped, not counted as AP 0
    expected = np.mean([reference_average_precision(scores[:, c], targets[:, c]) for c in (0, 1, 2, 3, 5)])
    assert mean_average_precision(scores, targets) == pytest.approx(expected, rel=1e-12)
    assert mean_average_precision(targets + 0.1 * scores, targets) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no class"):
        mean_average_precision(scores, np.zeros_like(targets))


def test_topk_confusion_and_mean_std():
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    labels = np.array([1, 1, 0, 2])
    assert topk_accuracy(scores, labels, 1) == 0.25
    assert topk_accuracy(scores, labels, 2) == 0.5
    assert topk_accuracy(scores, labels, 5) == 1.0  # k capped at the number of classes
    cm = confusion_matrix(labels, scores.argmax(axis=1), 3)
    assert cm.tolist() == [[0, 0, 1], [1, 1, 0], [1, 0, 0]]
    assert mean_std([0.8, 0.9, 1.0]) == pytest.approx((0.9, np.sqrt(2 / 300)))
    assert mean_std([0.8, 0.9, 1.0], ddof=1) == pytest.approx((0.9, 0.1))
    assert mean_std([0.5]) == (0.5, 0.0)
    assert np.isnan(mean_std([0.5], ddof=1)[1])


def test_evaluate_clip_scores_averages_clips_per_video():
    # video 7 has two clips that each lean wrong-but-different ways; their mean picks the true class 0
    test = FeatureSet(np.zeros((3, 2)), [7, 7, 3], [0, 0, 1], ["x", "y", "z"])
    clip_scores = np.array([[0.45, 0.55, 0.0], [0.45, 0.0, 0.55], [0.1, 0.8, 0.1]])
    result = evaluate_clip_scores(clip_scores, test)
    assert result["metrics"] == {"top1": 1.0, "clip_top1": pytest.approx(1 / 3)}
    assert result["predictions"]["video_ids"].tolist() == [3, 7]
    assert result["predictions"]["preds"].tolist() == [1, 0]
    assert result["confusion"].tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 0]]


# ---- retrieval ----

def test_retrieval_recall_on_a_constructed_case():
    gallery = np.array([[1.0, 0.1], [0.9, 0.5], [0.0, 1.0], [-1.0, 0.0]])
    gallery_labels = np.array([0, 1, 1, 2])
    query = np.array([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    query_labels = np.array([1, 2, 0])
    # rankings by cosine: q0 -> g0 g1 g2 g3 (first hit at 2); q1 -> g2 g1 g0 g3 (4); q2 -> g1 g0 g2 g3 (2)
    r = retrieval_recall(query, gallery, query_labels, gallery_labels, ks=(1, 2, 3, 4, 10))
    assert r == pytest.approx({"R@1": 0.0, "R@2": 2 / 3, "R@3": 2 / 3, "R@4": 1.0, "R@10": 1.0})


def test_retrieval_identity_pairs_and_shuffled_pairs():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 16))
    ids = np.arange(50)
    assert retrieval_recall(x, x, ids, ids) == {"R@1": 1.0, "R@5": 1.0, "R@10": 1.0}
    shuffled = retrieval_recall(x, x, ids, rng.permutation(ids))
    assert shuffled["R@1"] <= 0.1 and shuffled["R@10"] <= 0.4


def test_cross_modal_retrieval_both_directions():
    rng = np.random.default_rng(2)
    names = ["a", "b", "c", "d", "e"]
    latent = rng.normal(size=(30, 16))
    labels = np.arange(30) % 5
    ids = np.repeat(np.arange(30), 2)
    audio = FeatureSet(np.repeat(latent, 2, axis=0) + 0.2 * rng.normal(size=(60, 16)), ids, np.repeat(labels, 2), names)
    video = FeatureSet(np.repeat(latent, 2, axis=0) + 0.2 * rng.normal(size=(60, 16)), ids, np.repeat(labels, 2), names)
    instance = cross_modal_retrieval(audio, video, level="instance")
    assert instance["protocol"] == "cross-modal retrieval (instance level)"
    assert instance["metrics"]["a2v_R@1"] > 0.9 and instance["metrics"]["v2a_R@1"] > 0.9
    classes = cross_modal_retrieval(audio, video)["metrics"]
    assert all(classes[k] >= instance["metrics"][k] for k in classes)
    unrelated = FeatureSet(rng.normal(size=(60, 16)), ids, np.repeat(labels, 2), names)
    assert cross_modal_retrieval(audio, unrelated, level="instance")["metrics"]["a2v_R@1"] < 0.2


# ---- feature sets ----

def test_fuse_normalises_each_modality_and_aligns_clips():
    rng = np.random.default_rng(3)
    ids = np.repeat([10, 11, 12], 2)
    labels = np.repeat([0, 1, 0], 2)
    a = FeatureSet(5.0 * rng.normal(size=(6, 4)), ids, labels, ["x", "y"])
    b = FeatureSet(0.1 * rng.normal(size=(6, 3)), ids, labels, ["x", "y"])
    fused = fuse(a, b)
    assert fused.features.shape == (6, 7)
    np.testing.assert_allclose(np.linalg.norm(fused.features[:, :4], axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(fused.features[:, 4:], axis=1), 1.0, rtol=1e-6)
    # b listed in another order: clips are paired by (video id, clip rank), not by row position
    order = np.array([2, 4, 0, 3, 5, 1])  # videos interleaved, clip order within each video kept
    assert np.allclose(fuse(a, b.subset(order)).features, fused.features)
    with pytest.raises(ValueError, match="same clips"):
        fuse(a, b.subset(np.arange(5)))


def test_feature_set_video_mean_and_plain_numpy_npz(tmp_path):
    fs = FeatureSet(np.arange(12, dtype=float).reshape(6, 2), [4, 2, 4, 2, 9, 9], [1, 0, 1, 0, 2, 2], ["x", "y", "z"])
    per_video = fs.by_video_mean()
    assert per_video.video_ids.tolist() == [2, 4, 9]
    assert per_video.features.tolist() == [[4.0, 5.0], [2.0, 3.0], [9.0, 10.0]]
    assert per_video.labels.tolist() == [0, 1, 2]
    ids, means = group_mean(np.array([1.0, 3.0, 5.0]), np.array([1, 1, 0]))
    assert ids.tolist() == [0, 1] and means.tolist() == [5.0, 2.0]

    path = fs.save(tmp_path / "feats.npz")
    with np.load(path, allow_pickle=False) as raw:  # readable without xkd
        assert sorted(raw.files) == ["class_names", "features", "labels", "video_ids"]
        assert raw["class_names"].tolist() == ["x", "y", "z"]
    loaded = FeatureSet.load(path)
    assert np.array_equal(loaded.features, fs.features) and np.array_equal(loaded.video_ids, fs.video_ids)
    assert np.array_equal(loaded.labels, fs.labels) and loaded.class_names == fs.class_names

    multi = FeatureSet(np.zeros((2, 3)), [0, 1], [[1, 0], [1, 1]], ["p", "q"])
    assert multi.multilabel and FeatureSet.load(multi.save(tmp_path / "m.npz")).labels.tolist() == [[1, 0], [1, 1]]


def test_feature_set_rejects_inconsistent_inputs():
    with pytest.raises(ValueError, match="labels must lie"):
        FeatureSet(np.zeros((2, 3)), [0, 1], [0, 5], ["x", "y"])
    with pytest.raises(ValueError, match="video_ids"):
        FeatureSet(np.zeros((2, 3)), [0], [0, 1], ["x", "y"])
    with pytest.raises(ValueError, match="0 and 1"):
        FeatureSet(np.zeros((2, 3)), [0, 1], [[0, 2], [1, 0]], ["x", "y"])
    with pytest.raises(ValueError, match="different labels"):
        FeatureSet(np.zeros((2, 3)), [0, 0], [0, 1], ["x", "y"]).by_video_mean()
