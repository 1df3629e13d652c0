"""benchmarks/gpu_check.py stays runnable: its checks, run on the CPU with tiny settings, report and pass."""

import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def test_gpu_check_runs_its_checks_on_the_cpu(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import gpu_check

    out = tmp_path / "summary.json"
    code = gpu_check.main(["--device", "cpu", "--steps", "1", "--fp16-steps", "2", "--views-batch", "2", "--out",
                           str(out), "--only", "step-cpu-recipe-bf16", "step-fp16-scaler", "host-syncs", "extract-cuda",
                           "views-on-device"])
    summary = json.loads(out.read_text())
    assert code == 0, summary
    assert set(summary) == {"device", "torch", "step-cpu-recipe-bf16", "step-fp16-scaler", "host-syncs",
                            "extract-cuda", "views-on-device"}
    assert summary["views-on-device"]["ms_per_batch"] > 0
    assert summary["views-on-device"]["max_abs_diff_vs_cpu"] == 0.0  # the same device twice
    assert summary["step-cpu-recipe-bf16"]["ms_per_step"] > 0
    assert summary["step-fp16-scaler"]["losses_finite"] and summary["step-fp16-scaler"]["grad_scale"] > 0
    assert summary["extract-cuda"]["max_abs_diff_cuda_vs_cpu"] == 0.0  # the same device twice
    assert "skipped" in summary["host-syncs"]
    sys.modules.pop("gpu_check", None)
    sys.modules.pop("pretrain_step", None)
