"""End-to-end evaluation on real media: every protocol finds a trivially separable signal, through the runner."""

import numpy as np
import pytest

from eval_fixtures import tiny_config, write_separable
from xkd.api import random_encoders
from xkd.eval.run import EvalOptions, evaluate, evaluate_many
from xkd.eval.tasks import tasks_for

FAST = EvalOptions(train_clips=2, test_clips=1, num_workers=0, progress=False, linear_epochs=30, knn_k=5,
                   attentive_epochs=40)


@pytest.fixture(scope="module")
def separable(tmp_path_factory):
    return write_separable(tmp_path_factory.mktemp("separable"))


@pytest.fixture(scope="module")
def encoders():
    return random_encoders(tiny_config(), seed=3)


@pytest.mark.parametrize("protocol", ["svm", "ridge", "linear", "attentive", "knn"])
@pytest.mark.parametrize("modality", ["video", "audio", "av"])
def test_protocols_find_a_separable_signal(separable, encoders, protocol, modality):
    tasks = tasks_for(str(separable), modality=modality)
    result = evaluate(encoders, tasks, protocol, FAST)[tasks[0].name]
    assert result["summary"]["top1"]["mean"] > 0.9, result["summary"]


def test_retrieval_runs_on_the_test_videos(separable, encoders):
    # Untrained audio and video encoders live in unrelated spaces, so only the bookkeeping is checked here; the
    # recall arithmetic is checked on constructed features in test_eval_retrieval_metrics.py.
    tasks = tasks_for(str(separable))
    summary = evaluate(encoders, tasks, "retrieval", FAST)[tasks[0].name]["summary"]
    for direction in ("a2v", "v2a"):
        recalls = [summary[f"{direction}_R@{k}"]["mean"] for k in (1, 5, 10)]
        assert recalls == sorted(recalls) and recalls[-1] == 1.0  # 2 classes: a match is always in the top 10


def test_folds_without_a_test_split_are_left_one_out(separable, encoders, tmp_path):
    from xkd.data.manifest import read_manifest, write_manifest

    m = read_manifest(separable)
    m.rows = [r.__class__(r.path, r.labels, "", r.fold, r.start, r.end, r.extra) for r in m.rows]
    path = write_manifest(m.with_root(separable.parent), separable.parent / "folds.csv")
    tasks = tasks_for(str(path))
    assert [f.name for f in tasks[0].folds] == ["0", "1"]
    for fold in tasks[0].folds:
        assert not set(fold.train_rows) & set(fold.test_rows)
    result = evaluate(encoders, tasks, "knn", FAST)[tasks[0].name]
    assert len(result["folds"]) == 2 and result["summary"]["top1"]["mean"] > 0.9


def test_several_models_share_one_decode_and_match_single_runs(separable, encoders):
    other = random_encoders(tiny_config(), seed=1)
    tasks = tasks_for(str(separable), label_column="shade")
    both = evaluate_many({"a": encoders, "b": other}, tasks, "knn", FAST)
    alone = evaluate(other, tasks, "knn", FAST)
    name = tasks[0].name
    assert both["b"][name]["summary"] == alone[name]["summary"]
    assert np.array_equal(both["b"][name]["confusion"], alone[name]["confusion"])


def test_cli_eval_writes_json_markdown_and_confusion(separable, tmp_path, capsys):
    import json

    from xkd.cli import main
    from xkd.engine.pretrain import save_weights_file
    from xkd.models.xkd import XKD
    from eval_fixtures import tiny_config

    cfg = tiny_config()
    save_weights_file(XKD(cfg), cfg, tmp_path / "weights.safetensors", step=0)
    common = ["--weights", str(tmp_path / "weights.safetensors"), "--dataset", str(separable), "--workers", "0",
              "--no-progress", "--train-clips", "1", "--test-clips", "1"]
    assert main(["eval", "svm", *common, "--baseline", "--out", str(tmp_path / "svm")]) == 0
    printed = capsys.readouterr().out
    # teacher and student side by side, the independent baseline beside them, and the C each one chose
    assert "| task (top-1 %, mean ± std over folds) | teacher | student | random init (seed 100003) |" in printed
    assert "| manifest video | C=" in printed
    for name in ("teacher", "student", "random_init"):
        result = json.loads((tmp_path / "svm" / f"svm_{name}.json").read_text())
        assert result["manifest video"]["summary"]["top1"]["mean"] > 0.9, name
        assert "C selected on val" in (tmp_path / "svm" / f"svm_{name}.md").read_text()
        assert result["manifest video"]["folds"][0]["standardized"] is True
    assert list((tmp_path / "svm").glob("*confusion.png"))
    assert main(["eval", "svm", *common, "--role", "teacher", "--paper-protocol", "--out", str(tmp_path / "paper")]) == 0
    assert "paper (C selected on test)" in (tmp_path / "paper" / "svm.md").read_text()
    ft = ["--epochs", "1", "--ft-set", "batch_size=4", "--ft-set", "test_clips=1", "--ft-set", "test_crops=1",
          "--ft-set", "val_fraction=0"]
    assert main(["eval", "finetune", *common, "--role", "student", *ft, "--out", str(tmp_path / "ft")]) == 0
    assert "fine-tune" in (tmp_path / "ft" / "finetune.md").read_text()
