"""Training-time cluster diagnostics: the label columns found, the AMI logged every N steps, and a run's weights
untouched by the probe."""

import csv

import pytest
import torch

from test_pretrain import tiny_cfg, weights
from xkd.data.manifest import read_manifest
from xkd.engine.cluster_probe import label_columns
from xkd.engine.pretrain import pretrain


def test_the_categorical_columns_are_compared(avdigits_tiny):
    columns = label_columns(read_manifest(avdigits_tiny))
    assert {"digit", "motion", "voice"} <= set(columns) and "path" not in columns
    assert "speech_start" not in columns  # a time, not a category


def test_ami_is_logged_every_n_steps_and_changes_nothing_else(avdigits_tiny, tmp_path):
    probed = pretrain(tiny_cfg(avdigits_tiny, "run.probe_every=2", "run.probe_clips=12"), tmp_path / "probed",
                      max_steps=4, progress=False)
    pretrain(tiny_cfg(avdigits_tiny), tmp_path / "plain", max_steps=4, progress=False)
    a, _ = weights(tmp_path / "probed" / "weights.safetensors")
    b, _ = weights(tmp_path / "plain" / "weights.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # the probe draws from no random stream of the run
    with open(tmp_path / "probed" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("probe_ami_video_digit")]
    assert [int(float(r["step"])) for r in rows] == [2, 4] and probed["steps"] == 4
    for row in rows:
        for key in ("probe_ami_video_digit", "probe_ami_audio_voice", "probe_ami_audio_motion"):
            assert -1.0 <= float(row[key]) <= 1.0
        assert 1 <= float(row["probe_clusters_audio"]) <= 12


def test_a_method_without_teachers_refuses_the_probe(avdigits_tiny, tmp_path):
    with pytest.raises(ValueError, match="needs teachers"):
        pretrain(tiny_cfg(avdigits_tiny, "method=mae", "run.probe_every=1", "run.probe_clips=4"), tmp_path / "r",
                 max_steps=1, progress=False)
    assert not (tmp_path / "r" / "weights.safetensors").exists()  # refused before the first step
