"""End-to-end CCL training on a tiny set: variants, validation-only selection, resume, CLI and table."""

import argparse
import json
from pathlib import Path

import pytest
import torch
from torch import nn

import xkd.ccl.train as ccl_train
from media_fixtures import make_av
from xkd.ccl.benchmark import results_table, run_dir
from xkd.ccl.cli import add_ccl_parser
from xkd.ccl.config import CCLConfig
from xkd.ccl.data import load_split
from xkd.ccl.train import RESULTS, load_student, lr_at, mapped_teachers, train_ccl
from xkd.config_io import load_config
from xkd.data.manifest import Manifest, ManifestRow, write_manifest
from xkd.engine.checkpoint import latest_checkpoint, load_checkpoint
from xkd.engine.weights import CCL_WEIGHTS_FILE, load_weights


class Colour(nn.Module):
    def forward(self, images):
        return images.mean(dim=(2, 3)).repeat(1, 2)  # [B, 6]


class Energy(nn.Module):
    def forward(self, wave):
        return wave.unfold(1, 800, 800).abs().mean(-1, keepdim=True).repeat(1, 1, 5)  # [B, N, 5]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ccl_train")
    rows = []
    for i in range(10):
        split = "train" if i < 6 else ("val" if i < 8 else "test")
        make_av(root / f"v{i}.mp4", seconds=1.0, size=(16, 16), freq=300.0 + 200 * (i % 2))
        rows.append(ManifestRow(f"v{i}.mp4", (str(i % 2),), split, start=0.0, end=1.0, extra={"parity": str(i % 2)}))
    write_manifest(Manifest(rows, root), root / "manifest.csv")
    torch.jit.save(torch.jit.script(Colour()), str(root / "image.pt"))
    torch.jit.save(torch.jit.script(Energy()), str(root / "audio.pt"))
    config = root / "ccl.yaml"
    config.write_text(f"""
data: {{manifest: {root / 'manifest.csv'}, label_column: parity, num_frames: 4, video_fps: 8.0, resize_short: 16,
       train_view: {{crop_size: 16, p_flip: 0.0, p_color: 0.0}}, batch_size: 2, eval_batch_size: 4, num_workers: 0}}
student: {{depth: 10, widths: [4, 4, 4, 6]}}
audio_teacher: {{kind: torchscript, path: {root / 'audio.pt'}, temperature: 0.5}}
image_teacher: {{kind: torchscript, path: {root / 'image.pt'}, temperature: 0.1, mean: [0.0], std: [1.0]}}
optim: {{epochs: 2, lr: 0.01, milestones: [1]}}
run: {{cache_dir: {root / 'cache'}, threads: 1, log_every: 1}}
""")
    return root, config


def test_ccl_ai_trains_and_selects_on_validation_only(setup, tmp_path, monkeypatch):
    _, config = setup
    cfg = load_config(CCLConfig, config, ["image_teacher.input=cached", "audio_teacher.standardize=true"])
    splits = []
    real_load_split = ccl_train.load_split
    def load_split(data, split):
        splits.append(split)
        return real_load_split(data, split)

    monkeypatch.setattr(ccl_train, "load_split", load_split)
    real_evaluate = ccl_train.evaluate_run

    def evaluate(run, split, **kwargs):
        assert (run / CCL_WEIGHTS_FILE).is_file() and set(splits) == {"train", "val"}  # selection never saw test
        return real_evaluate(run, split, **kwargs)

    monkeypatch.setattr(ccl_train, "evaluate_run", evaluate)
    results = train_ccl(cfg, tmp_path / "run", progress=False)
    assert "test" in splits
    assert results["split"] == "test" and 0.0 <= results["test"]["top1"] <= 1.0
    assert set(results["retrieval"]) == {"R@1", "R@5", "R@10"}
    assert results["val"]["epoch"] in (0, 1) and results["steps"] == 6
    assert json.loads((tmp_path / "run" / RESULTS).read_text())["variant"] == "ccl-ai"
    parts, meta = load_weights(tmp_path / "run" / CCL_WEIGHTS_FILE)
    assert set(parts) == {"student", "compositions", "projections"}  # 6-d image, 5-d audio: both projected
    assert int(meta["epoch"]) == results["val"]["epoch"]
    student, _, names = load_student(tmp_path / "run")
    assert names == ["0", "1"] and student.fc.out_features == 2


@pytest.mark.parametrize("variant", ["baseline", "ccl-i"])
def test_other_variants_train(setup, tmp_path, variant):
    _, config = setup
    sets = [f"loss.variant={variant}", "optim.epochs=1", "image_teacher.standardize=true"]
    cfg = load_config(CCLConfig, config, sets)
    results = train_ccl(cfg, tmp_path / variant, progress=False)
    parts, _ = load_weights(tmp_path / variant / CCL_WEIGHTS_FILE)
    assert ("compositions" in parts) == (variant != "baseline")
    assert results["steps"] == 3


def test_resume_continues_to_the_same_weights(setup, tmp_path):
    _, config = setup
    sets = ["loss.variant=ccl-a", "run.retrieval=false"]
    train_ccl(load_config(CCLConfig, config, sets), tmp_path / "full", progress=False)
    train_ccl(load_config(CCLConfig, config, sets + ["optim.epochs=1"]), tmp_path / "part", progress=False)
    with pytest.raises(FileExistsError):
        train_ccl(load_config(CCLConfig, config, sets), tmp_path / "part", progress=False)
    train_ccl(load_config(CCLConfig, config, sets), tmp_path / "part", resume=True, progress=False)
    full = load_checkpoint(latest_checkpoint(tmp_path / "full"))
    part = load_checkpoint(latest_checkpoint(tmp_path / "part"))
    assert full["step"] == part["step"] == 6
    for k, v in full["model"].items():
        assert torch.equal(v, part["model"][k]), k


def test_variant_without_its_teacher_is_an_error(setup, tmp_path):
    _, config = setup
    cfg = load_config(CCLConfig, config, ["audio_teacher.kind="])
    with pytest.raises(ValueError, match="uses the audio teacher"):
        train_ccl(cfg, tmp_path / "x", progress=False)


def test_step_schedule_and_composition_switch():
    cfg = CCLConfig()
    assert [lr_at(cfg, e) for e in (0, 149, 150, 224, 225)] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4, 1e-5])


def test_cli_registers_commands_with_help():
    parser = argparse.ArgumentParser(prog="xkd")
    add_ccl_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train-ccl", "--config", "c.yaml", "--set", "loss.variant=ccl-a", "--max-steps", "3"])
    assert args.set == ["loss.variant=ccl-a"] and args.max_steps == 3 and callable(args.func)
    assert parser.parse_args(["eval-ccl", "--run", "r"]).split == "test"
    grid = parser.parse_args(["ccl-grid", "--config", "c.yaml", "--out", "o"])
    assert grid.labels == ["digit", "motion"] and grid.seeds == [0, 1, 2]
    with pytest.raises(SystemExit):
        parser.parse_args(["ccl-grid", "--config", "c", "--out", "o", "--variants", "ccl-x"])


def test_results_table_reports_mean_and_sample_std(tmp_path):
    for seed, (top1, r1) in enumerate([(0.5, 0.4), (0.7, 0.6)]):
        folder = run_dir(tmp_path, "digit", "ccl-a", seed)
        folder.mkdir(parents=True)
        (folder / RESULTS).write_text(json.dumps({"split": "test", "test": {"top1": top1},
                                                  "retrieval": {"R@1": r1}, "train_seconds": 120.0}))
    table = results_table(tmp_path, ["digit"], ["ccl-a", "baseline"], [0, 1])
    assert "| CCL-A (audio teacher) | 60.0 ± 14.1 | 50.0 ± 14.1 | 2.0 |" in table
    assert "| Baseline (CE only) | n/a | n/a | n/a |" in table


def test_validation_can_be_held_out_of_the_training_split(setup):
    _, config = setup
    cfg = load_config(CCLConfig, config, ["data.val_fraction=0.34", "data.val_split=heldout"])
    train, val = load_split(cfg.data, "train"), load_split(cfg.data, "heldout")
    assert len(train) == 4 and len(val) == 2
    assert {r.path for r in train}.isdisjoint({r.path for r in val})
    assert sorted(r.extra["parity"] for r in val) == ["0", "1"]  # one video per class
    assert [r.path for r in load_split(cfg.data, "heldout")] == [r.path for r in val]  # fixed, not per run
    assert [r.path for r in load_split(cfg.data, "test")] == ["v8.mp4", "v9.mp4"]


@pytest.mark.parametrize("name", ["avdigits_cpu.yaml", "ucf101_paper.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(CCLConfig, Path(__file__).parents[1] / "configs" / "ccl" / name)
    assert set(cfg.teachers()) == {"audio", "image"}


@pytest.mark.parametrize("rule, standardize, want", [
    ("auto", (False, False), set()),  # the released code: identity at equal sizes
    ("auto", (True, False), {"audio"}),  # a standardised teacher's signed features need the map
    ("linear", (False, False), {"audio", "image"}),
    ("identity", (True, True), set()),
])
def test_which_teachers_meet_x_v_through_a_linear_map(rule, standardize, want):
    cfg = CCLConfig()
    cfg.loss.variant, cfg.loss.projection = "ccl-ai", rule
    cfg.audio_teacher.kind, cfg.image_teacher.kind = "openwakeword", "ccexam-mnist"
    cfg.audio_teacher.standardize, cfg.image_teacher.standardize = standardize
    assert mapped_teachers(cfg) == want
