"""``xkd demo --quick``: the main job end to end on tiny data (the full demo is timed by hand, README)."""

import json

from xkd.cli import main
from xkd.data.manifest import read_manifest


def test_quick_demo_writes_the_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--data", str(tmp_path / "av-digits-tiny"), "--steps", "2",
                 "--curve-points", "2", "--workers", "0"]) == 0
    report = out / "report.md"
    assert str(report) in capsys.readouterr().out
    text = report.read_text()
    seeds = json.loads((out / "demo.json").read_text())["baseline_seeds"]
    assert len(seeds) == 3 and 0 not in seeds  # never the pretraining seed of the CPU recipes
    header = "| task (ridge top-1 %) | XKD teacher | XKD student | contrastive | MAE-only | random init (3 seeds) | supervised |"
    assert header in text
    for task in ("video digit", "video motion", "audio digit", "audio+video digit"):
        row = next(line for line in text.splitlines() if line.startswith(f"| {task} |"))
        assert row.count("|") == 8 and row.count("±") == 1, row  # the random-init column: mean ± std over seeds
    words = " ".join(text.split())  # the report's lines are wrapped
    assert "each a complete 2-step schedule" in words
    assert "AV-Digits version 3" in words and "configs/pretrain/cav_mae_avdigits_v3_cpu.yaml" in words  # the default
    for image in ("learning_curve.png", "losses.png", "features_pca.png"):
        assert f"]({image})" in text and (out / image).stat().st_size > 0
    summary = json.loads((out / "demo.json").read_text())
    assert summary["steps"] == 2
    for name in ("XKD teacher", "contrastive", "MAE-only"):  # a point per kept weights file: steps 1 and 2
        assert [step for step, _ in summary["curves"][name]["video digit"]] == [1, 2], summary["curves"][name]
    assert (out / "eval" / "xkd_teacher.json").is_file() and (out / "eval" / "supervised.md").is_file()
    assert len(list((out / "eval").glob("random_init_seed_*.json"))) == 3
    assert (out / "cav-mae" / "snapshots" / "step_000000001.safetensors").is_file()
    for run in ("xkd", "cav-mae", "mae"):  # the training split decoded once, sliced by every run
        assert f"decoded_cache: {out / 'decoded'}" in (out / run / "config.yaml").read_text()
    train = [r for r in read_manifest(tmp_path / "av-digits-tiny" / "manifest.csv") if r.split == "train"]
    assert len(list((out / "decoded" / "rows").glob("*.video.npy"))) == len(train) > 0
