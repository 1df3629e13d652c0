"""``xkd demo --quick``: the main job end to end on tiny data (the full demo is timed by hand, README)."""

import json

from xkd.cli import main


def test_quick_demo_writes_the_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--data", str(tmp_path / "av-digits-tiny"), "--steps", "2",
                 "--workers", "0"]) == 0
    report = out / "report.md"
    assert str(report) in capsys.readouterr().out
    text = report.read_text()
    seed = json.loads((out / "demo.json").read_text())["baseline_seed"]
    assert seed != 0  # the pretraining seed of the CPU recipes
    assert f"| XKD teacher | XKD student | MAE-only | random init (seed {seed}) |" in text
    for task in ("video digit", "video motion", "audio digit", "audio+video digit"):
        rows = [line for line in text.splitlines() if line.startswith(f"| {task} |")]
        assert rows[0].count("±") == 4, rows  # XKD teacher and student, MAE-only, random init
        assert rows[1].count("alpha=") == 4, rows  # the penalty each classifier chose
    words = " ".join(text.split())  # the report's lines are wrapped
    assert "each a complete 2-step schedule" in words
    assert "AV-Digits version 2" in words and "configs/pretrain/xkd_avdigits_v2_cpu.yaml" in words  # the default
    for image in ("losses.png", "features_pca.png"):
        assert f"]({image})" in text and (out / image).stat().st_size > 0
    assert json.loads((out / "demo.json").read_text())["steps"] == 2
    assert (out / "eval" / "xkd_teacher.json").is_file() and (out / "eval" / "random_init.md").is_file()
