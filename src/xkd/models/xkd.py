"""XKD: one model for every method and ablation (spec §A1, §A5-A8, §A13.1).

Parts, by name (the same names appear in checkpoints and weights files):

- ``student.video`` / ``student.audio``: :class:`Network` (encoder + DINO head) trained by gradients;
- ``teacher.video`` / ``teacher.audio``: EMA copies of the students (no gradients);
- ``decoder.video`` / ``decoder.audio``: MAE decoders of the students;
- ``kd_video_to_audio`` / ``kd_audio_to_video``: the cross-modal DINO losses (they hold the fp32 centres);
- ``projection.video`` / ``projection.audio``: cav-mae's linear maps of the pooled features into one space.

Methods (``PretrainConfig.method``):

- ``xkd``: separate students and teachers per modality.
- ``xkd-mas``: the students share their transformer blocks (tokenisers, CLS, position embeddings, final LN, heads and
  decoders stay per modality); the teachers are two separate ViTs.
- ``xkd-mats``: students and teachers both share their blocks. The released code EMA-updates the shared teacher
  blocks twice per step (once per modality, effective momentum m²); ``loss.mats_double_ema`` keeps that (default) or
  updates them once.
- ``mae``: masked reconstruction only; no heads, teachers or distillation.
- ``cav-mae``: masked reconstruction plus an InfoNCE between the pooled video and audio embeddings of each clip
  (CAV-MAE's contrastive term; ``loss.contrastive_*``); no heads, teachers or distillation.

Only the parts an objective needs are built, so every trainable parameter receives a gradient.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from xkd.config import PretrainConfig
from xkd.losses.contrastive import info_nce
from xkd.losses.distillation import CrossModalDINOLoss
from xkd.losses.mmd import mmd_loss
from xkd.losses.reconstruction import reconstruction_loss
from xkd.models.decoder import decoder_for
from xkd.models.ema import ema_update_pairs, teacher_from_student
from xkd.models.encoder import Encoder, EncoderOutput, audio_encoder, pooled, video_encoder
from xkd.models.head import DINOHead, dino_head
from xkd.models.refine import cross_modal_weights, refine_pool

MODALITIES = ("video", "audio")


class Network(nn.Module):
    """One modality's backbone and projection head: ``encoder`` -> mean of patch tokens -> ``head``."""

    def __init__(self, encoder: Encoder, head: DINOHead | None):
        super().__init__()
        self.encoder = encoder
        self.head = head


@dataclass(frozen=True)
class Objectives:
    """Which loss terms a config trains (derived from ``method`` and the ablation keys of ``loss``)."""

    recon_video: bool
    recon_audio: bool
    kd: bool
    da: bool
    contrastive: bool = False

    @property
    def needs_heads(self) -> bool:
        return self.kd or self.da

    @classmethod
    def of(cls, cfg: PretrainConfig) -> "Objectives":
        distil = cfg.method not in ("mae", "cav-mae")
        obj = cls(cfg.loss.recon_video, cfg.loss.recon_audio, distil and cfg.loss.kd, distil and cfg.loss.da,
                  cfg.method == "cav-mae")
        if not (obj.recon_video or obj.recon_audio or obj.kd or obj.da or obj.contrastive):
            raise ValueError("every objective is switched off: enable loss.recon_video/recon_audio, loss.kd or loss.da, "
                             "or use method cav-mae")
        return obj


class XKD(nn.Module):
    """All XKD variants. ``forward(frames, audio, step) -> (loss, terms)``; see :meth:`forward`.

    teacher_temps: ``{"video": [τ per step], "audio": [...]}``, each teacher's temperature schedule, held by the
    distillation loss it sharpens (default: the config's final temperatures at every step).
    """

    def __init__(self, cfg: PretrainConfig, teacher_temps: Mapping[str, Sequence[float]] | None = None):
        super().__init__()
        self.cfg = cfg
        self.objectives = obj = Objectives.of(cfg)
        m = cfg.model

        video = video_encoder(m)
        audio = audio_encoder(m, blocks=video.blocks if cfg.method in ("xkd-mas", "xkd-mats") else None)
        heads = obj.needs_heads
        self.student = nn.ModuleDict(
            {
                "video": Network(video, dino_head(m) if heads else None),
                "audio": Network(audio, dino_head(m) if heads else None),
            }
        )
        self.decoder = nn.ModuleDict()
        if obj.recon_video:
            self.decoder["video"] = decoder_for(video, m)
        if obj.recon_audio:
            self.decoder["audio"] = decoder_for(audio, m)

        self.projection = nn.ModuleDict()
        if obj.contrastive and m.projection_dim:
            for name in MODALITIES:
                self.projection[name] = nn.Linear(m.encoder.dim, m.projection_dim)

        self.teacher = nn.ModuleDict()
        if heads:
            if cfg.method == "xkd-mats":
                # Copy both students together so the copies keep sharing their blocks.
                pair = teacher_from_student(nn.ModuleList([self.student["video"], self.student["audio"]]))
                self.teacher["video"], self.teacher["audio"] = pair[0], pair[1]
            else:
                for name in MODALITIES:
                    self.teacher[name] = teacher_from_student(self.student[name])
        if obj.kd:
            lc = cfg.loss
            temps = teacher_temps or {"video": [lc.video_teacher_temp], "audio": [lc.audio_teacher_temp]}
            # the video teacher's targets teach the audio student, and the other way round
            targets = {"assignment": lc.teacher_assignment, "sinkhorn_iters": lc.sinkhorn_iters}
            self.kd_video_to_audio = CrossModalDINOLoss(m.head_out, lc.student_temp, lc.center_momentum, temps["video"],
                                                        **targets)
            self.kd_audio_to_video = CrossModalDINOLoss(m.head_out, lc.student_temp, lc.center_momentum, temps["audio"],
                                                        **targets)

    # ------------------------------------------------------------------ parts
    def trainable_modules(self) -> dict[str, nn.Module]:
        """The modules the optimiser updates, by name: students (backbones and heads), decoders and projections."""
        return {"student": self.student, "decoder": self.decoder, "projection": self.projection}

    def mask_token_counts(self) -> tuple[int, int]:
        """Tokens of the global video and audio views, N_v and N_a (the size of the masking noise)."""
        return self.student["video"].encoder.tokenizer.num_patches, self.student["audio"].encoder.tokenizer.num_patches

    @torch.no_grad()
    def update_teachers(self, momentum: float) -> None:
        """EMA of each teacher from its student (spec §A7; MATS: see the module docstring)."""
        if not len(self.teacher):
            return
        pairs = [(self.teacher[n], self.student[n]) for n in MODALITIES]
        once = self.cfg.method == "xkd-mats" and not self.cfg.loss.mats_double_ema
        ema_update_pairs(pairs, momentum, update_shared_once=once)

    # ---------------------------------------------------------------- forward
    def _student_views(
        self, name: str, masked: EncoderOutput, locals_: list[Tensor]
    ) -> list[Tensor]:
        """Head outputs of a student: [global (visible tokens of the masked pass), local 1, ...], each [B, K].

        The head acts on each row alone, so its views go through it as one batch [(1 + L) B, D]: one weight gradient
        per layer instead of one per view (on CPU, the outer-product-shaped [2048, B] x [B, 2048] products and their
        accumulation were the step's single largest cost at the original code's head size).
        """
        net = self.student[name]
        feats = [pooled(masked)] + [pooled(net.encoder(view)) for view in locals_]
        return list(net.head(torch.cat(feats)).split([f.shape[0] for f in feats]))

    def _embedding(self, name: str, masked: EncoderOutput | None, view: Tensor) -> Tensor:
        """cav-mae: a modality's clip embedding [B, P] (P: ``projection_dim``, else the encoder's width), the mean of
        the patch tokens of its masked global view (``loss.contrastive_view="masked"``) or of the whole view, then the
        projection."""
        if self.cfg.loss.contrastive_view == "whole":
            masked = self.student[name].encoder(view)
        feature = pooled(masked)
        return self.projection[name](feature) if name in self.projection else feature

    @torch.no_grad()
    def _teacher_outputs(self, frames: Tensor, audio: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher head outputs [B, K] per modality, with cross-modal attention refinement (spec §A5.2-3)."""
        refine = self.cfg.loss.refine
        tv = self.teacher["video"].encoder(frames, return_cls_attention=refine)
        ta = self.teacher["audio"].encoder(audio, return_cls_attention=refine)
        if refine:
            av, aa = tv.cls_attention, ta.cls_attention
            mode = self.cfg.loss.refine_mode
            fv = refine_pool(tv.patch_tokens, cross_modal_weights(av, aa, mode))
            fa = refine_pool(ta.patch_tokens, cross_modal_weights(aa, av, mode))
        else:
            fv, fa = pooled(tv), pooled(ta)
        return self.teacher["video"].head(fv.to(tv.tokens.dtype)), self.teacher["audio"].head(fa.to(ta.tokens.dtype))

    def forward(
        self,
        frames: list[Tensor],
        audio: list[Tensor],
        step: int = 0,
        mask_noise: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """One training step's loss (spec §A5).

        frames: [global [B, 3, T, H, W], local [B, 3, t, h, w], ...]; audio: [global [B, 1, F, Ta], local [B, 1, F, ta]].
        step: the optimiser step (it picks the teacher temperatures). mask_noise: optional uniform noise
        ([B, Nv], [B, Na]) that decides the masks (the engine draws it for the global batch so that a DDP run equals
        a single process). Returns the total loss and a dict of detached loss terms for logging.
        """
        cfg, obj = self.cfg, self.objectives
        nv, na = (None, None) if mask_noise is None else mask_noise
        sv, sa = self.student["video"].encoder, self.student["audio"].encoder
        # the masked pass of a modality, unless no term reads it (cav-mae on whole views without reconstruction)
        shared = obj.needs_heads or (obj.contrastive and cfg.loss.contrastive_view == "masked")
        enc_v = sv(frames[0], mask_ratio=cfg.loss.video_mask_ratio, noise=nv) if shared or obj.recon_video else None
        enc_a = sa(audio[0], mask_ratio=cfg.loss.audio_mask_ratio, noise=na) if shared or obj.recon_audio else None

        terms: dict[str, Tensor] = {}
        weighted, weight_sum = [], 0.0

        recon = []
        for name, enc, on in (("video", enc_v, obj.recon_video), ("audio", enc_a, obj.recon_audio)):
            if not on:
                continue
            pred = self.decoder[name](enc.tokens, enc.ids_restore)
            # the target is the input's patches, which the masked encoder already made
            term = reconstruction_loss(pred, enc.patches, enc.mask, norm_pix=cfg.loss.norm_pix_loss)
            terms[f"recon_{name}"] = term.detach()
            recon.append(term)
        if recon:
            l_ae = sum(recon) / len(recon)
            terms["ae"] = l_ae.detach()
            weighted.append(cfg.loss.recon_coeff * l_ae)
            weight_sum += cfg.loss.recon_coeff

        if obj.needs_heads:
            zs_v = self._student_views("video", enc_v, frames[1:])
            zs_a = self._student_views("audio", enc_a, audio[1:])
            t_idx = 1 if cfg.loss.teacher_view == "local" else 0
            if t_idx >= len(frames) or t_idx >= len(audio):
                raise ValueError("loss.teacher_view='local' needs at least one local view of each modality")
            zt_v, zt_a = self._teacher_outputs(frames[t_idx], audio[t_idx])
            if obj.kd:
                l_v2a = self.kd_video_to_audio(zs_a, [zt_v], step)
                l_a2v = self.kd_audio_to_video(zs_v, [zt_a], step)
                l_kd = (l_v2a + l_a2v) / 2
                terms.update(kd_video_to_audio=l_v2a.detach(), kd_audio_to_video=l_a2v.detach(), kd=l_kd.detach())
                for teacher, loss_fn in (("video", self.kd_video_to_audio), ("audio", self.kd_audio_to_video)):
                    terms.update({f"{teacher}_{k}": v for k, v in loss_fn.stats.items()})
                weighted.append(cfg.loss.kd_coeff * l_kd)
                weight_sum += cfg.loss.kd_coeff
            if obj.da:
                gammas = cfg.loss.mmd_gammas
                l_da_s, stats = mmd_loss(torch.cat(zs_v), torch.cat(zs_a), gammas, return_stats=True)
                with torch.no_grad():  # the released code: the teacher term carries no gradient (spec §A13.3)
                    l_da_t = mmd_loss(zt_v, zt_a, gammas)
                l_da = (l_da_s + l_da_t) / 2
                terms.update(da=l_da.detach(), da_student=l_da_s.detach(), da_teacher=l_da_t.detach(),
                             mmd_kxy=stats["kxy"], mmd_d2=stats["d2_xy"])
                weighted.append(cfg.loss.da_coeff * l_da)
                weight_sum += cfg.loss.da_coeff

        if obj.contrastive:
            lc = cfg.loss
            l_c, accuracy = info_nce(self._embedding("video", enc_v, frames[0]),
                                     self._embedding("audio", enc_a, audio[0]),
                                     lc.contrastive_temp, lc.contrastive_symmetric, lc.contrastive_standardize)
            terms.update(contrastive=l_c.detach(), contrastive_acc=accuracy)
            weighted.append(lc.contrastive_coeff * l_c)
            weight_sum += lc.contrastive_coeff

        loss = sum(weighted) / weight_sum
        terms["loss"] = loss.detach()
        return loss, terms
