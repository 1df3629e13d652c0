"""metrics.csv with growing columns and resume truncation, TensorBoard events, and loss-curve plots."""

import csv
import math
import sys

import pytest
import torch

from xkd.engine.logger import RunLogger, plot_metrics, read_metrics


def _rows(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_csv_grows_columns(tmp_path):
    with RunLogger(tmp_path, is_main=True, use_tensorboard=False) as log:
        log.log(0, {"loss": 2.0})
        log.log(1, {"loss": 1.5, "lr": torch.tensor(1e-4)})
        log.log(2, {"lr": 2e-4, "loss_kd": 0.25, "loss": 1.0})
    rows = _rows(tmp_path)
    assert list(rows[0]) == ["step", "loss", "lr", "loss_kd"]
    assert [r["step"] for r in rows] == ["0", "1", "2"]
    assert rows[0]["lr"] == "" and rows[2]["loss_kd"] == "0.25"
    m = read_metrics(tmp_path)
    assert m["step"] == [0.0, 1.0, 2.0] and m["loss"] == [2.0, 1.5, 1.0]
    assert math.isnan(m["lr"][0]) and m["lr"][1:] == pytest.approx([1e-4, 2e-4])
    with pytest.raises(ValueError, match="step"):
        RunLogger(tmp_path / "other", is_main=True, use_tensorboard=False).log(0, {"step": 1.0})


def test_resume_drops_rows_from_resume_step(tmp_path):
    with RunLogger(tmp_path, is_main=True, use_tensorboard=False) as log:
        for step in range(6):
            log.log(step, {"loss": 10.0 - step})
        log.log(5, {"acc": 0.5})
    with RunLogger(tmp_path, is_main=True, use_tensorboard=False, start_step=3) as log:
        assert [r["step"] for r in _rows(tmp_path)] == ["0", "1", "2"]
        for step in range(3, 5):
            log.log(step, {"loss": 100.0 + step, "loss_av": 1.0})
    rows = _rows(tmp_path)
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3, 4]
    assert list(rows[0]) == ["step", "loss", "acc", "loss_av"]
    assert [float(r["loss"]) for r in rows] == [10.0, 9.0, 8.0, 103.0, 104.0]


def test_only_main_rank_writes(tmp_path):
    log = RunLogger(tmp_path / "run", is_main=False)
    log.log(0, {"loss": 1.0})
    log.close()
    assert not (tmp_path / "run").exists()


def test_tensorboard_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with RunLogger(tmp_path, is_main=True) as log:
        log.log(1, {"loss": 0.5})
        log.log(2, {"loss": 0.25})
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(1, 0.5), (2, 0.25)]


def test_csv_only_when_tensorboard_missing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # makes the import fail
    with pytest.warns(UserWarning, match="TensorBoard unavailable"):
        log = RunLogger(tmp_path, is_main=True)
    log.log(0, {"loss": 1.0})
    log.close()
    assert read_metrics(tmp_path)["loss"] == [1.0]
    assert not (tmp_path / "tensorboard").exists()


def test_plot_writes_png(tmp_path):
    with RunLogger(tmp_path, is_main=True, use_tensorboard=False) as log:
        for step in range(20):
            log.log(step, {"loss": 1.0 / (step + 1)})
            if step % 5 == 0:
                log.log(step, {"knn_acc": step / 20})
    out = plot_metrics(tmp_path, ["loss", "knn_acc"], tmp_path / "plots" / "loss.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    with pytest.raises(KeyError, match="nope"):
        plot_metrics(tmp_path, ["nope"], tmp_path / "x.png")
