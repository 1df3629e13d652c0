"""The attentive probe on synthetic patch tokens: it finds the one token that carries the class, and its
hyper-parameters are chosen without the test split."""

import numpy as np
import pytest
import torch

import xkd.eval.attentive as attentive_module
from xkd.eval.attentive import AttentiveProbe, attentive_probe, join_modalities
from xkd.eval.features import FeatureSet

from feature_fixtures import CLASS_NAMES

FAST = dict(grid=((3e-3, 1e-3), (3e-3, 0.1)), epochs=40, batch_size=32)


pytestmark = pytest.mark.usefixtures("single_thread")


def needle_tokens(n_videos, seed, first_id=0, tokens=24, dim=16):
    """[N, K, D] noise tokens; one token per clip, at a random place, carries its class direction and a marker
    (dimension 0). Mean pooling dilutes it 24-fold; attention can pick it out."""
    rng = np.random.default_rng(seed)
    directions = np.random.default_rng(7).normal(size=(len(CLASS_NAMES), dim)) * 2.0
    labels = rng.integers(0, len(CLASS_NAMES), n_videos)
    x = rng.normal(size=(n_videos, tokens, dim))
    where = rng.integers(0, tokens, n_videos)
    x[np.arange(n_videos), where] = directions[labels] + 0.3 * rng.normal(size=(n_videos, dim))
    x[np.arange(n_videos), where, 0] = 6.0
    return FeatureSet(x.astype(np.float16), np.arange(n_videos) + first_id, labels, CLASS_NAMES)


def test_the_probe_finds_the_informative_token():
    train, test = needle_tokens(240, seed=1), needle_tokens(120, seed=2, first_id=1000)
    result = attentive_probe(train, test, **FAST)
    assert result["metrics"]["top1"] > 0.9  # chance 0.25
    assert result["hparams"]["lr"] == 3e-3 and result["hparams"]["wd"] in (1e-3, 0.1)
    assert set(result["val_top1"]) == {"lr=0.003,wd=0.001", "lr=0.003,wd=0.1"}
    assert result["confusion"].sum() == 120


def test_two_modalities_are_one_sequence_with_their_own_norms():
    video, audio = needle_tokens(40, seed=3), needle_tokens(40, seed=3)
    audio = FeatureSet(audio.features[:, :10], audio.video_ids, audio.labels, CLASS_NAMES)
    joined, segments = join_modalities([video, audio])
    assert joined.features.shape == (40, 34, 16) and segments == [24, 10]
    probe = AttentiveProbe(16, 4, segments)
    assert probe(torch.from_numpy(joined.features[:5]).float()).shape == (5, 4)
    with pytest.raises(ValueError, match="tokens"):
        probe(torch.zeros(2, 24, 16))
    shifted = FeatureSet(audio.features, audio.video_ids + 1, audio.labels, CLASS_NAMES)
    with pytest.raises(ValueError, match="same clips"):
        join_modalities([video, shifted])


def test_selection_never_sees_the_test_split(monkeypatch):
    train, test = needle_tokens(120, seed=4), needle_tokens(60, seed=5, first_id=1000)
    events = []
    scores = attentive_module.probe_scores

    def spy(probe, fs, *args):
        events.append(set(fs.video_ids.tolist()))
        return scores(probe, fs, *args)

    monkeypatch.setattr(attentive_module, "probe_scores", spy)
    reference = attentive_probe(train, test, **FAST)
    test_ids = set(test.video_ids.tolist())
    assert len(events) == len(FAST["grid"]) + 1
    assert not any(ids & test_ids for ids in events[:-1]) and events[-1] == test_ids
    # the choice and its val scores do not move when the test split is replaced by noise with shuffled labels
    rng = np.random.default_rng(0)
    noise = FeatureSet(rng.normal(size=test.features.shape).astype(np.float16), test.video_ids,
                       rng.permutation(test.labels), CLASS_NAMES)
    other = attentive_probe(train, noise, **FAST)
    assert other["hparams"] == reference["hparams"] and other["val_top1"] == reference["val_top1"]


def test_pooled_features_are_refused():
    pooled = FeatureSet(np.zeros((8, 16)), np.arange(8), np.arange(8) % 4, CLASS_NAMES)
    with pytest.raises(ValueError, match="tokens"):
        attentive_probe(pooled, pooled, **FAST)
