"""Reading the official XKD release backbones (spec §A14): keys, shapes, flattening order, features, conversion.

State dicts are built with exactly the release's keys (from a module with the original attribute names) and saved as
the original code does, ``torch.save(model.state_dict(), "vid_student.pth.tar")``. Features are compared with an
independent, loop-based re-implementation of the original forward that reads the release state dict directly.
"""

import argparse
import json
import os
import pickle
import shlex

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from xkd.config import EncoderConfig, ModelConfig, PretrainConfig, from_dict
from xkd.engine.checkpoint import CheckpointError
from xkd.engine.weights import load_weights
from xkd.models.encoder import audio_encoder, pooled, video_encoder
from xkd.models.tokenizers import VideoTokenizer
from xkd.official import add_convert_parser, convert_official, load_official, official_files, read_state_dict
from xkd.official_format import detect_official, official_model_config, official_to_ours

DIM, DEPTH, HEADS = 64, 2, 4
VIDEO_SIZE = (8, 32)  # frames, frame side: 2x2x2 tubelets
SPEC_SIZE = (80, 64)  # mel bins, frames: 20x4 patches
VIDEO_ROWS = 1 + 2 * 2 * 2
AUDIO_ROWS = 1 + 20 * 4
FILES = {
    "video_student": "vid_student.pth.tar",
    "video_teacher": "vid_teacher.pth.tar",
    "audio_student": "aud_student.pth.tar",
    "audio_teacher": "aud_teacher.pth.tar",
}

# ---------------------------------------------------------------------------------- the release layout, by hand


def spec_keys(modality: str, dim=768, depth=12, rows=None, hidden=None, qkv_bias=False) -> dict[str, tuple]:
    """The keys and shapes of §A14 for a backbone of the given size (defaults: the paper's ViT-B)."""
    video = modality == "video"
    rows = rows or (393 if video else 561)
    hidden = hidden or 4 * dim
    embed, patch_dim = ("cuboid_embed", 3072) if video else ("patch_embed", 64)
    keys = {
        "cls_token": (1, 1, dim),
        "enc_pos_embed": (1, rows, dim),
        f"{embed}.proj.weight": (dim, patch_dim),
        f"{embed}.proj.bias": (dim,),
    }
    for i in range(depth):
        b = f"encoder.blocks.{i}"
        keys |= {
            f"{b}.norm1.weight": (dim,),
            f"{b}.norm1.bias": (dim,),
            f"{b}.attn.qkv.weight": (3 * dim, dim),
            **({f"{b}.attn.qkv.bias": (3 * dim,)} if qkv_bias else {}),
            f"{b}.attn.proj.weight": (dim, dim),
            f"{b}.attn.proj.bias": (dim,),
            f"{b}.norm2.weight": (dim,),
            f"{b}.norm2.bias": (dim,),
            f"{b}.mlp.fc1.weight": (hidden, dim),
            f"{b}.mlp.fc1.bias": (hidden,),
            f"{b}.mlp.fc2.weight": (dim, hidden),
            f"{b}.mlp.fc2.bias": (dim,),
        }
    keys |= {"encoder_norm.weight": (dim,), "encoder_norm.bias": (dim,)}
    return keys


# release name prefix -> our Encoder's, written independently of xkd.official
OUR_NAMES = [
    ("enc_pos_embed", "pos_embed"),
    ("cuboid_embed.proj.", "tokenizer.proj."),
    ("patch_embed.proj.", "tokenizer.proj."),
    ("encoder.blocks.", "blocks.blocks."),
    ("encoder_norm.", "norm."),
    ("cls_token", "cls_token"),
]


def our_name(key: str) -> str:
    prefix, ours = next((p, o) for p, o in OUR_NAMES if key.startswith(p))
    return ours + key[len(prefix) :]


def official_backbone(modality, dim=DIM, depth=DEPTH, rows=None, qkv_bias=False, hidden=None, seed=0) -> nn.Module:
    """A module with the original VideoViT / AudioViT attribute names, random weights (LayerNorm gains near 1)."""
    video = modality == "video"
    hidden = hidden or 4 * dim
    m = nn.Module()
    m.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
    m.enc_pos_embed = nn.Parameter(torch.zeros(1, rows or (VIDEO_ROWS if video else AUDIO_ROWS), dim))
    embed = nn.Module()
    embed.proj = nn.Linear(3072 if video else 64, dim)
    setattr(m, "cuboid_embed" if video else "patch_embed", embed)
    blocks = nn.ModuleList()
    for _ in range(depth):
        blk = nn.Module()
        blk.norm1, blk.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        blk.attn = nn.Module()
        blk.attn.qkv, blk.attn.proj = nn.Linear(dim, 3 * dim, bias=qkv_bias), nn.Linear(dim, dim)
        blk.mlp = nn.Module()
        blk.mlp.fc1, blk.mlp.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        blocks.append(blk)
    m.encoder = nn.Module()
    m.encoder.blocks = blocks
    m.encoder_norm = nn.LayerNorm(dim)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            p.copy_(1 + 0.1 * noise if "norm" in name and name.endswith("weight") else 0.2 * noise)
    return m


def write_release(folder, parts=FILES, **kwargs) -> dict[str, dict]:
    """Save backbones as the original ``save_state_dicts`` does; returns their state dicts by part."""
    folder.mkdir(parents=True, exist_ok=True)
    sds = {}
    for seed, part in enumerate(parts):
        model = official_backbone("video" if part.startswith("video") else "audio", seed=seed, **kwargs)
        torch.save(model.state_dict(), folder / FILES[part])
        sds[part] = model.state_dict()
    return sds


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    folder = tmp_path_factory.mktemp("release")
    sds = write_release(folder)
    encoders = load_official(folder, heads=HEADS, stored_frame_size=VIDEO_SIZE[1])
    return folder, sds, encoders


# ------------------------------------------------------------------- an independent reference of the original forward


def ref_video_patches(x):
    """x [B, C, T, H, W] -> [B, N, 3072]: tokens (t h w), each vector (pt ph pw c), by explicit loops."""
    B, C, T, H, W = x.shape
    tokens = []
    for t in range(T // 4):
        for h in range(H // 16):
            for w in range(W // 16):
                cube = x[:, :, 4 * t : 4 * t + 4, 16 * h : 16 * h + 16, 16 * w : 16 * w + 16]  # [B, C, 4, 16, 16]
                tokens.append(torch.stack([cube[:, c, a, b, d] for a in range(4) for b in range(16)
                                           for d in range(16) for c in range(C)], dim=1))
    return torch.stack(tokens, dim=1)


def ref_audio_patches(x):
    """x [B, 1, F, T] -> [B, N, 64]: tokens (F/4, T/16) frequency-major, each vector (pf pt c)."""
    B, C, Fq, T = x.shape
    tokens = []
    for f in range(Fq // 4):
        for t in range(T // 16):
            patch = x[:, :, 4 * f : 4 * f + 4, 16 * t : 16 * t + 16]
            tokens.append(torch.stack([patch[:, c, a, b] for a in range(4) for b in range(16) for c in range(C)], 1))
    return torch.stack(tokens, dim=1)


def reference_forward(sd, x, modality, heads):
    """The original backbone forward (prepare_token -> blocks -> encoder_norm), reading the release state dict:
    nn.LayerNorm eps 1e-5, exact GELU, attention scale head_dim^-0.5, heads computed one by one. -> [B, 1+N, D]."""
    embed = "cuboid_embed" if modality == "video" else "patch_embed"
    patches = ref_video_patches(x) if modality == "video" else ref_audio_patches(x)
    z = patches @ sd[f"{embed}.proj.weight"].T + sd[f"{embed}.proj.bias"]
    pos = sd["enc_pos_embed"]
    z = z + pos[:, 1:]
    cls = (sd["cls_token"] + pos[:, :1]).expand(z.shape[0], -1, -1)
    z = torch.cat([cls, z], dim=1)
    D = z.shape[-1]
    hd = D // heads
    depth = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder.blocks."))
    for i in range(depth):
        p = lambda name: sd[f"encoder.blocks.{i}.{name}"]  # noqa: E731
        h = F.layer_norm(z, (D,), p("norm1.weight"), p("norm1.bias"), eps=1e-5)
        qkv = h @ p("attn.qkv.weight").T
        if f"encoder.blocks.{i}.attn.qkv.bias" in sd:
            qkv = qkv + p("attn.qkv.bias")
        q, k, v = qkv[..., :D], qkv[..., D : 2 * D], qkv[..., 2 * D :]
        outs = []
        for j in range(heads):
            s = slice(j * hd, (j + 1) * hd)
            attn = torch.softmax(q[..., s] @ k[..., s].transpose(1, 2) * hd**-0.5, dim=-1)
            outs.append(attn @ v[..., s])
        z = z + torch.cat(outs, dim=-1) @ p("attn.proj.weight").T + p("attn.proj.bias")
        h = F.layer_norm(z, (D,), p("norm2.weight"), p("norm2.bias"), eps=1e-5)
        h = F.gelu(h @ p("mlp.fc1.weight").T + p("mlp.fc1.bias"), approximate="none")
        z = z + h @ p("mlp.fc2.weight").T + p("mlp.fc2.bias")
    return F.layer_norm(z, (D,), sd["encoder_norm.weight"], sd["encoder_norm.bias"], eps=1e-5)


def test_reference_patches_follow_the_spec_formulas():
    """The reference patchifiers put pixel (c, t, h, w) at the token / vector index of the spec's formulas."""
    x = torch.arange(3 * 8 * 32 * 48, dtype=torch.float64).reshape(1, 3, 8, 32, 48)
    p = ref_video_patches(x)
    for c, t, h, w in [(0, 0, 0, 0), (2, 7, 31, 47), (1, 5, 17, 20), (2, 3, 9, 33)]:
        token = (t // 4) * (32 // 16) * (48 // 16) + (h // 16) * (48 // 16) + (w // 16)
        vector = ((t % 4) * 16 + h % 16) * 16 * 3 + (w % 16) * 3 + c
        assert p[0, token, vector] == x[0, c, t, h, w]
    a = torch.arange(8 * 48, dtype=torch.float64).reshape(1, 1, 8, 48)
    p = ref_audio_patches(a)
    for f, t in [(0, 0), (7, 47), (5, 20), (2, 33)]:
        assert p[0, (f // 4) * (48 // 16) + t // 16, (f % 4) * 16 + t % 16] == a[0, 0, f, t]


# --------------------------------------------------------------------------------------------- keys and shapes


@pytest.mark.parametrize("modality", ["video", "audio"])
def test_vit_b_release_layout_loads_strictly(modality):
    """The §A14 ViT-B state dict (meta tensors: shapes only) gives the paper's ModelConfig and loads strictly."""
    keys = spec_keys(modality)
    assert len(keys) == 138
    sd = {k: torch.empty(shape, device="meta") for k, shape in keys.items()}
    assert detect_official(sd) == modality
    cfg = official_model_config(**{f"{modality}_sd": sd})
    assert cfg == ModelConfig()  # 768 / 12 / 12 heads / MLP 4 / no qkv bias, 32x112x112, 80x448, 4x16x16, 4x16
    mapped = official_to_ours(sd, modality)
    assert mapped.keys() == {our_name(k) for k in keys}
    with torch.device("meta"):
        encoder = video_encoder(cfg) if modality == "video" else audio_encoder(cfg)
    assert {k: tuple(v.shape) for k, v in encoder.state_dict().items()} == {
        our_name(k): shape for k, shape in keys.items()
    }
    encoder.load_state_dict(mapped, strict=True, assign=True)


def test_test_backbones_have_exactly_the_release_keys(release):
    _, sds, _ = release
    for part, sd in sds.items():
        modality = "video" if part.startswith("video") else "audio"
        rows = VIDEO_ROWS if modality == "video" else AUDIO_ROWS
        assert {k: tuple(v.shape) for k, v in sd.items()} == spec_keys(modality, DIM, DEPTH, rows)


def test_detect_official(release):
    _, sds, encoders = release
    assert detect_official(sds["video_teacher"]) == "video"
    assert detect_official(sds["audio_student"]) == "audio"
    assert detect_official({"state_dict": {f"module.{k}": v for k, v in sds["audio_teacher"].items()}}) == "audio"
    assert detect_official(encoders["video_student"].state_dict()) is None  # our own names
    assert detect_official({"epoch": 3}) is None
    assert detect_official(torch.zeros(3)) is None


def test_every_tensor_lands_where_it_should(release):
    _, sds, encoders = release
    assert list(encoders) == list(FILES)
    for part, sd in sds.items():
        ours = encoders[part].state_dict()
        assert ours.keys() == {our_name(k) for k in sd}
        for key, value in sd.items():
            if key.endswith("embed.proj.weight"):
                continue  # its columns are checked pixel by pixel below
            assert torch.equal(ours[our_name(key)], value), key


# ----------------------------------------------------------------------------------------------- flattening order


def test_video_pixel_reaches_the_official_token_and_dimension(release):
    _, sds, encoders = release
    tokenizer = encoders["video_student"].tokenizer
    weight = sds["video_student"]["cuboid_embed.proj.weight"]
    T, H, W = 8, 32, 48  # non-square, so that h and w cannot be swapped unnoticed
    g = torch.Generator().manual_seed(1)
    pixels = [(int(torch.randint(3, (1,), generator=g)), *(int(torch.randint(s, (1,), generator=g)) for s in (T, H, W)))
              for _ in range(12)] + [(2, 7, 31, 47), (0, 0, 0, 0)]
    x = torch.zeros(len(pixels), 3, T, H, W)
    for i, (c, t, h, w) in enumerate(pixels):
        x[i, c, t, h, w] = 1.0
    with torch.no_grad():
        out = tokenizer(x) - tokenizer(torch.zeros(1, 3, T, H, W))  # remove the bias: [B, N, D]
    for i, (c, t, h, w) in enumerate(pixels):
        token = (t // 4) * (H // 16) * (W // 16) + (h // 16) * (W // 16) + (w // 16)
        vector = ((t % 4) * 16 + h % 16) * 16 * 3 + (w % 16) * 3 + c
        torch.testing.assert_close(out[i, token], weight[:, vector])
        others = torch.cat([out[i, :token], out[i, token + 1 :]])
        assert others.abs().max() < 1e-6


def test_mel_bin_reaches_the_official_token_and_dimension(release):
    _, sds, encoders = release
    tokenizer = encoders["audio_teacher"].tokenizer
    weight = sds["audio_teacher"]["patch_embed.proj.weight"]
    Fq, T = 8, 48
    bins = [(f, t) for f in range(Fq) for t in (0, 5, 16, 31, 47)]
    x = torch.zeros(len(bins), 1, Fq, T)
    for i, (f, t) in enumerate(bins):
        x[i, 0, f, t] = 1.0
    with torch.no_grad():
        out = tokenizer(x) - tokenizer(torch.zeros(1, 1, Fq, T))
    for i, (f, t) in enumerate(bins):
        token, vector = (f // 4) * (T // 16) + t // 16, (f % 4) * 16 + t % 16
        torch.testing.assert_close(out[i, token], weight[:, vector])
        assert torch.cat([out[i, :token], out[i, token + 1 :]]).abs().max() < 1e-6


# --------------------------------------------------------------------------------------------------------- features


@pytest.mark.parametrize("part", list(FILES))
def test_features_match_the_original_forward(release, part):
    _, sds, encoders = release
    modality = "video" if part.startswith("video") else "audio"
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, *VIDEO_SIZE[:1], VIDEO_SIZE[1], VIDEO_SIZE[1], generator=g) if modality == "video" \
        else torch.randn(2, 1, *SPEC_SIZE, generator=g)
    with torch.no_grad():
        ours = encoders[part](x)
        ref = reference_forward(sds[part], x, modality, HEADS)
    torch.testing.assert_close(ours.tokens, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pooled(ours), ref[:, 1:].mean(dim=1), rtol=1e-5, atol=1e-5)


def test_patch_columns_follow_our_tokenizer_order(release, monkeypatch):
    """Were our tokenizer to flatten tubelets (c pt ph pw), loading would reorder the weight columns to match."""
    folder, sds, _ = release

    def channels_first(self, x):
        t, h, w = self.grid_for(x)
        pt, ph, pw = self.patch
        B, C = x.shape[:2]
        x = x.reshape(B, C, t, pt, h, ph, w, pw).permute(0, 2, 4, 6, 1, 3, 5, 7)
        return x.reshape(B, t * h * w, self.patch_dim)

    monkeypatch.setattr(VideoTokenizer, "patchify", channels_first)
    encoder = load_official(folder / FILES["video_student"], heads=HEADS, stored_frame_size=32)["video_student"]
    assert not torch.equal(encoder.tokenizer.proj.weight, sds["video_student"]["cuboid_embed.proj.weight"])
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        ref = reference_forward(sds["video_student"], x, "video", HEADS)
        torch.testing.assert_close(encoder(x).tokens, ref, rtol=1e-5, atol=1e-5)


def test_qkv_bias_and_mlp_ratio_are_read_from_the_file(tmp_path):
    model = official_backbone("audio", qkv_bias=True, hidden=2 * DIM)
    torch.save(model.state_dict(), tmp_path / "aud_student.pth.tar")
    cfg = official_model_config(audio_sd=model.state_dict(), heads=HEADS)
    assert cfg.encoder == EncoderConfig(dim=DIM, depth=DEPTH, heads=HEADS, mlp_ratio=2.0, qkv_bias=True)
    encoder = load_official(tmp_path / "aud_student.pth.tar", heads=HEADS)["audio_student"]
    x = torch.randn(1, 1, *SPEC_SIZE)
    with torch.no_grad():
        torch.testing.assert_close(encoder(x).tokens, reference_forward(model.state_dict(), x, "audio", HEADS),
                                   rtol=1e-5, atol=1e-5)


def test_another_input_size_resamples_the_position_embedding_once(release):
    folder, _, encoders = release
    resized = load_official(folder, heads=HEADS, stored_frame_size=32, num_frames=16, frame_size=48, spec_frames=96)
    assert resized["video_teacher"].tokenizer.grid == (4, 3, 3)
    assert resized["video_teacher"].pos_embed.shape == (1, 1 + 36, DIM)
    assert resized["audio_student"].tokenizer.grid == (20, 6)
    video, spec = torch.randn(1, 3, 16, 48, 48), torch.randn(1, 1, 80, 96)
    with torch.no_grad():  # same features as the stored-size encoder resampling on the fly
        torch.testing.assert_close(resized["video_teacher"](video).tokens, encoders["video_teacher"](video).tokens)
        torch.testing.assert_close(resized["audio_student"](spec).tokens, encoders["audio_student"](spec).tokens)
    with pytest.raises(ValueError, match="not divisible"):
        load_official(folder, heads=HEADS, stored_frame_size=32, num_frames=10)


# ------------------------------------------------------------------------------------------------ architecture


def test_model_config_from_rows():
    video = spec_keys("video", DIM, DEPTH, rows=VIDEO_ROWS)
    sd = lambda keys: {k: torch.empty(s, device="meta") for k, s in keys.items()}  # noqa: E731
    with pytest.raises(ValueError, match="several input sizes.*8x32x32"):
        official_model_config(video_sd=sd(video))  # 8 tokens: 32x16x16 or 8x32x32
    assert official_model_config(video_sd=sd(video), frame_size=32).num_frames == 8
    assert official_model_config(video_sd=sd(video), num_frames=32).frame_size == 16
    with pytest.raises(ValueError, match="no input size fits"):
        official_model_config(video_sd=sd(video), frame_size=48)
    square_free = spec_keys("video", DIM, DEPTH, rows=1 + 6)
    cfg = official_model_config(video_sd=sd(square_free))  # 6 tokens: only 24x16x16 fits
    assert (cfg.num_frames, cfg.frame_size) == (24, 16)
    cfg = official_model_config(audio_sd=sd(spec_keys("audio", DIM, DEPTH, rows=AUDIO_ROWS)), num_frames=16)
    assert (cfg.spec_size, cfg.encoder.heads, cfg.num_frames) == (SPEC_SIZE, 1, 16)  # heads: dim // 64
    with pytest.raises(ValueError, match="spec_size"):
        official_model_config(audio_sd=sd(spec_keys("audio", DIM, DEPTH, rows=1 + 30)))
    assert official_model_config(audio_sd=sd(spec_keys("audio", DIM, DEPTH, rows=1 + 30)),
                                 spec_size=(40, 48)).spec_size == (40, 48)
    with pytest.raises(ValueError, match="heads"):
        official_model_config(audio_sd=sd(spec_keys("audio", 96, DEPTH, rows=AUDIO_ROWS)))
    with pytest.raises(ValueError, match="different architectures"):
        official_model_config(video_sd=sd(video), audio_sd=sd(spec_keys("audio", 128, DEPTH)), frame_size=32)
    with pytest.raises(ValueError, match="needs"):
        official_model_config()
    other_tubelets = {**video, "cuboid_embed.proj.weight": (DIM, 2 * 16 * 16 * 3)}
    with pytest.raises(CheckpointError, match=r"\[dim, 3072\] for 4x16x16 patches"):
        official_model_config(video_sd=sd(other_tubelets), frame_size=32)


# ------------------------------------------------------------------------------------------- files and conversion


def test_convert_round_trip_gives_identical_features(release, tmp_path):
    folder, _, encoders = release
    out = convert_official(folder, tmp_path / "xkd_official.safetensors", heads=HEADS, stored_frame_size=32)
    parts, meta = load_weights(out)
    assert sorted(parts) == sorted(FILES)
    assert meta["format"] == "xkd-weights-1" and meta["method"] == "xkd-official"
    assert json.loads(meta["source"]) == list(FILES.values())
    cfg = from_dict(PretrainConfig, json.loads(meta["config"]))
    assert cfg.model == official_model_config(
        read_state_dict(folder / FILES["video_student"]), read_state_dict(folder / FILES["audio_student"]),
        heads=HEADS, frame_size=32,
    )
    x = {"video": torch.randn(2, 3, 8, 32, 32), "audio": torch.randn(2, 1, *SPEC_SIZE)}
    for part, state in parts.items():
        modality = "video" if part.startswith("video") else "audio"
        rebuilt = video_encoder(cfg.model) if modality == "video" else audio_encoder(cfg.model)
        rebuilt.load_state_dict(state, strict=True)
        with torch.no_grad():
            assert torch.equal(pooled(rebuilt(x[modality])), pooled(encoders[part](x[modality])))


def test_common_wrappings_are_accepted(release, tmp_path):
    _, sds, encoders = release
    torch.save({"state_dict": {f"module.{k}": v for k, v in sds["video_teacher"].items()}, "epoch": 800},
               tmp_path / "vid_teacher.pth.tar")
    torch.save({"model": sds["audio_student"]}, tmp_path / "k400_aud_student.pth")
    loaded = load_official(tmp_path, heads=HEADS, stored_frame_size=32)
    assert list(loaded) == ["video_teacher", "audio_student"]
    for part, encoder in loaded.items():
        for key, value in encoder.state_dict().items():
            assert torch.equal(value, encoders[part].state_dict()[key])


def test_official_files(tmp_path):
    write_release(tmp_path, parts=["audio_teacher", "video_student"])
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    assert official_files(tmp_path) == {
        "video_student": tmp_path / "vid_student.pth.tar",
        "audio_teacher": tmp_path / "aud_teacher.pth.tar",
    }
    assert official_files(tmp_path / "aud_teacher.pth.tar") == {"audio_teacher": tmp_path / "aud_teacher.pth.tar"}
    with pytest.raises(ValueError, match="cannot tell"):
        official_files(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no official XKD backbone files"):
        official_files(tmp_path / "empty")


def test_missing_and_unexpected_keys_are_named(release, tmp_path):
    _, sds, _ = release
    sd = dict(sds["video_student"])
    del sd["encoder.blocks.1.mlp.fc2.bias"]
    sd["decoder_pred.weight"] = torch.zeros(3)
    torch.save(sd, tmp_path / "vid_student.pth.tar")
    with pytest.raises(CheckpointError, match=r"vid_student.*missing keys: encoder\.blocks\.1\.mlp\.fc2\.bias; "
                                              r"unexpected keys: decoder_pred\.weight"):
        load_official(tmp_path, heads=HEADS, stored_frame_size=32)
    torch.save(sds["audio_student"], tmp_path / "vid_student.pth.tar")  # an audio backbone under a video name
    with pytest.raises(CheckpointError, match=r"missing keys: cuboid_embed.*unexpected keys: patch_embed"):
        load_official(tmp_path, heads=HEADS)
    with pytest.raises(CheckpointError, match="not a state dict of tensors"):
        official_to_ours({"epoch": 3, "optimizer": {}}, "video")


def test_a_teacher_of_another_shape_is_refused(tmp_path):
    write_release(tmp_path, parts=["video_student"])
    torch.save(official_backbone("video", dim=128).state_dict(), tmp_path / "vid_teacher.pth.tar")
    with pytest.raises(CheckpointError, match="vid_teacher.*does not fit"):
        load_official(tmp_path, heads=HEADS, stored_frame_size=32)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_malicious_pickle_is_refused_and_not_run(release, tmp_path, writer):
    _, sds, _ = release
    marker = tmp_path / "pwned"
    payload = {**sds["video_student"], "extra": _Exploit(marker)}
    path = tmp_path / "vid_student.pth.tar"
    if writer == "torch":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_official(path)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        convert_official(path, tmp_path / "out.safetensors")
    assert not marker.exists()
    assert not (tmp_path / "out.safetensors").exists()


def test_cli_convert_official(release, tmp_path, capsys):
    folder, _, encoders = release
    parser = argparse.ArgumentParser(prog="xkd")
    sub = parser.add_subparsers(dest="command", required=True)
    convert = add_convert_parser(sub)
    for action in convert._actions:
        assert action.help, f"{action.dest} has no --help text"
    out = tmp_path / "w.safetensors"
    args = parser.parse_args(["convert-official", str(folder), str(out), "--heads", str(HEADS),
                              "--stored-frame-size", "32", "--spec-frames", "128"])
    assert args.func(args) == 0
    assert "video_student" in capsys.readouterr().out
    parts, meta = load_weights(out, parts=["audio_teacher"])
    assert json.loads(meta["config"])["model"]["spec_size"] == [80, 128]
    assert parts["audio_teacher"]["pos_embed"].shape == (1, 1 + 20 * 8, DIM)
