"""Typed YAML configs: defaults, overrides, and errors that name the key and the file."""

import pytest

from xkd.config import ConfigError, PretrainConfig, dump_config, from_dict, load_config, to_dict


def test_defaults_are_the_paper_recipe():
    cfg = load_config(PretrainConfig)
    assert cfg.loss.video_mask_ratio == 0.85 and cfg.loss.audio_mask_ratio == 0.80
    assert cfg.model.encoder.dim == 768 and cfg.model.encoder.depth == 12
    assert cfg.optim.betas == (0.9, 0.95) and cfg.optim.lr == 1e-4
    assert cfg.data.logmel.hop_length == 143 and cfg.data.video_local.crop_size == 96


def test_yaml_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("method: mae\noptim:\n  lr: 3e-4\ndata:\n  video_global:\n    crop_scale: [0.5, 1]\n")
    cfg = load_config(PretrainConfig, f, ["optim.accum_steps=4", "loss.teacher_view=global", "run.amp=bf16"])
    assert cfg.method == "mae"
    assert cfg.optim.lr == pytest.approx(3e-4) and isinstance(cfg.optim.lr, float)
    assert cfg.data.video_global.crop_scale == (0.5, 1.0)
    assert cfg.optim.accum_steps == 4 and cfg.loss.teacher_view == "global" and cfg.run.amp == "bf16"


def test_round_trip(tmp_path):
    cfg = load_config(PretrainConfig, None, ["model.encoder.dim=64", "model.encoder.heads=4"])
    dump_config(cfg, tmp_path / "out.yaml")
    assert load_config(PretrainConfig, tmp_path / "out.yaml") == cfg
    assert from_dict(PretrainConfig, to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    "text, needle",
    [
        ("optim:\n  lrr: 1\n", "unknown key 'optim.lrr'"),
        ("optim:\n  lr: fast\n", "key 'optim.lr' expects float"),
        ("optim:\n  betas: [0.9]\n", "key 'optim.betas' expects"),
        ("method: byol\n", "key 'method' expects"),
        ("run:\n  max_steps: 1.5\n", "key 'run.max_steps' expects int"),
        ("loss:\n  kd: 1\n", "key 'loss.kd' expects bool"),
        ("data: 3\n", "key 'data' expects"),
    ],
)
def test_errors_name_key_and_file(tmp_path, text, needle):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(PretrainConfig, f)
    assert needle in str(err.value) and str(f) in str(err.value)


def test_override_errors():
    with pytest.raises(ConfigError, match="unknown key 'optim.nope'"):
        load_config(PretrainConfig, None, ["optim.nope=1"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(PretrainConfig, None, ["optim.lr"])
    with pytest.raises(ConfigError, match="expects int"):
        load_config(PretrainConfig, None, ["run.seed=abc"])


def test_no_eval_of_strings(tmp_path):
    f = tmp_path / "evil.yaml"
    f.write_text("method: __import__('os').system('touch pwned')\n")
    with pytest.raises(ConfigError):
        load_config(PretrainConfig, f)
    assert not (tmp_path / "pwned").exists()


def test_cross_field_validation_is_a_config_error():
    with pytest.raises(ConfigError, match="video_patch"):
        load_config(PretrainConfig, None, ["model.num_frames=30"])


def test_base_file_is_merged_underneath(tmp_path):
    (tmp_path / "base.yaml").write_text("method: xkd\noptim:\n  lr: 1e-3\n  epochs: 7\n")
    (tmp_path / "top.yaml").write_text("base: base.yaml\nmethod: mae\noptim:\n  lr: 2e-3\n")
    cfg = load_config(PretrainConfig, tmp_path / "top.yaml")
    assert cfg.method == "mae" and cfg.optim.lr == 2e-3 and cfg.optim.epochs == 7
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(PretrainConfig, tmp_path / "loop.yaml")
    (tmp_path / "orphan.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(ConfigError, match="not found"):
        load_config(PretrainConfig, tmp_path / "orphan.yaml")


def test_every_shipped_config_loads():
    from pathlib import Path

    files = sorted((Path(__file__).parents[1] / "configs" / "pretrain").glob("*.yaml"))
    methods = {load_config(PretrainConfig, f).method for f in files}
    assert methods == {"xkd", "xkd-mas", "xkd-mats", "mae", "cav-mae"}


def test_renamed_keys_are_still_read_with_a_warning(tmp_path):
    from xkd.ccl.config import CCLConfig

    path = tmp_path / "old.yaml"
    path.write_text("data: {fps: 12.0, mean: [0.5, 0.5, 0.5]}\n")
    with pytest.warns(FutureWarning) as record:
        cfg = load_config(CCLConfig, path)
    assert [str(w.message).split(": ", 1)[1] for w in record] == [
        "'data.fps' is deprecated; write 'data.video_fps' (same meaning)",
        "'data.mean' is deprecated; write 'data.video_mean' (same meaning)"]
    assert cfg.data.video_fps == 12.0 and cfg.data.video_mean == (0.5, 0.5, 0.5)
    with pytest.warns(FutureWarning) as record:
        cfg = load_config(CCLConfig, path, ["data.std=[0.2, 0.2, 0.2]"])
    assert "'data.std' is deprecated; write 'data.video_std'" in str(record[-1].message)
    assert cfg.data.video_std == (0.2, 0.2, 0.2)
    path.write_text("data: {fps: 12.0, video_fps: 8.0}\n")
    with pytest.warns(FutureWarning), pytest.raises(ConfigError, match="'data.video_fps' is given twice"):
        load_config(CCLConfig, path)
