"""``xkd ablations``: every variant's overrides make a valid run, and the table aggregates seeds."""

import json

from xkd.ablations import CEILING, RANDOM, VARIANTS, ceiling_fractions, table
from xkd.cli import main


def test_every_variant_trains_evaluates_and_lands_in_the_table(avdigits_tiny, tmp_path, capsys):
    out = tmp_path / "ablations"
    args = ["ablations", "--out", str(out), "--data", str(avdigits_tiny.parent), "--steps", "1", "--seeds", "0", "1",
            "--workers", "0", "--train-clips", "1", "--no-progress", "--set", "data.batch_size=4", "--curve-points", "0"]
    assert main(args) == 0
    text = (out / "table.md").read_text()
    assert f"table: {out / 'table.md'}" in capsys.readouterr().out
    for v in VARIANTS:
        labels = [v.label] if v.method in ("mae", "cav_mae") or v.supervised else [f"{v.label}: teacher",
                                                                                      f"{v.label}: student"]
        for label in labels:
            score, chosen = [line for line in text.splitlines() if line.startswith(f"| {label} |")]
            assert score.count("±") == 4 and chosen.count("alpha=") == 4, (score, chosen)
        assert (out / v.name / "seed1" / "weights.safetensors").is_file()
        if not v.supervised:
            summary = json.loads((out / v.name / "seed1" / "summary.json").read_text())
            assert summary["steps"] == summary["schedule_steps"] == 1  # complete schedules
    results = json.loads((out / "results.json").read_text())
    assert results["seeds"] == [0, 1] and results["baseline_seeds"] == [100003, 100004]
    # the folder holds a version-1 build: its recipes are run
    assert results["avdigits_version"] == 1 and results["variants"]["mas"]["config"] == "xkd_mas_avdigits_cpu.yaml"
    assert {"xkd/teacher", "xkd/student", "ae/student", "random-init"} <= set(results["top1"])
    assert "| random init (no pretraining; its own seed) |" in text
    assert "| ceiling fraction: (model - random init) / (supervised - random init) |" in text
    assert set(results["ceiling_fraction"]["xkd/teacher"]) == {"video digit", "audio digit", "audio+video digit"}
    assert results["overrides"] == ["data.batch_size=4"] and "(every run with data.batch_size=4)" in text
    # every run sliced its clips from the one decoded copy of the training split, in its own process
    config = (out / "xkd" / "seed0" / "config.yaml").read_text()
    assert f"decoded_cache: {out / 'decoded'}" in config and "num_workers: 0" in config
    assert (out / "decoded" / "index.json").is_file()
    # the ablation overrides reach the runs
    assert "recon_audio: false" in (out / "recon-video" / "seed0" / "config.yaml").read_text()
    assert "teacher_view: global" in (out / "global-view" / "seed0" / "config.yaml").read_text()

    # a second call reuses every finished run and evaluation
    before = json.loads((out / "timings.json").read_text())
    assert main(args) == 0
    assert json.loads((out / "timings.json").read_text()) == before

    # scored on the val split: the runs are reused, the evaluation is redone on the val split
    trained = (out / "xkd" / "seed0" / "weights.safetensors").stat().st_mtime_ns
    assert main([*args, "--split", "val", "--variants", "ae", "xkd"]) == 0
    assert (out / "xkd" / "seed0" / "weights.safetensors").stat().st_mtime_ns == trained
    assert json.loads((out / "results.json").read_text())["split"] == "val"
    assert "val split" in (out / "table.md").read_text()
    assert json.loads((out / "eval_seed0.json").read_text())["split"] == "val"


def test_learning_curves_score_the_kept_weights_beside_random_init_and_the_ceiling(avdigits_tiny, tmp_path):
    out = tmp_path / "ablations"
    args = ["ablations", "--out", str(out), "--data", str(avdigits_tiny.parent), "--steps", "4", "--seeds", "0", "1",
            "--variants", "ae", "xkd", "supervised", "--curve-points", "2", "--workers", "0", "--no-progress",
            "--set", "data.batch_size=4"]
    assert main(args) == 0
    curves = json.loads((out / "curves.json").read_text())
    assert set(curves["curves"]) == {"ae", "xkd"} and curves["tasks"] == ["video digit", "audio digit"]
    for per_task in curves["curves"].values():  # the weights of step 2 and the final ones, seed 0's runs
        assert [[step for step, _ in points] for points in per_task.values()] == [[2, 4], [2, 4]]
    assert set(curves["references"]) == {"random init (2 seeds)", "supervised ceiling (2 seeds)"}
    assert (out / "learning_curve.png").stat().st_size > 0
    assert "![learning curves](learning_curve.png)" in (out / "table.md").read_text()
    before = json.loads((out / "timings.json").read_text())
    assert main(args) == 0  # reused: nothing is scored again
    assert json.loads((out / "timings.json").read_text()) == before


def test_table_reports_mean_and_sample_std_over_seeds():
    def result(top1, C):
        return {"video digit": {"top1": top1, "hparams": {"C": [C]}, "at_edge": []}}

    per_seed = {0: {"xkd/teacher": result(0.5, 1.0), "xkd/student": result(0.4, 1.0)},
                1: {"xkd/teacher": result(0.7, 10.0), "xkd/student": result(0.4, 1.0)}}
    text = table(per_seed, [v for v in VARIANTS if v.name == "xkd"], ["video digit"])
    assert "| XKD: L_ae + L_kd + L_da: teacher | 60.0 ± 14.1 |" in text  # std of (50, 70) with ddof 1
    assert "| XKD: L_ae + L_kd + L_da: student | 40.0 ± 0.0 |" in text
    assert "| XKD: L_ae + L_kd + L_da: teacher | C=1 (1), 10 (1) |" in text
    assert "| random init (no pretraining; its own seed) | – |" in text


def test_ceiling_fraction_is_the_gain_over_random_init_relative_to_the_ceilings():
    def result(top1):
        return {"video digit": {"top1": top1, "hparams": {}, "at_edge": []},
                "video motion": {"top1": top1, "hparams": {}, "at_edge": []}}

    per_seed = {0: {"ae/student": result(0.5), RANDOM: result(0.4), CEILING: result(0.6)},
                1: {"ae/student": result(0.6), RANDOM: result(0.4), CEILING: result(0.8)}}
    ae = [v for v in VARIANTS if v.name in ("ae", "supervised")]
    fractions = ceiling_fractions(per_seed, ae, ["video digit", "video motion"])
    assert list(fractions) == ["ae/student"] and list(fractions["ae/student"]) == ["video digit"]  # digits only
    mean, std = fractions["ae/student"]["video digit"]
    assert abs(mean - 0.5) < 1e-9 and abs(std) < 1e-9  # 0.1 / 0.2 and 0.2 / 0.4
    assert ceiling_fractions({0: {"ae/student": result(0.5), RANDOM: result(0.4)}}, ae, ["video digit"]) == {}
