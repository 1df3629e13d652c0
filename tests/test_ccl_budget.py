"""CCL with a label budget: the stratified seeded subset, the faithful reading (the other videos unused) and the
semi-supervised one (the other videos in the teacher terms only), resumed exactly."""

import json

import pytest
import torch

import xkd.ccl.train as ccl_train
from test_ccl_train import setup  # noqa: F401 (the tiny labelled set and its config)
from xkd.ccl.benchmark import budget_schedule, budget_table, gain_table, plot_label_efficiency, run_dir
from xkd.ccl.config import CCLConfig, CCLDataConfig
from xkd.ccl.data import label_budget
from xkd.ccl.method import CCL
from xkd.ccl.train import train_ccl
from xkd.cli import main
from xkd.config_io import load_config
from xkd.data.manifest import Manifest, ManifestRow
from xkd.engine.checkpoint import latest_checkpoint, load_checkpoint


def test_the_budget_is_stratified_seeded_and_capped_by_the_class_size():
    rows = Manifest([ManifestRow(f"v{i}.mp4", (str(i % 3 if i < 27 else 0),), "train") for i in range(30)])
    data = CCLDataConfig(label_column="label", labels_per_class=4)
    keep = label_budget(rows, data, seed=0)
    labels = [r.labels[0] for r in rows]
    assert sorted(labels[i] for i in keep.nonzero()[0]) == ["0"] * 4 + ["1"] * 4 + ["2"] * 4
    assert (label_budget(rows, data, seed=0) == keep).all()  # the same subset for every variant of a seed
    assert (label_budget(rows, data, seed=1) != keep).any()
    big = CCLDataConfig(label_column="label", labels_per_class=100)
    assert label_budget(rows, big, seed=0).all()  # a class smaller than the budget keeps every video
    assert label_budget(rows, CCLDataConfig(label_column="label"), seed=0).all()


class Spy:
    """Records the labelled masks and batch sizes CCL.losses receives."""

    def __init__(self, monkeypatch):
        self.calls = []
        real = CCL.losses

        def losses(model, video, labels, teachers, labelled=None):
            self.calls.append((len(labels), None if labelled is None else labelled.tolist()))
            return real(model, video, labels, teachers, labelled)

        monkeypatch.setattr(CCL, "losses", losses)


@pytest.fixture
def budget_runs(setup, tmp_path, monkeypatch):  # noqa: F811
    _, config = setup

    def run(name, *sets, **kw):
        spy = Spy(monkeypatch)
        windows = []
        real = ccl_train.TrainClips

        def clips(w, *args, **kwargs):
            windows.append(w)
            return real(w, *args, **kwargs)

        monkeypatch.setattr(ccl_train, "TrainClips", clips)
        cfg = load_config(CCLConfig, config, ["data.labels_per_class=1", "run.retrieval=false", *sets])
        results = train_ccl(cfg, tmp_path / name, progress=False, **kw)
        monkeypatch.setattr(ccl_train, "TrainClips", real)
        return results, spy.calls, windows
    return run


def test_the_faithful_reading_trains_on_the_labelled_videos_only(budget_runs):
    results, calls, windows = budget_runs("drop", "loss.variant=ccl-a", "run.retrieval=true", "data.preload=true")
    assert "R@1" in results["retrieval"]  # the gallery: every training video, decoded beyond the labelled ones
    assert results["labelled_videos"] == 2 and results["unlabelled_videos"] == 0
    assert len(set(windows[0].video)) == 2  # the training videos: one labelled one per class
    assert results["steps"] == 2 and all(n == 2 and mask is None for n, mask in calls)  # 2 epochs of 1 batch


def test_unlabelled_videos_join_the_teacher_terms_beside_each_labelled_batch(budget_runs):
    results, calls, windows = budget_runs("distill", "loss.variant=ccl-a", "data.unlabelled=distill")
    assert results["labelled_videos"] == 2 and results["unlabelled_videos"] == 4
    assert len(set(windows[0].video)) == 6  # every training video, the labelled ones served by one sampler
    assert results["steps"] == 2 and calls == [(4, [True, True, False, False])] * 2
    baseline, base_calls, _ = budget_runs("baseline", "loss.variant=baseline", "data.unlabelled=distill")
    assert baseline["unlabelled_videos"] == 0 and all(mask is None for _, mask in base_calls)  # nothing to distil


def test_a_semi_supervised_run_resumes_to_the_same_weights(budget_runs, tmp_path):
    sets = ("loss.variant=ccl-ai", "data.unlabelled=distill", "optim.epochs=3")
    budget_runs("full", *sets)
    budget_runs("part", *sets[:-1], "optim.epochs=2")
    budget_runs("part", *sets, resume=True)
    full = load_checkpoint(latest_checkpoint(tmp_path / "full"))
    part = load_checkpoint(latest_checkpoint(tmp_path / "part"))
    assert full["step"] == part["step"] == 3
    for k, v in full["model"].items():
        assert torch.equal(v, part["model"][k]), k


def test_a_budget_run_is_as_long_in_steps_as_the_recipe(setup):  # noqa: F811
    _, config = setup
    full = load_config(CCLConfig, config, [])
    assert budget_schedule(full) == []
    cfg = load_config(CCLConfig, config, ["data.labels_per_class=1"])  # 2 of the 6 training videos
    scaled = load_config(CCLConfig, config, ["data.labels_per_class=1", *budget_schedule(cfg)])
    assert scaled.optim.epochs == 3 * full.optim.epochs and scaled.optim.milestones == [3]
    assert scaled.run.eval_every == 3 * full.run.eval_every


def test_budget_tables_and_the_label_efficiency_plot(tmp_path):
    values = {("baseline", 10, "drop"): [0.30, 0.34], ("ccl-a", 10, "drop"): [0.31, 0.33],
              ("ccl-a", 10, "distill"): [0.70, 0.74], ("baseline", 0, "drop"): [0.9, 0.88],
              ("ccl-a", 0, "drop"): [0.85, 0.87]}
    for (variant, budget, reading), tops in values.items():
        for seed, top1 in enumerate(tops):
            folder = run_dir(tmp_path, "digit", variant, seed, budget, reading)
            folder.mkdir(parents=True)
            (folder / "results.json").write_text(json.dumps({"split": "test", "test": {"top1": top1}}))
    assert run_dir(tmp_path, "digit", "baseline", 0, 10, "distill") == run_dir(tmp_path, "digit", "baseline", 0, 10)
    distill = budget_table(tmp_path, "digit", ["baseline", "ccl-a"], [0, 1], [10, 0], "distill")
    assert "| labelled videos per class | Baseline | CCL-A |" in distill
    assert "| 10 | 32.0 ± 2.8 | 72.0 ± 2.8 |" in distill  # the baseline's runs serve both readings
    assert "| all | 89.0 ± 1.4 | 86.0 ± 1.4 |" in budget_table(tmp_path, "digit", ["baseline", "ccl-a"], [0, 1],
                                                             [10, 0], "drop")
    gains = gain_table(tmp_path, "digit", ["baseline", "ccl-a"], [0, 1, 2], [10, 0], "distill")
    assert "| labelled videos per class | CCL-A | 2 × baseline std |" in gains
    assert "| 10 | +40.0 ± 0.0 (n=2) | 5.7 |" in gains  # paired by seed: 0.70 - 0.30 and 0.74 - 0.34
    assert "| all | -3.0 ± 2.8 (n=2) | 2.8 |" in gains
    (run_dir(tmp_path, "digit", "ccl-a", 0, 10, "distill") / "results.json").unlink()
    assert "| 10 | +40.0 (n=1) | 5.7 |" in gain_table(tmp_path, "digit", ["baseline", "ccl-a"], [0, 1, 2], [10],
                                                      "distill")  # one run: no spread to show
    path = plot_label_efficiency(tmp_path, "digit", ["baseline", "ccl-a"], [0, 1], [10, 0], ["drop", "distill"],
                                 tmp_path / "plot.png")
    assert path.stat().st_size > 10_000


def test_the_grid_writes_its_tables_from_finished_runs_without_training(tmp_path, monkeypatch, capsys):
    for seed, (base, distilled) in enumerate([(0.30, 0.70), (0.34, 0.74)]):
        for variant, reading, top1 in [("baseline", "drop", base), ("ccl-a", "distill", distilled)]:
            folder = run_dir(tmp_path, "digit", variant, seed, 10, reading)
            folder.mkdir(parents=True)
            (folder / "results.json").write_text(json.dumps({"split": "test", "test": {"top1": top1}}))
    monkeypatch.setattr("xkd.ccl.benchmark.train_ccl", lambda *a, **k: pytest.fail("--table-only trained a run"))
    assert main(["ccl-grid", "--config", "unread.yaml", "--out", str(tmp_path), "--labels", "digit", "--variants",
                 "baseline", "ccl-a", "--seeds", "0", "1", "2", "--labels-per-class", "10", "--unlabelled", "drop",
                 "distill", "--table-only"]) == 0
    table = (tmp_path / "table.md").read_text()
    assert "### digit, reading `distill`: gain over the baseline" in table
    assert "| 10 | 32.0 ± 2.8 (n=2) | 72.0 ± 2.8 (n=2) |" in table  # the missing seed is said, not hidden
    assert "| 10 | n/a | 5.7 |" in table  # no ccl-a run in the drop reading
    assert (tmp_path / "label_efficiency_digit.png").is_file() and "table written" in capsys.readouterr().out
    assert main(["ccl-grid", "--config", "unread.yaml", "--out", str(tmp_path / "typo"), "--table-only"]) != 0
    assert "typo: no such folder" in capsys.readouterr().err
