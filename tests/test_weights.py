"""Clean weights files: parts and metadata round-trip, wrapper prefixes dropped, a damaged file is one clear error."""

import json
import struct

import numpy as np
import pytest
import torch
from torch import nn

from xkd.engine.checkpoint import CheckpointError
from xkd.engine.weights import encoder_roles, list_parts, load_weights, save_weights, weights_metadata


class _Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(3, 5, bias=False)
        self.out = nn.Linear(5, 3, bias=False)
        self.out.weight = nn.Parameter(self.embed.weight.t())  # non-contiguous view of a shared storage
        self.head = nn.Linear(3, 5, bias=True)
        self.head.weight = self.embed.weight  # the same tensor under two names


def test_weights_round_trip(tmp_path):
    student = _Tied()
    decoder = nn.Sequential(nn.Linear(5, 4), nn.LayerNorm(4))
    wrapped = {f"module._orig_mod.{k}": v for k, v in student.state_dict().items()}  # DDP(compile(model))
    decoder_sd = {k: v.to(torch.bfloat16) for k, v in decoder.state_dict().items()}
    meta = {"config": json.dumps({"dim": 5}), "method": "xkd", "version": "0.1.0"}
    path = save_weights(tmp_path / "w.safetensors", {"video_student": wrapped, "video_decoder": decoder_sd}, meta)

    assert list_parts(path) == ["video_decoder", "video_student"]
    parts, loaded_meta = load_weights(path)
    assert loaded_meta == meta
    assert set(parts["video_student"]) == set(student.state_dict())
    fresh = _Tied()
    fresh.load_state_dict(parts["video_student"])
    for name, value in student.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value)
    assert parts["video_decoder"]["0.weight"].dtype == torch.bfloat16
    assert torch.equal(parts["video_decoder"]["1.bias"], decoder_sd["1.bias"])
    only, _ = load_weights(path, parts=["video_decoder"])
    assert list(only) == ["video_decoder"]
    with pytest.raises(KeyError, match="audio_teacher"):
        load_weights(path, parts=["audio_teacher"])


def _damaged_weights(tmp_path, kind):
    good = save_weights(tmp_path / "good.safetensors", {"video_student": {"w": torch.randn(64, 64)}}, {"m": "1"})
    data = good.read_bytes()
    damaged = {
        "truncated": data[: len(data) // 2],
        "random": bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
        "header-too-large": struct.pack("<Q", 10**9) + data[8:],  # the header claims more bytes than the file has
        "empty": b"",
    }[kind]
    path = tmp_path / f"{kind}.safetensors"
    path.write_bytes(damaged)
    return path


@pytest.mark.parametrize("kind", ["truncated", "random", "header-too-large", "empty"])
def test_damaged_weights_file_is_a_checkpoint_error_naming_the_file(tmp_path, kind):
    path = _damaged_weights(tmp_path, kind)
    for read in (load_weights, list_parts):
        with pytest.raises(CheckpointError, match=f"{kind}.safetensors: not a readable safetensors weights file"):
            read(path)
    with pytest.raises(FileNotFoundError, match="no weights file"):
        load_weights(tmp_path / "missing.safetensors")


def test_cli_reports_a_damaged_weights_file_in_one_line(tmp_path, capsys):
    from xkd.cli import main

    path = _damaged_weights(tmp_path, "truncated")
    code = main(["extract", "--weights", str(path), "--input", str(tmp_path), "--out", str(tmp_path / "f.npz"),
                 "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("xkd extract: error:") and "truncated.safetensors" in err


def test_weights_argument_checks(tmp_path):
    sd = {"w": torch.zeros(2)}
    with pytest.raises(ValueError, match="contain no '.'"):
        save_weights(tmp_path / "a.safetensors", {"video.student": sd}, {})
    with pytest.raises(TypeError, match="str to str"):
        save_weights(tmp_path / "a.safetensors", {"video_student": sd}, {"epochs": 800})
    with pytest.raises(ValueError, match="'p.w'"):
        save_weights(tmp_path / "a.safetensors", {"p": {"module.w": torch.zeros(1), "w": torch.ones(1)}}, {})
    assert not list(tmp_path.iterdir())


def test_part_names_metadata_and_run_folders(tmp_path):
    from xkd.engine.weights import (PRETRAIN_FORMAT, WEIGHTS_FILE, decoder_part, encoder_part, find_weights,
                                    head_part)
    from xkd.version import __version__

    parts = [encoder_part("video", "teacher"), head_part("video", "teacher"), encoder_part("audio", "student"),
             decoder_part("audio")]
    assert parts == ["video_teacher", "video_teacher_head", "audio_student", "audio_decoder"]
    assert encoder_roles(parts) == {"teacher", "student"}
    assert encoder_roles([head_part("video", "student"), decoder_part("video")]) == set()
    meta = weights_metadata(PRETRAIN_FORMAT, {"method": "xkd"}, step="3")
    assert meta == {"format": "xkd-weights-1", "xkd_version": __version__, "config": '{"method": "xkd"}', "step": "3"}
    path = save_weights(tmp_path / WEIGHTS_FILE, {parts[0]: {"w": torch.zeros(2)}}, meta)
    assert find_weights(tmp_path) == path == find_weights(path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no weights.safetensors"):
        find_weights(tmp_path / "empty")
    assert load_weights(path)[1] == meta
