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
    for task in ("video digit", "video motion", "audio digit", "audio+video digit"):
        row = next(line for line in text.splitlines() if line.startswith(f"| {task} |"))
        assert row.count("±") == 3, row  # XKD, MAE-only, random init
    for image in ("losses.png", "features_pca.png"):
        assert f"]({image})" in text and (out / image).stat().st_size > 0
    assert json.loads((out / "demo.json").read_text())["steps"] == 2
    assert (out / "eval" / "xkd.json").is_file() and (out / "eval" / "random_init.md").is_file()
