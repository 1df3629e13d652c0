"""xkd extract: streaming .npz output readable by plain numpy, bad files reported and skipped."""

import numpy as np
import pytest

from eval_fixtures import tiny_config, write_separable
from media_fixtures import make_av, make_empty, make_text
from xkd.api import random_encoders
from xkd.cli import main
from xkd.eval.extract import ExtractOptions, extract_to_file, manifest_from_target


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    write_separable(root, per_class_train=2, per_class_test=1)
    make_empty(root / "broken" / "empty.mp4")
    make_text(root / "broken" / "notes.mp4")
    make_av(root / "broken" / "silent film.mp4", seconds=2.0, audio=False)
    return root


def test_streamed_file_matches_in_memory_features(folder, tmp_path):
    enc = random_encoders(tiny_config(), seed=3)
    manifest = manifest_from_target(folder)
    assert len(manifest) == 9
    opts = ExtractOptions(clips_per_video=2, num_workers=0, progress=False, batch_size=3)
    out, videos, failed = extract_to_file(enc, manifest, tmp_path / "f.npz", ["video", "audio"], opts)
    assert videos == 6
    assert sorted(reason for _, reason in failed) == ["empty-file", "no-audio", "unreadable"]
    z = np.load(out, allow_pickle=False)
    assert z["video_clip"].shape == (12, 32) and z["audio_video"].shape == (6, 32)
    assert len(z["paths"]) == 9 and z["clip_row"].tolist() == np.repeat(z["video_row"], 2).tolist()
    # the per-video features are the mean of its clips
    np.testing.assert_allclose(z["video_video"], z["video_clip"].reshape(6, 2, -1).mean(axis=1), rtol=1e-5, atol=1e-6)
    # and equal to a direct forward pass of the first clip
    import torch

    from xkd.data.media import decode_clip
    from xkd.data.views import EvalViews

    row = int(z["video_row"][0])
    cfg = enc.config
    clip = decode_clip(manifest.resolve(manifest[row]), 0.0, 2.0, 8.0, short_side=32)
    views = EvalViews(enc.logmel, 16000, crop_size=32, short_side=32)(clip)
    direct = enc.encode_video(views["video"][None])[0].numpy()
    np.testing.assert_allclose(z["video_clip"][0], direct, rtol=1e-4, atol=1e-5)
    assert cfg.data.clip_duration == 2.0 and torch.is_tensor(views["video"])


def test_cli_extract_reports_skipped_files(folder, tmp_path, capsys, monkeypatch):
    from xkd.engine.pretrain import save_weights_file
    from xkd.models.xkd import XKD

    cfg = tiny_config()
    save_weights_file(XKD(cfg), cfg, tmp_path / "weights.safetensors", step=0)
    code = main(["extract", "--weights", str(tmp_path / "weights.safetensors"), "--input", str(folder),
                 "--out", str(tmp_path / "features.npz"), "--clips", "1", "--workers", "0", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "6 videos" in out and "3 files skipped" in out and "no-audio" in out
    assert np.load(tmp_path / "features.npz")["video_video"].shape == (6, 32)


def test_models_evaluated_together_may_differ_in_training_views_but_not_in_inputs():
    from xkd.eval.extract import _shared_config

    base = random_encoders(tiny_config(), seed=3)
    mas_like = tiny_config()
    mas_like.data.num_local_views, mas_like.data.batch_size = 3, 7
    assert _shared_config({"a": base, "b": random_encoders(mas_like, seed=1)}) is base.config
    other = tiny_config()
    other.data.resize_short += 8
    with pytest.raises(ValueError, match="resize_short"):
        _shared_config({"a": base, "b": random_encoders(other, seed=1)})


def test_features_from_shards_equal_features_from_files(folder, tmp_path):
    from xkd.datasets.shards import shard_manifest

    enc = random_encoders(tiny_config(), seed=3)
    files = manifest_from_target(folder)
    shard_manifest(files, tmp_path / "shards", shard_size=4, progress=False)
    shards = manifest_from_target(tmp_path / "shards")
    assert len(shards) == 7  # the empty file and the text file were left out when sharding
    opts = ExtractOptions(clips_per_video=2, num_workers=0, progress=False, batch_size=3)
    out_f, videos_f, _ = extract_to_file(enc, files, tmp_path / "files.npz", ["video", "audio"], opts)
    out_s, videos_s, failed = extract_to_file(enc, shards, tmp_path / "shards.npz", ["video", "audio"], opts)
    assert videos_s == videos_f == 6 and [reason for _, reason in failed] == ["no-audio"]
    zf, zs = np.load(out_f), np.load(out_s)
    # a sample's key is its row in the sharded manifest: match each shard row with its file row
    file_row = [int(r.path.split("/")[1].split(".")[0]) for r in shards]
    order_f = {int(r): k for k, r in enumerate(zf["video_row"])}
    for k, r in enumerate(zs["video_row"]):
        f = order_f[file_row[int(r)]]
        np.testing.assert_array_equal(zs["video_video"][k], zf["video_video"][f])
        np.testing.assert_array_equal(zs["audio_video"][k], zf["audio_video"][f])
