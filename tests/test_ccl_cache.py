"""CCL clip windows and the on-disk teacher-feature cache."""

import os

import pytest
import torch
from torch import nn

from media_fixtures import make_av
from xkd.ccl.clip_cache import (
    ClipCache,
    TeacherBank,
    clip_key,
    standardization,
    teacher_features,
    window_keys,
)
from xkd.ccl.config import CCLDataConfig, TeacherConfig
from xkd.ccl.data import clip_windows, predecode_windows, window_dataset
from xkd.ccl.teachers import ModuleTeacher
from xkd.data.manifest import Manifest, ManifestRow
from xkd.data.media import decode_clip


class Energy(nn.Module):
    """A tiny audio "model": the RMS and mean of 0.1 s frames -> [B, N, 2]."""

    def forward(self, wave):
        frames = wave.unfold(1, 1600, 1600)
        return torch.stack((frames.pow(2).mean(-1).sqrt(), frames.mean(-1)), dim=-1)


class Colour(nn.Module):
    def forward(self, images):
        return images.mean(dim=(2, 3))  # [B, 3]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("ccl_media")
    make_av(root / "a.mp4", seconds=2.0, size=(16, 16), freq=300.0)
    make_av(root / "b.mp4", seconds=1.0, size=(16, 16), freq=900.0)
    make_av(root / "silent.mp4", seconds=1.0, size=(16, 16), audio=False)
    rows = [ManifestRow("a.mp4", ("x",), "train"), ManifestRow("b.mp4", ("y",), "train", start=0.0, end=1.0),
            ManifestRow("silent.mp4", ("y",), "train", start=0.0, end=1.0)]
    cfg = CCLDataConfig(manifest=str(root / "m.csv"), num_frames=4, video_fps=8.0, resize_short=16, eval_batch_size=2,
                        num_workers=0)
    return root, Manifest(rows, root), cfg


def audio_teacher():
    return ModuleTeacher("energy", Energy(), TeacherConfig(), "audio", "v1", torch.zeros(1, 8000))


def test_windows_are_non_overlapping_and_cover_each_video(clips):
    root, manifest, cfg = clips
    w = clip_windows(manifest, cfg.clip_duration, "label", ["x", "y"])
    assert cfg.clip_duration == 0.5
    assert w.video.tolist() == [0, 0, 0, 0, 1, 1, 2, 2]  # a.mp4 is probed (2 s), the others end at 1 s
    assert w.clip.tolist() == [0, 1, 2, 3, 0, 1, 0, 1]
    assert [r.start for r in w.manifest] == [0.0, 0.5, 1.0, 1.5, 0.0, 0.5, 0.0, 0.5]
    assert w.labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert [list(v) for v in w.of_video()] == [[0, 1, 2, 3], [4, 5], [6, 7]]
    keys = window_keys(w)
    assert len(set(keys)) == len(keys) == 8


def test_cache_hit_returns_exactly_the_fresh_computation(clips, tmp_path):
    root, manifest, cfg = clips
    w = clip_windows(manifest, cfg.clip_duration, "label", ["x", "y"])
    teacher = audio_teacher()
    first = teacher_features(teacher, w, cfg, tmp_path / "c1", progress=False)
    assert len(list((tmp_path / "c1" / teacher.fingerprint).glob("shard-*.safetensors"))) == 1

    def no_compute(_):
        raise AssertionError("a cache hit must not run the teacher")

    teacher._features = no_compute  # every window must now come from disk
    again = teacher_features(teacher, w, cfg, tmp_path / "c1", progress=False)
    fresh = teacher_features(audio_teacher(), w, cfg, tmp_path / "c2", progress=False)
    for a, b, c in zip(first, again, fresh):
        assert torch.equal(a, b) and torch.equal(a, c) and a.dtype == torch.float32
    # and equal to running the teacher on the decoded window directly
    clip = decode_clip(root / "a.mp4", 1.0, 0.5, 8.0, 16, video=False)
    assert torch.allclose(first[2], audio_teacher().features(clip.audio[None])[0], atol=1e-6)
    assert first[2].shape == (5, 2)
    assert [len(f) for f in first[6:]] == [0, 0]  # no audio track: no features


def test_teacher_bank_pools_steps_and_marks_missing_audio(clips, tmp_path):
    _, manifest, cfg = clips
    w = clip_windows(manifest, cfg.clip_duration, "label", ["x", "y"])
    teacher = audio_teacher()
    bank = TeacherBank(teacher_features(teacher, w, cfg, tmp_path, progress=False), teacher.dim)
    x, ok = bank.select(torch.tensor([0, 6]), "mean", torch.Generator())
    assert ok.tolist() == [True, False]
    assert torch.allclose(x[0], bank.sequences[0].mean(0)) and x[1].abs().sum() == 0
    x, _ = bank.select(torch.tensor([0]), "random", torch.Generator().manual_seed(0))
    assert any(torch.equal(x[0], step) for step in bank.sequences[0])


def test_image_features_are_cached_per_frame_and_predecoded_windows_equal_decoding(clips, tmp_path):
    _, manifest, cfg = clips
    w = clip_windows(manifest, cfg.clip_duration, "label", ["x", "y"])
    folder = predecode_windows(w, cfg, tmp_path, progress=False)
    cached, direct = window_dataset(w, cfg, decoded_cache=folder), window_dataset(w, cfg)
    frames = [cached[i]["video"] for i in range(len(w))]
    assert frames[0].dtype == torch.uint8 and frames[0].shape == (4, 16, 16, 3)
    assert all(torch.equal(frames[i], direct[i]["video"]) for i in range(len(w)))
    assert predecode_windows(w, cfg, tmp_path, progress=False) == folder  # made once, then reused
    plain = TeacherConfig(mean=(0.0,), std=(1.0,))
    teacher = ModuleTeacher("colour", Colour(), plain, "image", "v1", torch.zeros(1, 3, 8, 8))
    feats = teacher_features(teacher, w, cfg, tmp_path, progress=False)
    assert feats[1].shape == (4, 3)
    want = frames[1].permute(0, 3, 1, 2).float().div(255).mean(dim=(2, 3))
    assert torch.allclose(feats[1], want, atol=1e-6)
    bank = TeacherBank(feats, 3)
    x, ok = bank.frame(torch.tensor([1, 4]), 2)
    assert torch.equal(x[0], feats[1][2]) and ok.all()


def test_key_changes_when_the_file_or_window_changes(clips, tmp_path):
    root, _, _ = clips
    path = make_av(tmp_path / "c.mp4", seconds=1.0, size=(16, 16))
    key = clip_key(path, 0.0, 0.5)
    assert key == clip_key(path, 0.0, 0.5) != clip_key(path, 0.5, 0.5)
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert clip_key(path, 0.0, 0.5) != key


def test_cache_flush_writes_shards_that_a_new_cache_reads(tmp_path):
    cache = ClipCache(tmp_path, "t")
    cache.put("k1", torch.arange(6.0).view(2, 3))
    cache.put("k2", torch.zeros(0, 3))
    assert cache.flush() is not None and cache.flush() is None
    reread = ClipCache(tmp_path, "t")
    assert len(reread) == 2 and torch.equal(reread.get("k1"), torch.arange(6.0).view(2, 3))
    assert reread.get("k2").shape == (0, 3)
    with pytest.raises(KeyError):
        reread.get("k3")


def test_standardization_centres_and_scales_by_the_rms_std():
    seqs = [torch.tensor([[1.0, 10.0], [3.0, 10.0]]), torch.zeros(0, 2), torch.tensor([[5.0, 14.0]])]
    mean, scale = standardization(seqs, pool=False)  # rows (1, 10), (3, 10), (5, 14)
    assert torch.allclose(mean, torch.tensor([3.0, 34 / 3]))
    var = torch.tensor([[1.0, 10.0], [3.0, 10.0], [5.0, 14.0]]).var(0, unbiased=False)
    assert scale == pytest.approx(float(var.mean().sqrt()))
    pooled_mean, _ = standardization(seqs, pool=True)  # clip means (2, 10), (5, 14)
    assert torch.allclose(pooled_mean, torch.tensor([3.5, 12.0]))
