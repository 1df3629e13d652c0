import logging

import pytest
import torch
from media_fixtures import make_av, make_empty, read_index
from torch.utils.data import DataLoader

from xkd.data.dataset import BadMediaReport, ClipDataset, collate_clips
from xkd.data.manifest import Manifest, ManifestRow
from xkd.data.media import MediaError

FPS = 8


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """Rows: good (3 s), no audio, zero bytes, good (4 s), good (3 s); all 8 fps index-coded, 32x32."""
    root = tmp_path_factory.mktemp("clips")
    make_av(root / "a.mp4", seconds=3.0, fps=FPS, size=(32, 32))
    make_av(root / "mute.mp4", seconds=3.0, fps=FPS, size=(32, 32), audio=False)
    make_empty(root / "empty.mp4")
    make_av(root / "b.mp4", seconds=4.0, fps=FPS, size=(32, 32), freq=880.0)
    make_av(root / "c.mp4", seconds=3.0, fps=FPS, size=(32, 32), freq=660.0)
    rows = [ManifestRow(path=name) for name in ("a.mp4", "mute.mp4", "empty.mp4", "b.mp4", "c.mp4")]
    return Manifest(rows, root)


def dataset(manifest, **kw):
    args = dict(clip_duration=1.0, fps=FPS, short_side=16, sample_rate=16000)
    return ClipDataset(manifest, **{**args, **kw})


def test_item_holds_the_decoded_window(media):
    ds = dataset(media)
    item = ds[0]
    assert item["video"].shape == (8, 16, 16, 3) and item["audio"].shape == (16000,)
    assert (item["index"], item["clip"], item["bad"]) == (0, 0, [])
    assert 0.0 <= item["start"] <= 2.0
    assert read_index(item["video"][0]) == round(item["start"] * FPS)  # the frames come from the drawn start


def test_skip_policy_substitutes_next_row_and_reports(media, caplog):
    ds = dataset(media)
    with caplog.at_level(logging.WARNING, logger="xkd.data.dataset"):
        item = ds[1]
        ds[1]
    root = media.root
    assert item["index"] == 3  # mute.mp4 -> empty.mp4 -> b.mp4
    assert item["bad"] == [(str(root / "mute.mp4"), "no-audio"), (str(root / "empty.mp4"), "empty-file")]
    assert sum("mute.mp4" in r.getMessage() for r in caplog.records) == 1  # logged once per file

    batch = next(iter(DataLoader(ds, batch_size=5, collate_fn=collate_clips)))
    assert batch["video"].shape == (5, 8, 16, 16, 3) and batch["audio"].shape == (5, 16000)
    assert batch["index"].tolist() == [0, 3, 3, 3, 4]
    report = BadMediaReport()
    new = report.update(batch)
    assert len(new) == 2 and len(report) == 2 and report.replacements == 3
    assert report.counts() == {"no-audio": 1, "empty-file": 1}
    assert "2 files" in report.summary() and "no-audio 1" in report.summary() and "empty-file 1" in report.summary()
    assert report.update(batch) == [] and report.replacements == 6


def test_error_policy_raises_naming_the_file(media):
    ds = dataset(media, bad_media="error")
    with pytest.raises(MediaError) as err:
        ds[1]
    assert err.value.reason == "no-audio" and "mute.mp4" in str(err.value)


def test_missing_audio_silence_keeps_the_row(media):
    item = dataset(media, missing_audio="silence")[1]
    assert item["index"] == 1 and item["bad"] == [] and not item["audio"].any()
    assert item["video"].shape == (8, 16, 16, 3)


def test_gives_up_after_consecutive_failures(media):
    bad_only = Manifest([media.rows[1], media.rows[2]], media.root)
    with pytest.raises(RuntimeError, match="2 consecutive bad media.*no-audio.*empty-file"):
        dataset(bad_only)[0]


def test_random_windows_are_reproducible_by_seed_and_epoch(media):
    ds, same = dataset(media, seed=3), dataset(media, seed=3)
    first = [ds[i]["start"] for i in (0, 3, 4)]
    assert first == [same[i]["start"] for i in (0, 3, 4)]
    torch.testing.assert_close(ds[3]["audio"], same[3]["audio"])
    ds.set_epoch(1)
    assert [ds[i]["start"] for i in (0, 3, 4)] != first
    ds.set_epoch(0)
    assert [ds[i]["start"] for i in (0, 3, 4)] == first
    assert [dataset(media, seed=4)[i]["start"] for i in (0, 3, 4)] != first


def test_workers_give_the_same_items(media):
    ds = dataset(media, seed=7, need_video=False)
    serial = next(iter(DataLoader(ds, batch_size=5, collate_fn=collate_clips)))
    parallel = list(DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_clips))
    assert torch.cat([b["start"] for b in parallel]).tolist() == serial["start"].tolist()
    report = BadMediaReport()
    for b in parallel:
        report.update(b)
    assert report.counts() == {"no-audio": 1, "empty-file": 1} and "video" not in serial


def test_row_window_and_uniform_clips(tmp_path):
    make_av(tmp_path / "v.mp4", seconds=4.0, fps=FPS, size=(32, 32))
    manifest = Manifest([ManifestRow(path="v.mp4", start=1.0, end=2.5)], tmp_path)
    ds = dataset(manifest, clips_per_video=3, clip_sampling="uniform")
    assert len(ds) == 3
    items = [ds[i] for i in range(3)]
    assert [it["start"] for it in items] == [1.0, 1.25, 1.5] and [it["clip"] for it in items] == [0, 1, 2]
    assert [read_index(it["video"][0]) for it in items] == [8, 10, 12]
    randoms = [dataset(manifest, seed=s)[0]["start"] for s in range(5)]
    assert all(1.0 <= s <= 1.5 for s in randoms) and len(set(randoms)) == 5


def test_transform_views_are_collated_and_errors_name_the_file(media):
    def views(clip, generator):
        shift = int(torch.randint(0, 4, (1,), generator=generator))
        frames = clip.video.permute(3, 0, 1, 2).float()
        return {"frames": [frames, frames[:, shift : shift + 4]], "audio": clip.audio}

    ds = dataset(media, transform=views)
    batch = collate_clips([ds[0], ds[4]])
    assert batch["frames"][0].shape == (2, 3, 8, 16, 16) and batch["frames"][1].shape == (2, 3, 4, 16, 16)
    assert batch["audio"].shape == (2, 16000) and batch["bad"] == []

    def broken(clip, generator):
        raise ValueError("bad crop")

    with pytest.raises(RuntimeError, match=r"a\.mp4.*ValueError: bad crop"):
        dataset(media, transform=broken)[0]
