"""AV-Digits version 3: version 2's clips with a plan in which motion, voice, language, the synthetic flag and the digit
are independent in every split (version 2 ties the motion to the voice in train and val)."""

import collections

import numpy as np
import pytest

import xkd.datasets.avdigits as avd
from xkd.data.manifest import read_manifest
from xkd.datasets.avdigits_plan import DETERMINED_PAIRS, FACTORS, factor_dependence, plan_clips, voice_pool
from xkd.datasets.avdigits_sources import AVDIGITS_VOICES, synthetic_voices

LABELS = np.repeat(np.arange(10), 500)  # the full build: 500 images per digit


def test_every_pair_of_columns_is_measured_but_those_a_voice_determines():
    pairs = factor_dependence(plan_clips(LABELS, seed=0, version=3))["train"]
    assert len(pairs) == len(FACTORS) * (len(FACTORS) - 1) // 2 - len(DETERMINED_PAIRS) == 8


@pytest.mark.parametrize("seed", [0, 1])
def test_version_3_columns_are_independent_in_every_split(seed):
    dependence = factor_dependence(plan_clips(LABELS, seed=seed, version=3))
    assert set(dependence) == {"train", "val", "test"}
    for split, pairs in dependence.items():
        for pair, (ami, p) in pairs.items():
            assert ami < 0.01 and p > 0.01, (split, pair, ami, p)


def test_version_2_ties_the_motion_to_the_voice_in_train_and_val():
    dependence = factor_dependence(plan_clips(LABELS, seed=0, version=2))
    for split in ("train", "val"):
        for pair in (("motion", "voice"), ("motion", "synthetic")):
            ami, p = dependence[split][pair]
            assert ami > 0.3 and p < 1e-10, (split, pair, ami, p)


def test_version_3_keeps_the_images_splits_and_voices_of_version_2():
    v2, v3 = (plan_clips(LABELS, seed=0, version=v) for v in (2, 3))
    assert [(s.image_index, s.digit, s.split) for s in v2] == [(s.image_index, s.digit, s.split) for s in v3]
    by_split = collections.defaultdict(collections.Counter)
    for s in v3:
        by_split[s.split][s.voice] += 1
    assert set(by_split["test"]) == set(AVDIGITS_VOICES)  # real voices only in test
    assert set(by_split["train"]) == set(AVDIGITS_VOICES) | set(synthetic_voices())
    for split in ("train", "val"):
        real = sum(n for v, n in by_split[split].items() if v in AVDIGITS_VOICES)
        assert real / sum(by_split[split].values()) == pytest.approx(0.5, abs=0.01)
    motions = collections.Counter(s.motion for s in v3 if s.split == "train")
    assert max(motions.values()) - min(motions.values()) <= 1


def test_any_run_of_the_version_3_pool_is_balanced_in_language_and_kind():
    pool = voice_pool("train", 3)
    assert collections.Counter(pool) == {**{v: 8 for v in AVDIGITS_VOICES}, **{v: 1 for v in synthetic_voices()}}
    language = {**{v: v[:2] for v in AVDIGITS_VOICES}, **synthetic_voices()}
    for start, length in ((0, 10), (7, 23), (35, 44)):
        run = [pool[(start + i) % len(pool)] for i in range(length)]
        kinds = collections.Counter(v in AVDIGITS_VOICES for v in run)
        languages = collections.Counter(language[v] for v in run)
        assert abs(kinds[True] - kinds[False]) <= 1 and max(languages.values()) - min(languages.values()) <= 2


def test_a_version_3_build_says_what_it_is(tmp_path):
    manifest = avd.prepare_avdigits(tmp_path / "v3", num_clips=20, seed=0, progress=False, workers=1, version=3,
                                    cache_dir=tmp_path / "cache")
    rows = read_manifest(manifest).rows
    assert len(rows) == 20 and all({"language", "synthetic", "motion", "voice"} <= set(r.extra) for r in rows)
    readme = (manifest.parent / "README.md").read_text()
    assert "AV-Digits 3.0" in readme and "independent in every split" in readme
    assert avd.built_version(manifest.parent) == 3 and avd.default_dir(3) == "data/av-digits-v3"
