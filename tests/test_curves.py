"""Learning curves: a run's snapshots scored in one pass, equal to scoring each weights file alone, and plotted."""

import numpy as np
import pytest

from eval_fixtures import tiny_config, write_separable
from xkd.api import load
from xkd.engine.pretrain import pretrain
from xkd.eval.curves import plot_curves, score_curves
from xkd.eval.run import EvalOptions, evaluate
from xkd.eval.tasks import tasks_for

FAST = EvalOptions(train_clips=1, test_clips=1, num_workers=0, progress=False, knn_k=3)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("curves")
    manifest = write_separable(root / "data", per_class_train=6, per_class_test=3)
    cfg = tiny_config(f"data.manifest={manifest}", "method=mae", "data.batch_size=4", "data.num_workers=0",
                      "run.snapshot_every=2", "run.log_every=1", "run.peak_tflops=1.0", "optim.epochs=2",
                      "optim.warmup_epochs=1")
    pretrain(cfg, root / "run", max_steps=5, progress=False)
    return root / "run", manifest


def test_every_snapshot_is_scored_as_its_weights_alone(run, tmp_path):
    folder, manifest = run
    tasks = tasks_for(str(manifest), label_column="shade")
    reference = load(folder, role="student")
    curves, refs = score_curves({"MAE": (folder, "student")}, tasks, FAST, protocol="knn", references={"end": reference})
    points = curves["MAE"][tasks[0].name]
    assert [step for step, _ in points] == [2, 4, 5]
    alone = evaluate(load(folder / "snapshots" / "step_000000004.safetensors", role="student"), tasks, "knn", FAST)
    assert points[1][1] == alone[tasks[0].name]["summary"]["top1"]["mean"]
    assert refs["end"][tasks[0].name]["summary"]["top1"]["mean"] == points[-1][1]  # the final weights, twice
    path = plot_curves(curves, {"random init": {tasks[0].name: (0.5, 0.1)}}, [tasks[0].name],
                       tmp_path / "curve.png", "test")
    assert path.stat().st_size > 5000


def test_fewer_training_videos_keeps_the_scored_rows_and_balances_the_rest(run):
    from xkd.eval.tasks import with_fewer_training_videos

    _, manifest = run
    tasks = tasks_for(str(manifest), label_column="shade")
    few = with_fewer_training_videos(tasks, per_class=2, seed=1)
    for full, cut in zip(tasks, few):
        labels = full.labels()
        for a, b in zip(full.folds, cut.folds):
            assert set(b.train_rows) <= set(a.train_rows) and (b.test_rows == a.test_rows).all()
            assert sorted(np.bincount(labels[b.train_rows]).tolist()) == [2, 2]
    assert (with_fewer_training_videos(tasks, 2, seed=1)[0].folds[0].train_rows == few[0].folds[0].train_rows).all()
