"""Pre-decoded clips: a window sliced from the cache equals direct decoding at the frame-grid start; bad files keep
their reason; stale files, missing rows and other decoding settings are clear errors; the CLI builds and resumes."""

import json
import os

import numpy as np
import pytest
import torch
from media_fixtures import chirp, make_av, make_empty, read_index

from xkd.cli import main as cli_main
from xkd.data.dataset import ClipDataset
from xkd.data.decoded import DecodedClips, predecode
from xkd.data.media import Decoding
from xkd.data.manifest import Manifest, ManifestRow
from xkd.data.media import MediaError, decode_clip

FPS = 8
DECODING = Decoding(fps=FPS, short_side=16, sample_rate=16000)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """Rows: a 5 s file whose source runs at 25 fps with 44.1 kHz stereo audio, the same file's 1-4 s span, a
    zero-byte file, and a 3 s 8 fps file."""
    root = tmp_path_factory.mktemp("decoded")
    stereo = np.stack([chirp(5.0, 44100), chirp(5.0, 44100, 500.0, 900.0)])
    make_av(root / "long.mp4", seconds=5.0, fps=25, size=(32, 48), sample_rate=44100, audio=stereo)
    make_empty(root / "empty.mp4")
    make_av(root / "short.mp4", seconds=3.0, fps=FPS, size=(32, 32))
    rows = [ManifestRow("long.mp4"), ManifestRow("long.mp4", start=1.0, end=4.0), ManifestRow("empty.mp4"),
            ManifestRow("short.mp4")]
    manifest = Manifest(rows, root)
    cache = root / "cache"
    result = predecode(manifest, cache, DECODING, workers=0, progress=False)
    return manifest, cache, result


def test_predecode_counts_rows_and_bad_files(media):
    _, _, result = media
    assert (result["rows"], result["decoded"], result["reused"]) == (4, 4, 0)
    assert result["bad"] == {"empty-file": 1} and result["bytes"] > 0


@pytest.mark.parametrize("row, offset", [(0, 0.0), (0, 1.3), (0, 2.96), (1, 0.0), (1, 0.77), (3, 0.5)])
def test_cached_window_equals_direct_decoding_at_the_grid_start(media, row, offset):
    manifest, cache, _ = media
    entry = manifest[row]
    path = manifest.resolve(entry)
    lo = entry.start or 0.0
    store = DecodedClips(cache, DECODING)
    clip = store.clip(store.row(path, lo, entry.end), offset, 2.0)
    start = round(offset * FPS) / FPS  # the requested start, rounded to the 1/fps frame grid
    assert clip.start == pytest.approx(lo + start)
    direct = decode_clip(path, lo + start, 2.0, FPS, short_side=16, sample_rate=16000)
    assert clip.video.shape == (16, 16, 24 if row < 3 else 16, 3) and clip.video.dtype == torch.uint8
    assert torch.equal(clip.video, direct.video)
    assert clip.audio.shape == direct.audio.shape == (32000,)
    torch.testing.assert_close(clip.audio, direct.audio, rtol=0, atol=2e-3)  # AAC decoder state after a seek


def test_window_past_the_end_is_clamped_to_the_span(media):
    manifest, cache, _ = media
    path = manifest.resolve(manifest[3])
    store = DecodedClips(cache, DECODING)
    clip = store.clip(store.row(path, 0.0, None), 2.9, 2.0)  # 3 s file: the last window starts at 1 s
    assert clip.start == 1.0 and read_index(clip.video[0]) == FPS


def test_bad_file_raises_its_reason_and_the_dataset_skips_it(media):
    manifest, cache, _ = media
    store = DecodedClips(cache, DECODING)
    with pytest.raises(MediaError) as err:
        store.row(manifest.resolve(manifest[2]), 0.0, None)
    assert err.value.reason == "empty-file"
    ds = ClipDataset(manifest, clip_duration=2.0, fps=FPS, short_side=16, sample_rate=16000, decoded_cache=cache)
    item = ds[2]
    assert item["index"] == 3 and item["bad"] == [(str(manifest.resolve(manifest[2])), "empty-file")]


def test_dataset_items_come_from_the_cache(media, monkeypatch):
    manifest, cache, _ = media
    ds = ClipDataset(manifest, clip_duration=2.0, fps=FPS, short_side=16, sample_rate=16000, decoded_cache=cache)
    monkeypatch.setattr("xkd.data.media.decode_clip", None)  # any direct decode would fail
    monkeypatch.setattr("xkd.data.media.probe", None)
    for index in (0, 1, 3):
        item = ds[index]
        assert item["video"].shape == (16, 16, 24 if index < 3 else 16, 3)
        assert item["start"] * FPS == pytest.approx(round(item["start"] * FPS))  # on the frame grid


def test_changed_file_missing_row_and_other_settings_are_errors(media, tmp_path):
    manifest, cache, _ = media
    store = DecodedClips(cache, DECODING)
    with pytest.raises(FileNotFoundError, match="xkd data predecode"):
        store.row(manifest.resolve(manifest[0]), 0.5, None)  # a span that was never decoded
    with pytest.raises(ValueError, match="short_side: cache 16 vs config 32"):
        DecodedClips(cache, Decoding(fps=FPS, short_side=32, sample_rate=16000))
    with pytest.raises(FileNotFoundError, match="not a decoded-clip cache"):
        DecodedClips(tmp_path, DECODING)
    path = manifest.resolve(manifest[3])
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    try:
        with pytest.raises(RuntimeError, match="changed"):
            DecodedClips(cache, DECODING).row(path, 0.0, None)
    finally:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_cli_predecode_builds_resumes_and_trains_from_the_cache(avdigits_tiny, tmp_path, capsys):
    manifest = avdigits_tiny  # the tiny build's manifest.csv
    config = "configs/pretrain/xkd_avdigits_cpu.yaml"
    args = ["data", "predecode", "--config", config, "--set", f"data.manifest={manifest}", "--out",
            str(tmp_path / "cache"), "--workers", "2", "--no-progress"]
    assert cli_main(args) == 0
    first = capsys.readouterr().out
    rows = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert rows["decoding"]["short_side"] == 32 and "decoded now, 0 already there" in first
    victim = next((tmp_path / "cache" / "rows").glob("*.json"))
    victim.unlink()  # an interrupted run: this row is decoded again, the others are kept
    assert cli_main(args) == 0
    assert "(1 decoded now" in capsys.readouterr().out
    run = tmp_path / "run"
    assert cli_main(["pretrain", "--config", config, "--set", f"data.manifest={manifest}", "--set",
                     f"data.decoded_cache={tmp_path / 'cache'}", "--set", "data.batch_size=4", "--set",
                     "data.num_workers=0", "--out", str(run), "--max-steps", "2", "--no-progress"]) == 0
    assert (run / "weights.safetensors").is_file()

