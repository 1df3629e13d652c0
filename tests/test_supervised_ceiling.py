"""The supervised ceiling (xkd.engine.supervised, tools/supervised_ceiling.py): the recipe's encoders taught by a label
column learn it, and the weights it writes are read back by xkd.api.load as the students."""

import torch

from xkd.api import load
from xkd.engine import supervised as tool

from eval_fixtures import tiny_config, write_separable


def test_label_teaches_the_encoders_and_weights_load(tmp_path):
    manifest = write_separable(tmp_path / "data", per_class_train=8)
    cfg = tiny_config(f"data.manifest={manifest}", "data.batch_size=8", "data.num_workers=0", "optim.lr=3e-3")
    encoders, history = tool.train(cfg, "shade", steps=32, masked=True, progress=False)
    for modality, losses in history.items():
        assert len(losses) == 32
        assert sum(losses[-4:]) < 0.7 * sum(losses[:4]), f"{modality} did not learn: {losses}"
    path = tool.save(encoders, cfg, tmp_path / "run", 32, "shade, masked views")
    loaded = load(tmp_path / "run")
    assert loaded.role == "student"
    for modality in ("video", "audio"):
        saved = getattr(loaded, modality).state_dict()
        for name, tensor in encoders[modality].state_dict().items():
            torch.testing.assert_close(saved[name], tensor)
    assert path.name == "weights.safetensors"
