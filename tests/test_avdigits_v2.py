"""AV-Digits version 2: a larger digit, repeated utterances over a low noise floor, synthetic training voices that
never reach the test split; labels, splits, folds, determinism, and audio and video that carry the same digit."""

import collections

import numpy as np
import pytest

import xkd.datasets.avdigits as avd
from xkd.config import PretrainConfig, load_config
from xkd.datasets.avdigits import (
    AVDIGITS_VOICES,
    load_spoken_digit,
    make_recipe,
    prepare_avdigits,
    render_frames,
    synthetic_voices,
)
from xkd.data.manifest import read_manifest
from xkd.datasets.avdigits_plan import plan_clips, voice_pool
from xkd.datasets.stats import token_content_stats, visible_content

from test_avdigits import _best_lag_corr, _decode

NUM_CLIPS = 60
CONFIG = "configs/pretrain/xkd_avdigits_cpu.yaml"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("avdigits_cache")


@pytest.fixture(scope="module")
def builds(tmp_path_factory, cache_dir):
    """The same 60 images built as version 1 and as version 2."""
    root = tmp_path_factory.mktemp("avdigits_v2")
    args = dict(num_clips=NUM_CLIPS, seed=0, progress=False, workers=2, cache_dir=cache_dir)
    return prepare_avdigits(root / "v1", **args), prepare_avdigits(root / "v2", version=2, **args)


def test_synthetic_voices_are_vendored_for_every_language():
    voices = synthetic_voices()
    assert len(voices) == 40 and collections.Counter(voices.values()) == {lang: 8 for lang in
                                                                          ("en", "es", "fr", "it", "ru")}
    for voice in list(voices)[::7]:
        for digit in (0, 9):
            speech = load_spoken_digit(voice, digit)
            assert 0.2 < len(speech) / avd.SAMPLE_RATE < 1.2 and np.abs(speech).max() > 0.2


def test_test_split_speaks_only_in_real_voices():
    labels = np.repeat(np.arange(10), 500)
    specs = plan_clips(labels, seed=0, version=2)
    by_split = collections.defaultdict(collections.Counter)
    for s in specs:
        by_split[s.split][s.voice] += 1
    assert set(by_split["test"]) == set(AVDIGITS_VOICES)
    assert sorted(by_split["test"].values()) == [200] * 5
    synthetic = set(synthetic_voices())
    for split in ("train", "val"):
        real = sum(n for v, n in by_split[split].items() if v in AVDIGITS_VOICES)
        assert set(by_split[split]) <= set(AVDIGITS_VOICES) | synthetic
        assert real / sum(by_split[split].values()) == pytest.approx(0.5, abs=0.05)  # half real, half synthetic
    assert set(by_split["train"]) == set(AVDIGITS_VOICES) | synthetic
    assert voice_pool("train", 1) == AVDIGITS_VOICES  # version 1 is unchanged
    for digit in range(10):  # every digit is spoken by every real voice in the test split
        assert {s.voice for s in specs if s.split == "test" and s.digit == digit} == set(AVDIGITS_VOICES)


def test_manifest_columns_folds_and_readme(builds):
    manifest = read_manifest(builds[1])
    synthetic = synthetic_voices()
    for row in manifest:
        voice = row.extra["voice"]
        if voice in synthetic:
            assert row.fold is None and row.extra["synthetic"] == "1" and row.split != "test"
            assert row.extra["language"] == synthetic[voice]
        else:
            assert row.fold == AVDIGITS_VOICES.index(voice) and row.extra["synthetic"] == "0"
            assert row.extra["language"] == voice[:2]
        assert 0 <= float(row.extra["speech_start"]) < float(row.extra["speech_end"]) <= 2.0
    assert manifest.folds() == [0, 1, 2, 3, 4]
    readme = (builds[1].parent / "README.md").read_text()
    assert "AV-Digits 2.0" in readme and "eSpeak NG" in readme and "only in the five real" in readme


def test_every_copy_of_the_utterance_is_the_labelled_digit(builds):
    manifest = read_manifest(builds[1])
    copies = []
    for row in manifest.rows[:20]:
        _, audio, rate, _ = _decode(manifest.resolve(row))
        voice, index = row.extra["voice"], int(row.extra["image_index"])
        length = len(load_spoken_digit(voice, int(row.label)))
        recipe = make_recipe(0, index, row.extra["motion"], length, version=2)
        copies.append(len(recipe.offsets))
        for offset in recipe.offsets:
            speech = audio[offset: offset + recipe.speech_samples]
            if len(speech) < 0.8 * recipe.speech_samples:
                continue  # the last copy may be cut by the window's end
            scores = []
            for digit in range(10):
                rec = load_spoken_digit(voice, digit)[: int(len(speech) * recipe.speed)]
                stretched = np.interp(np.arange(len(speech)) * recipe.speed, np.arange(len(rec)), rec)
                scores.append(_best_lag_corr(speech, stretched))
            assert int(np.argmax(scores)) == int(row.label), (row.path, np.round(scores, 2))
    assert min(copies) >= 1 and max(copies) >= 2  # the word repeats through the window


def test_first_frame_shows_the_labelled_image_large(builds, cache_dir):
    images, _ = avd.load_mnist_5k(cache_dir)
    manifest = read_manifest(builds[1])
    for row in manifest.rows[:8]:
        index = int(row.extra["image_index"])
        recipe = make_recipe(0, index, row.extra["motion"], recording_length=10000, version=2)
        first = _decode(manifest.resolve(row))[0][0]
        render = render_frames(images[index], recipe.centers[:1], recipe.angles[:1], recipe.scales[:1], 64)[0]
        assert np.corrcoef(first.ravel(), render.ravel().astype(np.float64))[0, 1] > 0.98
        rows_with_ink = np.flatnonzero(first.max(axis=1) > 64)
        assert rows_with_ink[-1] - rows_with_ink[0] + 1 >= 0.3 * first.shape[0]  # zooms start at 35% of the frame


def test_masked_students_see_more_ink_and_less_silence_than_in_version_1(builds):
    cfg = load_config(PretrainConfig, CONFIG)
    v1, v2 = (token_content_stats(read_manifest(b), cfg, max_files=NUM_CLIPS, progress=False) for b in builds)
    assert v2["video_tokens_with_ink"] > 1.5 * v1["video_tokens_with_ink"]
    assert v2["kept_tokens_with_ink"] > 2 * v1["kept_tokens_with_ink"] and v2["p_at_most_one_inked_kept"] < 0.05
    assert v2["audio_near_silent_patches"] < 0.5 * v1["audio_near_silent_patches"]


def test_visible_content_is_hypergeometric():
    rng = np.random.default_rng(0)
    draws = np.array([(rng.permutation(64)[:10] < 20).sum() for _ in range(20000)])
    mean, p = visible_content(64, 20, 10)
    assert mean == pytest.approx(draws.mean(), abs=0.05) and p == pytest.approx((draws <= 1).mean(), abs=0.01)
    assert visible_content(64, 0, 10) == (0.0, 1.0) and visible_content(64, 64, 10)[1] == 0.0


def test_version_2_is_deterministic_and_apart_from_version_1(builds, tmp_path, cache_dir):
    again = prepare_avdigits(tmp_path / "again", num_clips=NUM_CLIPS, seed=0, progress=False, workers=1,
                             cache_dir=cache_dir, version=2)
    assert again.read_bytes() == builds[1].read_bytes()
    with pytest.raises(FileExistsError, match="other arguments"):
        prepare_avdigits(builds[0].parent, num_clips=NUM_CLIPS, seed=0, progress=False, cache_dir=cache_dir,
                         version=2)
    with pytest.raises(ValueError, match="version"):
        prepare_avdigits(tmp_path / "v4", num_clips=4, progress=False, cache_dir=cache_dir, version=4)


def test_audio_oracle_features_are_finite_and_shaped(builds):
    """tools/audio_digit_oracle.py (the audio test's oracle in docs/AVDIGITS.md) embeds real v2 clips."""
    import importlib.util
    from pathlib import Path

    pytest.importorskip("openwakeword")
    path = Path(__file__).resolve().parents[1] / "tools" / "audio_digit_oracle.py"
    spec = importlib.util.spec_from_file_location("audio_digit_oracle", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    manifest = read_manifest(builds[1])
    feats = tool.clip_features(manifest, np.arange(4), progress=False)
    assert feats["speech-embedding"].shape == (4, 192) and feats["logmel-stats"].shape == (4, 80)
    for values in feats.values():
        assert np.isfinite(values).all() and values.std(axis=0).max() > 0


def test_a_folder_says_which_version_it_holds(builds, tmp_path):
    v1, v2 = (m.parent for m in builds)
    assert (avd.built_version(v1), avd.built_version(v2), avd.built_version(tmp_path)) == (1, 2, None)
    assert avd.choose_version(v1, None) == 1 and avd.choose_version(v2, 2) == 2
    assert avd.choose_version(tmp_path, None) == 3 and avd.choose_version(None, 1) == 1  # nothing built: asked, else 3
    with pytest.raises(ValueError, match="holds AV-Digits version 2, not 1; pass --version 2"):
        avd.choose_version(v2, 1)


@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("method", ["xkd", "mae", "xkd_mas", "xkd_mats", "cav_mae", "xkd_small"])
def test_later_recipes_are_the_version_1_recipes_on_their_data(method, version):
    from xkd.config import to_dict
    from xkd.demo import avdigits_recipe

    v1, vn = (load_config(PretrainConfig, f"configs/pretrain/{avdigits_recipe(method, v)}") for v in (1, version))
    assert vn.data.manifest == f"data/av-digits-v{version}/manifest.csv"
    assert v1.data.manifest == "data/av-digits/manifest.csv" and vn.data.logmel != v1.data.logmel
    for section in ("model", "loss", "optim"):
        assert to_dict(getattr(v1, section)) == to_dict(getattr(vn, section)), section
    assert v1.method == vn.method
