"""``xkd ablations``: every variant's overrides make a valid run, and the table aggregates seeds."""

import json

import pytest

from xkd.ablations import VARIANTS, table
from xkd.cli import main


def test_every_variant_trains_evaluates_and_lands_in_the_table(avdigits_tiny, tmp_path, capsys):
    out = tmp_path / "ablations"
    args = ["ablations", "--out", str(out), "--data", str(avdigits_tiny.parent), "--steps", "1", "--seeds", "0", "1",
            "--workers", "0", "--train-clips", "1", "--no-progress", "--set", "data.batch_size=4"]
    assert main(args) == 0
    text = (out / "table.md").read_text()
    assert f"table: {out / 'table.md'}" in capsys.readouterr().out
    for v in VARIANTS:
        row = next(line for line in text.splitlines() if line.startswith(f"| {v.label} |"))
        assert row.count("±") == 4, row
        assert (out / v.name / "seed1" / "weights.safetensors").is_file()
    results = json.loads((out / "results.json").read_text())
    assert results["seeds"] == [0, 1] and set(results["top1"]) == {v.name for v in VARIANTS} | {"random-init"}
    assert results["overrides"] == ["data.batch_size=4"] and "(every run with data.batch_size=4)" in text
    # the ablation overrides reach the runs
    assert "recon_audio: false" in (out / "recon-video" / "seed0" / "config.yaml").read_text()
    assert "teacher_view: global" in (out / "global-view" / "seed0" / "config.yaml").read_text()

    # a second call reuses every finished run and evaluation
    before = json.loads((out / "timings.json").read_text())
    assert main(args) == 0
    assert json.loads((out / "timings.json").read_text()) == before


def test_table_reports_mean_and_sample_std_over_seeds():
    per_seed = {0: {"xkd": {"video digit": 0.5}}, 1: {"xkd": {"video digit": 0.7}}}
    text = table(per_seed, [v for v in VARIANTS if v.name == "xkd"], ["video digit"])
    assert "| XKD: L_ae + L_kd + L_da | 60.0 ± 14.1 |" in text  # std of (50, 70) with ddof 1
    assert "| random init (no pretraining) | – |" in text
