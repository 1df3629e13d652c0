"""cav-mae: the cross-modal InfoNCE, its parts in the model, and what it learns: on clips whose two modalities share one
factor and each hold a private one, the embeddings keep the shared factor and drop the private ones."""

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from torch.nn import functional as F

from xkd.config import LossConfig, PretrainConfig
from xkd.losses.contrastive import info_nce
from xkd.models.encoder import tiny_model_config
from xkd.models.xkd import XKD


def test_info_nce_is_the_cross_entropy_of_each_clip_against_the_batch():
    g = torch.Generator().manual_seed(0)
    video, audio = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    loss, acc = info_nce(video, audio, temperature=0.5, symmetric=False)
    sim = F.normalize(video, dim=1) @ F.normalize(audio, dim=1).t() / 0.5
    expected = -torch.stack([sim[i, i] - torch.logsumexp(sim[i], 0) for i in range(6)]).mean()
    torch.testing.assert_close(loss, expected)
    assert acc == (sim.argmax(1) == torch.arange(6)).float().mean()
    both, _ = info_nce(video, audio, temperature=0.5, symmetric=True)
    reverse, _ = info_nce(audio, video, temperature=0.5, symmetric=False)
    torch.testing.assert_close(both, (loss + reverse) / 2)


def test_info_nce_is_low_for_matched_pairs_and_ln_b_for_unrelated_ones():
    x = torch.eye(8)
    loss, acc = info_nce(x, x * 3, temperature=0.05)
    assert loss < 1e-6 and acc == 1
    same, _ = info_nce(torch.ones(8, 4), torch.ones(8, 4), temperature=0.05)
    assert same == pytest.approx(math.log(8), rel=1e-5)


def cav_cfg(**loss):
    return PretrainConfig(method="cav-mae", model=tiny_model_config(), loss=LossConfig(**loss))


def test_the_method_builds_projections_and_no_teachers_or_heads():
    model = XKD(cav_cfg())
    assert set(model.projection) == {"video", "audio"} and len(model.teacher) == 0
    assert model.student["video"].head is None and not hasattr(model, "kd_video_to_audio")
    assert model.projection["video"].out_features == 256
    cfg = cav_cfg()
    cfg.model.projection_dim = 0
    assert len(XKD(cfg).projection) == 0


@pytest.mark.parametrize("view", ["masked", "whole"])
def test_the_contrastive_term_alone_reaches_both_encoders(view):
    torch.manual_seed(0)
    cfg = cav_cfg(recon_video=False, recon_audio=False, contrastive_view=view)
    model = XKD(cfg)
    m = cfg.model
    frames = [torch.randn(4, 3, m.num_frames, m.frame_size, m.frame_size)]
    audio = [torch.randn(4, 1, *m.spec_size)]
    loss, terms = model(frames, audio)
    assert set(terms) == {"contrastive", "contrastive_acc", "loss"}
    loss.backward()
    for name in ("video", "audio"):
        for n, p in model.student[name].encoder.named_parameters():
            if n != "mask_token":  # only the decoder reads the mask token
                assert p.grad is not None and p.grad.abs().sum() > 0, (name, n)
        assert model.projection[name].weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------- shared and private


def factor_clips(n, seed, cfg):
    """``n`` clips with a shared factor (4 values) seen by both modalities and a private factor (4 values) per
    modality: each modality's input is the sum of one random pattern per factor value, plus noise."""
    m = cfg.model
    patterns = torch.Generator().manual_seed(1234)  # the same patterns for every call
    shapes = {"video": (3, m.num_frames, m.frame_size, m.frame_size), "audio": (1, *m.spec_size)}
    shared = {k: torch.randn(4, *s, generator=patterns) for k, s in shapes.items()}
    private = {k: torch.randn(4, *s, generator=patterns) for k, s in shapes.items()}
    g = torch.Generator().manual_seed(seed)
    labels = {"shared": torch.randint(0, 4, (n,), generator=g), "video": torch.randint(0, 4, (n,), generator=g),
              "audio": torch.randint(0, 4, (n,), generator=g)}
    inputs = {k: shared[k][labels["shared"]] + private[k][labels[k]] + 0.5 * torch.randn(n, *shapes[k], generator=g)
              for k in shapes}
    return inputs, labels


def embeddings(model, inputs):
    with torch.no_grad():
        return {k: model.projection[k](model.student[k].encoder(x).patch_tokens.mean(1)).numpy()
                for k, x in inputs.items()}


def decodable(x, y):
    """Cross-validated accuracy of a linear classifier of ``y`` from ``x``."""
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    return cross_val_score(LogisticRegression(max_iter=2000, C=1.0), x, np.asarray(y), cv=4).mean()


@pytest.mark.slow
def test_contrastive_training_keeps_the_shared_factor_and_drops_the_private_ones():
    torch.manual_seed(0)
    cfg = cav_cfg(recon_video=False, recon_audio=False, contrastive_view="whole", contrastive_temp=0.1)
    cfg.model.projection_dim = 4  # narrow: room for the shared factor, not for the private ones
    model = XKD(cfg)
    probe_inputs, probe_labels = factor_clips(256, seed=1, cfg=cfg)
    before = embeddings(model, probe_inputs)
    # a random encoder passes the private factors on: the test below measures a change, not the fixture
    assert decodable(before["video"], probe_labels["video"]) > 0.65
    assert decodable(before["audio"], probe_labels["audio"]) > 0.65

    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    for step in range(150):
        batch, _ = factor_clips(32, seed=100 + step, cfg=cfg)
        loss, _ = model([batch["video"]], [batch["audio"]])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    after = embeddings(model, probe_inputs)
    for k in ("video", "audio"):
        assert decodable(after[k], probe_labels["shared"]) > 0.9, k  # chance 0.25
        assert decodable(after[k], probe_labels[k]) < 0.5, k  # the private factor, chance 0.25
