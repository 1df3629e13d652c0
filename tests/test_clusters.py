"""xkd clusters: teacher cluster assignments and their normalised mutual information with label columns."""

import json

import numpy as np
import torch

from xkd.cli import main
from xkd.config import PretrainConfig, load_config
from xkd.data.manifest import Manifest, ManifestRow
from xkd.engine.pretrain import save_weights_file
from xkd.eval.clusters import cluster_report, load_head
from xkd.models.xkd import XKD

from eval_fixtures import TINY_MODEL


def test_nmi_is_one_for_the_labels_and_low_for_an_unrelated_column():
    rows = [ManifestRow(f"{i}.mp4", (str(i % 5),), "val", None, None, None,
                        {"digit": str(i % 5), "voice": str(i // 20)}) for i in range(100)]
    report = cluster_report({"audio": np.arange(100) % 5}, Manifest(rows), ["digit", "voice"])
    assert report["audio"]["clusters_used"] == 5
    assert report["audio"]["nmi"]["digit"] == 1.0 and report["audio"]["nmi"]["voice"] < 0.05
    assert report["audio"]["ami"]["digit"] == 1.0


def test_ami_corrects_the_nmi_of_many_valued_independent_columns():
    """Random clusters against independent labels: NMI grows with the number of values, AMI stays near 0."""
    rng = np.random.default_rng(0)
    rows = [ManifestRow(f"{i}.mp4", (), "val", None, None, None,
                        {"digit": str(rng.integers(10)), "voice": str(rng.integers(45))}) for i in range(500)]
    report = cluster_report({"video": rng.integers(40, size=500)}, Manifest(rows), ["digit", "voice"])["video"]
    assert report["nmi"]["voice"] > 0.15 and report["nmi"]["voice"] > 1.5 * report["nmi"]["digit"]
    assert abs(report["ami"]["voice"]) < 0.02 and abs(report["ami"]["digit"]) < 0.02


def test_cli_reports_every_modality_of_a_run(avdigits_tiny, tmp_path, capsys):
    cfg = load_config(PretrainConfig, "configs/pretrain/xkd_avdigits_cpu.yaml", [*TINY_MODEL,
                                                                                 f"data.manifest={avdigits_tiny}"])
    torch.manual_seed(0)
    model = XKD(cfg)
    save_weights_file(model, cfg, tmp_path / "weights.safetensors", step=1)
    head = load_head(tmp_path / "weights.safetensors", "audio")
    assert torch.equal(head.last_layer.weight, model.teacher["audio"].head.last_layer.weight)
    out = tmp_path / "clusters.json"
    assert main(["clusters", "--weights", str(tmp_path), "--dataset", f"av-digits:{avdigits_tiny.parent}",
                 "--split", "train", "--workers", "0", "--no-progress", "--columns", "digit", "voice",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| teacher clusters (train split" in printed and "| NMI / AMI digit | NMI / AMI voice |" in printed
    report = json.loads(out.read_text())
    assert set(report) == {"video", "audio"}
    for r in report.values():
        assert 1 <= r["clusters_used"] and all(0.0 <= v <= 1.0 for v in r["nmi"].values())
        assert set(r["ami"]) == {"digit", "voice"} and all(v <= 1.0 for v in r["ami"].values())


def test_cli_data_tokens(avdigits_tiny, capsys):
    assert main(["data", "tokens", str(avdigits_tiny), "--config", "configs/pretrain/xkd_avdigits_cpu.yaml",
                 "--max-files", "5", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "tubelets hold ink" in printed and "near-silent" in printed
