"""xkd.load and the encode API: weights files and run folders, roles, preprocessing, and shape errors."""

import pytest
import torch

import xkd
from eval_fixtures import tiny_config
from xkd.api import InputShapeError, baseline_seed, random_encoders
from xkd.engine.pretrain import save_weights_file
from xkd.models.encoder import pooled
from xkd.models.xkd import XKD


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    cfg = tiny_config()
    model = XKD(cfg)
    with torch.no_grad():  # make the teachers differ from the students
        for p in model.teacher.parameters():
            p.add_(0.01)
    folder = tmp_path_factory.mktemp("run")
    save_weights_file(model, cfg, folder / "weights.safetensors", step=1)
    return folder, model


def test_load_gives_the_saved_encoders(weights):
    folder, model = weights
    clips = torch.randn(2, 3, 16, 32, 32)
    spec = torch.randn(2, 1, 40, 224)
    for role in ("teacher", "student"):
        enc = xkd.load(folder / "weights.safetensors", role=role)
        assert enc.role == role
        ref_v = pooled(model.__getattr__(role)["video"].encoder(clips))
        ref_a = pooled(model.__getattr__(role)["audio"].encoder(spec))
        torch.testing.assert_close(enc.encode_video(clips, batch_size=1), ref_v)
        torch.testing.assert_close(enc.encode_audio(spec), ref_a)
    assert xkd.load(folder).role == "teacher"  # a run folder; teachers by default


def test_raw_inputs_are_preprocessed(weights):
    enc = xkd.load(weights[0])
    frames = torch.randint(0, 256, (2, 16, 48, 64, 3), dtype=torch.uint8)
    prepared = enc.prepare_video(frames)
    assert prepared.shape == (2, 3, 16, 32, 32)
    torch.testing.assert_close(enc.encode_video(frames), enc.encode_video(prepared))
    wave = torch.randn(2, 32000) * 0.1
    assert enc.prepare_audio(wave).shape == (2, 1, 40, 224)
    torch.testing.assert_close(enc.encode_audio(wave), enc.encode_audio(enc.prepare_audio(wave)))


@pytest.mark.parametrize(
    "call, shape, needle",
    [
        ("encode_video", (2, 16, 32, 32), "[B, 3, T, H, W]"),
        ("encode_video", (2, 3, 15, 32, 32), "multiples of [4, 8, 8]"),
        ("encode_audio", (2, 1, 64, 224), "[B, 1, 40, T]"),
        ("encode_audio", (2, 1, 40, 100), "multiple of 16"),
    ],
)
def test_wrong_shapes_name_the_expected_shape(weights, call, shape, needle):
    enc = xkd.load(weights[0])
    with pytest.raises(InputShapeError) as err:
        getattr(enc, call)(torch.randn(*shape))
    assert needle in str(err.value)


def test_missing_or_foreign_files_are_clear_errors(tmp_path, weights):
    with pytest.raises(FileNotFoundError):
        xkd.load(tmp_path / "nope.safetensors")
    with pytest.raises(FileNotFoundError, match="weights.safetensors"):
        xkd.load(tmp_path)
    with pytest.raises(ValueError, match="role"):
        xkd.load(weights[0], role="coach")


def test_random_baseline_is_not_the_pretrained_models_starting_point():
    cfg = tiny_config()
    torch.manual_seed(cfg.run.seed)  # the pretraining engine seeds and builds in this order
    start = XKD(cfg).student["video"].encoder.state_dict()
    with pytest.raises(ValueError, match="its own seed"):
        random_encoders(cfg, seed=cfg.run.seed)
    state = torch.get_rng_state()
    baseline = random_encoders(cfg, seed=baseline_seed(cfg.run.seed))
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is untouched
    assert baseline.source == f"random init (seed {baseline_seed(cfg.run.seed)})"
    differ = [k for k, v in baseline.video.state_dict().items() if not torch.equal(v, start[k])]
    assert "tokenizer.proj.weight" in differ and "pos_embed" in differ
    again = random_encoders(cfg, seed=baseline_seed(cfg.run.seed))  # deterministic by its seed
    assert all(torch.equal(v, again.video.state_dict()[k]) for k, v in baseline.video.state_dict().items())


def test_load_roles_and_early_stop_are_reported(weights, tmp_path):
    from xkd.api import load_roles

    folder, model = weights
    both = load_roles(folder)
    assert list(both) == ["teacher", "student"] and both["student"].role == "student"
    assert list(load_roles(folder, role="student")) == ["student"]
    assert not both["teacher"].stopped_early and "STOPPED" not in both["teacher"].describe()
    save_weights_file(model, tiny_config(), tmp_path / "early.safetensors", step=3, schedule_steps=10)
    early = xkd.load(tmp_path / "early.safetensors")
    assert early.steps == (3, 10) and early.stopped_early
    assert "STOPPED EARLY at step 3 of a 10-step schedule" in early.describe()


def test_a_cav_mae_run_loads_as_its_students(tmp_path):
    from xkd.api import load_roles
    from xkd.engine.weights import load_weights

    torch.manual_seed(0)
    cfg = tiny_config()
    cfg.method = "cav-mae"
    model = XKD(cfg)
    save_weights_file(model, cfg, tmp_path / "weights.safetensors", step=1)
    parts, meta = load_weights(tmp_path / "weights.safetensors")
    assert {"video_projection", "audio_projection", "video_student", "audio_decoder"} <= set(parts)
    assert meta["method"] == "cav-mae"
    roles = load_roles(tmp_path)
    assert list(roles) == ["student"]  # no teachers: the students are the encoders
    clips = torch.randn(2, 3, 16, 32, 32)
    torch.testing.assert_close(roles["student"].encode_video(clips), pooled(model.student["video"].encoder(clips)))
