"""Synthetic clip features for the evaluation tests: separable class blobs and pure noise."""

import numpy as np

from xkd.eval.features import FeatureSet

CLASS_NAMES = ["a", "b", "c", "d"]


def blobs(n_videos, clips, sep=3.0, clip_noise=1.0, seed=0, first_id=0, dim=16):
    """Gaussian class blobs: video centre = class mean + small offset, clip = video centre + clip noise."""
    rng = np.random.default_rng(seed)
    means = np.random.default_rng(1234).normal(size=(len(CLASS_NAMES), dim)) * sep
    labels = rng.permutation(np.arange(n_videos) % len(CLASS_NAMES))
    centres = means[labels] + 0.5 * rng.normal(size=(n_videos, dim))
    features = np.repeat(centres, clips, axis=0) + clip_noise * rng.normal(size=(n_videos * clips, dim))
    return FeatureSet(features, np.repeat(np.arange(n_videos) + first_id, clips), np.repeat(labels, clips),
                      CLASS_NAMES)


def random_set(n_videos, clips, seed, first_id=0):
    """Noise features with random labels: nothing to learn."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASS_NAMES), n_videos)
    return FeatureSet(rng.normal(size=(n_videos * clips, 16)), np.repeat(np.arange(n_videos) + first_id, clips),
                      np.repeat(labels, clips), CLASS_NAMES)
