"""Fold aggregation and the result files: JSON, Markdown table, confusion-matrix PNG."""

import json

import numpy as np
import pytest
from matplotlib.image import imread

from xkd.eval.features import FeatureSet
from xkd.eval.metrics import plot_confusion
from xkd.eval.report import markdown_table, run_folds, to_jsonable, write_results
from xkd.eval.svm import svm_protocol

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def fold_sets(fold, n_classes=4, dim=16):
    """A train/test pair per fold: class blobs whose test videos are the fold's own."""
    rng = np.random.default_rng(fold)
    means = np.random.default_rng(7).normal(size=(n_classes, dim)) * 3.0
    names = [f"class_{c}" for c in range(n_classes)]

    def make(n_videos, first_id):
        labels = np.arange(n_videos) % n_classes
        features = np.repeat(means[labels], 3, axis=0) + rng.normal(size=(3 * n_videos, dim))
        return FeatureSet(features, np.repeat(np.arange(n_videos) + first_id, 3), np.repeat(labels, 3), names)

    return make(40, 0), make(20, 1000 * (fold + 1))


def test_run_folds_mean_std_and_pooled_confusion():
    def fake(fold):
        return {"protocol": "C selected on val", "metrics": {"top1": [0.5, 0.7, 0.9][fold], "clip_top1": 0.4},
                "confusion": np.eye(2, dtype=int) * (fold + 1), "class_names": ["p", "q"]}

    result = run_folds(fake, [0, 1, 2])
    assert result["protocol"] == "C selected on val"
    assert [f["fold"] for f in result["folds"]] == ["0", "1", "2"]
    assert result["summary"]["top1"]["mean"] == pytest.approx(0.7)
    assert result["summary"]["top1"]["std"] == pytest.approx(np.std([0.5, 0.7, 0.9]))
    assert result["summary"]["top1"]["values"] == [0.5, 0.7, 0.9]
    assert result["summary"]["clip_top1"]["std"] == pytest.approx(0.0)
    assert result["confusion"].tolist() == [[6, 0], [0, 6]]
    assert run_folds(fake, [0, 1, 2], ddof=1)["summary"]["top1"]["std"] == pytest.approx(0.2)


def test_write_results_json_markdown_and_png(tmp_path):
    def svm_fold(fold, select="val"):
        train, test = fold_sets(fold)
        return svm_protocol(train, test, Cs=(1e-3, 1e-2), select=select)

    results = {
        "toy SVM": run_folds(svm_fold, [0, 1, 2]),
        "toy SVM (paper)": run_folds(lambda fold: svm_fold(fold, "test"), [0, 1, 2]),
        "toy retrieval": {"protocol": "cross-modal retrieval (class level)", "metrics": {"a2v_R@1": 0.5}},
    }
    paths = write_results(results, tmp_path / "out", "toy")

    data = json.loads(paths["json"].read_text())
    summary = data["toy SVM"]["summary"]["top1"]
    assert isinstance(summary["mean"], float) and summary["mean"] > 0.9
    assert data["toy SVM (paper)"]["protocol"] == "paper (C selected on test)"
    assert isinstance(data["toy SVM"]["folds"][0]["confusion"], list)
    assert len(data["toy SVM"]["folds"]) == 3

    md = paths["markdown"].read_text()
    assert "| toy SVM | C selected on val |" in md
    assert "| toy SVM (paper) | paper (C selected on test) |" in md
    assert f"{100 * summary['mean']:.1f} ± {100 * summary['std']:.1f}" in md
    assert "| toy retrieval | cross-modal retrieval (class level) | – | – | 50.0 |" in md
    assert "over 3 folds" in md

    assert len(paths["confusion"]) == 2
    for png in paths["confusion"]:
        assert png.read_bytes()[:8] == PNG_SIGNATURE
        assert imread(png).ndim == 3


def test_markdown_table_columns_follow_metrics():
    table = markdown_table({"a": {"protocol": "p", "metrics": {"top1": 0.8125, "top5": 0.95}},
                            "b": {"protocol": "q", "metrics": {"mAP": 0.4}}})
    lines = table.strip().splitlines()
    assert lines[0] == "| | protocol | top1 (%) | top5 (%) | mAP (%) |"
    assert lines[2] == "| a | p | 81.2 | 95.0 | – |"
    assert lines[3] == "| b | q | – | – | 40.0 |"


def test_to_jsonable_converts_numpy_and_non_finite():
    value = {"a": np.float32(0.5), "b": np.arange(3), 4: (np.int64(2), float("nan")), "c": [np.bool_(True)]}
    assert to_jsonable(value) == {"a": 0.5, "b": [0, 1, 2], "4": [2, None], "c": [True]}
    json.dumps(to_jsonable(value), allow_nan=False)
    with pytest.raises(TypeError, match="JSON"):
        to_jsonable({"x": object()})


@pytest.mark.parametrize("n", [10, 50])
def test_plot_confusion_writes_a_png_for_10_to_50_classes(tmp_path, n):
    rng = np.random.default_rng(n)
    cm = rng.integers(0, 5, size=(n, n)) + 20 * np.eye(n, dtype=int)
    path = plot_confusion(cm, [f"long_class_name_{i}" for i in range(n)], tmp_path / f"cm{n}.png", title="toy")
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    height, width = imread(path).shape[:2]
    assert height >= 400 and width >= 400
