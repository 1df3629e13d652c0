"""Re-encoded shards (``xkd data shard --reencode``) and several clips per decode: the same frames at the same times
as the original file, key frames where asked, the settings recorded and checked by a run, one decode serving N
windows, and a loader of N clips per decode resumed at the exact micro-batch (pretraining with it resumes bitwise:
tests/test_shard_stream.py)."""

import io
import logging

import av
import numpy as np
import pytest
import torch

from media_fixtures import chirp, make_av, make_text, read_index
from test_pretrain import CONFIG, TINY
from test_shard_stream import same_batch, shard_cfg
from xkd.cli import main
from xkd.config import PretrainConfig, load_config
from xkd.data.manifest import Manifest, ManifestRow, read_manifest
from xkd.data.media import Decoding, MediaBytes, decode_clip, decode_windows, probe
from xkd.data.pretrain_batches import PretrainBatches
from xkd.data.shard_reader import ShardSet
from xkd.datasets.reencode import Reencoding, output_shape, reencode
from xkd.datasets.shards import shard_manifest
from xkd.engine.logger import read_metrics

SOURCE_FPS = 25.0


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """4 s at 25 fps, 96 x 128, index-coded frames, a 48 kHz chirp (200 to 3000 Hz)."""
    path = tmp_path_factory.mktemp("reencode") / "source.mp4"
    return make_av(path, seconds=4.0, fps=SOURCE_FPS, size=(96, 128), sample_rate=48000, audio=chirp(4.0, 48000))


def keyframe_times(data: bytes) -> list[float]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        return [float(p.pts * p.time_base) for p in container.demux(stream) if p.is_keyframe and p.pts is not None]


def test_a_reencoded_file_shows_the_same_frames_at_the_same_times(source):
    data = reencode(source, Reencoding(short_side=48, keyframe_interval=0.5))
    media = MediaBytes("re.mp4", data)
    info = probe(media)
    assert (info.height, info.width, info.fps, info.sample_rate, info.channels) == (48, 64, SOURCE_FPS, 16000, 1)
    keys = keyframe_times(data)  # every round(0.5 s x 25) = 12 frames
    assert keys[0] == 0.0 and np.diff(keys) == pytest.approx([12 / SOURCE_FPS] * (len(keys) - 1))
    for start in (0.0, 0.37, 1.52, 2.9):
        a = decode_clip(source, start, 1.0, 8.0, short_side=48)
        b = decode_clip(media, start, 1.0, 8.0, short_side=48)
        assert [read_index(f) for f in a.video] == [read_index(f) for f in b.video]
        assert (a.video.float() - b.video.float()).abs().mean() < 3.0  # codec error on flat colours
        x, y = a.audio.numpy(), b.audio.numpy()
        lags = range(-40, 41)  # the chirp's correlation peaks at the true shift: none
        assert max(lags, key=lambda lag: np.dot(x[100 + lag:-100 + lag], y[100:-100])) == 0
        # > 0.9, not ~1: a decode of the 48 kHz source at 16 kHz puts its samples up to 1/3 of a sample off the
        # grid (the resampler starts wherever the seek lands), which at 3 kHz costs a few hundredths
        assert np.corrcoef(x, y)[0, 1] > 0.9


def test_a_new_frame_rate_keeps_each_frame_at_its_time(source):
    media = MediaBytes("re.mp4", reencode(source, Reencoding(short_side=48, fps=10.0)))
    assert probe(media).fps == 10.0
    clip = decode_clip(media, 0.6, 2.0, 8.0)
    for k, frame in enumerate(clip.video):  # re-encoded and decoded frames each lie within half their period
        assert abs(read_index(frame) / SOURCE_FPS - (0.6 + k / 8.0)) <= 0.5 / 10.0 + 0.5 / SOURCE_FPS + 1e-6


def test_small_sources_are_not_upscaled_and_sides_stay_even():
    assert output_shape(720, 1280, 128) == (128, 228)
    assert output_shape(100, 150, 50) == (50, 74)  # 75 rounded down to even
    assert output_shape(1080, 1920, 160) == (160, 284)
    assert output_shape(64, 48, 128) == (64, 48)
    with pytest.raises(ValueError, match="short side"):
        Reencoding(short_side=1)


def test_one_decode_serves_several_windows_as_separate_decodes_would(tmp_path):
    # 16 kHz audio read at 16 kHz (no resampler, whose grid would start where each seek lands) and starts on the
    # sample grid: the cut equals a direct decode's exactly
    path = make_av(tmp_path / "a.mp4", seconds=4.0, fps=SOURCE_FPS, size=(48, 64), audio=chirp(4.0, 16000))
    starts = [0.25, 1.0, 2.5, 1.0]
    together = decode_windows(path, starts, 1.0, Decoding(8.0, 48, 16000))
    for start, clip in zip(starts, together):
        alone = decode_clip(path, start, 1.0, 8.0, short_side=48)
        assert torch.equal(clip.video, alone.video) and torch.equal(clip.audio, alone.audio)
        assert clip.start == start


@pytest.fixture(scope="module")
def reencoded(avdigits_tiny, tmp_path_factory):
    """The tiny build's training rows re-encoded at a short side of 32 into shards of 5, by the CLI, 2 processes."""
    out = tmp_path_factory.mktemp("reencoded")
    train = read_manifest(avdigits_tiny).filter(split="train")
    assert main(["data", "shard", str(avdigits_tiny), "--split", "train", "--out", str(out), "--shard-size", "5",
                 "--seed", "3", "--reencode", "32", "--keyframe-interval", "0.5", "--processes", "2",
                 "--no-progress"]) == 0
    assert ShardSet(out).samples == len(train)
    return out


def test_reencoded_shards_record_their_settings_and_a_larger_run_warns(reencoded, caplog):
    shards = ShardSet(reencoded)
    assert shards.reencode == Reencoding(short_side=32, keyframe_interval=0.5).record()
    media, record = shards.read(0, [0])[0]
    assert media.name.endswith(".mp4") and min(probe(media).height, probe(media).width) == 32
    assert probe(media).sample_rate == 16000 and record["source"].endswith(".mp4")
    with caplog.at_level(logging.WARNING, logger="xkd.data.pretrain_batches"):
        PretrainBatches(shard_cfg(reencoded, "data.resize_short=32"))
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="xkd.data.pretrain_batches"):
        PretrainBatches(shard_cfg(reencoded, "data.resize_short=64"))
    assert len(caplog.records) == 1 and "short side of 32 px" in caplog.records[0].getMessage()
    assert shards.unlike(32, 30.0, 22050)[0].startswith("the audio was re-encoded at 16000 Hz")


def test_bad_files_are_left_out_and_processes_do_not_change_the_bytes(tmp_path):
    for i in range(3):
        make_av(tmp_path / f"c{i}.mp4", seconds=1.0, size=(64, 96), freq=300.0 + 100 * i)
    make_text(tmp_path / "bad.mp4")
    rows = [ManifestRow(name, ("x",), "train") for name in ("c0.mp4", "bad.mp4", "c1.mp4", "c2.mp4")]
    settings = Reencoding(short_side=32)
    one = shard_manifest(Manifest(rows, tmp_path), tmp_path / "one", shard_size=2, progress=False, reencode=settings)
    shard_manifest(Manifest(rows, tmp_path), tmp_path / "two", shard_size=2, progress=False, reencode=settings,
                         processes=2)
    assert one["samples"] == 3 and [b["path"] for b in one["bad"]] == ["bad.mp4"]
    assert one["reencode"] == settings.record()
    for shard in one["shards"]:
        assert (tmp_path / "one" / shard["name"]).read_bytes() == (tmp_path / "two" / shard["name"]).read_bytes()
    with pytest.raises(ValueError, match="other settings"):
        shard_manifest(Manifest(rows, tmp_path), tmp_path / "one", shard_size=2, progress=False,
                       reencode=Reencoding(short_side=48))


def test_n_clips_per_decode_are_consecutive_views_of_one_sample(reencoded):
    cfg = shard_cfg(reencoded, "data.clips_per_decode=2", "data.resize_short=32")
    batch = PretrainBatches(cfg).stream[0]
    index = batch["index"].tolist()
    assert len(index) == 4 and index[0] == index[1] and index[2] == index[3]
    assert not torch.equal(batch["frames"][0][0], batch["frames"][0][1])  # own window and augmentation
    ranks = [PretrainBatches(shard_cfg(reencoded, "data.clips_per_decode=2", "data.resize_short=32",
                                       "data.batch_size=2"), world_size=2, rank=r).stream[0] for r in (0, 1)]
    assert ranks[0]["index"].tolist() + ranks[1]["index"].tolist() == index
    for v in range(len(batch["frames"])):  # 2 processes see the clips of one process with twice the batch
        assert torch.equal(batch["frames"][v], torch.cat([ranks[0]["frames"][v], ranks[1]["frames"][v]]))
    assert PretrainBatches(cfg).steps_per_epoch == 2 * ShardSet(reencoded).samples // 4  # each sample once
    with pytest.raises(ValueError, match="not a multiple of data.clips_per_decode"):
        PretrainBatches(shard_cfg(reencoded, "data.clips_per_decode=3"))
    with pytest.raises(ValueError, match="needs data.shards"):
        PretrainBatches(load_config(PretrainConfig, CONFIG, [*TINY, "data.clips_per_decode=2",
                                                             "data.manifest=unused.csv"]))


def test_a_loader_with_clips_per_decode_resumes_at_the_exact_micro_batch(reencoded):
    extra = ("data.clips_per_decode=2", "data.resize_short=32", "run.epoch_size=24", "data.num_workers=2")
    straight = list(PretrainBatches(shard_cfg(reencoded, *extra)).loader(1, 0))
    resumed = list(PretrainBatches(shard_cfg(reencoded, *extra)).loader(1, 4))
    assert len(straight) == 6 and len(resumed) == 2
    for a, b in zip(straight[4:], resumed):
        same_batch(a, b)


def test_reencoded_shards_train_under_torchrun_with_ddp_and_fsdp_and_extract(reencoded, tmp_path):
    """The path a large run takes: re-encoded shards, 2 clips per decode, the views finished in the step, 2 ranks."""
    from test_fsdp import ok, torchrun

    for strategy in ("ddp", "fsdp"):
        ok(torchrun(reencoded, tmp_path / strategy, f"run.strategy={strategy}", "data.resize_short=32",
                    "data.clips_per_decode=2", "data.video_views_on=device", steps=2))
        assert read_metrics(tmp_path / strategy)["step"] == [1, 2]
    out = tmp_path / "features.npz"
    assert main(["extract", "--weights", str(tmp_path / "fsdp"), "--input", str(reencoded), "--out", str(out),
                 "--workers", "0", "--no-progress"]) == 0
    with np.load(out) as features:
        assert features["video_video"].shape[0] == ShardSet(reencoded).samples
        assert np.isfinite(features["audio_video"]).all()
