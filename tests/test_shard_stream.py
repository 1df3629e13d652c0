"""Pretraining from shards: the shard set and its member tables, the resampled step-indexed stream (ranks, bad
samples, resume), and pretraining from shards under one process, on resume and under torchrun."""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from media_fixtures import make_av
from xkd.config import PretrainConfig, load_config
from xkd.data.manifest import Manifest, ManifestRow, read_manifest, row_record
from xkd.data.media import Decoding, MediaError
from xkd.data.pretrain_batches import PretrainBatches
from xkd.data.shard_reader import Member, ShardSet, ShardSetError, scan_members
from xkd.data.shard_stream import ShardStream
from xkd.datasets.shards import shard_manifest
from xkd.engine.pretrain import pretrain
from test_pretrain import CONFIG, TINY, weights


@pytest.fixture(scope="module")
def shards(avdigits_tiny, tmp_path_factory):
    """The tiny build's training rows in shards of 5 (the last one shorter)."""
    out = tmp_path_factory.mktemp("shards")
    shard_manifest(read_manifest(avdigits_tiny).filter(split="train"), out, shard_size=5, seed=3, progress=False)
    return out


def shard_cfg(folder, *extra):
    return load_config(PretrainConfig, CONFIG, [f"data.shards={folder}", *TINY, "data.shard_window=3", *extra])


def test_shard_set_reads_counts_members_and_bytes(shards, avdigits_tiny):
    index = json.loads((shards / "index.json").read_text())
    folder = ShardSet(shards)
    assert folder.counts == [s["samples"] for s in index["shards"]] and folder.counts[-1] < 5
    assert folder.splits == {"train": folder.samples}
    pattern = ShardSet(str(shards / f"shard-{{000000..{len(folder) - 1:06d}}}.tar"))
    assert pattern.paths == folder.paths and pattern.counts == folder.counts
    manifest = read_manifest(avdigits_tiny).filter(split="train")  # the sharded manifest: keys are its rows
    for (media, record), member in zip(folder.read(1, [0, 2, 7]), [0, 2, 2]):  # positions wrap round the shard
        row = manifest[int(folder.members(1)[member].key)]
        assert media.data == manifest.resolve(row).read_bytes() and record["path"] == row_record(row)["path"]
        assert media.name == f"shard-000001.tar/{folder.members(1)[member].key}.mp4"
    folder.check_split("train")
    folder.check_split("")
    with pytest.raises(ShardSetError, match="other splits than 'test'"):
        folder.check_split("test")


def test_shard_set_errors_name_what_is_wrong(shards, tmp_path):
    with pytest.raises(ShardSetError, match="no such file"):
        ShardSet(tmp_path)  # a folder without index.json
    with pytest.raises(ShardSetError, match="no such shard folder or file"):
        ShardSet(tmp_path / "nowhere")
    with pytest.raises(ShardSetError, match="1 of 2 shards missing"):
        ShardSet(str(shards / "shard-{000000,000099}.tar"))
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in shards.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "shard-000000.tar").write_bytes(b"not a tar" * 100)
    with pytest.raises(ShardSetError, match="cannot read the tar"):
        scan_members(broken / "shard-000000.tar")


def test_member_tables_come_from_the_records_or_else_the_tar(shards, tmp_path):
    record = json.loads((shards / "shard-000001.json").read_text())
    listed = [Member(k, s, (a, b), (c, d)) for k, s, a, b, c, d in record["members"]]
    assert listed == scan_members(shards / "shard-000001.tar")  # the writer lists what the tar holds
    older = tmp_path / "older"
    shutil.copytree(shards, older)
    del record["members"]  # a shard written without the list is scanned
    (older / "shard-000001.json").write_text(json.dumps(record))
    assert ShardSet(older).read(1, [0, 3]) == ShardSet(shards).read(1, [0, 3])


def stream(folder, batch, world=1, rank=0, **kw):
    cfg = shard_cfg(folder)
    batches = PretrainBatches(cfg)
    s = batches.stream
    return ShardStream(s.shards, s.clip_duration, s.decoding, s.transform, batch, world, rank, window=3, seed=5, **kw)


def same_batch(a, b):
    assert a["index"].tolist() == b["index"].tolist()
    for x, y in zip([*a["frames"], *a["audio"]], [*b["frames"], *b["audio"]]):
        assert torch.equal(x, y)


def test_stream_is_a_function_of_seed_step_and_rank(shards):
    whole = stream(shards, 8)
    ranks = [stream(shards, 4, world=2, rank=r) for r in (0, 1)]
    for m in (0, 5):
        full = whole[m]
        parts = [r[m] for r in ranks]
        assert full["index"].tolist() == parts[0]["index"].tolist() + parts[1]["index"].tolist()
        for key in ("frames", "audio"):  # a 2-process run sees the clips of one process with twice the batch
            for v, (a, b) in enumerate(zip(parts[0][key], parts[1][key])):
                assert torch.equal(full[key][v], torch.cat([a, b]))
    same_batch(whole[3], stream(shards, 8)[3])  # a new stream (a resumed run) draws the same micro-batch
    assert whole[3]["index"].tolist() != whole[4]["index"].tolist()
    windows = whole.windows(0)
    assert len(windows) == 3 and all(0 <= start < whole.shards.counts[k] for k, start in windows)


def test_draws_follow_the_shard_sizes(shards):
    s = stream(shards, 8)
    drawn = torch.zeros(len(s.shards))
    for m in range(400):
        for k, _ in s.windows(m):
            drawn[k] += 1
    share = drawn / drawn.sum()
    expected = torch.tensor(s.shards.counts, dtype=torch.float) / s.shards.samples
    assert torch.allclose(share, expected, atol=0.04), (share, expected)


def test_bad_samples_are_replaced_and_reported(tmp_path):
    rows = []
    for i in range(4):
        make_av(tmp_path / f"c{i}.mp4", seconds=1.2, freq=300.0 + 100 * i)
        # row 1's window lies past the end of its file: it probes (so it is sharded) but cannot be decoded
        rows.append(ManifestRow(f"c{i}.mp4", ("x",), "train", start=5.0 if i == 1 else None,
                                end=6.0 if i == 1 else None))
    shard_manifest(Manifest(rows, tmp_path), tmp_path / "s", shard_size=4, progress=False)
    shard_set = ShardSet(tmp_path / "s")
    decoding = Decoding(8.0, 32, 16000)

    def raw(clip, generator):
        return {"audio": clip.audio}

    s = ShardStream(shard_set, 1.0, decoding, raw, batch_size=4, window=4, seed=0)
    batch = s[0]
    assert 1 not in batch["index"].tolist() and len(batch["bad"]) == 1
    assert batch["bad"][0][0].endswith("000000001.mp4") and batch["bad"][0][1] == "too-short"
    strict = ShardStream(shard_set, 1.0, decoding, raw, batch_size=4, window=4, bad_media="error")
    with pytest.raises(MediaError, match="too-short"):
        strict[0]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_loader_from_any_step_continues_the_stream(shards, workers):
    cfg = shard_cfg(shards, f"data.num_workers={workers}", "optim.accum_steps=2", "run.epoch_size=24")
    batches = PretrainBatches(cfg)
    assert batches.steps_per_epoch == 3  # 24 samples of 4 x 2 per step
    straight = list(PretrainBatches(shard_cfg(shards, "optim.accum_steps=2", "run.epoch_size=24")).loader(1, 0))
    resumed = list(batches.loader(1, 2))
    assert len(straight) == 6 and len(resumed) == 2
    for a, b in zip(straight[4:], resumed):
        same_batch(a, b)


def test_shards_refuse_a_decoded_cache_and_a_mixed_split(shards, tmp_path, avdigits_tiny):
    with pytest.raises(ValueError, match="decoded_cache cannot be used with data.shards"):
        PretrainBatches(shard_cfg(shards, f"data.decoded_cache={tmp_path}"))
    mixed = tmp_path / "mixed"
    shard_manifest(read_manifest(avdigits_tiny), mixed, shard_size=10, progress=False)
    with pytest.raises(ShardSetError, match="--split train"):
        PretrainBatches(shard_cfg(mixed))
    assert PretrainBatches(shard_cfg(mixed, "data.split=")).steps_per_epoch == 40 // 4


@pytest.mark.parametrize("per_decode", [1, 2])
def test_pretraining_from_shards_resumes_bitwise(shards, tmp_path, per_decode):
    cfg = shard_cfg(shards, "run.checkpoint_every=2", f"data.clips_per_decode={per_decode}")
    pretrain(cfg, tmp_path / "straight", max_steps=4, progress=False)
    pretrain(cfg, tmp_path / "split", max_steps=3, progress=False)
    pretrain(cfg, tmp_path / "split", max_steps=4, resume=True, progress=False)
    a, _ = weights(tmp_path / "straight" / "weights.safetensors")
    b, _ = weights(tmp_path / "split" / "weights.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:3]


def test_torchrun_from_shards_equals_one_process(shards, tmp_path):
    common = [f"data.shards={shards}", *TINY, "data.shard_window=3", "loss.da=false"]
    pretrain(load_config(PretrainConfig, CONFIG, [*common, "data.batch_size=8"]), tmp_path / "single", max_steps=2,
             progress=False)
    sets = [arg for item in [*common, "data.batch_size=4"] for arg in ("--set", item)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "xkd", "pretrain", "--config", str(CONFIG), *sets, "--out", str(tmp_path / "ddp"),
           "--max-steps", "2", "--no-progress"]
    done = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("done: 2 steps") == 1  # one summary line for the job, from rank 0
    a, _ = weights(tmp_path / "single" / "weights.safetensors")
    b, _ = weights(Path(tmp_path / "ddp" / "weights.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


def test_a_shard_folder_reads_as_a_manifest(shards, avdigits_tiny):
    rows = read_manifest(shards)
    train = read_manifest(avdigits_tiny).filter(split="train")
    assert len(rows) == len(train)
    for row in rows:
        original = train[int(Path(row.path).stem)]  # a sample's key is its row in the sharded manifest
        assert replace(row, path=original.path) == original and row.extra == original.extra
        assert rows.source(row).data == train.resolve(original).read_bytes()
    assert train.source(train[0]) == train.resolve(train[0])  # a file row decodes its file
