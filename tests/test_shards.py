"""WebDataset shards of a manifest: original bytes and rows, a seeded order, bad files left out, resumable, an index."""

import json
import tarfile

import numpy as np
import pytest
import webdataset

from media_fixtures import make_av, make_empty, make_text
from xkd.cli import main
from xkd.data.manifest import Manifest, ManifestRow, read_manifest, row_from_record, write_manifest
from xkd.datasets.shards import manifest_digest, shard_manifest


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Seven real clips (mp4 and wav), a missing file, an empty one and a text file renamed .mp4; with labels."""
    root = tmp_path_factory.mktemp("corpus")
    rows = []
    for i in range(7):
        name = f"clip{i}.wav" if i == 3 else f"clip{i}.mp4"
        make_av(root / name, seconds=1.0, video=i != 3, freq=300.0 + 50 * i)
        rows.append(ManifestRow(name, (f"class{i % 2}",), "train" if i < 5 else "test", i % 3, None, None,
                                {"speaker": f"s{i}"}))
    make_empty(root / "empty.mp4")
    make_text(root / "renamed.mp4")
    rows += [ManifestRow("missing.mp4", ("class0",)), ManifestRow("empty.mp4", ("class1",)),
             ManifestRow("renamed.mp4", ("class0",), start=0.5, end=1.0)]
    path = write_manifest(Manifest(rows, root), root / "manifest.csv")
    return read_manifest(path)


def keys_in(shard):
    """The sample keys of a tar shard, in the order they were written."""
    with tarfile.open(shard) as tar:
        return list(dict.fromkeys(m.name.split(".")[0] for m in tar.getmembers()))


def samples_of(folder, index):
    """{key: sample dict} over every shard the index lists, read with webdataset's own tar reader."""
    out = {}
    for shard in index["shards"]:
        for sample in webdataset.WebDataset(str(folder / shard["name"]), shardshuffle=False, empty_check=False):
            out[sample["__key__"]] = sample
    return out


def test_shards_hold_the_original_bytes_and_rows_in_a_seeded_order(corpus, tmp_path):
    index = shard_manifest(corpus, tmp_path / "a", shard_size=3, seed=5, progress=False)
    assert index["rows"] == 10 and index["samples"] == 7 and len(index["shards"]) == 4
    assert [s["samples"] for s in index["shards"]] == [
        json.loads((tmp_path / "a" / s["name"].replace(".tar", ".json")).read_text())["samples"]
        for s in index["shards"]]
    assert index["manifest_sha256"] == manifest_digest(corpus)
    assert index["splits"] == {"train": 5, "test": 2}  # the bad rows (split '') are left out
    reasons = {b["path"]: b["reason"] for b in index["bad"]}
    assert set(reasons) == {"missing.mp4", "empty.mp4", "renamed.mp4"}
    assert reasons["missing.mp4"].startswith("missing") and reasons["empty.mp4"].startswith("empty")
    samples = samples_of(tmp_path / "a", index)
    assert len(samples) == 7
    for key, sample in samples.items():
        row = corpus[int(key)]
        suffix = "wav" if row.path.endswith(".wav") else "mp4"
        assert sample[suffix] == corpus.resolve(row).read_bytes()  # byte for byte
        record = json.loads(sample["json"])
        assert row_from_record(record) == row and record["extra"] == row.extra
    perm, bad_rows = np.random.default_rng(5).permutation(10), {b["row"] for b in index["bad"]}
    for k, shard in enumerate(index["shards"]):  # shard k holds rows perm[3k : 3k + 3], bad ones left out
        assert keys_in(tmp_path / "a" / shard["name"]) == [f"{i:09d}" for i in perm[3 * k:3 * k + 3]
                                                           if i not in bad_rows]
    again = shard_manifest(corpus, tmp_path / "b", shard_size=3, seed=5, progress=False)
    assert again["shards"] == index["shards"]
    assert all((tmp_path / "a" / s["name"]).read_bytes() == (tmp_path / "b" / s["name"]).read_bytes()
               for s in index["shards"])  # the same seed writes the same bytes
    other = shard_manifest(corpus, tmp_path / "c", shard_size=3, seed=6, progress=False)
    assert keys_in(tmp_path / "c" / other["shards"][0]["name"]) != keys_in(tmp_path / "a" / index["shards"][0]["name"])


def test_an_interrupted_run_resumes_and_other_settings_are_refused(corpus, tmp_path):
    out = tmp_path / "shards"
    first = shard_manifest(corpus, out, shard_size=4, seed=0, progress=False)
    second_shard = out / first["shards"][1]["name"]
    kept = (out / first["shards"][0]["name"]).stat().st_mtime_ns
    second_shard.unlink()  # as if the run had stopped while writing it
    again = shard_manifest(corpus, out, shard_size=4, seed=0, progress=False)
    assert again == first and second_shard.is_file()
    assert (out / first["shards"][0]["name"]).stat().st_mtime_ns == kept  # finished shards are not rewritten
    with pytest.raises(ValueError, match="another manifest or other settings"):
        shard_manifest(corpus, out, shard_size=5, seed=0, progress=False)


def test_cli_lists_the_files_left_out(corpus, tmp_path, capsys):
    manifest = write_manifest(corpus.relative_to(tmp_path), tmp_path / "m.csv")  # paths relative to its folder
    assert main(["data", "shard", str(manifest), "--out", str(tmp_path / "s"), "--shard-size", "4",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "left out: " in out and "renamed.mp4" in out and "7 of 10 rows in 3 shards" in out
    assert json.loads((tmp_path / "s" / "index.json").read_text())["samples"] == 7
    assert main(["data", "shard", str(manifest), "--out", str(tmp_path / "t"), "--split", "train",
                 "--no-progress"]) == 0
    assert json.loads((tmp_path / "t" / "index.json").read_text())["splits"] == {"train": 5}
    with pytest.raises(SystemExit, match="no rows of split 'val'"):
        main(["data", "shard", str(manifest), "--out", str(tmp_path / "u"), "--split", "val", "--no-progress"])
